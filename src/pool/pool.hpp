// Server connection pools, one per (database, user). Limits hold globally across all worker
// threads: each pool is guarded by its own mutex, and per-database / per-user connection counts
// are atomics shared by the pools.
//
// A pool is its policy plus an executor. The policy (pool/pool_core.hpp) decides, with no I/O,
// clock, lock or logging of its own; `Pool` takes its mutex only around a call of the policy
// (never across I/O, a clock read, a log line or a string comparison), then carries out what it
// decided: hands servers to waiters on their threads, starts logins, closes servers.
//
// A server connection (ServerConn) is owned by exactly one party at a time: the pool (idle
// list), a login coroutine, or the client session that leased it. Its socket is registered with
// the reactor of the worker that currently owns it, and only that worker's thread touches it.
// Handing it to a client on another worker is the only cross-thread step: the owner's thread
// takes it out of its epoll set, then the new owner's thread adds it to its own (Pool::complete).
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
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "net/tls.hpp"
#include "pool/backend.hpp"
#include "pool/breaker.hpp"
#include "pool/params.hpp"
#include "pool/pool_core.hpp"
#include "pool/stats.hpp"
#include "protocol/codec.hpp"
#include "protocol/prepared_statements.hpp"
#include "protocol/stream_buffer.hpp"
#include "util/errors.hpp"
#include "util/intrusive_list.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::pool {

class Pool;
class PoolManager;
struct LoginOutcome;

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
  int max_prepared_statements = 200;
  int max_waiting = 0;      // clients queued at once; 0 = unlimited
  BreakerSettings breaker;  // of the backend (global keys: every pool agrees)
  // Login target: the [databases] entry's hosts with their ports, in list order (never empty),
  // and how a new server connection picks one (load_balance_hosts).
  std::vector<config::ServerAddress> servers{config::ServerAddress{}};
  config::LoadBalanceHosts load_balance = config::LoadBalanceHosts::round_robin;
  std::string dbname;
  std::string server_user;
  std::string password;  // plaintext, md5 hash or SCRAM secret ("" = none)
  std::vector<std::pair<std::string, std::string>> startup_params;
  std::string connect_query;
  // server_tls_sslmode and its context (null: disable, or a Unix socket, where PostgreSQL
  // does not offer TLS).
  bool log_connections = false;     // each new server connection gets a log line (PgBouncer's)
  bool log_disconnections = false;  // and each server login that fails (PgBouncer's line too)
  config::SslMode tls_mode = config::SslMode::disable;
  std::shared_ptr<const net::TlsContext> tls;
  std::string fingerprint;  // changes when the login target changes: old servers get closed
};

// The part of the settings the pool's policy applies.
PoolLimits limits_of(const PoolSettings& settings);

// The settings of the pool of `user` for the [databases] entry `database` under `config`.
// `server_tls`: the context of server_tls_* now (TlsStore::server_side()); `learned`: secrets
// auth_query found, for users auth_file does not list.
class KeyStore;
PoolSettings settings_for(const config::Config& config, const config::DatabaseEntry& database,
                          const std::string& user, const config::Secrets& secrets,
                          std::shared_ptr<const net::TlsContext> server_tls,
                          const KeyStore& learned);

// One connection to PostgreSQL. While it sits idle in its pool it watches its own socket: a
// backend that speaks unasked (a FATAL from pg_terminate_backend, a shutdown, EOF) is evicted
// at once, before any client could be handed a dead connection.
class ServerConn final : public net::ReadyHandler, public PooledServer {
 public:
  explicit ServerConn(unsigned owner) : PooledServer(owner) {}
  net::Connection conn;
  Pool* pool = nullptr;  // set when it joins a pool
  std::uint64_t id = 0;
  std::int32_t backend_pid = 0;
  std::int32_t backend_key = 0;
  net::Endpoint endpoint;  // for CancelRequests
  ParamSet params;         // current values of the server session's parameters
  proto::TransactionStatus status = proto::TransactionStatus::idle;
  // ParamSet::fingerprint() of the client parameters the server session has on top of the
  // pool's defaults (0: just the defaults), so a client with the same ones skips the sync.
  std::uint64_t applied_params = 0;
  std::uint64_t last_client = 0;
  // The relay's buffer of this server's replies (session/relay.hpp), kept with the connection:
  // a server goes back to the pool only with it empty.
  proto::StreamBuffer buffer;
  // Named prepared statements prepared on it in transaction pooling, under pgwarden's names.
  proto::ServerStatements statements;
  // Session state (docs/transaction-pooling.md#session-state): the parameters a client's SETs
  // left on it (proto::SessionState::parameters_fingerprint(), 0: none) and their names, which
  // a link to another client resets first.
  std::uint64_t session_sets = 0;
  std::vector<std::string> session_set_names;
  // A client took session advisory locks on it since its last pg_advisory_unlock_all(). The
  // count pgwarden keeps can be short (one call may lock a lock per row), so a server a client
  // gave back unpinned is unlocked before another client gets it.
  bool advisory_locks_possible = false;

  // The backend (host and port of the pool's list) it is connected to: its breaker hears
  // when the connection is lost.
  Backend* backend = nullptr;

  // Readiness while idle in the pool (the pool installs this object as the handler).
  void on_ready(net::Connection& connection) override;
};
using ServerPtr = std::unique_ptr<ServerConn>;

struct AcquireResult {
  ServerPtr server;
  bool queued = false;  // no server yet: the waiter's deliver() will be called
  Err error = Err::internal;
  std::string detail;  // argument of the error text
};

// A party waiting for a server of a pool: a client session, or a coroutine in Pool::acquire().
// Queued in the pool's FIFO of its worker (PoolWaiter). A queued waiter is alive; it leaves the
// queue (cancel_wait) before it goes away.
class Waiter : public PoolWaiter {
 public:
  // Called on the waiter's worker, with a server registered with that worker's reactor, or an
  // error. Never called with the pool mutex held.
  virtual void deliver(AcquireResult result) = 0;
  // Keeps the waiting party alive while a hand-off is posted to its worker.
  virtual std::shared_ptr<void> keep_alive() = 0;

 protected:
  explicit Waiter(unsigned worker) : PoolWaiter(worker) {}
  virtual ~Waiter() = default;
};

// Credentials learnt from clients: the SCRAM ClientKey of a user who logged in with SCRAM,
// which lets pgwarden log in to a server that stores the same secret (pass-through).
// What logins taught pgwarden about users, for its own logins to PostgreSQL as them: the
// SCRAM ClientKey of a client that proved it (pass-through), and the secret auth_query
// returned for a user not in auth_file. Memory only, never logged.
class KeyStore {
 public:
  void put(const std::string& user, const std::string& client_key);
  std::optional<std::string> get(const std::string& user) const;
  void put_secret(const std::string& user, const std::string& secret);
  std::optional<std::string> secret(const std::string& user) const;

 private:
  mutable util::LeafMutex mutex_;
  std::map<std::string, std::string> keys_;
  std::map<std::string, std::string> secrets_;
};

struct PoolStats {  // a consistent snapshot for the console and logs
  int idle = 0, active = 0, connecting = 0, waiting = 0, total = 0;
  int used = 0;                // of the idle ones: due for server_check_query before reuse
  Clock::duration max_wait{};  // how long the oldest waiter has been waiting
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
  std::string tls;  // "TLSv1.3/TLS_AES_256_GCM_SHA384"; "" in clear
  int port = 0, local_port = 0;
  Clock::time_point created{}, last_used{};
  bool close_needed = false;
  std::uintptr_t ptr = 0, link = 0;
  std::string application_name;
  std::size_t prepared_statements = 0;  // named statements prepared under pgwarden's names
};
// Fills the fields that come from the connection itself. `generation` is the pool's current
// one (Pool::generation()): a server logged in for another needs closing.
ServerInfo describe_server(const ServerConn& server, std::string_view state,
                           std::uint32_t generation);

class Pool {
 public:
  Pool(PoolManager& manager, std::string database, std::string user, PoolSettings settings);
  ~Pool();

  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }
  // The current settings (replaced whole on RELOAD: holders keep theirs).
  std::shared_ptr<const PoolSettings> settings() const;
  config::PoolMode mode() const { return mode_.load(std::memory_order_relaxed); }
  // max_prepared_statements, read by a relay each time it gets a server: one relaxed load
  // (settings() takes the pool mutex).
  int max_prepared_statements() const {
    return max_prepared_statements_.load(std::memory_order_relaxed);
  }
  // Whether `server` must run server_check_query before a client gets it (no lock, no copy:
  // asked once per lease).
  bool check_due(const ServerConn& server, Clock::time_point now) const {
    const auto delay = check_delay_ms_.load(std::memory_order_relaxed);
    return delay >= 0 && now - server.last_used > Millis(delay);
  }
  void update_settings(PoolSettings settings);

  // Leases a server to `waiter` (on the waiter's worker): an idle one of the same worker at
  // once (LIFO: the warmest), else `queued` and deliver() later (an idle server of another
  // worker moving over, a released one, or a new login), or an error right away. `share`
  // ([apps] max_server_conn) may be null.
  AcquireResult acquire_now(Waiter& waiter, AppShare* share);
  // Takes a queued waiter out of the queue. False if it was not queued (a hand-off to it may
  // be on its way: its deliver() will still be called).
  bool cancel_wait(Waiter& waiter);
  // The same as a coroutine with a deadline (the welcome's first login of a pool).
  asio::awaitable<AcquireResult> acquire(net::Reactor& reactor, unsigned worker,
                                         Clock::time_point deadline);
  // Gives a leased server back, on the worker that owns its socket; `reusable` = clean
  // (idle, no pending results). `share` is what acquire_now() was given.
  void release(ServerPtr server, bool reusable, AppShare* share = nullptr);
  // The share of `application` in this pool (created with `cap` when new; the cap follows
  // later values). The pointer stays valid for the pool's lifetime.
  AppShare* app_share(const std::string& application, int cap);

  // Parameters the server reports at login, replayed to clients in their welcome: shared and
  // never changed once set, so a login takes a reference, not a copy of every string.
  std::shared_ptr<const ParamSet> defaults() const;

  // Periodic upkeep: idle timeout, lifetime, min_pool_size. Called by the janitor.
  void maintain(Clock::time_point now);
  // Closes idle servers and marks leased ones to be closed on release (RECONNECT, shutdown).
  void close_all(bool include_leased);

  // Resilience (docs/operations.md). Whether `backend` (one per host and port, with its
  // breaker) is one of those this pool connects to.
  bool uses(const Backend& backend) const;
  // The breaker of every backend of the pool is not closed: new logins are told 57P03 (the
  // pool's mutex to find the backends, then a relaxed load of each one's breaker).
  bool refuses_logins() const;
  // Which error a client that waited query_wait_timeout gets: 53300 when the pool was full,
  // 08001 when the backend could not be reached (the last login failed, or none finished).
  Err wait_timeout_error() const;
  // The facts that explain a pool error to a client (the breaker's state, the last error, the
  // pool's occupancy), read when the error is written; util::explain() words them.
  PoolCondition condition() const;
  // Every queued waiter gets `code` now (breaker opened, shutdown drain).
  void fail_waiters(Err code);
  // Reclaim under pressure: how many of `wanted` idle transactions of this pool the caller may
  // end for the clients waiting (PoolCore::grant_reclaims), and how many were waiting.
  struct ReclaimGrant {
    int granted = 0;
    int waiting = 0;
  };
  ReclaimGrant grant_reclaims(int wanted);
  // Closes the idle servers connected to `backend` (one host of the pool's went away).
  void evict_idle_of(const Backend& backend, std::string_view why);
  // A leased server of this pool ended under its client (EOF or its FATAL); `server` is that
  // connection, if the session still has it.
  void server_lost(const ServerConn* server);
  // Half-open breaker of `backend`: opens the one connection to it that decides (login +
  // server_check_query). False when this pool cannot open one now (paused, at its limits).
  bool launch_probe(Backend& backend);
  Clock::time_point last_login_success() const;
  // Wakes waiters that could now get a connection because a db/user-wide slot freed up.
  void capacity_freed();
  // Closes one idle server for another pool's waiter (PoolManager::make_room); false if none.
  bool evict_one_idle();

  PoolStats stats() const;
  // Changes when the login target does (and on RECONNECT): servers of another are closed.
  std::uint32_t generation() const;
  // Idle servers (state idle or used), for SHOW SERVERS; described under the pool mutex (an
  // idle server may be taken and closed as soon as it is released).
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
  // One host of the login target with the backend that stands for it.
  struct Target {
    config::ServerAddress address;
    Backend* backend = nullptr;
  };
  using Targets = std::vector<Target>;
  // What a login needs from the pool, read under its mutex when the login is decided (shared
  // pointers: copying them there allocates nothing).
  struct LoginPlan {
    std::shared_ptr<const PoolSettings> settings;
    std::shared_ptr<const Targets> targets;
    int failures_in_row = 0;
    std::uint32_t generation = 0;
  };
  struct LoginResult;

  // The outside facts the policy is given (two relaxed loads).
  Conditions conditions_locked(Clock::time_point now) const;
  // Under the mutex, after a decision: a waiter taken out of the queue for a hand-off that is
  // posted to another thread must stay alive until it is delivered.
  void keep_waiters_locked(PoolActions& actions) const;
  LoginPlan login_plan_locked() const;
  // Runs `decision(conditions, actions)` on the policy under the mutex, then carries out the
  // actions with it released. `probe`: the backend whose half-open breaker the login it decides
  // on tests.
  template <typename Decision>
  void decide(Clock::time_point now, Decision&& decision, Backend* probe = nullptr);
  // Hand-offs, closes, logins, the log and the other pools, in that order.
  void execute(PoolActions& actions, const LoginPlan& plan, Backend* probe = nullptr);
  // Starts the logins the policy decided on. After failed attempts each waits for the
  // reconnect backoff first (pool/breaker.hpp); a probe does not, and tries only its backend.
  void spawn_logins(const std::vector<unsigned>& launches, const LoginPlan& plan, Backend* probe);
  // One login: the hosts in the order load_balance_hosts gives, skipping those whose breaker
  // is open, moving on to the next when one cannot be reached.
  asio::awaitable<void> log_in(net::Reactor& reactor, unsigned worker, LoginPlan plan,
                               std::optional<std::string> key, Millis delay, Backend* probe);
  // Where the next login starts in `targets` (an index that counts up; taken modulo the hosts).
  std::size_t first_host(const Targets& targets, config::LoadBalanceHosts mode);
  // The host `attempt` was made toward could not be reached (or refused pgwarden): under
  // disable, later logins start at the next one. `trying_next`: this login goes on to another
  // host, so its breaker hears of it here (else login_finished() tells it).
  void host_failed(const LoginResult& attempt, bool trying_next);
  // The targets of `settings` (PoolManager::backend_for each host), each breaker configured.
  std::shared_ptr<const Targets> targets_for(const PoolSettings& settings);
  // Some host takes logins (its breaker is closed): one relaxed load per host.
  static bool any_accepts(const Targets& targets);
  void login_finished(LoginResult result);
  // Completes a hand-off: directly on the waiter's own worker, else by moving the socket's
  // registration through the owner's thread to the waiter's.
  void complete(Handoff handoff);
  void close_on_owner(ServerPtr server);
  // A server idle in this pool spoke or closed: evict it (on its owner's thread).
  friend class ServerConn;
  void evict_idle(ServerConn& server);

  PoolManager& manager_;
  const std::string database_;
  const std::string user_;
  std::atomic<config::PoolMode> mode_;
  std::atomic<Millis::rep> check_delay_ms_{-1};  // server_check_delay, -1 when checks are off
  std::atomic<int> max_prepared_statements_{0};

  mutable util::PoolMutex mutex_;  // guards the four below, and the AppShares' counts
  PoolCore core_;
  std::shared_ptr<const PoolSettings> settings_;
  std::shared_ptr<const Targets> targets_;  // never empty; replaced with the login target
  std::shared_ptr<const ParamSet> defaults_;
  // load_balance_hosts: where the next login starts in the host list (round-robin moves it on
  // for every login; disable only when its host fails). Counts up; taken modulo the hosts.
  std::atomic<std::size_t> next_host_{0};

  util::LeafMutex shares_mutex_;  // guards the map only (a lookup per login, not under mutex_)
  std::unordered_map<std::string, AppShare> app_shares_;  // node-based: pointers stay valid

  std::unique_ptr<StatSlot[]> stat_slots_;
  mutable util::LeafMutex stats_mutex_;  // the period's figures: janitor and console only
  StatValues stats_at_roll_;
  StatValues stats_period_delta_;
  Clock::time_point stats_rolled_at_ = Clock::now();
  Clock::duration stats_period_length_{};
};

// Owns all pools and the shared resources they need (worker io_contexts, counters, keys).
class PoolManager {
 public:
  // `tls`: the process's TLS contexts (servers are reached with its server side); null: none.
  explicit PoolManager(std::vector<net::Reactor*> workers, const net::TlsStore* tls = nullptr)
      : workers_(std::move(workers)), tls_(tls) {}

  // The pool for (database, user), created with `settings` when new.
  Pool& get(const std::string& database, const std::string& user,
            const std::function<PoolSettings()>& settings);
  void for_each(const std::function<void(Pool&)>& fn);
  // A new configuration: every pool takes its new settings (pool/settings.cpp).
  void apply(const config::Config& config, const config::Secrets& secrets);
  void maintain(Clock::time_point now);

  net::Reactor& reactor(unsigned worker) { return *workers_.at(worker); }
  unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
  KeyStore& keys() { return keys_; }
  std::shared_ptr<const net::TlsContext> server_tls() const {
    return tls_ ? tls_->server_side() : nullptr;
  }
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
  // DISABLE / ENABLE (admin console): a login to a disabled database, or one whose auth_query
  // runs in it, is refused once authenticated; sessions already in go on. Either may be
  // repeated, as in PgBouncer. Nothing disabled (the usual case) costs a login no lock.
  void set_database_disabled(const std::string& database, bool disabled);
  bool database_disabled(const std::string& database);
  std::set<std::string> disabled_databases();

  // Rolls every pool's statistics when stats_period has passed since the last roll.
  void roll_stats(Clock::time_point now, Millis period);

  // Backends (host, port) with their circuit breakers, shared by the pools connecting there.
  Backend& backend_for(const std::string& host, int port);
  std::vector<BackendStatus> backend_statuses(Clock::time_point now);
  // Called by a pool after its login changed the breaker: fails the waiters of every pool of
  // the backend (opened), logs.
  void breaker_changed(Backend& backend, Breaker::Change change);
  // The backend went away as a whole (crash, restart): every idle connection to it goes.
  void backend_gone(Backend& backend, std::string_view why);
  // Shutdown drain: no new lease is handed out from now on and every waiter is told `code`.
  void begin_drain(Err code);
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  std::shared_ptr<std::atomic<int>> db_counter(const std::string& database);
  std::shared_ptr<std::atomic<int>> user_counter(const std::string& user);
  void capacity_freed(const std::string& database, const std::string& user);
  // A waiter of `requester` needs a slot of max_db_connections or max_user_connections that
  // other pools hold idle: the first of them with an idle server closes one, and the freed
  // slot wakes the requester (capacity_freed).
  void make_room(const Pool& requester);

 private:
  std::vector<net::Reactor*> workers_;
  const net::TlsStore* tls_;
  util::PoolManagerMutex mutex_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> db_counts_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> user_counts_;
  KeyStore keys_;
  std::atomic<std::uint64_t> server_ids_{0};
  Clock::time_point stats_rolled_at_ = Clock::now();
  bool paused_all_ = false;                   // under mutex_
  std::set<std::string> paused_databases_;    // under mutex_
  std::set<std::string> disabled_databases_;  // under mutex_
  std::atomic<bool> any_disabled_{false};     // disabled_databases_ is not empty
  // Open breakers whose wait is over get their probe (worker 0's janitor, from maintain()).
  void probe_backends(Clock::time_point now);
  util::BackendsMutex backends_mutex_;  // after pool_manager's (a new pool finds its backend)
  std::map<std::string, std::unique_ptr<Backend>> backends_;
  std::atomic<bool> draining_{false};
};

// Opens one server connection and logs in (startup, auth, parameters, BackendKeyData, and
// connect_query). Bounded by server_connect_timeout.
struct LoginOutcome {
  ServerPtr server;
  Err error = Err::internal;
  std::string detail;
  // The failure says the backend cannot be reached or will not let pgwarden in (connect
  // errors, timeouts, authentication toward the server, FATAL 08xxx / 57P01-57P03 at login):
  // the circuit breaker counts it. A server's other errors (a missing database, a failing
  // connect_query) are about the pool's settings, not the backend's health.
  bool connection_failure = false;
  // The server refused the credentials (a 28xxx FATAL): one user's password or pg_hba.conf
  // line, unless no pool of the backend is getting in (Pool::login_finished).
  bool auth_failure = false;
};
asio::awaitable<LoginOutcome> login_server(net::Reactor& reactor, unsigned worker,
                                           const PoolSettings& settings,
                                           const config::ServerAddress& address,
                                           std::optional<std::string> client_key);

// Runs a query on an idle server outside any client (reset, check, ROLLBACK, SET), discarding
// its results but keeping ParameterStatus. True when the server ends ReadyForQuery 'I'.
asio::awaitable<bool> run_internal_query(ServerConn& server, std::string_view sql,
                                         std::chrono::milliseconds timeout);

// auth_query: runs `sql` with $1 = `user` (extended protocol, a text parameter) on an idle
// server. `found`: a row came back; `secret`: its second column (nullopt: NULL, an expired or
// password-less role). `error`: why the query failed (the server's message, never a secret);
// the server is reusable only if `reusable`.
struct SecretLookup {
  bool found = false;
  std::optional<std::string> secret;
  std::string error;
  bool reusable = false;
};
asio::awaitable<SecretLookup> run_auth_query(ServerConn& server, std::string_view sql,
                                             std::string_view user,
                                             std::chrono::milliseconds timeout);

// Sends a CancelRequest for the backend to `endpoint` over a new connection.
asio::awaitable<void> send_cancel(net::Reactor& reactor, net::Endpoint endpoint, std::int32_t pid,
                                  std::int32_t key);

}  // namespace pgw::pool
