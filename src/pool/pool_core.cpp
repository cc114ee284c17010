#include "pool/pool_core.hpp"

#include <algorithm>

namespace pgw::pool {
namespace {

// Reserves one slot of a shared limit (0 = unlimited). Lock-free: pools of one database may
// run on different threads.
bool try_take(std::atomic<int>& counter, int limit) {
  int current = counter.load(std::memory_order_relaxed);
  do {
    if (limit > 0 && current >= limit) return false;
  } while (!counter.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel));
  return true;
}

// How much longer another worker's client may have waited before it is served first: a
// server stays on its worker (no cross-thread move) unless that would be unfair by more.
constexpr auto kLocalPreference = std::chrono::milliseconds(5);

Handoff handoff_to(PoolWaiter& waiter, PooledPtr server) {
  Handoff h;
  h.waiter = &waiter;
  h.server = std::move(server);
  return h;
}

}  // namespace

void PoolActions::add(Handoff h) {
  if (handoff.waiter == nullptr) {
    handoff = std::move(h);
  } else {
    more_handoffs.push_back(std::move(h));
  }
}

PoolCore::PoolCore(unsigned workers, PoolLimits limits, std::shared_ptr<std::atomic<int>> db_count,
                   std::shared_ptr<std::atomic<int>> user_count)
    : limits_(limits),
      db_count_(std::move(db_count)),
      user_count_(std::move(user_count)),
      waiters_(workers) {}

PoolCore::~PoolCore() {
  // The servers still idle leave the database- and user-wide counts with the pool.
  uncount(static_cast<int>(idle_.size()));
}

// ---------------------------------------------------------------------------------------------
// Configuration

void PoolCore::set_limits(const PoolLimits& limits, const Conditions& at, PoolActions& out) {
  limits_ = limits;
  launch_for_waiters(at, out);  // a larger pool may let waiters in right away
}

void PoolCore::retarget(bool forget_failures, PoolActions& out) {
  ++generation_;
  if (forget_failures) {
    failures_in_row_ = 0;
    last_failure_ = {};  // the cached error was the old target's: the next client tries anew
  }
  close_idle(out);
  // Every server left but those logging in is leased, and closes when it comes back.
  stale_ = total_ - connecting_;
}

// ---------------------------------------------------------------------------------------------
// Leasing

Acquired PoolCore::acquire(PoolWaiter& waiter, AppShare* share, const Conditions& at,
                           PoolActions& out) {
  Acquired result;
  if (at.draining) {
    // Shutdown drain: a client that has no server is not inside a transaction; it gets no new
    // one.
    result.error = Err::shutting_down;
    return result;
  }
  waiter.share_ = share;
  const bool capped = share && share->cap > 0 && share->leased >= share->cap;
  if (!idle_.empty() && !paused_ && !capped) {
    // LIFO: the most recently used server is the warmest. Prefer one on this worker.
    auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                           [&](const PooledPtr& s) { return s->worker == waiter.worker_; });
    auto pick = it == idle_.rend() ? std::prev(idle_.end()) : std::prev(it.base());
    PooledPtr server = std::move(*pick);
    idle_.erase(pick);
    if (share) ++share->leased;
    if (server->worker == waiter.worker_) {
      result.server = std::move(server);
      return result;
    }
    // Idle on another worker: it moves over and arrives by hand-off.
    out.add(handoff_to(waiter, std::move(server)));
    result.queued = true;
    return result;
  }
  if (current_servers() == 0 && login_retry_pending(at.now)) {
    // A login failed on this pool's settings a moment ago and no server can come back to
    // serve this request: PgBouncer's fast fail.
    result.error = last_error_code_;
    result.detail = last_error_;
    return result;
  }
  if (!at.breaker_closed) {
    // No server is on its way, so nobody waits (57P03 now).
    result.error = Err::backend_unavailable;
    return result;
  }
  if (limits_.max_waiting > 0 && waiting_ >= limits_.max_waiting) {
    result.error = Err::max_waiting;
    return result;
  }
  enqueue(waiter, at.now);
  if (!capped && can_open(false, at) && connecting_ < waiting_) launch(waiter.worker_, out);
  result.queued = true;
  return result;
}

bool PoolCore::cancel_wait(PoolWaiter& waiter) {
  if (!waiter.is_linked()) return false;
  dequeue(waiter);
  return true;
}

void PoolCore::release(PooledPtr server, bool reusable, AppShare* share, const Conditions& at,
                       PoolActions& out) {
  if (reclaims_pending_ > 0) --reclaims_pending_;
  const bool was_capped = share && share->cap > 0 && share->leased >= share->cap;
  if (share && share->leased > 0) --share->leased;
  const bool expired =
      limits_.server_lifetime.count() == 0 || at.now - server->created > limits_.server_lifetime;
  const bool too_many = total_ > limits_.pool_size + reserve_in_use_;
  if (!reusable || server->close_needed || expired || too_many ||
      server->generation != generation_) {
    if (too_many && reserve_in_use_ > 0) --reserve_in_use_;
    if (server->generation != generation_ && stale_ > 0) --stale_;
    drop(std::move(server), out);
    if (waiting_ > 0 && can_open(false, at)) {
      if (PoolWaiter* w = oldest_waiter()) launch(w->worker_, out);
    }
  } else {
    server->last_used = at.now;
    place(std::move(server), at, out);
  }
  // Waiters held back by this application's cap may take idle servers now.
  if (was_capped) dispatch_idle(out);
}

int PoolCore::grant_reclaims(int wanted, Clock::time_point now) {
  if (reclaims_pending_ > 0 && now - reclaims_granted_at_ > kReclaimSettle) reclaims_pending_ = 0;
  const int granted = std::clamp(waiting_ - reclaims_pending_, 0, std::max(wanted, 0));
  if (granted > 0) {
    reclaims_pending_ += granted;
    reclaims_granted_at_ = now;
  }
  return granted;
}

// ---------------------------------------------------------------------------------------------
// Logins

void PoolCore::login_succeeded(PooledPtr server, const Conditions& at, PoolActions& out) {
  --connecting_;
  failures_in_row_ = 0;
  last_success_ = at.now;
  if (server->generation != generation_) {
    // Started before RECONNECT or a new target: it is not what the clients were promised.
    drop(std::move(server), out);
    if (waiting_ > 0 && can_open(false, at)) {
      if (PoolWaiter* w = oldest_waiter()) launch(w->worker_, out);
    }
    return;
  }
  place(std::move(server), at, out);
}

void PoolCore::login_failed(LoginFailure kind, bool breaker_just_opened, Err error,
                            std::string detail, const Conditions& at, PoolActions& out) {
  --connecting_;
  --total_;
  uncount(1);
  out.capacity_freed = true;
  switch (kind) {
    case LoginFailure::skipped:
      // Nothing was attempted; if the breaker's opening left waiters here, tell them.
      if (total_ == 0) fail_waiters(Err::backend_unavailable, {}, out);
      return;
    case LoginFailure::connection:
      ++logins_failed_;
      ++failures_in_row_;
      last_error_ = std::move(detail);
      last_error_code_ = error;
      if (at.breaker_closed) {
        // Waiting clients keep waiting for the next attempt (the executor delays it by the
        // reconnect backoff).
        if (waiting_ > 0) launch_for_waiters(at, out);
      } else if (!breaker_just_opened && total_ == 0) {
        // Open already (this attempt started before it opened): nothing will serve them.
        fail_waiters(Err::backend_unavailable, {}, out);
      }
      // Just opened: the executor fails the waiters of every pool of the backend.
      return;
    case LoginFailure::settings:
      // PgBouncer's fast fail: with no server of the current target to wait for, connected or
      // logging in (RECONNECT's leased ones close when they come back), waiting clients get the
      // error now, and new requests get it at once for server_login_retry. No new login starts in
      // that time either: waiters that stay wait for a server to come back, not for a retry
      // that would fail the same way, over and over, against the server.
      ++logins_failed_;
      last_error_ = std::move(detail);
      last_error_code_ = error;
      last_failure_ = at.now;
      if (current_servers() <= 0) fail_waiters(error, last_error_, out);
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Idle servers and upkeep

PooledPtr PoolCore::take_idle(const PooledServer& server) {
  auto it = std::find_if(idle_.begin(), idle_.end(),
                         [&](const PooledPtr& s) { return s.get() == &server; });
  if (it == idle_.end()) return nullptr;
  PooledPtr taken = std::move(*it);
  idle_.erase(it);
  return taken;
}

void PoolCore::closed(PooledPtr server, const Conditions& at, PoolActions& out) {
  drop(std::move(server), out);
  if (waiting_ > 0 && can_open(false, at)) launch_for_waiters(at, out);
}

void PoolCore::close_idle(PoolActions& out) {
  const int n = static_cast<int>(idle_.size());
  total_ -= n;
  uncount(n);
  for (auto& server : idle_) out.to_close.push_back(std::move(server));
  idle_.clear();
}

bool PoolCore::close_one_idle(PoolActions& out) {
  if (idle_.empty()) return false;
  PooledPtr oldest = std::move(idle_.front());  // most recently used last
  idle_.erase(idle_.begin());
  drop(std::move(oldest), out);
  return true;
}

void PoolCore::maintain(const Conditions& at, PoolActions& out) {
  for (auto it = idle_.begin(); it != idle_.end();) {
    const PooledServer& server = **it;
    const bool idle_too_long = limits_.server_idle_timeout.count() > 0 &&
                               at.now - server.last_used > limits_.server_idle_timeout;
    const bool too_old =
        limits_.server_lifetime.count() > 0 && at.now - server.created > limits_.server_lifetime;
    const bool surplus = total_ > limits_.pool_size;
    if ((idle_too_long && total_ > limits_.min_pool_size) || too_old || surplus ||
        server.close_needed) {
      out.to_close.push_back(std::move(*it));
      it = idle_.erase(it);
      --total_;
      uncount(1);
    } else {
      ++it;
    }
  }
  // reserve_pool_size: a client waiting longer than reserve_pool_timeout gets connections
  // beyond pool_size, one per upkeep round.
  if (limits_.reserve_pool_size > 0 && !paused_ && connecting_ == 0) {
    const PoolWaiter* oldest = oldest_waiter();
    if (oldest && at.now - oldest->since_ >= limits_.reserve_pool_timeout && can_open(true, at) &&
        launch(oldest->worker_, out)) {
      ++reserve_in_use_;
      out.took_reserve = true;
    }
  }
  // min_pool_size: keep warm connections once the pool is in use, spread over the workers.
  while (total_ < limits_.min_pool_size && connecting_ == 0 && can_open(false, at)) {
    if (!launch(static_cast<unsigned>(out.launches.size() % waiters_.size()), out)) break;
  }
  // Waiters with room in this pool but none in max_db_connections / max_user_connections: the
  // slots may have gone idle in other pools since the last try. The refused launch asks for
  // one of them (shared_limit_reached).
  if (waiting_ > 0 && connecting_ == 0 && can_open(false, at)) {
    if (PoolWaiter* w = oldest_waiter()) launch(w->worker_, out);
  }
}

void PoolCore::capacity_freed(const Conditions& at, PoolActions& out) {
  if (waiting_ > 0 && connecting_ == 0 && can_open(false, at)) {
    if (PoolWaiter* w = oldest_waiter()) launch(w->worker_, out);
  }
}

bool PoolCore::launch_probe(const Conditions& at, PoolActions& out) {
  // The breaker is half-open (not closed), so can_open() would refuse: only the limits count.
  if (paused_ || at.draining || total_ >= limits_.pool_size + limits_.reserve_pool_size) {
    return false;
  }
  return launch(0, out);
}

void PoolCore::pause(PoolActions& out) {
  paused_ = true;
  close_idle(out);
}

void PoolCore::resume(const Conditions& at, PoolActions& out) {
  if (!paused_) return;
  paused_ = false;
  launch_for_waiters(at, out);
}

void PoolCore::fail_waiters(Err error, const std::string& detail, PoolActions& out) {
  for (auto& list : waiters_) {
    while (PoolWaiter* w = list.front()) {
      dequeue(*w);
      Handoff h;
      h.waiter = w;
      h.error = error;
      h.detail = detail;
      out.add(std::move(h));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Facts

Err PoolCore::wait_timeout_error(bool breaker_closed) const {
  // The backend is the reason when the last attempt failed, the breaker is not closed, or no
  // login has finished at all (every server still connecting: the server is not answering).
  const bool unreachable =
      failures_in_row_ > 0 || !breaker_closed || (total_ > 0 && total_ == connecting_);
  return unreachable ? Err::query_wait_unreachable : Err::query_wait_timeout;
}

bool PoolCore::check_due(const PooledServer& server, Clock::time_point now) const {
  return limits_.server_check_delay.count() >= 0 &&
         now - server.last_used > limits_.server_check_delay;
}

PoolCounts PoolCore::counts(Clock::time_point now) const {
  PoolCounts c;
  c.idle = static_cast<int>(idle_.size());
  c.connecting = connecting_;
  c.total = total_;
  c.active = total_ - connecting_ - c.idle;
  c.waiting = waiting_;
  if (const PoolWaiter* oldest = oldest_waiter()) c.max_wait = now - oldest->since_;
  for (const auto& server : idle_) {
    if (check_due(*server, now)) ++c.used;
  }
  c.paused = paused_;
  c.logins_failed = logins_failed_;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Internals

bool PoolCore::can_open(bool use_reserve, const Conditions& at) const {
  if (paused_) return false;  // PAUSE: no new server connections until RESUME
  // An open breaker: only its probe connects (launch_probe()). A drain opens nothing new.
  if (!at.breaker_closed || at.draining) return false;
  // server_login_retry after a login failed on the pool's settings: PgBouncer's wait too.
  if (login_retry_pending(at.now)) return false;
  const int limit = limits_.pool_size + (use_reserve ? limits_.reserve_pool_size : 0);
  return total_ < limit;
}

bool PoolCore::eligible(const PoolWaiter& waiter) const {
  return waiter.share_ == nullptr || waiter.share_->cap <= 0 ||
         waiter.share_->leased < waiter.share_->cap;
}

void PoolCore::enqueue(PoolWaiter& waiter, Clock::time_point now) {
  waiter.since_ = now;
  waiters_[waiter.worker_].insert(&waiter);
  ++waiting_;
}

void PoolCore::dequeue(PoolWaiter& waiter) {
  waiters_[waiter.worker_].erase(&waiter);
  --waiting_;
}

PoolWaiter* PoolCore::oldest_waiter() const {
  PoolWaiter* oldest = nullptr;
  for (const auto& list : waiters_) {
    PoolWaiter* first = list.front();
    if (first && (!oldest || first->since_ < oldest->since_)) oldest = first;
  }
  return oldest;
}

PoolWaiter* PoolCore::next_waiter(unsigned worker) const {
  auto first_eligible = [this](const WaitList& list) -> PoolWaiter* {
    for (PoolWaiter* w : list) {
      if (eligible(*w)) return w;
    }
    return nullptr;
  };
  PoolWaiter* local = worker < waiters_.size() ? first_eligible(waiters_[worker]) : nullptr;
  PoolWaiter* remote = nullptr;
  for (unsigned i = 0; i < waiters_.size(); ++i) {
    if (i == worker) continue;
    PoolWaiter* w = first_eligible(waiters_[i]);
    if (w && (!remote || w->since_ < remote->since_)) remote = w;
  }
  if (!local) return remote;
  if (remote && remote->since_ + kLocalPreference < local->since_) return remote;
  return local;
}

bool PoolCore::launch(unsigned worker, PoolActions& out) {
  // Database- and user-wide limits are shared with other pools; reserve them first.
  if (!try_take(*db_count_, limits_.max_db_connections)) {
    if (waiting_ > 0) out.shared_limit_reached = true;
    return false;
  }
  if (!try_take(*user_count_, limits_.max_user_connections)) {
    db_count_->fetch_sub(1);
    if (waiting_ > 0) out.shared_limit_reached = true;
    return false;
  }
  ++total_;
  ++connecting_;
  out.launches.push_back(worker);
  return true;
}

void PoolCore::launch_for_waiters(const Conditions& at, PoolActions& out) {
  int wanted = waiting_ - connecting_;
  for (auto& list : waiters_) {
    for (PoolWaiter* w : list) {
      if (wanted-- <= 0 || !can_open(false, at)) return;
      launch(w->worker_, out);
    }
  }
}

void PoolCore::take(PoolWaiter& waiter, PooledPtr server, PoolActions& out) {
  dequeue(waiter);
  if (waiter.share_) ++waiter.share_->leased;
  out.add(handoff_to(waiter, std::move(server)));
}

void PoolCore::place(PooledPtr server, const Conditions& at, PoolActions& out) {
  if (paused_) {
    // PAUSE: servers are closed as they come back.
    drop(std::move(server), out);
    return;
  }
  PoolWaiter* waiter = waiting_ > 0 ? next_waiter(server->worker) : nullptr;
  if (!waiter) {
    server->last_used = at.now;
    idle_.push_back(std::move(server));
    return;
  }
  take(*waiter, std::move(server), out);
}

void PoolCore::dispatch_idle(PoolActions& out) {
  while (!idle_.empty() && waiting_ > 0 && !paused_) {
    // Only shares can hold waiters back while servers are idle: the oldest that may go now.
    PoolWaiter* waiter = nullptr;
    for (auto& list : waiters_) {
      for (PoolWaiter* w : list) {
        if (eligible(*w) && (!waiter || w->since_ < waiter->since_)) waiter = w;
      }
    }
    if (!waiter) return;
    PooledPtr server = std::move(idle_.back());
    idle_.pop_back();
    take(*waiter, std::move(server), out);
  }
}

void PoolCore::drop(PooledPtr server, PoolActions& out) {
  --total_;
  uncount(1);
  out.capacity_freed = true;
  out.to_close.push_back(std::move(server));
}

void PoolCore::uncount(int servers) {
  if (servers == 0) return;
  db_count_->fetch_sub(servers);
  user_count_->fetch_sub(servers);
}

}  // namespace pgw::pool
