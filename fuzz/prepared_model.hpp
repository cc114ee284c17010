// A model of the PostgreSQL extended query protocol for the named prepared statements of
// src/protocol/prepared_statements.hpp, shared by fuzz/prepared_fuzz.cpp and
// tests/unit/prepared_statements_test.cpp.
//
// PgModel executes whole frontend messages as a PostgreSQL backend would (the parts that matter
// to statement names): Parse creates a name (42P05 when it exists), Bind / Describe 'S' of an
// unknown name fail with 26000, Close removes, after an error in an extended-protocol message
// everything up to Sync is skipped, Sync answers 'Z'. Its replies carry the statement's content
// (the query text in RowDescription and DataRow, the parameter types in ParameterDescription),
// so a client bound to the wrong statement sees other bytes. Query texts with special meaning:
//   Parse "FAIL"        -> 42601 (a syntax error)
//   Execute "EXECFAIL"  -> 22012 (a run-time error)
//   Query "FAIL"        -> 42601; "DISCARD ALL" / "DEALLOCATE ALL" drop every statement.
//
// Link couples one client (a StatementTracker) with one server (ServerStatements + PgModel) the
// way the relay does: client messages go through on_client_message and the edit is applied,
// synthesised replies due at once go to the client, server replies go through
// on_server_message (dropped, replaced by the client's own error, followed by `after`).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/codec.hpp"
#include "protocol/message_types.hpp"
#include "protocol/prepared_statements.hpp"

namespace pgw::fuzz::prepared {

namespace proto = pgw::proto;

// ---------------------------------------------------------------------------------------------
// Message bytes.

inline void put32(std::string& out, std::uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>((v >> 16) & 0xff);
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}
inline void put16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}
inline std::uint32_t get32(std::string_view s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
inline std::string cstr(std::string_view s) {
  std::string out(s);
  out += '\0';
  return out;
}
inline std::string message(char type, std::string_view body = {}) {
  std::string out(1, type);
  put32(out, static_cast<std::uint32_t>(body.size() + 4));
  out.append(body);
  return out;
}

// A Parse body's part after the name: query text, NUL, parameter type count and OIDs.
inline std::string content_of(std::string_view query,
                              const std::vector<std::uint32_t>& types = {}) {
  std::string out = cstr(query);
  put16(out, static_cast<std::uint16_t>(types.size()));
  for (auto t : types) put32(out, t);
  return out;
}
inline std::string parse_message(std::string_view name, std::string_view query,
                                 const std::vector<std::uint32_t>& types = {}) {
  return message(proto::from_client::kParse, cstr(name) + content_of(query, types));
}
// No parameters, one result format (text).
inline std::string bind_message(std::string_view name, std::string_view portal = "") {
  std::string body = cstr(portal) + cstr(name);
  put16(body, 0);  // parameter formats
  put16(body, 0);  // parameter values
  put16(body, 1);  // result formats
  put16(body, 0);
  return message(proto::from_client::kBind, body);
}
inline std::string describe_message(char target, std::string_view name) {
  return message(proto::from_client::kDescribe, std::string(1, target) + cstr(name));
}
inline std::string close_message(char target, std::string_view name) {
  return message(proto::from_client::kClose, std::string(1, target) + cstr(name));
}
inline std::string execute_message(std::string_view portal = "") {
  std::string body = cstr(portal);
  put32(body, 0);
  return message(proto::from_client::kExecute, body);
}
inline std::string sync_message() {
  return message(proto::from_client::kSync);
}
inline std::string flush_message() {
  return message(proto::from_client::kFlush);
}
inline std::string query_message(std::string_view sql) {
  return message(proto::from_client::kQuery, cstr(sql));
}
inline std::string error_message(std::string_view code, std::string_view text) {
  return message(
      proto::from_server::kErrorResponse,
      "SERROR" + std::string(1, '\0') + "C" + cstr(code) + "M" + cstr(text) + std::string(1, '\0'));
}
inline std::string command_complete(std::string_view tag) {
  return message(proto::from_server::kCommandComplete, cstr(tag));
}

struct Message {
  char type = 0;
  std::string body;
  std::string bytes() const { return message(type, body); }
};

// Whole messages of `bytes` (at most `limit`); a malformed rest ends the list (`*ok` false).
inline std::vector<Message> split(std::string_view bytes, bool* ok = nullptr,
                                  std::size_t limit = SIZE_MAX) {
  std::vector<Message> out;
  if (ok) *ok = true;
  std::size_t at = 0;
  while (at < bytes.size() && out.size() < limit) {
    if (bytes.size() - at < proto::kHeaderSize) break;
    const std::uint32_t length = get32(bytes, at + 1);
    if (length < 4 || bytes.size() - at - 1 < length) break;
    out.push_back({bytes[at], std::string(bytes.substr(at + proto::kHeaderSize, length - 4))});
    at += 1 + length;
  }
  if (ok && at != bytes.size() && out.size() < limit) *ok = false;
  return out;
}

// The string of `body` from `at` up to its NUL (empty when there is none), and moves `at` past it.
inline std::string_view read_cstr(std::string_view body, std::size_t& at) {
  if (at > body.size()) return {};
  const auto nul = body.find('\0', at);
  if (nul == std::string_view::npos) {
    at = body.size() + 1;
    return {};
  }
  const auto out = body.substr(at, nul - at);
  at = nul + 1;
  return out;
}

// An ErrorResponse's SQLSTATE ("" when it has none).
inline std::string error_code(std::string_view body) {
  std::size_t at = 0;
  while (at < body.size() && body[at] != '\0') {
    const char field = body[at++];
    const auto value = read_cstr(body, at);
    if (field == 'C') return std::string(value);
  }
  return {};
}

// A message as the comparisons see it: errors by SQLSTATE only (the texts differ between
// PostgreSQL's and pgwarden's), everything else byte for byte.
inline std::string normalize(const Message& m) {
  if (m.type == proto::from_server::kErrorResponse) return "E" + error_code(m.body);
  return std::string(1, m.type) + m.body;
}

// ---------------------------------------------------------------------------------------------
// The server.

struct Outcome {
  enum class Kind : std::uint8_t { skipped, error, ok };
  Kind kind = Kind::ok;
  std::string content;  // Bind, Describe 'S', Parse: the statement's content when ok
  bool operator==(const Outcome&) const = default;
};

class PgModel {
 public:
  std::map<std::string, std::string, std::less<>> statements;  // name -> content
  std::optional<std::string> portal;                           // the unnamed portal's content
  bool skipping = false;                                       // until Sync

  static std::string_view query_of(std::string_view content) {
    std::size_t at = 0;
    return read_cstr(content, at);
  }

  // Runs one frontend message, appending the backend's replies to `out`.
  Outcome execute(const Message& m, std::string& out) {
    namespace fc = proto::from_client;
    namespace fs = proto::from_server;
    if (skipping && m.type != fc::kSync) return {Outcome::Kind::skipped, {}};
    const std::string_view body = m.body;
    std::size_t at = 0;
    switch (m.type) {
      case fc::kParse: {
        const std::string name(read_cstr(body, at));
        const std::string content(body.substr(std::min(at, body.size())));
        // PostgreSQL reports a syntax error before a duplicate name; pgwarden, which cannot
        // parse SQL, reports the duplicate (42P05) first. The model follows pgwarden there:
        // the batch fails either way.
        if (!name.empty() && statements.count(name)) {
          return fail(out, "42P05", "prepared statement \"" + name + "\" already exists");
        }
        if (query_of(content) == "FAIL") return fail(out, "42601", "syntax error");
        statements[name] = content;
        out += message(fs::kParseComplete);
        return {Outcome::Kind::ok, content};
      }
      case fc::kBind: {
        read_cstr(body, at);  // portal ("" only)
        const std::string name(read_cstr(body, at));
        const auto found = statements.find(name);
        if (found == statements.end()) {
          return fail(out, "26000", "prepared statement \"" + name + "\" does not exist");
        }
        portal = found->second;
        out += message(fs::kBindComplete);
        return {Outcome::Kind::ok, found->second};
      }
      case fc::kDescribe: {
        const char target = body.empty() ? '\0' : body[0];
        at = 1;
        const std::string name(read_cstr(body, at));
        if (target == 'S') {
          const auto found = statements.find(name);
          if (found == statements.end()) {
            return fail(out, "26000", "prepared statement \"" + name + "\" does not exist");
          }
          const std::string_view content = found->second;
          const auto query = query_of(content);
          out += message(fs::kParameterDescription, content.substr(query.size() + 1));
          out += message(fs::kRowDescription, query);
          return {Outcome::Kind::ok, found->second};
        }
        if (!portal) return fail(out, "34000", "portal does not exist");
        out += message(fs::kRowDescription, query_of(*portal));
        return {Outcome::Kind::ok, *portal};
      }
      case fc::kClose: {
        const char target = body.empty() ? '\0' : body[0];
        at = 1;
        const std::string name(read_cstr(body, at));
        if (target == 'S') {
          statements.erase(name);
        } else {
          portal.reset();
        }
        out += message(fs::kCloseComplete);
        return {Outcome::Kind::ok, {}};
      }
      case fc::kExecute: {
        if (!portal) return fail(out, "34000", "portal does not exist");
        const auto query = query_of(*portal);
        if (query == "EXECFAIL") return fail(out, "22012", "division by zero");
        out += message(fs::kDataRow, query);
        out += command_complete("SELECT 1");
        return {Outcome::Kind::ok, *portal};
      }
      case fc::kSync:
        skipping = false;
        portal.reset();
        out += message(fs::kReadyForQuery, "I");
        return {Outcome::Kind::ok, {}};
      case fc::kQuery: {
        const auto sql = read_cstr(body, at);
        portal.reset();
        Outcome outcome{Outcome::Kind::ok, {}};
        if (sql == "FAIL") {
          out += error_message("42601", "syntax error");
          outcome.kind = Outcome::Kind::error;
        } else if (sql == "DISCARD ALL" || sql == "DEALLOCATE ALL") {
          statements.clear();
          out += command_complete(sql);
        } else if (sql.substr(0, 11) == "DEALLOCATE ") {
          statements.erase(std::string(sql.substr(11)));
          out += command_complete("DEALLOCATE");
        } else {
          out += message(fs::kRowDescription, sql);
          out += message(fs::kDataRow, sql);
          out += command_complete("SELECT 1");
        }
        out += message(fs::kReadyForQuery, "I");
        return outcome;
      }
      default:
        return {Outcome::Kind::ok, {}};  // Flush
    }
  }

  // The names of the statements pgwarden prepared (kServerNamePrefix) and their contents.
  std::map<std::string, std::string> server_named() const {
    std::map<std::string, std::string> out;
    for (const auto& [name, content] : statements) {
      if (name.starts_with(proto::kServerNamePrefix)) out.emplace(name, content);
    }
    return out;
  }

 private:
  Outcome fail(std::string& out, std::string_view code, std::string_view text) {
    out += error_message(code, text);
    skipping = true;
    return {Outcome::Kind::error, {}};
  }
};

// The content of a ServerStatements (server name -> content), read without disturbing it: the
// statements are taken off from the least recently used and put back in the same order.
inline std::map<std::string, std::string> lru_contents(proto::ServerStatements& lru,
                                                       std::vector<std::string>* order = nullptr) {
  std::vector<proto::StatementPtr> taken;
  while (!lru.empty()) {
    taken.push_back(lru.least_recent());
    lru.remove(taken.back()->key);
  }
  std::map<std::string, std::string> out;
  for (const auto& statement : taken) {
    out.emplace(std::string(statement->server_name()), std::string(statement->content()));
    if (order) order->insert(order->begin(), std::string(statement->server_name()));
    lru.add(statement);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A server connection and a client session linked the way the relay links them.

struct Server {
  proto::ServerStatements lru;
  PgModel model;
  struct Queued {
    Message message;
    long tag = -1;  // the caller's, for the rewritten client message itself
  };
  std::deque<Queued> inbox;       // sent, not run yet
  std::string outbox;             // replies not delivered yet
  std::vector<Message> received;  // every message run, in order
  Outcome last_outcome;           // of the last message run
  long last_tag = -1;             // and its tag

  // Runs the next message; false when there is none.
  bool run_one() {
    if (inbox.empty()) return false;
    auto queued = std::move(inbox.front());
    inbox.pop_front();
    last_outcome = model.execute(queued.message, outbox);
    last_tag = queued.tag;
    received.push_back(std::move(queued.message));
    return true;
  }
  void run_all() {
    while (run_one()) {
    }
  }
  bool idle() const { return inbox.empty() && outbox.empty(); }
};

struct Client {
  proto::StatementTracker tracker;
  std::string received;  // bytes the client got
  bool desync = false;   // a ServerEdit said desync
  bool too_large = false;
  std::size_t client_edits = 0;  // ClientEdits other than pass
  std::size_t server_edits = 0;  // ServerEdits with edit set

  // Sends one client message through the tracker to `server`. The last message of the result
  // (the rewritten message itself, when it is not dropped) gets `tag`.
  void send(Server& server, std::string_view bytes, std::size_t capacity, long tag = -1) {
    const auto body = bytes.substr(proto::kHeaderSize);
    const auto edit = tracker.on_client_message(bytes[0], static_cast<std::uint32_t>(body.size()),
                                                proto::as_bytes(body), server.lru, capacity);
    std::string out;
    switch (edit.outcome) {
      case proto::StatementTracker::ClientEdit::Outcome::pass:
        out.assign(bytes);
        break;
      case proto::StatementTracker::ClientEdit::Outcome::edit:
        ++client_edits;
        out.assign(edit.insert);
        out.append(bytes.substr(edit.erase));
        break;
      case proto::StatementTracker::ClientEdit::Outcome::too_large:
        too_large = true;
        return;
    }
    auto messages = split(out);
    for (std::size_t i = 0; i < messages.size(); ++i) {
      Server::Queued queued{std::move(messages[i]), -1};
      if (i + 1 == messages.size()) queued.tag = tag;
      server.inbox.push_back(std::move(queued));
    }
    received.append(tracker.take_due_replies());
  }

  // Delivers the server's next reply through the tracker; false when there is none.
  bool deliver_one(Server& server) {
    const auto replies = split(server.outbox, nullptr, 1);
    if (replies.empty()) return false;
    const auto& reply = replies.front();
    server.outbox.erase(0, proto::kHeaderSize + reply.body.size());
    // The relay shows the tracker only the replies it asks for (not DataRow, NoticeResponse...).
    if (!proto::StatementTracker::reply_type(reply.type)) {
      received += reply.bytes();
      return true;
    }
    const auto edit =
        tracker.on_server_message(reply.type, proto::as_bytes(reply.body), server.lru);
    if (edit.desync) desync = true;
    if (edit.edit) ++server_edits;
    if (!edit.drop) received += reply.bytes();
    if (edit.error == proto::StatementError::missing) {
      received += error_message(
          "26000", "prepared statement \"" + std::string(edit.error_name) + "\" does not exist");
    } else if (edit.error == proto::StatementError::exists) {
      received += error_message(
          "42P05", "prepared statement \"" + std::string(edit.error_name) + "\" already exists");
    }
    received.append(edit.after);
    return true;
  }
  void deliver_all(Server& server) {
    while (deliver_one(server)) {
    }
  }
  // Runs everything sent and delivers every reply.
  void drain(Server& server) {
    while (!server.idle()) {
      server.run_all();
      deliver_all(server);
    }
  }
};

}  // namespace pgw::fuzz::prepared
