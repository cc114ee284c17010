// Named prepared statements in transaction pooling (src/protocol/prepared_statements.hpp):
// clients' Parse / Bind / Describe / Close rewritten to content-addressed server names, run on
// a model of PostgreSQL (fuzz/prepared_model.hpp, also behind fuzz/prepared_fuzz.cpp), and the
// replies each client gets back.
#include "protocol/prepared_statements.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../../fuzz/prepared_model.hpp"
#include "protocol/message_types.hpp"

namespace pgw::proto {
namespace {

using fuzz::prepared::bind_message;
using fuzz::prepared::Client;
using fuzz::prepared::close_message;
using fuzz::prepared::command_complete;
using fuzz::prepared::content_of;
using fuzz::prepared::describe_message;
using fuzz::prepared::error_code;
using fuzz::prepared::execute_message;
using fuzz::prepared::lru_contents;
using fuzz::prepared::Message;
using fuzz::prepared::parse_message;
using fuzz::prepared::query_message;
using fuzz::prepared::read_cstr;
using fuzz::prepared::Server;
using fuzz::prepared::split;
using fuzz::prepared::sync_message;

// The server name pgwarden gives a statement of this content / query text (no parameters).
std::string server_name_of_content(std::string_view content) {
  return std::string(make_statement(content)->server_name());
}
std::string server_name_of(std::string_view query) {
  return server_name_of_content(content_of(query));
}

// The types of the messages in `bytes`, with each ErrorResponse as E<SQLSTATE>.
std::string types(std::string_view bytes) {
  std::string out;
  for (const auto& m : split(bytes)) {
    out += m.type;
    if (m.type == from_server::kErrorResponse) out += error_code(m.body);
  }
  return out;
}

// The statement name a Parse, Bind, Describe or Close names.
std::string name_in(const Message& m) {
  std::size_t at = 0;
  switch (m.type) {
    case from_client::kBind:
      read_cstr(m.body, at);  // portal
      break;
    case from_client::kDescribe:
    case from_client::kClose:
      at = 1;
      break;
    default:
      break;
  }
  return std::string(read_cstr(m.body, at));
}

// The types and names of what the server got from index `from` on: "P:name B:name E S ...".
std::string server_log(const Server& server, std::size_t from = 0) {
  std::string out;
  for (std::size_t i = from; i < server.received.size(); ++i) {
    const auto& m = server.received[i];
    if (!out.empty()) out += ' ';
    out += m.type;
    const bool named = m.type == from_client::kParse || m.type == from_client::kBind ||
                       ((m.type == from_client::kDescribe || m.type == from_client::kClose) &&
                        !m.body.empty() && m.body[0] == 'S');
    if (named) out += ":" + name_in(m);
  }
  return out;
}

std::size_t count_of(std::string_view bytes, char type) {
  std::size_t n = 0;
  for (const auto& m : split(bytes)) n += m.type == type;
  return n;
}

// One client on one server, PostgreSQL's max_prepared_statements-like capacity.
struct Link {
  Client client;
  Server* server = nullptr;
  std::size_t capacity = 100;

  explicit Link(Server& s, std::size_t c = 100) : server(&s), capacity(c) {}
  void send(std::string_view bytes) { client.send(*server, bytes, capacity); }
  // Sends the messages, then runs and answers everything; returns what the client got for them.
  std::string exchange(const std::vector<std::string>& messages) {
    const auto before = client.received.size();
    for (const auto& m : messages) send(m);
    client.drain(*server);
    EXPECT_FALSE(client.desync);
    EXPECT_TRUE(client.tracker.settled());
    return client.received.substr(before);
  }
};

const std::string kSelect1 = content_of("SELECT 1");

// ---------------------------------------------------------------------------------------------

TEST(PreparedStatementNames, SameContentSameNameOtherContentOtherName) {
  const auto a = make_statement(content_of("SELECT 1"));
  const auto b = make_statement(content_of("SELECT 1"));
  const auto c = make_statement(content_of("SELECT 2"));
  const auto d = make_statement(content_of("SELECT $1", {23}));
  const auto e = make_statement(content_of("SELECT $1", {25}));
  EXPECT_EQ(a->key, b->key);
  EXPECT_EQ(a->server_name(), b->server_name());
  EXPECT_NE(a->server_name(), c->server_name());
  EXPECT_NE(d->server_name(), e->server_name());  // parameter types are part of the content
  EXPECT_EQ(a->content(), kSelect1);
  ASSERT_EQ(a->server_name().size(), kServerNamePrefix.size() + 16);
  EXPECT_TRUE(a->server_name().starts_with(kServerNamePrefix));
  EXPECT_EQ(a->server_name().find_first_not_of("0123456789abcdef", kServerNamePrefix.size()),
            std::string_view::npos);
  // The Parse body a server gets: the server name, its NUL, the content.
  EXPECT_EQ(a->parse_body, std::string(a->server_name()) + '\0' + kSelect1);
  // A forced key names the statement by it.
  EXPECT_EQ(make_statement(kSelect1, 0x0123456789abcdefULL)->server_name(),
            "pgwarden_0123456789abcdef");
}

TEST(PreparedStatementServerStatements, TouchAddRemoveAndConflict) {
  ServerStatements lru;
  const auto a = make_statement(content_of("SELECT 1"));
  const auto a_again = make_statement(content_of("SELECT 1"));
  const auto b = make_statement(content_of("SELECT 2"));
  const auto collides = make_statement(content_of("SELECT 2"), a->key);
  EXPECT_EQ(lru.touch(*a), ServerStatements::Lookup::missing);
  lru.add(a);
  lru.add(b);
  EXPECT_EQ(lru.least_recent(), a);
  EXPECT_EQ(lru.touch(*a_again), ServerStatements::Lookup::present);  // same content
  EXPECT_EQ(lru.least_recent(), b);                                   // a is the most recent
  EXPECT_EQ(lru.touch(*collides), ServerStatements::Lookup::conflict);
  EXPECT_EQ(lru.remove(b->key), b);
  EXPECT_EQ(lru.remove(b->key), nullptr);
  EXPECT_EQ(lru.size(), 1u);
  lru.clear();
  EXPECT_TRUE(lru.empty());
}

TEST(PreparedStatementTracker, ParseBindExecuteSyncUsesServerNames) {
  Server server;
  Link link(server);
  link.send(parse_message("s1", "SELECT 1"));
  link.send(bind_message("s1"));
  link.send(execute_message());
  link.send(sync_message());
  EXPECT_TRUE(link.client.received.empty());  // nothing is answered before the server answers
  EXPECT_FALSE(link.client.tracker.settled());
  const auto name = server_name_of("SELECT 1");
  link.client.drain(server);
  EXPECT_EQ(server_log(server), "P:" + name + " B:" + name + " E S");
  EXPECT_EQ(types(link.client.received), "12DCZ");
  EXPECT_TRUE(link.client.tracker.settled());
  // The server's statement has the client's content; the client's name maps to it.
  EXPECT_EQ(server.model.statements.at(name), kSelect1);
  const auto* known = link.client.tracker.statements().find("s1");
  ASSERT_NE(known, nullptr);
  EXPECT_EQ((*known)->server_name(), name);
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
  EXPECT_EQ(link.client.tracker.counts().client_parses, 1u);
  EXPECT_EQ(link.client.tracker.counts().server_parses, 1u);
  EXPECT_EQ(link.client.tracker.counts().binds, 1u);
}

TEST(PreparedStatementTracker, SecondClientSharesTheServersStatement) {
  Server server;
  Link first(server);
  first.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto name = server_name_of("SELECT 1");

  // Same text, another client and name: the server is not asked again, and the client gets its
  // ParseComplete right away (nothing is owed before it).
  Link second(server);
  const auto sent = server.received.size();
  second.send(parse_message("other", "SELECT 1"));
  EXPECT_TRUE(server.inbox.empty());
  EXPECT_EQ(types(second.client.received), "1");
  const auto got = second.exchange({bind_message("other"), execute_message(), sync_message()});
  EXPECT_EQ(server_log(server, sent), "B:" + name + " E S");
  EXPECT_EQ(types(second.client.received), "12DCZ");
  EXPECT_EQ(split(got)[1].body, "SELECT 1");  // the DataRow of its own statement
  EXPECT_EQ(second.client.tracker.counts().server_parses, 0u);
}

TEST(PreparedStatementTracker, SynthesisedParseCompleteWaitsForEarlierReplies) {
  Server server;
  Link first(server);
  first.exchange({parse_message("s1", "SELECT 1"), sync_message()});

  Link second(server);
  const auto sent = server.received.size();
  // A Parse the server runs, then one it already has: its ParseComplete goes out behind the
  // first one's, before the BindComplete.
  second.send(parse_message("new", "SELECT 2"));
  second.send(parse_message("shared", "SELECT 1"));
  second.send(bind_message("shared"));
  second.send(execute_message());
  second.send(sync_message());
  EXPECT_TRUE(second.client.received.empty());
  second.client.drain(server);
  EXPECT_EQ(server_log(server, sent),
            "P:" + server_name_of("SELECT 2") + " B:" + server_name_of("SELECT 1") + " E S");
  EXPECT_EQ(types(second.client.received), "112DCZ");
  EXPECT_EQ(count_of(second.client.received, '1'), 2u);
}

TEST(PreparedStatementTracker, AnotherServerGetsTheParseBeforeTheBind) {
  Server a, b;
  Link link(a);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  link.client.tracker.server_detached();
  link.server = &b;  // the next transaction runs on another server
  const auto got = link.exchange({bind_message("s1"), execute_message(), sync_message()});
  const auto name = server_name_of("SELECT 1");
  EXPECT_EQ(server_log(b), "P:" + name + " B:" + name + " E S");
  EXPECT_EQ(types(got), "2DCZ");  // the injected Parse's ParseComplete is dropped
  EXPECT_EQ(lru_contents(b.lru), b.model.server_named());
  EXPECT_EQ(link.client.tracker.counts().server_parses, 2u);

  // A Describe of the statement on a third server: a Parse goes first as well.
  Server c;
  link.server = &c;
  const auto described = link.exchange({describe_message('S', "s1"), sync_message()});
  EXPECT_EQ(server_log(c), "P:" + name + " D:" + name + " S");
  EXPECT_EQ(types(described), "tTZ");
}

TEST(PreparedStatementTracker, LruEvictsBeforeAddingAndDropsTheCloseComplete) {
  Server server;
  Link link(server, 2);
  std::string got;
  auto check_server = [&] {
    while (server.run_one()) {
      ASSERT_LE(server.model.server_named().size(), 2u);  // a Close comes before each Parse
    }
    link.client.deliver_all(server);
  };
  for (int i = 0; i < 10; ++i) {
    link.send(parse_message("s" + std::to_string(i), "SELECT " + std::to_string(i)));
    check_server();
  }
  link.send(sync_message());
  check_server();
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 10; ++i) {
      link.send(bind_message("s" + std::to_string(i)));
      link.send(execute_message());
      link.send(sync_message());
      check_server();
      // The client's own statement, whichever server name it has now.
      const auto replies = split(link.client.received);
      ASSERT_GE(replies.size(), 3u);
      EXPECT_EQ(replies[replies.size() - 3].body, "SELECT " + std::to_string(i));
    }
  }
  EXPECT_EQ(count_of(link.client.received, '1'), 10u);  // one per client Parse, none injected
  EXPECT_EQ(count_of(link.client.received, '2'), 30u);
  EXPECT_EQ(count_of(link.client.received, '3'), 0u);  // the evictions' CloseCompletes dropped
  EXPECT_EQ(count_of(link.client.received, 'E'), 0u);
  std::size_t closes = 0;
  for (const auto& m : server.received) closes += m.type == from_client::kClose;
  EXPECT_EQ(closes, 8u + 30u);  // 10 Parses into 2 places, then every Bind misses
  EXPECT_EQ(server.lru.size(), 2u);
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
  EXPECT_TRUE(link.client.tracker.settled());
}

TEST(PreparedStatementTracker, CloseIsAnsweredByPgwardenAndTheNameIsGone) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto sent = server.received.size();
  link.send(close_message('S', "s1"));
  EXPECT_TRUE(server.inbox.empty());              // the server's copy stays
  EXPECT_EQ(types(link.client.received), "1Z3");  // CloseComplete due at once
  EXPECT_EQ(link.client.tracker.statements().find("s1"), nullptr);
  EXPECT_EQ(server.lru.size(), 1u);

  // The client's name is unknown now: it goes to the server as it is, which answers 26000.
  const auto got = link.exchange({bind_message("s1"), sync_message()});
  EXPECT_EQ(server_log(server, sent), "B:s1 S");
  EXPECT_EQ(types(got), "E26000Z");
  EXPECT_NE(split(got)[0].body.find("\"s1\""), std::string::npos);

  // A name of pgwarden's is never passed on: pgwarden_missing fails instead, and the client
  // gets its own error about its own name.
  const auto sent2 = server.received.size();
  const auto foreign = server_name_of("SELECT 1");  // on this very server
  const auto missing = link.exchange({bind_message(foreign), execute_message(), sync_message()});
  EXPECT_EQ(server_log(server, sent2), "B:pgwarden_missing E S");
  EXPECT_EQ(types(missing), "E26000Z");
  const auto error = split(missing)[0].body;
  EXPECT_NE(error.find(foreign), std::string::npos);
  EXPECT_EQ(error.find(kMissingStatementName), std::string::npos);  // the server's error dropped

  // Describe and Close of such a name: the same; a Close of it is answered by pgwarden.
  const auto sent3 = server.received.size();
  const auto described = link.exchange({describe_message('S', foreign), sync_message()});
  EXPECT_EQ(server_log(server, sent3), "D:pgwarden_missing S");
  EXPECT_EQ(types(described), "E26000Z");
  const auto sent4 = server.received.size();
  const auto closed = link.exchange({close_message('S', foreign), sync_message()});
  EXPECT_EQ(server_log(server, sent4), "S");
  EXPECT_EQ(types(closed), "3Z");
  EXPECT_EQ(server.model.statements.count(foreign), 1u);  // still there for its users
}

TEST(PreparedStatementTracker, CloseOfAnUnknownNameGoesToTheServer) {
  Server server;
  Link link(server);
  const auto got = link.exchange({close_message('S', "sql_prepared"), sync_message()});
  EXPECT_EQ(server_log(server), "C:sql_prepared S");  // perhaps its own SQL PREPARE
  EXPECT_EQ(types(got), "3Z");
}

TEST(PreparedStatementTracker, DuplicateParseFailsWithTheClientsOwnError) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto sent = server.received.size();
  const auto got = link.exchange(
      {parse_message("s1", "SELECT 2"), bind_message("s1"), execute_message(), sync_message()});
  // The server fails a Describe of a name no server has, and skips the rest up to Sync.
  EXPECT_EQ(server_log(server, sent),
            "D:pgwarden_missing B:" + server_name_of("SELECT 1") + " E S");
  EXPECT_EQ(types(got), "E42P05Z");
  const auto error = split(got)[0].body;
  EXPECT_NE(error.find("\"s1\""), std::string::npos);
  EXPECT_EQ(error.find(kMissingStatementName), std::string::npos);
  // The first statement stays.
  const auto* known = link.client.tracker.statements().find("s1");
  ASSERT_NE(known, nullptr);
  EXPECT_EQ((*known)->content(), kSelect1);
  EXPECT_EQ(server.model.server_named().size(), 1u);
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
}

TEST(PreparedStatementTracker, ParseErrorInAPipelineUndoesTheSkippedMessages) {
  Server server;
  Link link(server);
  const auto got = link.exchange({parse_message("s1", "SELECT 1"), parse_message("s2", "FAIL"),
                                  bind_message("s2"), execute_message(), sync_message()});
  EXPECT_EQ(types(got), "1E42601Z");
  EXPECT_NE(link.client.tracker.statements().find("s1"), nullptr);
  EXPECT_EQ(link.client.tracker.statements().find("s2"), nullptr);
  // The server has s1's statement only, and so does its LRU.
  const std::map<std::string, std::string> only_s1{{server_name_of("SELECT 1"), kSelect1}};
  EXPECT_EQ(server.model.server_named(), only_s1);
  EXPECT_EQ(lru_contents(server.lru), only_s1);

  // s2 is unknown: a Bind of it passes unchanged; s1 is bound under its server name.
  const auto sent = server.received.size();
  const auto later = link.exchange({bind_message("s2"), sync_message()});
  EXPECT_EQ(server_log(server, sent), "B:s2 S");
  EXPECT_EQ(types(later), "E26000Z");
  const auto sent2 = server.received.size();
  const auto ok = link.exchange({bind_message("s1"), execute_message(), sync_message()});
  EXPECT_EQ(server_log(server, sent2), "B:" + server_name_of("SELECT 1") + " E S");
  EXPECT_EQ(types(ok), "2DCZ");
}

TEST(PreparedStatementTracker, ErrorUndoesSkippedClosesAndEvictions) {
  Server server;
  Link link(server, 2);
  link.exchange({parse_message("a", "SELECT 1"), parse_message("b", "SELECT 2"), sync_message()});
  const auto before = lru_contents(server.lru);
  // Fails at the first Execute: the Close of "a", the eviction for "c" and "c" are undone.
  const auto got =
      link.exchange({bind_message("x_unknown"), close_message('S', "a"),
                     parse_message("c", "SELECT 3"), bind_message("c"), sync_message()});
  EXPECT_EQ(types(got), "E26000Z");
  EXPECT_NE(link.client.tracker.statements().find("a"), nullptr);
  EXPECT_NE(link.client.tracker.statements().find("b"), nullptr);
  EXPECT_EQ(link.client.tracker.statements().find("c"), nullptr);
  EXPECT_EQ(lru_contents(server.lru), before);
  EXPECT_EQ(server.model.server_named(), before);
  // Both still work.
  const auto ok = link.exchange(
      {bind_message("a"), execute_message(), bind_message("b"), execute_message(), sync_message()});
  EXPECT_EQ(types(ok), "2DC2DCZ");
}

TEST(PreparedStatementTracker, AfterAnErrorMessagesUpToSyncPassUnchanged) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s0", "SELECT 0"), sync_message()});
  const auto sent = server.received.size();
  // The error is back before the client sends the rest of the batch.
  link.send(parse_message("s1", "FAIL"));
  link.client.drain(server);
  EXPECT_EQ(types(link.client.received), "1ZE42601");
  EXPECT_TRUE(link.client.tracker.settled());
  // The server skips these: they go as they are, nothing is owed or synthesised for them.
  link.send(bind_message("s0"));
  link.send(parse_message("s2", "SELECT 2"));
  link.send(describe_message('S', "s0"));
  link.send(close_message('S', "s0"));
  link.send(execute_message());
  EXPECT_TRUE(link.client.tracker.settled());
  EXPECT_FALSE(link.client.tracker.has_due_replies());
  const auto got = link.exchange({sync_message()});
  EXPECT_EQ(server_log(server, sent), "P:" + server_name_of("FAIL") + " B:s0 P:s2 D:s0 C:s0 E S");
  EXPECT_EQ(types(got), "Z");
  EXPECT_NE(link.client.tracker.statements().find("s0"), nullptr);  // the Close was skipped
  EXPECT_EQ(link.client.tracker.statements().find("s1"), nullptr);
  EXPECT_EQ(link.client.tracker.statements().find("s2"), nullptr);
  EXPECT_EQ(server.model.statements.count("s2"), 0u);  // skipped by the server too
  // And after the Sync names are rewritten again.
  const auto sent2 = server.received.size();
  const auto ok = link.exchange({bind_message("s0"), execute_message(), sync_message()});
  EXPECT_EQ(server_log(server, sent2), "B:" + server_name_of("SELECT 0") + " E S");
  EXPECT_EQ(types(ok), "2DCZ");
}

TEST(PreparedStatementTracker, DiscardAllAndDeallocateAllForgetEverything) {
  for (const std::string_view sql : {"DISCARD ALL", "DEALLOCATE ALL"}) {
    SCOPED_TRACE(sql);
    Server server;
    Link link(server);
    link.exchange(
        {parse_message("s1", "SELECT 1"), parse_message("s2", "SELECT 2"), sync_message()});
    ASSERT_EQ(server.lru.size(), 2u);
    const auto got = link.exchange({query_message(sql)});
    EXPECT_EQ(types(got), "CZ");
    EXPECT_TRUE(server.lru.empty());
    EXPECT_EQ(link.client.tracker.statements().size(), 0u);
    EXPECT_TRUE(server.model.statements.empty());
    EXPECT_FALSE(link.client.tracker.server_statements_unknown());
    // As in PostgreSQL, the client's names are gone.
    const auto sent = server.received.size();
    const auto after = link.exchange({bind_message("s1"), sync_message()});
    EXPECT_EQ(server_log(server, sent), "B:s1 S");
    EXPECT_EQ(types(after), "E26000Z");
  }
}

TEST(PreparedStatementTracker, DeallocateOfOneNameMakesTheServerUnknown) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto got = link.exchange({query_message("DEALLOCATE " + server_name_of("SELECT 1"))});
  EXPECT_EQ(types(got), "CZ");
  EXPECT_TRUE(link.client.tracker.server_statements_unknown());
  link.client.tracker.server_detached();
  EXPECT_FALSE(link.client.tracker.server_statements_unknown());
}

TEST(PreparedStatementTracker, CapacityZeroPassesEverythingUnchanged) {
  Server server;
  Link link(server, 0);
  const std::vector<std::string> messages{parse_message("s1", "SELECT 1"),
                                          bind_message("s1"),
                                          describe_message('S', "s1"),
                                          execute_message(),
                                          close_message('S', "s1"),
                                          bind_message("pgwarden_x"),
                                          sync_message()};
  std::string sent;
  for (const auto& m : messages) {
    sent += m;
    link.send(m);
  }
  EXPECT_EQ(link.client.client_edits, 0u);
  std::string to_server;
  for (const auto& q : server.inbox) to_server += q.message.bytes();
  EXPECT_EQ(to_server, sent);
  server.run_all();
  const auto replies = server.outbox;
  link.client.deliver_all(server);
  EXPECT_EQ(link.client.received, replies);  // every reply as the server sent it
  EXPECT_EQ(link.client.server_edits, 0u);
  EXPECT_EQ(types(replies), "12tTDC3E26000Z");
  EXPECT_EQ(link.client.tracker.statements().size(), 0u);
  EXPECT_TRUE(server.lru.empty());
  EXPECT_TRUE(link.client.tracker.settled());
}

TEST(PreparedStatementTracker, HashCollisionReplacesTheServersStatement) {
  Server server;
  // The server holds another statement under the key "SELECT 1" hashes to.
  const auto key = make_statement(kSelect1)->key;
  const auto other = make_statement(content_of("SELECT 2"), key);
  server.lru.add(other);
  server.model.statements[std::string(other->server_name())] = std::string(other->content());
  const auto name = std::string(other->server_name());
  ASSERT_EQ(name, server_name_of("SELECT 1"));

  Link link(server);
  const auto got = link.exchange(
      {parse_message("s1", "SELECT 1"), bind_message("s1"), execute_message(), sync_message()});
  EXPECT_EQ(server_log(server), "C:" + name + " P:" + name + " B:" + name + " E S");
  EXPECT_EQ(types(got), "12DCZ");             // the Close's CloseComplete is dropped
  EXPECT_EQ(split(got)[2].body, "SELECT 1");  // bound to its own statement
  EXPECT_EQ(server.model.statements.at(name), kSelect1);
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
}

TEST(PreparedStatementTracker, ServerErrorOnASimpleQueryDoesNotSkip) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto got =
      link.exchange({query_message("FAIL"), bind_message("s1"), execute_message(), sync_message()});
  EXPECT_EQ(types(got), "E42601Z2DCZ");
}

// Statement messages pipelined behind a DISCARD ALL run after it: the maps keep what they add.
// (The tracker used to clear both maps when the DISCARD ALL completed, forgetting the Parse
// sent behind it, so the server held a statement its LRU did not list, and the next client to
// prepare that text got "prepared statement pgwarden_... already exists".)
TEST(PreparedStatementTracker, StatementsPreparedBehindADiscardAllAreKept) {
  // The DISCARD ALL sent while nothing is pending (a simple query the tracker only counts), or
  // behind a batch still pending.
  for (const bool behind_a_batch : {false, true}) {
    SCOPED_TRACE(behind_a_batch ? "behind a batch" : "nothing pending");
    Server server;
    Link first(server);
    first.exchange({parse_message("old", "SELECT 2"), sync_message()});
    std::vector<std::string> messages;
    if (behind_a_batch) messages = {parse_message("x", "SELECT 3"), sync_message()};
    for (const auto& m : {query_message("DISCARD ALL"), parse_message("s1", "SELECT 1"),
                          bind_message("s1"), execute_message(), sync_message()}) {
      messages.push_back(m);
    }
    const auto got = first.exchange(messages);
    EXPECT_EQ(types(got), behind_a_batch ? "1ZCZ12DCZ" : "CZ12DCZ");
    const std::map<std::string, std::string> only_s1{{server_name_of("SELECT 1"), kSelect1}};
    EXPECT_EQ(server.model.server_named(), only_s1);
    EXPECT_EQ(lru_contents(server.lru), only_s1);
    EXPECT_NE(first.client.tracker.statements().find("s1"), nullptr);
    EXPECT_EQ(first.client.tracker.statements().find("old"), nullptr);
    EXPECT_EQ(first.client.tracker.statements().find("x"), nullptr);

    Link second(server);
    const auto shared = second.exchange(
        {parse_message("t", "SELECT 1"), bind_message("t"), execute_message(), sync_message()});
    EXPECT_EQ(types(shared), "12DCZ");
    const auto again = second.exchange(
        {parse_message("u", "SELECT 2"), bind_message("u"), execute_message(), sync_message()});
    EXPECT_EQ(types(again), "12DCZ");  // "SELECT 2" went with the DISCARD ALL: prepared again
  }
}

// A batch fails after the client sent the next one, which was rewritten for the failed batch's
// effects (an eviction that the server then skipped). The server's statements and its LRU must
// still agree when everything is answered: another client relies on them. (The tracker used to
// undo only the failed batch, then the next batch's failing injected Parse removed from the LRU
// a statement the server still held, and put back one it no longer... never had.)
TEST(PreparedStatementTracker, ABatchFailingBehindTheNextOneLeavesTheServerConsistent) {
  Server server;
  Link first(server, 1);
  first.exchange({parse_message("a", "SELECT 1"), sync_message()});
  // Batch 1 fails at its first message: the eviction of "SELECT 1" and the Parse of "SELECT 2"
  // are skipped. Batch 2 was sent before the error came back: for it "SELECT 1" was evicted, so
  // the tracker evicts "SELECT 2" and prepares "SELECT 1" again.
  for (const auto& m : {bind_message("unknown"), parse_message("b", "SELECT 2"), sync_message(),
                        bind_message("a"), execute_message(), sync_message()}) {
    first.send(m);
  }
  first.client.drain(server);
  EXPECT_FALSE(first.client.desync);
  EXPECT_TRUE(first.client.tracker.settled());
  EXPECT_EQ(count_of(first.client.received, 'Z'), 3u);
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
  EXPECT_EQ(first.client.tracker.statements().find("b"), nullptr);

  // The server can serve anyone.
  Link second(server, 1);
  EXPECT_EQ(types(second.exchange({parse_message("t", "SELECT 1"), bind_message("t"),
                                   execute_message(), sync_message()})),
            "12DCZ");
  EXPECT_EQ(types(second.exchange({parse_message("u", "SELECT 2"), bind_message("u"),
                                   execute_message(), sync_message()})),
            "12DCZ");
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
  // And the first client's statement still works.
  EXPECT_EQ(types(first.exchange({bind_message("a"), execute_message(), sync_message()})), "2DCZ");
}

// The relay reads a Bind only as far as its names when its parameters are large: the edit
// replaces the front and the length field counts the whole rewritten message.
TEST(PreparedStatementTracker, BindIsRewrittenFromItsFrontAlone) {
  ServerStatements lru;
  StatementTracker tracker;
  const auto parse = parse_message("s1", "SELECT $1", {25});
  tracker.on_client_message(from_client::kParse, static_cast<std::uint32_t>(parse.size() - 5),
                            as_bytes(std::string_view(parse).substr(5)), lru, 10);
  std::string body = std::string("portal") + '\0' + "s1" + '\0';
  const std::string front = body;
  fuzz::prepared::put16(body, 0);
  fuzz::prepared::put16(body, 1);
  fuzz::prepared::put32(body, 100000);
  body += std::string(100000, 'x');
  fuzz::prepared::put16(body, 0);
  const auto edit = tracker.on_client_message(
      from_client::kBind, static_cast<std::uint32_t>(body.size()),
      as_bytes(std::string_view(body).substr(0, front.size() + 3)), lru, 10);
  ASSERT_EQ(edit.outcome, StatementTracker::ClientEdit::Outcome::edit);
  EXPECT_EQ(edit.erase, kHeaderSize + front.size());
  const std::string name = server_name_of_content(content_of("SELECT $1", {25}));
  const std::string rewritten = std::string(edit.insert) + body.substr(front.size());
  ASSERT_GE(rewritten.size(), kHeaderSize);
  EXPECT_EQ(rewritten[0], from_client::kBind);
  EXPECT_EQ(fuzz::prepared::get32(rewritten, 1), rewritten.size() - 1);
  EXPECT_EQ(rewritten.substr(kHeaderSize, front.size() - 2 + name.size()),
            std::string("portal") + '\0' + name + '\0');
}

// A named Parse, Describe or Close must be read whole; an unnamed Parse need not.
TEST(PreparedStatementTracker, PartialStatementMessagesAreTooLargeUnlessUnnamed) {
  ServerStatements lru;
  StatementTracker tracker;
  using Outcome = StatementTracker::ClientEdit::Outcome;
  const std::string named = std::string("s1") + '\0' + "SELECT " + std::string(100, 'x');
  EXPECT_EQ(
      tracker
          .on_client_message(from_client::kParse, static_cast<std::uint32_t>(named.size() + 3),
                             as_bytes(named), lru, 10)
          .outcome,
      Outcome::too_large);
  const std::string unnamed = std::string(1, '\0') + "SELECT " + std::string(100, 'x');
  EXPECT_EQ(
      tracker
          .on_client_message(from_client::kParse, static_cast<std::uint32_t>(unnamed.size() + 3),
                             as_bytes(unnamed), lru, 10)
          .outcome,
      Outcome::pass);
  const std::string no_nul_yet = "s1_with_a_long_name";
  EXPECT_EQ(
      tracker.on_client_message(from_client::kBind, 1000, as_bytes(no_nul_yet), lru, 10).outcome,
      Outcome::too_large);
  EXPECT_EQ(tracker.statements().size(), 0u);
}

// A simple query the server skips (an error came before it, and no Sync yet) gets no
// ReadyForQuery: the tracker must not wait for one. (With nothing pending, the tracker's fast
// path counted it as owed, so it never settled and took later replies for its own.)
TEST(PreparedStatementTracker, ASkippedSimpleQueryIsNotOwedAReadyForQuery) {
  Server server;
  Link link(server);
  link.send(parse_message("s1", "FAIL"));
  link.client.drain(server);
  ASSERT_TRUE(link.client.tracker.settled());
  link.send(query_message("SELECT 1"));  // skipped by the server
  EXPECT_TRUE(link.client.tracker.settled());
  const auto got = link.exchange({sync_message(), parse_message("s2", "SELECT 2"),
                                  bind_message("s2"), execute_message(), sync_message()});
  EXPECT_EQ(types(got), "Z12DCZ");
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
}

// A Close skipped in a failed batch leaves the client its statement, even when a later batch,
// sent before the error came back, Parsed the name again and was skipped too. (undo() of the
// later Parse used to erase the name it found restored.)
TEST(PreparedStatementTracker, ARestoredStatementSurvivesTheUndoOfALaterParse) {
  Server server;
  Link link(server);
  link.exchange({parse_message("s1", "SELECT 1"), sync_message()});
  const auto got =
      link.exchange({describe_message('S', "nope"), close_message('S', "s1"), sync_message(),
                     execute_message(), parse_message("s1", "SELECT 2"), sync_message()});
  EXPECT_EQ(types(got), "E26000ZE34000Z");
  const auto* known = link.client.tracker.statements().find("s1");
  ASSERT_NE(known, nullptr);
  EXPECT_EQ((*known)->content(), kSelect1);
  const auto ok = link.exchange({bind_message("s1"), execute_message(), sync_message()});
  EXPECT_EQ(types(ok), "2DCZ");
  EXPECT_EQ(split(ok)[1].body, "SELECT 1");
  EXPECT_EQ(lru_contents(server.lru), server.model.server_named());
}

}  // namespace
}  // namespace pgw::proto
