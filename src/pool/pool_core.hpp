// The policy of one pool, as a deterministic state machine: which server a client gets, who
// waits and in what order, when a login is started, when a server is closed, how the limits
// (pool size, reserve, max_db_connections / max_user_connections, [apps] shares, max_waiting)
// and the lifetimes apply, and what a failed login means for the clients waiting.
//
// It does no I/O, reads no clock, takes no lock and logs nothing. Every operation is given the
// time and the outside facts it depends on (`Conditions`: the breaker's verdict, the shutdown
// drain), and answers with `PoolActions`: servers to hand to waiters, logins to start, servers
// to close. `Pool` (pool.hpp) is the executor: it calls the core under its mutex and carries
// the actions out afterwards, on the right threads. So the whole pooling policy is unit-tested
// with explicit timestamps (tests/unit/pool_core_test.cpp), as the breaker is.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/errors.hpp"
#include "util/intrusive_list.hpp"

namespace pgw::pool {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// What the policy knows of a server connection (pool::ServerConn derives from it; the tests
// use plain ones).
struct PooledServer {
  explicit PooledServer(unsigned owner) : worker(owner) {}
  PooledServer(const PooledServer&) = delete;
  PooledServer& operator=(const PooledServer&) = delete;
  virtual ~PooledServer() = default;

  unsigned worker;  // whose reactor the socket is registered with
  Clock::time_point created{};
  Clock::time_point last_used{};
  // The pool's login target when this server's login started (PoolCore::generation()): a
  // server of an older one is closed instead of reused.
  std::uint32_t generation = 0;
  bool close_needed = false;  // RECONNECT, a failed reset: close when it comes back
};
using PooledPtr = std::unique_ptr<PooledServer>;

// One application's share of a pool ([apps] max_server_conn): how many of the pool's servers
// its clients hold, and how many they may hold. Owned by the pool, guarded by its mutex.
struct AppShare {
  int cap = 0;  // 0 = no cap
  int leased = 0;
};

// A party queued for a server (pool::Waiter adds how it is told). Intrusive: queuing allocates
// nothing. A queued waiter is alive; it leaves the queue (PoolCore::cancel_wait) before it goes.
class PoolWaiter : public util::ListHook<PoolWaiter> {
 public:
  unsigned waiter_worker() const { return worker_; }

 protected:
  explicit PoolWaiter(unsigned worker) : worker_(worker) {}
  ~PoolWaiter() = default;

 private:
  friend class PoolCore;
  unsigned worker_;
  AppShare* share_ = nullptr;
  Clock::time_point since_{};
};

// The limits the policy applies (from PoolSettings: pool/pool.hpp, limits_of()).
struct PoolLimits {
  int pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  Millis reserve_pool_timeout{5000};
  int max_db_connections = 0;       // 0 = unlimited; counted across the database's pools
  int max_user_connections = 0;     // 0 = unlimited; counted across the user's pools
  int max_waiting = 0;              // clients queued at once; 0 = unlimited
  Millis server_lifetime{3600000};  // 0: a server is used once (PgBouncer's meaning)
  Millis server_idle_timeout{600000};
  Millis server_login_retry{15000};
  Millis server_check_delay{30000};  // negative: idle servers are never checked
};

// The outside facts an operation depends on, read by the executor.
struct Conditions {
  Clock::time_point now;
  bool breaker_closed = true;  // the backend's circuit breaker lets logins through
  bool draining = false;       // shutdown drain: no new lease, no new login
};

// A server (or an error) for a waiter taken out of the queue.
struct Handoff {
  PoolWaiter* waiter = nullptr;
  PooledPtr server;  // null: `error` with `detail`
  Err error = Err::internal;
  std::string detail;
  std::shared_ptr<void> keep;  // the executor's: keeps a waiter on another thread alive
};

// What an operation asks the executor to do, in this order: hand-offs, closes, logins.
struct PoolActions {
  // Almost always none or one, so the first is kept inline: no allocation when a released
  // server goes straight to a waiter, once per transaction under load.
  Handoff handoff;
  std::vector<Handoff> more_handoffs;
  std::vector<PooledPtr> to_close;  // on their owner's thread
  std::vector<unsigned> launches;   // one login each, on that worker
  bool capacity_freed = false;      // a database- or user-wide slot came free: other pools
  // A waiter needs a login but max_db_connections or max_user_connections is taken by other
  // pools: one of their idle servers may be closed to make room (PgBouncer does the same).
  bool shared_limit_reached = false;
  bool took_reserve = false;  // a login beyond pool_size (reserve_pool_timeout)

  void add(Handoff handoff);
  template <typename F>
  void for_each_handoff(F&& fn) {
    if (handoff.waiter != nullptr) fn(handoff);
    for (auto& h : more_handoffs) fn(h);
  }
};

// The result of PoolCore::acquire().
struct Acquired {
  PooledPtr server;     // an idle server of the waiter's own worker: use it now
  bool queued = false;  // wait: a hand-off comes later (it may be in the actions already)
  Err error = Err::internal;
  std::string detail;  // argument of the error text
};

// A snapshot of the counts, for SHOW POOLS and the health lines.
struct PoolCounts {
  int idle = 0, active = 0, connecting = 0, waiting = 0, total = 0;
  int used = 0;  // of the idle ones: due for server_check_query before reuse
  Clock::duration max_wait{};
  bool paused = false;
  std::uint64_t logins_failed = 0;
};

// How a login that produced no server ended.
enum class LoginFailure : std::uint8_t {
  skipped,     // not attempted: the breaker opened while it waited to retry
  connection,  // the backend cannot be reached or refused pgwarden (the breaker counts it)
  settings,    // an error of this pool's settings (no such database, connect_query)
};

class PoolCore {
 public:
  PoolCore(unsigned workers, PoolLimits limits, std::shared_ptr<std::atomic<int>> db_count,
           std::shared_ptr<std::atomic<int>> user_count);
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;
  ~PoolCore();

  // --- configuration
  const PoolLimits& limits() const { return limits_; }
  // New limits: waiters may be served at once if the pool grew.
  void set_limits(const PoolLimits& limits, const Conditions& at, PoolActions& out);
  // The login target changed (or every server must go: RECONNECT, a removed database): idle
  // servers close now, leased ones when they come back, and logins start over fresh.
  void retarget(bool forget_failures, PoolActions& out);
  std::uint32_t generation() const { return generation_; }

  // --- leasing
  // An idle server of the waiter's worker at once (LIFO: the warmest), else `queued` (an idle
  // server of another worker moving over, a released one or a new login comes by hand-off),
  // or an error right away. `share` may be null.
  Acquired acquire(PoolWaiter& waiter, AppShare* share, const Conditions& at, PoolActions& out);
  // False if `waiter` was not queued (a hand-off to it may be on its way).
  bool cancel_wait(PoolWaiter& waiter);
  // A leased server comes back; `reusable` = clean. `share` is what acquire() was given.
  void release(PooledPtr server, bool reusable, AppShare* share, const Conditions& at,
               PoolActions& out);
  // Sets the cap of a share (the map of shares lives with the executor).
  void set_share_cap(AppShare& share, int cap) { share.cap = cap; }

  // --- logins (each launch ends in exactly one of these)
  void login_succeeded(PooledPtr server, const Conditions& at, PoolActions& out);
  // `breaker_just_opened`: this failure opened the breaker (the executor fails the waiters of
  // every pool of the backend then).
  void login_failed(LoginFailure kind, bool breaker_just_opened, Err error, std::string detail,
                    const Conditions& at, PoolActions& out);
  int failures_in_row() const { return failures_in_row_; }
  Clock::time_point last_success() const { return last_success_; }

  // --- idle servers
  // Takes an idle server that spoke or closed out of the idle list (it still counts); null
  // when it is not idle here (on its way to a client: that side deals with it).
  PooledPtr take_idle(const PooledServer& server);
  // A server taken by take_idle() is gone: counts, and waiters may get a new login.
  void closed(PooledPtr server, const Conditions& at, PoolActions& out);
  // Every idle server out and to be closed (the backend went away, PAUSE, a new target).
  void close_idle(PoolActions& out);
  // Closes the least recently used idle server (another pool's waiter needs its slot of a
  // database- or user-wide limit); false if none is idle.
  bool close_one_idle(PoolActions& out);
  // The idle servers `select` picks, out and to be closed (one of the pool's hosts went away).
  template <typename Select>
  void close_idle_if(Select select, PoolActions& out) {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < idle_.size(); ++i) {
      if (select(static_cast<const PooledServer&>(*idle_[i]))) {
        out.to_close.push_back(std::move(idle_[i]));
      } else if (kept++ != i) {
        idle_[kept - 1] = std::move(idle_[i]);
      }
    }
    const int closed = static_cast<int>(idle_.size() - kept);
    idle_.resize(kept);
    total_ -= closed;
    uncount(closed);
  }

  // --- upkeep (the janitor): idle timeout, lifetime, surplus, reserve, min_pool_size
  void maintain(const Conditions& at, PoolActions& out);
  // A database- or user-wide slot freed up elsewhere: a waiter here may get a login.
  void capacity_freed(const Conditions& at, PoolActions& out);
  // Half-open breaker: one login that decides. False when this pool cannot open one now.
  bool launch_probe(const Conditions& at, PoolActions& out);

  // --- PAUSE / RESUME: while paused no server is handed out or opened, idle servers are
  // closed and servers coming back are closed; clients queue.
  void pause(PoolActions& out);
  void resume(const Conditions& at, PoolActions& out);
  bool paused() const { return paused_; }

  // Every queued waiter gets `error` now (breaker opened, shutdown drain).
  void fail_waiters(Err error, const std::string& detail, PoolActions& out);

  // --- reclaim under pressure (docs/leak-guard.md#reclaim-under-pressure)
  // How many of `wanted` leases idle in a transaction a janitor may end now for the clients
  // waiting here: one per waiting client, less the reclaims granted in the last kReclaimSettle
  // whose servers have not come back yet (each server that comes back settles one). The
  // settle time bounds the effect of a reclaimed server that is closed instead of returned.
  int grant_reclaims(int wanted, Clock::time_point now);
  static constexpr std::chrono::seconds kReclaimSettle{1};

  // --- facts
  // Which error a client that waited query_wait_timeout gets: 53300 when the pool was full,
  // 08001 when the backend could not be reached (the last login failed, or none finished).
  Err wait_timeout_error(bool breaker_closed) const;
  PoolCounts counts(Clock::time_point now) const;
  int total() const { return total_; }
  int connecting() const { return connecting_; }
  int waiting() const { return waiting_; }
  const std::string& last_error() const { return last_error_; }
  Err last_error_code() const { return last_error_code_; }
  // Whether an idle server is due for server_check_query before reuse.
  bool check_due(const PooledServer& server, Clock::time_point now) const;
  // The idle servers, most recently used last.
  const std::vector<PooledPtr>& idle() const { return idle_; }

 private:
  using WaitList = util::IntrusiveList<PoolWaiter>;

  bool can_open(bool use_reserve, const Conditions& at) const;
  // A login failed on the pool's settings less than server_login_retry ago.
  bool login_retry_pending(Clock::time_point now) const {
    return last_failure_ != Clock::time_point{} && now - last_failure_ < limits_.server_login_retry;
  }
  // Servers of the current target, logging in, idle or leased: what a waiter may still get.
  int current_servers() const { return total_ - stale_; }
  bool eligible(const PoolWaiter& waiter) const;
  void enqueue(PoolWaiter& waiter, Clock::time_point now);
  void dequeue(PoolWaiter& waiter);
  PoolWaiter* oldest_waiter() const;
  // The waiter a server of `worker` goes to: the oldest eligible waiter of that worker, unless
  // another worker's has waited much longer (bounded unfairness, fewer cross-thread moves).
  PoolWaiter* next_waiter(unsigned worker) const;
  // Reserves a login on `worker` (false at the database- or user-wide limit).
  bool launch(unsigned worker, PoolActions& out);
  // One login per waiter beyond those already connecting, oldest first, while limits allow.
  void launch_for_waiters(const Conditions& at, PoolActions& out);
  void take(PoolWaiter& waiter, PooledPtr server, PoolActions& out);
  // Hands `server` to a waiter or parks it idle (closes it while paused).
  void place(PooledPtr server, const Conditions& at, PoolActions& out);
  // After a share dropped below its cap: idle servers to waiters that were held back.
  void dispatch_idle(PoolActions& out);
  // One server fewer: counts, and the server to close.
  void drop(PooledPtr server, PoolActions& out);
  void uncount(int servers);

  PoolLimits limits_;
  std::shared_ptr<std::atomic<int>> db_count_;
  std::shared_ptr<std::atomic<int>> user_count_;
  std::vector<PooledPtr> idle_;    // most recently used last (LIFO reuse)
  std::vector<WaitList> waiters_;  // per worker, each FIFO
  int waiting_ = 0;
  int total_ = 0;       // servers that exist or are being opened, leased ones included
  int connecting_ = 0;  // of which still logging in
  int stale_ = 0;       // of which leased from before the last retarget (close on release)
  int reserve_in_use_ = 0;
  int reclaims_pending_ = 0;  // granted, their servers not back yet
  Clock::time_point reclaims_granted_at_{};
  bool paused_ = false;
  std::uint32_t generation_ = 0;
  // Logins: what the last failure said, and the breaker's inputs.
  std::string last_error_;
  Err last_error_code_ = Err::server_login_failed;
  Clock::time_point last_failure_{};  // of a settings failure (the fast-fail window)
  std::uint64_t logins_failed_ = 0;
  int failures_in_row_ = 0;  // connection-class failures since the last success
  Clock::time_point last_success_{};
};

}  // namespace pgw::pool
