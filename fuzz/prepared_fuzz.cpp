// Named prepared statements in transaction pooling (src/protocol/prepared_statements.hpp):
// two or three clients, each with its StatementTracker, share two servers, each a
// ServerStatements with the PostgreSQL model of prepared_model.hpp behind it. The input is a
// script of steps: a client sends Parse / Bind / Describe / Close / Execute / Flush / Sync /
// Query with names and texts from small sets (the server name of a real statement among the
// names; DISCARD ALL and DEALLOCATE ALL among the queries), a server runs what it was sent, a
// server's replies are delivered, a client lets its server go (only between transactions, with
// nothing owed: settled()) and picks the other, max_prepared_statements changes (read when a
// server is linked, as the relay does).
//
// Each client also runs its own messages, unchanged, on a private PostgreSQL model (the
// reference: what the client would see alone on a server). Invariants:
//   * the client receives exactly the reference's replies, in order (errors compared by
//     SQLSTATE), so every Parse PostgreSQL would have answered gets exactly one
//     ParseComplete, and nothing pgwarden added reaches it;
//   * a Bind or Describe of a statement is run on the server with the outcome the reference had:
//     skipped, failed, or bound to the statement of the very same content (no client ever uses
//     another client's statement under its name);
//   * when a client is settled and its server has run and answered everything, the server's
//     pgwarden_ statements are exactly its ServerStatements; a statement is only added when the
//     LRU has room for it;
//   * no desync, no too_large.
// A client that sends statement messages behind an unanswered DISCARD ALL / DEALLOCATE ALL, or
// in a later batch behind a batch that will fail, gets them rewritten for statements that
// turn out not to be there (or to be there): some fail, or succeed, where PostgreSQL would not
// have. From then on that client is `relaxed`: its replies are not compared, and a statement it
// binds only has to have a content it prepared under that name. The other clients and the
// servers' statements stay checked as strictly.
// Byte 0: bits 0-3 == 15: prepared statements disabled (capacity 0: everything passes
// unchanged, checked as such); bit 4: three clients; bits 6-7: the first capacity - 1.
// PGW_PREPARED_TRACE=1 prints the steps (to read a crashing input).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "prepared_model.hpp"

namespace {

using namespace pgw::fuzz::prepared;
namespace fc = pgw::proto::from_client;

constexpr std::size_t kMaxCapacity = 4;

struct Text {
  std::string_view query;
  std::vector<std::uint32_t> types;
};
const std::vector<Text>& texts() {
  static const std::vector<Text> all{
      {"SELECT 1", {}}, {"SELECT 2", {}}, {"SELECT $1", {23}}, {"SELECT $1", {25}},
      {"FAIL", {}},     {"EXECFAIL", {}}, {"SELECT 3", {}},    {"SELECT $1, $2", {23, 23}}};
  return all;
}
const std::vector<std::string>& names() {
  static const std::vector<std::string> all{
      "s1", "s2", "s3", "a", "pgwarden_x", std::string(pgw::proto::kMissingStatementName),
      // The name servers know "SELECT 1" under: never another client's statement.
      std::string(pgw::proto::make_statement(content_of("SELECT 1"))->server_name()), "S1"};
  return all;
}
constexpr std::string_view kQueries[] = {"SELECT 1", "DISCARD ALL", "DEALLOCATE ALL", "FAIL"};

bool tracing() {
  static const bool on = std::getenv("PGW_PREPARED_TRACE") != nullptr;
  return on;
}
std::string describe(std::string_view bytes) {
  std::string out;
  for (const auto& m : split(bytes)) {
    if (!out.empty()) out += ' ';
    out += m.type;
    if (m.type == 'E' && m.body.size() > 0 && m.body[0] == 'S') {
      out += error_code(m.body);
      continue;
    }
    std::string shown;
    for (char ch : m.body) shown += (ch >= 32 && ch < 127) ? ch : '.';
    if (!shown.empty()) out += "(" + shown + ")";
  }
  return out;
}

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  std::uint8_t next() { return at_ < size_ ? data_[at_++] : 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

struct Session {
  Client link;
  PgModel reference;
  std::vector<std::string> expected;  // the reference's replies, normalized
  std::size_t matched = 0;            // of expected, received so far
  std::size_t received_at = 0;        // of link.received, compared so far
  int server = -1;
  int prefer = 0;
  std::size_t capacity = 0;  // read when the server was linked
  bool batch = false;        // an extended-protocol message since the last Sync / Query
  // What makes the client `relaxed` (see the top): DISCARD ALL / DEALLOCATE ALL sent and not
  // answered yet, and `errors`, the reference's ErrorResponses the client has not received yet
  // (true: of an extended-protocol message, which skips the rest of its batch).
  int discards_in_flight = 0;
  std::deque<bool> errors;
  bool relaxed = false;
  std::map<std::string, std::set<std::string>> prepared;  // name -> contents ever parsed
};

// A Bind or Describe of a statement the client sent, checked when the server runs it.
struct Check {
  int client = 0;
  Outcome reference;  // what the client's own PostgreSQL did with it
  std::string name;
  bool relaxed = false;
};

class Sim {
 public:
  Sim(bool disabled, int clients, std::size_t capacity)
      : disabled_(disabled), capacity_(disabled ? 0 : capacity), sessions_(clients) {
    for (int c = 0; c < clients; ++c) sessions_[static_cast<std::size_t>(c)].prefer = c % 2;
  }

  void send(int c, std::uint8_t kind_byte, std::uint8_t arg) {
    auto& s = session(c);
    if (s.server < 0 && !attach(c)) return;
    const auto& name = names()[arg % names().size()];
    const auto& text = texts()[(arg >> 3) % texts().size()];
    std::string bytes;
    switch (kind_byte % 8) {
      case 0:
        bytes = parse_message(name, text.query, text.types);
        break;
      case 1:
        bytes = bind_message(name);
        break;
      case 2:
        bytes = describe_message('S', name);
        break;
      case 3:
        bytes = (kind_byte & 0x80) ? close_message('P', "") : describe_message('P', "");
        break;
      case 4:
        bytes = close_message('S', name);
        break;
      case 5:
        bytes = (kind_byte & 0x80) ? flush_message() : execute_message();
        break;
      case 6:
        bytes = sync_message();
        break;
      default:
        bytes = query_message(kQueries[(arg >> 3) % std::size(kQueries)]);
        break;
    }
    send_bytes(c, bytes);
  }

  void run(int server, int count) {
    auto& srv = servers_[server];
    for (int i = 0; i < count && run_one(srv, server); ++i) {
    }
  }

  void deliver(int server, int count) {
    const int c = linked_[server];
    if (c < 0) return;
    auto& link = session(c).link;
    for (int i = 0; i < count; ++i) {
      const auto before = link.received.size();
      const auto reply = describe(split(servers_[server].outbox, nullptr, 1).empty()
                                      ? std::string()
                                      : split(servers_[server].outbox, nullptr, 1)[0].bytes());
      if (!link.deliver_one(servers_[server])) break;
      if (tracing()) {
        std::fprintf(stderr, "  server %d -> client %d: %s  as  %s\n", server, c, reply.c_str(),
                     describe(std::string_view(link.received).substr(before)).c_str());
      }
      check_replies(c);
    }
  }

  void drain(int c) {
    auto& s = session(c);
    if (s.server < 0) return;
    auto& srv = servers_[s.server];
    while (!srv.idle()) {
      while (run_one(srv, s.server)) {
      }
      deliver(s.server, 1 << 30);
    }
  }

  // Lets the server go between transactions when nothing is owed, as the relay does.
  void release(int c, int prefer) {
    auto& s = session(c);
    s.prefer = prefer;
    if (s.server < 0) return;
    auto& srv = servers_[s.server];
    if (!s.link.tracker.settled() || !srv.idle() || s.batch || srv.model.skipping) return;
    FUZZ_CHECK(!s.link.tracker.server_statements_unknown());  // no DEALLOCATE of one name
    if (tracing()) std::fprintf(stderr, "client %d leaves server %d\n", c, s.server);
    s.link.tracker.server_detached();
    linked_[s.server] = -1;
    s.server = -1;
  }

  void set_capacity(std::size_t capacity) {
    if (tracing()) std::fprintf(stderr, "capacity %zu\n", capacity);
    if (!disabled_) capacity_ = capacity;
  }

  void check_settled() {
    for (int server = 0; server < 2; ++server) {
      auto& srv = servers_[server];
      const int c = linked_[server];
      if (c >= 0 && (!session(c).link.tracker.settled() || !srv.idle())) continue;
      if (disabled_) {
        FUZZ_CHECK(srv.lru.empty());
      } else {
        FUZZ_CHECK(lru_contents(srv.lru) == srv.model.server_named());
      }
    }
  }

  void finish() {
    for (int c = 0; c < static_cast<int>(sessions_.size()); ++c) {
      auto& s = session(c);
      if (s.server < 0) continue;
      if (s.batch || s.reference.skipping) send_bytes(c, sync_message());
      drain(c);
      FUZZ_CHECK(s.link.tracker.settled());
    }
    check_settled();
    for (int c = 0; c < static_cast<int>(sessions_.size()); ++c) {
      auto& s = session(c);
      check_replies(c);
      if (!disabled_ && !s.relaxed) {
        FUZZ_CHECK(s.matched == s.expected.size());
        FUZZ_CHECK(s.received_at == s.link.received.size());
        // Spelled out: one ParseComplete per Parse PostgreSQL answered.
        std::size_t expected_parses = 0;
        for (const auto& e : s.expected) expected_parses += e == "1";
        std::size_t parses = 0;
        for (const auto& m : split(s.link.received)) parses += m.type == '1';
        FUZZ_CHECK(parses == expected_parses);
      }
    }
  }

 private:
  Session& session(int c) { return sessions_[static_cast<std::size_t>(c)]; }

  bool attach(int c) {
    auto& s = session(c);
    int server = s.prefer;
    if (linked_[server] >= 0) server = 1 - server;
    if (linked_[server] >= 0) return false;
    linked_[server] = c;
    s.server = server;
    s.capacity = capacity_;
    return true;
  }

  void send_bytes(int c, const std::string& bytes) {
    auto& s = session(c);
    auto& srv = servers_[s.server];
    const auto message = split(bytes).front();
    std::string replies;
    const auto outcome = s.reference.execute(message, replies);
    // An earlier message's error the client has not received yet (not this message's own).
    const bool after_failure = outcome.kind != Outcome::Kind::skipped &&
                               std::find(s.errors.begin(), s.errors.end(), true) != s.errors.end();
    for (const auto& reply : split(replies)) {
      s.expected.push_back(normalize(reply));
      if (reply.type == 'E') s.errors.push_back(message.type != fc::kQuery);
    }
    const bool statement_target = !message.body.empty() && message.body[0] == 'S';
    std::size_t at = message.type == fc::kDescribe || message.type == fc::kClose ? 1 : 0;
    if (message.type == fc::kBind) read_cstr(message.body, at);  // the portal
    const std::string name(read_cstr(message.body, at));
    const bool discard = message.type == fc::kQuery && (message.body == cstr("DISCARD ALL") ||
                                                        message.body == cstr("DEALLOCATE ALL"));
    const bool named =
        message.type == fc::kParse || message.type == fc::kBind ||
        ((message.type == fc::kDescribe || message.type == fc::kClose) && statement_target);
    if (named && (s.discards_in_flight > 0 || after_failure) && !s.relaxed) {
      s.relaxed = true;
      if (tracing()) std::fprintf(stderr, "client %d is relaxed from here\n", c);
    }
    if (discard && outcome.kind != Outcome::Kind::skipped) ++s.discards_in_flight;
    if (message.type == fc::kParse) {
      std::size_t content_at = 0;
      read_cstr(message.body, content_at);
      s.prepared[name].insert(message.body.substr(content_at));
    }
    long tag = -1;
    if (!disabled_ &&
        (message.type == fc::kBind || (message.type == fc::kDescribe && statement_target))) {
      tag = static_cast<long>(checks_.size());
      checks_.push_back({c, outcome, name, s.relaxed});
    }
    const auto before = srv.inbox.size();
    const auto got_before = s.link.received.size();
    const auto held = srv.lru.size();
    s.link.send(srv, bytes, s.capacity, tag);
    // A statement is added only after the least recently used ones made room for it.
    if (!disabled_ && srv.lru.size() > held) FUZZ_CHECK(srv.lru.size() <= s.capacity);
    if (tracing()) {
      std::string sent;
      for (std::size_t i = before; i < srv.inbox.size(); ++i) sent += srv.inbox[i].message.bytes();
      std::fprintf(stderr, "client %d -> server %d: %s  as  %s  due: %s\n", c, s.server,
                   describe(bytes).c_str(), describe(sent).c_str(),
                   describe(std::string_view(s.link.received).substr(got_before)).c_str());
    }
    FUZZ_CHECK(!s.link.too_large);
    if (disabled_) {
      // Nothing is touched: the message goes as it is, and nothing is synthesised.
      FUZZ_CHECK(s.link.client_edits == 0);
      FUZZ_CHECK(srv.inbox.size() == before + 1 && srv.inbox.back().message.bytes() == bytes);
    }
    switch (message.type) {
      case fc::kSync:
      case fc::kQuery:
        s.batch = false;
        break;
      case fc::kFlush:
        break;
      default:
        s.batch = true;
    }
    check_replies(c);
  }

  bool run_one(Server& srv, int server) {
    const auto out_before = srv.outbox.size();
    if (!srv.run_one()) return false;
    if (tracing()) {
      std::fprintf(stderr, "  server %d runs %s -> %s\n", server,
                   describe(srv.received.back().bytes()).c_str(),
                   describe(std::string_view(srv.outbox).substr(out_before)).c_str());
    }
    after_run(srv);
    return true;
  }

  void after_run(Server& srv) {
    if (srv.last_tag >= 0) {
      const auto& check = checks_[static_cast<std::size_t>(srv.last_tag)];
      const auto& outcome = srv.last_outcome;
      if (!check.relaxed) {
        // Skipped, failed or bound as on the client's own server: to the same content.
        FUZZ_CHECK(outcome == check.reference);
      } else if (outcome.kind == Outcome::Kind::ok) {
        // Never a statement the client did not prepare under that name.
        const auto& contents = session(check.client).prepared[check.name];
        FUZZ_CHECK(contents.count(outcome.content) == 1);
      }
    }
  }

  // What the client got so far is what the reference sent, in order.
  void check_replies(int c) {
    auto& s = session(c);
    FUZZ_CHECK(!s.link.desync);
    if (disabled_) {
      FUZZ_CHECK(s.link.server_edits == 0);
      return;
    }
    bool whole = true;
    const auto fresh = split(std::string_view(s.link.received).substr(s.received_at), &whole);
    FUZZ_CHECK(whole);  // the client gets whole messages
    s.received_at = s.link.received.size();
    for (const auto& m : fresh) {
      if (m.type == 'C' && (m.body == cstr("DISCARD ALL") || m.body == cstr("DEALLOCATE ALL")) &&
          s.discards_in_flight > 0) {
        --s.discards_in_flight;
      }
      if (m.type == 'E' && !s.errors.empty()) s.errors.pop_front();
      if (s.relaxed) continue;
      FUZZ_CHECK(s.matched < s.expected.size());
      if (normalize(m) != s.expected[s.matched]) {
        std::fprintf(stderr, "client %d reply %zu: got '%c', expected '%c'\n", c, s.matched, m.type,
                     s.expected[s.matched][0]);
      }
      FUZZ_CHECK(normalize(m) == s.expected[s.matched]);
      ++s.matched;
    }
  }

  bool disabled_;
  std::size_t capacity_;
  std::vector<Session> sessions_;
  std::vector<Check> checks_;
  Server servers_[2];
  int linked_[2] = {-1, -1};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 4096) return 0;
  Reader in(data, size);
  const std::uint8_t mode = in.next();
  const bool disabled = (mode & 0x0f) == 0x0f;
  const int clients = (mode & 0x10) ? 3 : 2;
  Sim sim(disabled, clients, 1 + (mode >> 6));
  while (!in.done()) {
    const std::uint8_t op = in.next();
    const int high = op >> 3;
    switch (op % 8) {
      case 0:
      case 1:
      case 2:
      case 3: {
        const std::uint8_t kind = in.next();
        const std::uint8_t arg = in.next();
        sim.send(high % clients, kind, arg);
        break;
      }
      case 4:
        sim.run(high % 2, 1 + (high >> 1) % 8);
        break;
      case 5:
        sim.deliver(high % 2, 1 + (high >> 1) % 8);
        break;
      case 6:
        if (op & 0x80) {
          sim.set_capacity(1 + static_cast<std::size_t>(high % kMaxCapacity));
        } else {
          sim.release(high % clients, (high >> 2) & 1);
        }
        break;
      default:
        sim.drain(high % clients);
        break;
    }
    sim.check_settled();
  }
  sim.finish();
  return 0;
}
