// Protocol-level named prepared statements in transaction pooling, where a client's next
// transaction may run on another server connection than the one it prepared on.
//
// Each client keeps its own names (ClientStatements). A server connection knows statements
// under pgwarden's names, which are derived from the statement's content (query text and
// parameter types), so every client that prepares the same statement shares the server's
// copy; each server keeps them in an LRU of at most max_prepared_statements (ServerStatements).
// StatementTracker, one per client session, rewrites the client's messages on their way to
// the server it currently holds:
//   Parse "c"      -> Parse under the server name, or nothing when the server has it already
//                     (the client still gets its ParseComplete, synthesised in order);
//   Bind/Describe  -> the server name; a Parse is put in front when the server lacks it, and
//                     a Close of the least recently used one when the LRU is full (their
//                     replies never reach the client);
//   Close "c"      -> nothing (the server's copy may serve others); a CloseComplete instead.
// and keeps, in order, what each message sent will be answered with, so that synthesised
// replies go out where PostgreSQL would have sent them, replies to what pgwarden added are
// dropped, and an error, after which PostgreSQL skips the rest of the batch up to Sync, undoes
// what the skipped messages would have done. Pure: no I/O, no clock; allocates only when a
// statement is prepared or the reply queue grows.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/codec.hpp"

namespace pgw::proto {

// A statement as servers know it. Immutable; shared by the client maps and the server LRUs.
struct PreparedStatement {
  std::uint64_t key = 0;        // hash of query text and parameter types
  std::string parse_body;       // the Parse body a server gets: server name, query, parameter types
  std::uint32_t name_size = 0;  // of the server name at the front of parse_body (no NUL)

  std::string_view server_name() const { return {parse_body.data(), name_size}; }
  // Query text and parameter types: what two statements must share to be the same one.
  std::string_view content() const { return std::string_view(parse_body).substr(name_size + 1); }
};
using StatementPtr = std::shared_ptr<const PreparedStatement>;

// Server names start with this; a client name that does too is never passed on (it could
// name another client's statement on the server).
inline constexpr std::string_view kServerNamePrefix = "pgwarden_";
// A name no server statement ever has: a message naming it fails on the server as PostgreSQL
// would fail the client's, and pgwarden then puts the client's own error in its place.
inline constexpr std::string_view kMissingStatementName = "pgwarden_missing";

// `content`: a Parse body's query text, its NUL and its parameter types (count and OIDs).
// `key` overrides the hash (tests of a hash collision).
StatementPtr make_statement(std::string_view content, std::uint64_t key = 0);

// The statements prepared on one server connection under their server names, most recently
// used first.
class ServerStatements {
 public:
  // Whether the server has this very statement (same key and content); a hit becomes the most
  // recently used. A different statement under the same key is `conflict`.
  enum class Lookup : std::uint8_t { missing, present, conflict };
  Lookup touch(const PreparedStatement& statement);
  void add(StatementPtr statement);
  // Removes the statement under `key`, returning it (null when there is none).
  StatementPtr remove(std::uint64_t key);
  const StatementPtr& least_recent() const { return order_.back(); }
  std::size_t size() const { return index_.size(); }
  bool empty() const { return index_.empty(); }
  void clear();

 private:
  std::list<StatementPtr> order_;  // front: most recently used
  std::unordered_map<std::uint64_t, std::list<StatementPtr>::iterator> index_;
};

// The client's names for its statements.
class ClientStatements {
 public:
  const StatementPtr* find(std::string_view name) const;
  void set(std::string_view name, StatementPtr statement);
  void erase(std::string_view name);
  std::size_t size() const { return names_.size(); }
  void clear() { names_.clear(); }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, StatementPtr, Hash, std::equal_to<>> names_;
};

// A first-in first-out queue on a vector whose slots are reused once it has emptied, so a
// steady stream of messages allocates nothing (std::deque allocates and frees a block every
// few entries).
template <class T>
class ReuseFifo {
 public:
  using iterator = typename std::vector<T>::iterator;
  bool empty() const { return head_ == items_.size(); }
  T& front() { return items_[head_]; }
  T& back() { return items_.back(); }
  T& emplace_back() {
    if (empty()) {
      items_.clear();  // the slots' storage stays
      head_ = 0;
    } else if (head_ >= 64 && head_ * 2 >= items_.size()) {
      items_.erase(items_.begin(), begin());  // a queue that never empties: compact now and then
      head_ = 0;
    }
    return items_.emplace_back();
  }
  void pop_front() { items_[head_++] = T{}; }  // drops what the slot referred to
  iterator begin() { return items_.begin() + static_cast<std::ptrdiff_t>(head_); }
  iterator end() { return items_.end(); }
  // Pops every entry in front of `last`.
  void pop_until(iterator last) {
    while (begin() != last) pop_front();
  }
  template <class Predicate>
  void remove_if(Predicate predicate) {
    items_.erase(std::remove_if(begin(), end(), predicate), end());
  }

 private:
  std::vector<T> items_;
  std::size_t head_ = 0;
};

// The error a rewritten message's server error is replaced with.
enum class StatementError : std::uint8_t {
  none,
  missing,  // 26000: prepared statement "c" does not exist
  exists,   // 42P05: prepared statement "c" already exists
};

class StatementTracker {
 public:
  // What to do with a client message: replace its first `erase` bytes (from its type byte)
  // with `insert` (valid until the next call).
  struct ClientEdit {
    enum class Outcome : std::uint8_t {
      pass,       // unchanged
      edit,       // apply the edit
      too_large,  // a named Parse, Describe or Close over the size the relay reads whole
    };
    Outcome outcome = Outcome::pass;
    std::size_t erase = 0;
    std::string_view insert;
  };
  // What to do with a server message: drop it (it answers something pgwarden added), or put
  // the client's own error in its place, then send `after` behind it (synthesised replies now
  // due). `desync`: the reply does not fit what was sent; the connection cannot be trusted.
  struct ServerEdit {
    bool edit = false;
    bool drop = false;
    bool desync = false;
    StatementError error = StatementError::none;
    std::string_view error_name;  // the client's statement name for `error`
    std::string_view after;
  };
  struct Counts {
    std::uint64_t client_parses = 0;  // named Parse messages from the client
    std::uint64_t server_parses = 0;  // Parse messages of named statements sent to servers
    std::uint64_t binds = 0;          // Bind messages of named statements
  };

  // Client -> server, for every message the client sends while a server is attached.
  // `body` holds the body (of `body_size` bytes) as far as it is buffered; the relay reads a
  // Parse, Bind, Describe or Close whole up to kWholeMessageLimit. `capacity`:
  // max_prepared_statements (0: names pass unchanged, as PgBouncer does when disabled).
  ClientEdit on_client_message(char type, std::uint32_t body_size, Bytes body,
                               ServerStatements& server, std::size_t capacity) {
    // Fast path, inlined into the relay's scan: while nothing is pending, messages that name
    // no statement only need counting (a simple query, a Sync, a function call: one group up
    // to a ReadyForQuery; an unnamed Parse, Bind, Describe, Close or an Execute: one reply).
    if (pending_.empty() && counted_only(type, body)) {
      count(type);
      return {};
    }
    return on_any_client_message(type, body_size, body, server, capacity);
  }
  // Server -> client, for the reply messages (reply_type() says which), read whole.
  ServerEdit on_server_message(char type, Bytes body, ServerStatements& server) {
    // Fast path: with nothing pending, only a CommandComplete (DISCARD ALL, ...) matters, and a
    // ReadyForQuery ends a simple query's group.
    if (pending_.empty() && open_plain_ == 0 && type != 'C' && type != 'G') {
      if (type == 'Z' && plain_groups_ > 0) --plain_groups_;
      return {};
    }
    return on_any_server_message(type, body, server);
  }
  // Synthesised replies due now, before anything more the server sends (a ParseComplete for a
  // Parse the server did not need, when nothing else is owed before it). Empties them.
  std::string_view take_due_replies();
  bool has_due_replies() const { return !due_.empty(); }

  // Every message sent is answered and nothing is due: the server may go to another client.
  bool settled() const {
    return pending_.empty() && due_.empty() && plain_groups_ == 0 && open_plain_ == 0;
  }
  // The server's statements are no longer known (a DEALLOCATE of one name ran on it): it must
  // not serve another client.
  bool server_statements_unknown() const { return server_unknown_; }
  void server_detached() { server_unknown_ = false; }

  const ClientStatements& statements() const { return client_; }
  Counts& counts() { return counts_; }

  // Server message types whose content the tracker needs (the relay reads them whole).
  static bool reply_type(char type);

 private:
  enum class Reply : std::uint8_t {
    parse,
    bind,
    close,
    describe_statement,
    describe_portal,
    execute,
    sync,
    query,
    function_call
  };
  enum class Action : std::uint8_t {
    forward,        // the server's reply goes to the client
    drop,           // pgwarden added the message: its reply is dropped
    synthesise,     // not sent: pgwarden answers it in its place
    replace_error,  // sent to fail: the server's error is replaced by `error`
  };
  // What a sent message changed in the maps, undone if the server skips it after an error.
  enum Effect : std::uint8_t {
    kNone = 0,
    kClientAdded = 1,    // client_ name `name` -> statement
    kClientRemoved = 2,  // client_ name `name` removed (was statement)
    kServerAdded = 4,    // server LRU gained statement
    kServerRemoved = 8,  // server LRU lost statement
  };
  struct Pending {
    Reply reply = Reply::sync;
    Action action = Action::forward;
    StatementError error = StatementError::none;
    std::uint8_t effects = kNone;
    // Of `effects`, those that changed nothing the last time they were done (redo()): the
    // maps were already so. undo() leaves them.
    std::uint8_t unchanged = kNone;
    bool described = false;  // describe_statement: its ParameterDescription came
    std::string name;        // client name, for kClientAdded/kClientRemoved and errors
    StatementPtr statement;  // for the effects
    // kClientAdded done again (redo()) over a statement the client had under `name` (when a
    // message before it turned out to be skipped): undo() puts it back.
    StatementPtr replaced;
  };

  void push(Reply reply, Action action = Action::forward) {
    if (skipping_) return;
    auto& entry = pending_.emplace_back();
    entry.reply = reply;
    entry.action = action;
  }
  // The statement is on the server once the messages appended to scratch_ have run (a Parse,
  // after a Close of the least recently used when the LRU is full).
  void ensure_on_server(const StatementPtr& statement, ServerStatements& server,
                        std::size_t capacity, bool drop_reply);
  void append_close(std::string_view server_name);
  void append_parse(const PreparedStatement& statement);
  void undo(Pending& entry, ServerStatements& server);
  // Does the entry's effects again on maps that changed under it (the messages before it
  // turned out to do something else), noting those that change nothing now (`unchanged`).
  void redo(Pending& entry, ServerStatements& server);
  // DISCARD ALL / DEALLOCATE ALL ran (the message at the head): no statement is left, but the
  // messages sent after it still add theirs.
  void forget_all(ServerStatements& server);
  // An error ended the message at the head: it and everything up to the next Sync are skipped;
  // the batches sent after that Sync run on what is left.
  void skip_batch(ServerStatements& server);
  // Pops the synthesised replies at the head (nothing is owed before them) into `out`.
  void collect_synthesised(std::string& out);
  // The counted replies are all in: synthesised replies at the head go behind this message.
  void due_after_counted(ServerEdit& out);
  static bool completes(const Pending& head, char type);
  // Whether a message sent while nothing is pending names no statement (so it is counted).
  bool counted_only(char type, Bytes body) const {
    switch (type) {
      case 'Q':
      case 'F':
        // Inside an open batch a query is skipped if the batch fails: it is queued instead.
        return open_plain_ == 0;
      case 'S':
      case 'E':
        return true;
      case 'P':  // unnamed statement
        return !body.empty() && body[0] == std::byte{0};
      case 'D':
      case 'C':  // a portal, or the unnamed statement
        return body.size() >= 2 && (body[0] == std::byte{'P'} || body[1] == std::byte{0});
      case 'B': {  // unnamed statement: the byte after the portal name's NUL
        const auto* start = reinterpret_cast<const char*>(body.data());
        const auto* nul = static_cast<const char*>(std::memchr(start, 0, body.size()));
        const auto at = nul ? static_cast<std::size_t>(nul - start) + 1 : body.size();
        return at < body.size() && body[at] == std::byte{0};
      }
      default:
        return false;
    }
  }
  void count(char type) {
    if (type == 'S') {
      skipping_ = false;  // PostgreSQL reads messages again from here
      ++plain_groups_;
      open_plain_ = 0;  // the batch is one group now; its ReadyForQuery ends it
      ++window_syncs_;
      return;
    }
    if (skipping_) return;  // skipped up to the Sync after an error: nothing comes for it
    if (type == 'Q' || type == 'F') {
      ++plain_groups_;
      if (type == 'Q') window_syncs_ = 0;
      return;
    }
    ++open_plain_;
    if (type == 'E') window_syncs_ = 0;
  }
  ClientEdit on_any_client_message(char type, std::uint32_t body_size, Bytes body,
                                   ServerStatements& server, std::size_t capacity);
  ServerEdit on_any_server_message(char type, Bytes body, ServerStatements& server);

  static ClientEdit too_large() {
    ClientEdit edit;
    edit.outcome = ClientEdit::Outcome::too_large;
    return edit;
  }
  ClientEdit edit_whole(Bytes body) {
    return {ClientEdit::Outcome::edit, kHeaderSize + body.size(), scratch_};
  }
  ClientEdit parse(Bytes body, bool whole, ServerStatements& server, std::size_t capacity);
  ClientEdit bind(std::uint32_t body_size, Bytes body, ServerStatements& server,
                  std::size_t capacity);
  ClientEdit describe_or_close(char type, Bytes body, bool whole, ServerStatements& server,
                               std::size_t capacity);

  ClientStatements client_;
  ReuseFifo<Pending> pending_;
  std::string scratch_;     // the bytes of the current client edit
  std::string due_;         // synthesised replies due now
  std::string taken_;       // what take_due_replies() returned last
  std::string after_;       // synthesised replies due behind the current server message
  std::string error_name_;  // of the current server edit
  Counts counts_;
  // PostgreSQL skips client messages up to the next Sync after an error: so does the tracker.
  bool skipping_ = false;
  // Simple queries, function calls and Syncs sent while nothing was pending whose
  // ReadyForQuery has not come: they precede everything in pending_.
  std::uint32_t plain_groups_ = 0;
  // Replies owed to unnamed extended-protocol messages sent after those groups, before their
  // Sync, while nothing was pending: they come after the groups and before pending_.
  std::uint32_t open_plain_ = 0;
  // Syncs counted into plain_groups_ since the last Execute or Query: the ones a server in
  // COPY FROM STDIN mode ignores, should that statement turn out to be a COPY.
  std::uint32_t window_syncs_ = 0;
  bool server_unknown_ = false;
};

}  // namespace pgw::proto
