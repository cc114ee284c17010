// Leases and leak attribution (docs/leak-guard.md).
//
// A lease is the time a client holds a server connection. The session keeps one `Lease` record
// (plain data, touched only on its worker thread): the data path updates it with a few stores
// and at most one bounded copy per statement (no allocation), the janitor reads it to flag
// suspected leaks, and the console copies it into a `LeaseInfo`. Everything here that is not
// a data-path hook is pure (classification, truncation, sqlcommenter tags, state names) and is
// unit-tested in tests/unit/lease_test.cpp. `LeakBook` (per-application counters and the ring
// of recent leak events) is shared by all workers and takes a mutex per leak event.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::session {

// How much of a statement is kept (bytes; never cut inside a UTF-8 character).
inline constexpr std::size_t kStatementCapture = 200;

enum class LeaseState : std::uint8_t {
  active,               // a query (or an extended-protocol batch) is in flight
  idle_in_transaction,  // ReadyForQuery 'T' or 'E': the client holds a transaction open
  idle_pinned,          // ReadyForQuery 'I' and the server is still held (session mode)
};
std::string_view to_string(LeaseState state);
LeaseState lease_state(bool in_flight, bool in_transaction);

// The longest prefix of `text` of at most `max` bytes that does not end inside a UTF-8
// multibyte sequence.
std::size_t utf8_prefix(std::string_view text, std::size_t max);

// `sql` after leading whitespace and comments (-- to end of line, nested /* */).
std::string_view skip_blanks_and_comments(std::string_view sql);

// Driver housekeeping: what drivers, pools and ORMs send on their own, around the
// application's statements. None of it is "the statement that matters" of a lease
// (docs/leak-guard.md#driver-housekeeping lists the patterns; lease_test.cpp tests them with
// the statements the drivers really send).
enum class Housekeeping : std::uint8_t {
  none,                 // the application's own statement
  transaction_control,  // BEGIN, START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE,
                        // PREPARE TRANSACTION
  session_setting,      // SET (LOCAL), RESET, SHOW, DISCARD, DEALLOCATE, CLOSE, UNLISTEN
  probe,                // SELECT of server facts only (or the ping's 1), no FROM: SELECT 1,
                        // version(), current_schema(), current_setting('x'), current_user,
                        // pg_advisory_unlock_all() (asyncpg's pool reset)...
  type_introspection,   // a SELECT or WITH that reads pg_type (asyncpg, JDBC, psycopg's
                        // type lookups, SQLAlchemy's hstore check)
};
std::string_view to_string(Housekeeping kind);
// The kind of the statement at the start of `sql` (up to its ';'; what follows does not
// count), after leading blanks and comments.
Housekeeping classify_statement(std::string_view sql);
inline bool is_driver_housekeeping(std::string_view statement) {
  return classify_statement(statement) != Housekeeping::none;
}

// The first statement of a multi-statement text that is not driver housekeeping, with its
// leading comment ("BEGIN; /* t */ SELECT ..." -> "/* t */ SELECT ..."); "" if the text holds
// only housekeeping.
std::string_view first_significant_statement(std::string_view sql);

// The query text at the start of a (possibly partial) frontend message body: 'Q' (query) or
// 'P' (statement name, then query). Stops at the terminating NUL or at the end of `body`.
std::string_view statement_text(char type, std::string_view body);

// sqlcommenter tags (https://google.github.io/sqlcommenter/spec/) of the leading or else the
// trailing comment of `sql`: key='value' pairs separated by commas, keys and values
// URL-decoded (%XX), \' unescaped. A comment that is not entirely such pairs is ignored.
using Tags = std::vector<std::pair<std::string, std::string>>;
Tags parse_sqlcomment_tags(std::string_view sql);
// "key=value,key2=value2".
std::string format_tags(const Tags& tags);
// The union of the tags of several comments: each key=value pair once, in order of appearance.
void merge_tags(Tags& into, const Tags& more);
// The comments of a statement text that may carry sqlcommenter tags: its leading comment and
// its trailing one (before an optional ';'), each "" when absent or not of the key='value'
// shape. `whole` = the text is complete (otherwise only the leading one is looked for).
struct TagComments {
  std::string_view leading, trailing;
};
TagComments find_tag_comments(std::string_view sql, bool whole);

// The policy ladder that applies to one application_name: each key is the first matching
// [apps] line's value (fnmatch glob, first match wins) if that line sets it, else the
// [pgbouncer] value (for reclaim_under_pressure_after, else the client's [databases] entry's
// value first; for query_timeout, idle_transaction_timeout and transaction_timeout, else the
// login user's [users] entry's). 0 = off.
struct LeasePolicy {
  config::Millis leak_warn_after{0};           // warn about a lease idle this long
  config::Millis idle_transaction_timeout{0};  // FATAL 25P03 for a lease idle in a transaction
  config::Millis idle_pinned_timeout{0};       // FATAL 57P05 for a session-mode lease left idle
  config::Millis query_timeout{0};             // cancel a query running this long
  // While clients wait for the pool, FATAL 25P03 for a lease idle in a transaction this long;
  // already raised to leak_warn_after when that is later (a reclaimed lease is a suspected
  // leak first).
  config::Millis reclaim_under_pressure_after{0};
  // FATAL 25P04 for a lease whose transaction (from its first statement, until the server is
  // idle again) lasted this long, PgBouncer's transaction_timeout. Not an [apps] key.
  config::Millis transaction_timeout{0};
};
// The [pgbouncer] keys, then the database's (reclaim_under_pressure_after), then the [users]
// entry's (query_timeout, idle_transaction_timeout, transaction_timeout, as in PgBouncer), then
// the first matching [apps] line's.
LeasePolicy resolve_policy(const config::Config& config, std::string_view application_name,
                           std::string_view database = {}, std::string_view user = {});

// What the policy ladder needs to know about a lease: the janitor fills it from the session,
// the console from a LeaseInfo (facts_of()), and both then ask the same functions below.
struct LeaseFacts {
  using Clock = std::chrono::steady_clock;
  LeaseState state = LeaseState::active;
  bool session_mode = false;        // the pool is in session mode (idle_pinned_timeout applies)
  bool warned = false;              // the leak warning was logged for this lease
  Clock::time_point query_start{};  // a query is running since then ({}: none)
  Clock::time_point idle_since{};   // nothing in flight since then (the lease's start)
  Clock::time_point query_cancel_sent{};  // query_timeout cancelled the running query then
  Clock::time_point xact_start{};         // the transaction's first statement ({}: none open)
};

// The rungs of the ladder (docs/leak-guard.md).
enum class LadderAction : std::uint8_t {
  warn,                         // log once and count a suspected leak (leak_warn_after)
  cancel_query,                 // CancelRequest for the running query (query_timeout)
  disconnect_ignored_cancel,    // the backend ignored that cancel for kCancelGrace: FATAL 57014
  disconnect_idle_transaction,  // FATAL 25P03 (idle_transaction_timeout)
  disconnect_idle_pinned,       // FATAL 57P05 (idle_pinned_timeout, session mode only)
  disconnect_transaction,       // FATAL 25P04 (transaction_timeout)
};
// As SHOW LEASES' next_action says it: "disconnect (idle_transaction_timeout)", ...
std::string_view describe(LadderAction action);

// How long a backend may take to act on the CancelRequest that query_timeout sent, before the
// client is disconnected instead.
inline constexpr std::chrono::seconds kCancelGrace{5};

struct LadderStep {
  LadderAction action;
  std::chrono::steady_clock::time_point at;  // due once the clock is past it
};
// The steps that apply to a lease, earliest first: at most the timeout of its state,
// transaction_timeout and the warning.
struct LadderSteps {
  std::array<LadderStep, 3> steps{};
  std::size_t count = 0;
  const LadderStep* begin() const { return steps.data(); }
  const LadderStep* end() const { return steps.data() + count; }
  bool empty() const { return count == 0; }
};

// The one evaluator of the ladder: the janitor acts on the steps that are due, SHOW LEASES
// shows the first.
LadderSteps ladder_steps(const LeaseFacts& lease, const LeasePolicy& policy);
// A suspected leak (SHOW LEAKS, SHOW APPS, the warning): not active, and idle longer than the
// application's leak_warn_after.
bool is_suspected_leak(const LeaseFacts& lease, const LeasePolicy& policy,
                       std::chrono::steady_clock::time_point now);

// resolve_policy() for one session, redone only when the configuration snapshot
// (Config::version) or the application_name changes (a session's database and user do not): the
// janitor asks every 200 ms for every session, and fnmatch over the [apps] patterns is not free.
class PolicyCache {
 public:
  const LeasePolicy& get(const config::Config& config, std::string_view application_name,
                         std::string_view database = {}, std::string_view user = {}) {
    // The name is remembered by its hash, not a copy: every idle client has one of these.
    const auto name_hash = std::hash<std::string_view>{}(application_name);
    if (version_ != config.version || name_hash != name_hash_) {
      policy_ = resolve_policy(config, application_name, database, user);
      version_ = config.version;
      name_hash_ = name_hash;
    }
    return policy_;
  }

 private:
  // No configuration snapshot has this version, so the first get() resolves.
  static constexpr std::uint64_t kNone = ~std::uint64_t{0};
  std::uint64_t version_ = kNone;
  std::size_t name_hash_ = 0;
  LeasePolicy policy_;
};

// A session's completed queries (ReadyForQuery messages) and transactions (ReadyForQuery 'I'),
// for the per-application totals of SHOW APPS and the growth alarm.
struct SessionTally {
  std::uint64_t queries = 0;
  std::uint64_t transactions = 0;
  bool empty() const { return queries == 0 && transactions == 0; }
  SessionTally operator-(const SessionTally& earlier) const {
    return {queries - earlier.queries, transactions - earlier.transactions};
  }
  SessionTally& operator+=(const SessionTally& more) {
    queries += more.queries;
    transactions += more.transactions;
    return *this;
  }
};

// Log-safe text: control characters become spaces.
std::string printable(std::string_view text);

// Fixed-size blocks from a per-thread free list, for the lease's texts: no allocation per
// statement, and an idle client (its lease reset when its server went back to the pool) holds
// none. A block given back on another thread than the one it came from (a session destroyed
// elsewhere) simply joins that thread's list.
template <std::size_t Size>
class BlockPool {
 public:
  static std::unique_ptr<char[]> take() {
    auto& blocks = free_blocks();
    if (blocks.empty()) return std::make_unique_for_overwrite<char[]>(Size);
    auto block = std::move(blocks.back());
    blocks.pop_back();
    return block;
  }
  static void give(std::unique_ptr<char[]> block) {
    auto& blocks = free_blocks();
    if (blocks.size() < kMaxFree) blocks.push_back(std::move(block));
  }

 private:
  static constexpr std::size_t kMaxFree = 1024;
  static std::vector<std::unique_ptr<char[]>>& free_blocks() {
    thread_local std::vector<std::unique_ptr<char[]>> blocks;
    return blocks;
  }
};

// A statement prefix in a fixed-size block (BlockPool).
class StatementText {
 public:
  StatementText() = default;
  StatementText(const StatementText&) = delete;
  StatementText& operator=(const StatementText&) = delete;
  ~StatementText() { clear(); }

  void assign(std::string_view text) {
    const std::size_t size = utf8_prefix(text, kStatementCapture);
    if (size == 0) {
      clear();
      return;
    }
    if (!data_) data_ = take_block();
    text.copy(data_.get(), size);
    len_ = static_cast<std::uint16_t>(size);
  }
  void clear() {
    len_ = 0;
    if (data_) give_block(std::move(data_));
  }
  bool empty() const { return len_ == 0; }
  std::string_view view() const {
    return data_ ? std::string_view(data_.get(), len_) : std::string_view();
  }

 private:
  using Blocks = BlockPool<kStatementCapture>;
  static std::unique_ptr<char[]> take_block() { return Blocks::take(); }
  static void give_block(std::unique_ptr<char[]> block) { Blocks::give(std::move(block)); }
  std::unique_ptr<char[]> data_;
  std::uint16_t len_ = 0;
};

// How many bytes of distinct tag comments a lease keeps (the union of its statements' tags).
inline constexpr std::size_t kTagCapture = 512;

// The distinct sqlcommenter comments of a lease's statements, kept raw in one fixed-size block
// (BlockPool) and parsed only when the console or a warning asks: a statement costs a compare
// with what is kept, and a copy only when its comment is new. A comment that no longer fits is
// dropped (the union is bounded; `full()` says so).
class CommentSet {
 public:
  CommentSet() = default;
  CommentSet(const CommentSet&) = delete;
  CommentSet& operator=(const CommentSet&) = delete;
  ~CommentSet() { clear(); }

  void add(std::string_view comment);
  void clear();
  bool empty() const { return len_ == 0; }
  bool full() const { return full_; }
  // The comments, in the order first seen.
  std::vector<std::string_view> comments() const;
  // The union of their tags.
  Tags tags() const;

 private:
  // Entries are separated by NUL, which a query text cannot contain.
  using Blocks = BlockPool<kTagCapture>;
  std::unique_ptr<char[]> data_;
  std::uint16_t len_ = 0;
  bool full_ = false;
};

// One session's current lease. Times are steady_clock; {} means "none".
struct Lease {
  using Clock = std::chrono::steady_clock;

  // Every client session holds one, idle or not: the members are ordered so that the flags
  // share one word instead of each padding its own.
  Clock::time_point start{};       // server obtained
  Clock::time_point xact_start{};  // first statement since the server was last idle ('I')
  Clock::time_point idle_since{};  // last ReadyForQuery that left nothing in flight
  Clock::time_point warned_at{};
  std::uint64_t statements = 0;  // simple queries and Executes
  // The whole session's counts, not this lease's: reset() keeps them. They live here because
  // on_ready() is the hook that sees every ReadyForQuery.
  SessionTally tally;
  // `first`: the lease's first statement that is not driver housekeeping, or until there is
  // one, its very first statement.
  StatementText first, last;
  CommentSet tag_comments;  // of all its statements
  std::int32_t backend_pid = 0;
  bool held = false;        // between begin() and end()
  bool have_first = false;  // `first` holds the statement that matters
  bool warned = false;      // a leak warning was logged for this lease
  bool reclaimed = false;   // ended for the clients waiting (reclaim_under_pressure_after)

  // The server was obtained (statements that triggered the lease are already recorded).
  void begin(Clock::time_point now, std::int32_t pid) {
    held = true;
    start = now;
    idle_since = {};
    backend_pid = pid;
    warned = false;
  }
  // A ReadyForQuery: `owed` is what the server still owes after it.
  void on_ready(bool in_transaction, int owed, Clock::time_point now) {
    ++tally.queries;
    if (!in_transaction) ++tally.transactions;
    if (owed == 0) idle_since = now;
    if (!in_transaction) xact_start = owed > 0 ? now : Clock::time_point{};
  }
  // A Query ('Q'), Parse ('P') or Execute ('E') message; `body` is the part of its body in
  // the buffer (maybe partial). `whole` = the body is complete.
  void on_message(char type, std::string_view body, bool whole);
  // Since when the lease has had nothing in flight (its start if it never went idle).
  Clock::time_point idle_from() const {
    return idle_since == Clock::time_point{} ? start : idle_since;
  }
  // Forgets everything (the server went back to the pool).
  void reset();
};

// A lease as the console shows it (SHOW LEASES / LEAKS), copied on the session's worker.
struct LeaseInfo {
  std::uint64_t client_id = 0;
  std::string application_name, user, database, addr;
  int port = 0;
  std::int32_t backend_pid = 0;
  LeaseState state = LeaseState::active;
  std::chrono::steady_clock::time_point start{}, xact_start{}, idle_since{}, query_start{};
  std::uint64_t statements = 0;
  std::string first_query, last_query, tags;
  bool warned = false;
  bool reclaimed = false;     // ended under pressure (SHOW LEASES' action_taken says so)
  bool session_mode = false;  // the pool is in session mode (idle_pinned_timeout applies)
  std::chrono::steady_clock::time_point query_cancel_sent{};  // by query_timeout ({}: none)
};
LeaseFacts facts_of(const LeaseInfo& lease);

// A leak event: a warning, a resolution, a growth alarm or a forced action.
struct LeakEvent {
  std::chrono::system_clock::time_point time{};
  std::uint64_t client_id = 0;  // 0 for an event about a whole application (growth alarm)
  std::string application_name;
  std::string action;  // leak_warning, leak_resolved, growth_alarm, cancel, disconnect
  std::string reason;
  std::int64_t lease_age_ms = 0;
  std::string first_query;
};

// A bounded ring of the most recent events.
class EventRing {
 public:
  explicit EventRing(std::size_t capacity = 1000) : capacity_(capacity) {}
  void push(LeakEvent event);
  std::vector<LeakEvent> newest_first() const;

 private:
  std::size_t capacity_;
  mutable util::LeafMutex mutex_;
  std::deque<LeakEvent> events_;
};

// Per-application leak counters, and the event ring. Shared by all workers.
class LeakBook {
 public:
  struct AppCounters {
    std::uint64_t suspected = 0;
    std::uint64_t resolved = 0;
    std::uint64_t actions = 0;  // forced: cancels and disconnects by policy or by an admin
    proto::SessionStateMask session_state = 0;  // kinds of session state seen (transaction mode)
  };
  // Returns the application's suspected-leak count including this one.
  std::uint64_t note_suspected(const std::string& application_name);
  void note_resolved(const std::string& application_name);
  void note_action(const std::string& application_name);
  // Kinds of session state a client of the application came to hold: returns those not seen
  // from that application before (each is logged and becomes a SHOW EVENTS entry once).
  proto::SessionStateMask note_session_state(const std::string& application_name,
                                             proto::SessionStateMask kinds);
  std::map<std::string, AppCounters> counters() const;
  EventRing events;

 private:
  mutable util::LeafMutex mutex_;
  std::map<std::string, AppCounters> apps_;
};

}  // namespace pgw::session
