// Server connection pools, one per (database, user). Limits hold globally across all worker
// threads: each pool is guarded by its own mutex, held only for list operations (never across
// I/O), and per-database / per-user connection counts are atomics shared by the pools.
//
// A server connection (ServerConn) is owned by exactly one party at a time: the pool (idle
// list), a login coroutine, or the client session that leased it. Its socket is registered with
// the io_context of the worker that currently owns it; handing it to a client on another worker
// re-registers it there (ServerConn::rehome), which is the only cross-thread step.
#pragma once

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "net/socket.hpp"
#include "pool/params.hpp"
#include "pool/stats.hpp"
#include "protocol/codec.hpp"
#include "util/errors.hpp"

namespace pgw::pool {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;
class Pool;
class PoolManager;

// Everything needed to open and manage server connections of one pool; rebuilt on RELOAD.
struct PoolSettings {
  config::PoolMode mode = config::PoolMode::session;
  int pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  int max_db_connections = 0;
  int max_user_connections = 0;
  Millis reserve_pool_timeout{5000};
  Millis server_lifetime{3600000};
  Millis server_idle_timeout{600000};
  Millis server_connect_timeout{15000};
  Millis server_login_retry{15000};
  Millis server_check_delay{30000};
  std::string server_check_query;  // "" = empty query
  bool server_check_enabled = true;
  std::string server_reset_query;
  bool server_reset_query_always = false;
  // Login target.
  std::string host;
  int port = 5432;
  std::string dbname;
  std::string server_user;
  std::string password;  // plaintext, md5 hash or SCRAM secret ("" = none)
  std::vector<std::pair<std::string, std::string>> startup_params;
  std::string connect_query;
  std::string fingerprint;  // changes when the login target changes: old servers get closed
};

class ServerConn {
 public:
  ServerConn(asio::io_context& io, unsigned owner) : socket(io), worker(owner) {}
  net::Socket socket;
  unsigned worker;        // whose io_context the socket is registered with
  std::uint64_t id = 0;
  std::int32_t backend_pid = 0;
  std::int32_t backend_key = 0;
  net::Endpoint endpoint;  // for CancelRequests
  ParamSet params;         // current values of the server session's parameters
  proto::TransactionStatus status = proto::TransactionStatus::idle;
  Clock::time_point created{};
  Clock::time_point last_used{};
  std::string fingerprint;
  // Which client's parameters were applied last, so an unchanged client skips the comparison.
  std::uint64_t synced_client = 0;
  std::uint64_t synced_version = 0;
  std::uint64_t last_client = 0;
  bool close_needed = false;
  std::vector<std::byte> buffer;  // read buffer of the relay, kept with the connection

  // Moves the socket to another worker's io_context. No operation may be pending on it.
  void rehome(asio::io_context& io, unsigned new_worker);
};
using ServerPtr = std::unique_ptr<ServerConn>;

// An idle server unused for longer than server_check_delay runs server_check_query before a
// client gets it (and counts as "used" in SHOW POOLS / SERVERS meanwhile).
inline bool due_for_check(const PoolSettings& settings, const ServerConn& server,
                          Clock::time_point now) {
  return settings.server_check_enabled && settings.server_check_delay.count() >= 0 &&
         now - server.last_used > settings.server_check_delay;
}

struct AcquireResult {
  ServerPtr server;
  Err error = Err::internal;
  std::string detail;  // argument of the error text
};

// Credentials learnt from clients: the SCRAM ClientKey of a user who logged in with SCRAM,
// which lets pgwarden log in to a server that stores the same secret (pass-through).
class KeyStore {
 public:
  void put(const std::string& user, const std::string& client_key);
  std::optional<std::string> get(const std::string& user) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string> keys_;
};

struct PoolStats {  // a consistent snapshot for the console and logs
  int idle = 0, active = 0, connecting = 0, waiting = 0, total = 0;
  int used = 0;                  // of the idle ones: due for server_check_query before reuse
  Clock::duration max_wait{};    // how long the oldest waiter has been waiting
  bool paused = false;
  std::uint64_t logins_failed = 0;
  std::string last_error;
};

// One server connection as SHOW SERVERS shows it (filled by the pool for idle servers and by
// the owning session, on its worker, for leased ones).
struct ServerInfo {
  std::uint64_t id = 0;
  std::int32_t backend_pid = 0;
  std::string_view state;  // active, idle, used, tested
  std::string addr, local_addr;
  int port = 0, local_port = 0;
  Clock::time_point created{}, last_used{};
  bool close_needed = false;
  std::uintptr_t ptr = 0, link = 0;
  std::string application_name;
};
// Fills the fields that come from the connection itself. `fingerprint` is the pool's current
// one: a server logged in with another needs closing.
ServerInfo describe_server(const ServerConn& server, std::string_view state,
                           std::string_view fingerprint);

class Pool {
 public:
  Pool(PoolManager& manager, std::string database, std::string user, PoolSettings settings);
  ~Pool();

  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }
  PoolSettings settings() const;
  config::PoolMode mode() const { return mode_.load(std::memory_order_relaxed); }
  void update_settings(PoolSettings settings);

  // Leases a server to a client on `worker`, waiting in FIFO order up to `deadline`.
  asio::awaitable<AcquireResult> acquire(unsigned worker, Clock::time_point deadline);
  // Gives a leased server back; `reusable` = clean (idle, no pending results). Called on the
  // worker that owns the server's socket.
  void release(ServerPtr server, bool reusable);

  // Parameters the server reports at login, replayed to clients in their welcome.
  std::optional<ParamSet> defaults() const;

  // Periodic upkeep: idle timeout, lifetime, min_pool_size. Called by the janitor.
  void maintain(Clock::time_point now);
  // Closes idle servers and marks leased ones to be closed on release (RECONNECT, shutdown).
  void close_all(bool include_leased);
  // Wakes waiters that could now get a connection because a db/user-wide slot freed up.
  void capacity_freed();

  PoolStats stats() const;
  std::string fingerprint() const;
  // Idle servers (state idle or used), for SHOW SERVERS; taken under the pool mutex.
  std::vector<ServerInfo> idle_servers() const;

  // PAUSE / RESUME / KILL (admin console): while paused no server is handed out or opened,
  // idle servers are closed and servers coming back are closed; clients queue as waiters.
  void pause();
  void resume();
  bool paused() const;

  // Statistics: sessions on `worker` write only to their worker's slot (see pool/stats.hpp).
  StatSlot& stat_slot(unsigned worker) { return stat_slots_[worker]; }
  StatValues stat_totals() const;
  // Called every stats_period by worker 0's janitor: remembers what the last period added.
  void roll_stats(Clock::time_point now);
  // What the last complete stats_period added, and its length (zero before the first one).
  std::pair<StatValues, Clock::duration> last_period() const;

 private:
  struct Waiter {
    explicit Waiter(const asio::any_io_executor& executor, unsigned w)
        : timer(executor), worker(w) {}
    asio::steady_timer timer;  // woken (cancelled) on hand-off
    unsigned worker;
    Clock::time_point since = Clock::now();
    bool done = false;
    AcquireResult result;
  };
  using WaiterPtr = std::shared_ptr<Waiter>;

  // False while paused, and at the pool's size limit (plus the reserve if `use_reserve`).
  bool can_open_locked(bool use_reserve) const;
  // Opens servers for queued waiters while the limits allow.
  void launch_for_waiters_locked(std::vector<unsigned>& launches);
  // Takes every idle server out of the pool and its counts; the caller closes them.
  std::vector<ServerPtr> take_idle_locked();
  void launch_locked(unsigned worker, std::vector<unsigned>& launches);
  void spawn_logins(const std::vector<unsigned>& launches);
  void login_finished(ServerPtr server, Err error, std::string detail);
  // Hands `server` to a waiter (preferring one on the server's worker) or parks it idle.
  void place_locked(ServerPtr server, std::vector<WaiterPtr>& wake);
  void drop_locked(ServerPtr server);
  void fail_waiters_locked(Err error, const std::string& detail, std::vector<WaiterPtr>& wake);
  static void wake(const std::vector<WaiterPtr>& waiters);
  void close_on_owner(ServerPtr server);

  PoolManager& manager_;
  const std::string database_;
  const std::string user_;
  std::atomic<config::PoolMode> mode_;

  mutable std::mutex mutex_;
  PoolSettings settings_;
  std::vector<ServerPtr> idle_;      // most recently used last (LIFO reuse)
  std::deque<WaiterPtr> waiters_;    // FIFO
  int total_ = 0;       // servers that exist or are being opened, leased ones included
  int connecting_ = 0;  // of which still logging in
  int reserve_in_use_ = 0;
  std::optional<ParamSet> defaults_;
  std::string last_error_;
  Err last_error_code_ = Err::server_login_failed;
  Clock::time_point last_failure_{};
  std::uint64_t logins_failed_ = 0;
  std::shared_ptr<std::atomic<int>> db_count_;
  std::shared_ptr<std::atomic<int>> user_count_;
  bool paused_ = false;
  std::unique_ptr<StatSlot[]> stat_slots_;
  StatValues stats_at_roll_;
  StatValues stats_period_delta_;
  Clock::time_point stats_rolled_at_ = Clock::now();
  Clock::duration stats_period_length_{};
};

// Owns all pools and the shared resources they need (worker io_contexts, counters, keys).
class PoolManager {
 public:
  explicit PoolManager(std::vector<asio::io_context*> workers) : workers_(std::move(workers)) {}

  // The pool for (database, user), created with `settings` when new.
  Pool& get(const std::string& database, const std::string& user,
            const std::function<PoolSettings()>& settings);
  void for_each(const std::function<void(Pool&)>& fn);
  void maintain(Clock::time_point now);

  asio::io_context& worker_io(unsigned worker) { return *workers_.at(worker); }
  unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
  KeyStore& keys() { return keys_; }
  std::uint64_t next_server_id() { return ++server_ids_; }

  // The current connection count of a database / user (SHOW DATABASES / USERS).
  int db_connections(const std::string& database);
  int user_connections(const std::string& user);
  // PAUSE / RESUME for one database ("" = every database). Pools created later inherit it.
  // pause_database returns false when it was paused already, resume_database when it was not.
  bool pause_database(const std::string& database);
  bool resume_database(const std::string& database);
  bool database_paused(const std::string& database);
  bool all_paused();

  // Rolls every pool's statistics when stats_period has passed since the last roll.
  void roll_stats(Clock::time_point now, Millis period);

  std::shared_ptr<std::atomic<int>> db_counter(const std::string& database);
  std::shared_ptr<std::atomic<int>> user_counter(const std::string& user);
  void capacity_freed(const std::string& database, const std::string& user);

 private:
  std::vector<asio::io_context*> workers_;
  std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> db_counts_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> user_counts_;
  KeyStore keys_;
  std::atomic<std::uint64_t> server_ids_{0};
  Clock::time_point stats_rolled_at_ = Clock::now();
  bool paused_all_ = false;                 // under mutex_
  std::set<std::string> paused_databases_;  // under mutex_
};

// Opens one server connection and logs in (startup, auth, parameters, BackendKeyData, and
// connect_query). Bounded by server_connect_timeout.
struct LoginOutcome {
  ServerPtr server;
  Err error = Err::internal;
  std::string detail;
};
asio::awaitable<LoginOutcome> login_server(asio::io_context& io, unsigned worker,
                                           const PoolSettings& settings,
                                           std::optional<std::string> client_key);

// Runs a query on an idle server outside any client (reset, check, ROLLBACK, SET), discarding
// its results but keeping ParameterStatus. True when the server ends ReadyForQuery 'I'.
asio::awaitable<bool> run_internal_query(ServerConn& server, std::string_view sql,
                                         std::chrono::milliseconds timeout);

// Sends a CancelRequest for the backend to `endpoint` over a new connection.
asio::awaitable<void> send_cancel(net::Endpoint endpoint, std::int32_t pid, std::int32_t key);

}  // namespace pgw::pool
