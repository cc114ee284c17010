#include "pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "net/turn_clock.hpp"

namespace pgw::pool {

// A finished (or skipped) login: what login_server() returned, and how it was started.
struct Pool::LoginResult {
  LoginOutcome outcome;
  Backend* backend = nullptr;  // the backend it was made toward
  bool probe = false;          // the one attempt of a half-open breaker
  bool skipped = false;        // not attempted: the breaker opened while it waited to retry
};

void ServerConn::on_ready(net::Connection& connection) {
  // Idle in the pool, a backend has nothing to say: a readable socket means a FATAL (admin
  // command, shutdown) followed by EOF, or an already closed connection.
  if (connection.readable() && pool != nullptr) pool->evict_idle(*this);
}

void KeyStore::put(const std::string& user, const std::string& client_key) {
  std::lock_guard lock(mutex_);
  keys_[user] = client_key;
}

std::optional<std::string> KeyStore::get(const std::string& user) const {
  std::lock_guard lock(mutex_);
  auto it = keys_.find(user);
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

namespace {

// Uniform in [0, 1) for the reconnect jitter; one generator per thread (logins start on
// every worker).
double jitter01() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator);
}

// Reserves one slot of a shared limit (0 = unlimited). Lock-free: pools of one database may
// run on different threads.
bool try_take(std::atomic<int>& counter, int limit) {
  int current = counter.load(std::memory_order_relaxed);
  do {
    if (limit > 0 && current >= limit) return false;
  } while (!counter.compare_exchange_weak(current, current + 1, std::memory_order_acq_rel));
  return true;
}

}  // namespace

ServerInfo describe_server(const ServerConn& server, std::string_view state,
                           std::string_view fingerprint) {
  ServerInfo info;
  info.id = server.id;
  info.backend_pid = server.backend_pid;
  info.state = state;
  std::tie(info.addr, info.port) = net::address_of(server.endpoint);
  std::tie(info.local_addr, info.local_port) = net::local_of(server.conn.fd());
  info.created = server.created;
  info.last_used = server.last_used;
  info.close_needed = server.close_needed || server.fingerprint != fingerprint;
  info.ptr = reinterpret_cast<std::uintptr_t>(&server);
  if (const auto* app = server.params.find("application_name")) info.application_name = *app;
  return info;
}

Pool::Pool(PoolManager& manager, std::string database, std::string user, PoolSettings settings)
    : manager_(manager),
      database_(std::move(database)),
      user_(std::move(user)),
      mode_(settings.mode),
      settings_(std::move(settings)),
      waiters_(manager.worker_count()),
      db_count_(manager.db_counter(database_)),
      user_count_(manager.user_counter(user_)),
      stat_slots_(new StatSlot[manager.worker_count()]) {
  check_delay_ms_.store(settings_.server_check_enabled ? settings_.server_check_delay.count() : -1);
  backend_ = &manager_.backend_for(settings_.host, settings_.port);
  backend_->configure(settings_.breaker);
}

Pool::~Pool() = default;

PoolSettings Pool::settings() const {
  std::lock_guard lock(mutex_);
  return settings_;
}

void Pool::update_settings(PoolSettings settings) {
  std::vector<unsigned> launches;
  std::vector<ServerPtr> to_close;
  {
    std::lock_guard lock(mutex_);
    const bool target_changed = settings.fingerprint != settings_.fingerprint;
    settings_ = std::move(settings);
    if (target_changed) {
      backend_ = &manager_.backend_for(settings_.host, settings_.port);
      failures_in_row_ = 0;
    }
    backend_->configure(settings_.breaker);
    mode_.store(settings_.mode, std::memory_order_relaxed);
    check_delay_ms_.store(settings_.server_check_enabled ? settings_.server_check_delay.count()
                                                         : -1);
    // Idle servers of an old target are closed; leased ones close on release.
    if (target_changed) to_close = take_idle_locked();
    // A larger pool may let waiters in right away.
    launch_for_waiters_locked(launches);
  }
  for (auto& server : to_close) close_on_owner(std::move(server));
  spawn_logins(launches);
}

std::optional<ParamSet> Pool::defaults() const {
  std::lock_guard lock(mutex_);
  return defaults_;
}

bool Pool::can_open_locked(bool use_reserve) const {
  if (paused_) return false;  // PAUSE: no new server connections until RESUME
  // An open breaker: only its probe connects (launch_probe()). A drain opens nothing new.
  if (!backend_->accepts_logins() || manager_.draining()) return false;
  const int limit = settings_.pool_size + (use_reserve ? settings_.reserve_pool_size : 0);
  return total_ < limit;
}

void Pool::launch_for_waiters_locked(std::vector<unsigned>& launches) {
  // One login per waiter beyond those already connecting, oldest first.
  int wanted = waiting_ - connecting_;
  for (auto& list : waiters_) {
    for (Waiter* w : list) {
      if (wanted-- <= 0 || !can_open_locked(false)) return;
      launch_locked(w->worker_, launches);
    }
  }
}

std::vector<ServerPtr> Pool::take_idle_locked() {
  std::vector<ServerPtr> taken = std::move(idle_);
  idle_.clear();
  const int n = static_cast<int>(taken.size());
  total_ -= n;
  db_count_->fetch_sub(n);
  user_count_->fetch_sub(n);
  return taken;
}

void Pool::launch_locked(unsigned worker, std::vector<unsigned>& launches) {
  // Database- and user-wide limits are shared with other pools; reserve them first.
  if (!try_take(*db_count_, settings_.max_db_connections)) return;
  if (!try_take(*user_count_, settings_.max_user_connections)) {
    db_count_->fetch_sub(1);
    return;
  }
  ++total_;
  ++connecting_;
  launches.push_back(worker);
}

void Pool::spawn_logins(const std::vector<unsigned>& launches, bool probe) {
  if (launches.empty()) return;
  int failures_in_row = 0;
  Backend* backend = nullptr;
  PoolSettings settings;
  {
    std::lock_guard lock(mutex_);
    failures_in_row = failures_in_row_;
    backend = backend_;
    settings = settings_;
  }
  // server_login_retry is PgBouncer's pause before a failed login is retried: here it caps the
  // jittered backoff.
  const auto cap = std::min(kReconnectCap, settings.server_login_retry);
  for (unsigned worker : launches) {
    auto& reactor = manager_.reactor(worker);
    const Millis delay =
        probe ? Millis(0) : reconnect_delay(failures_in_row, jitter01(), kReconnectBase, cap);
    std::optional<std::string> key;
    if (settings.password.rfind("SCRAM-SHA-256$", 0) == 0)
      key = manager_.keys().get(settings.server_user);
    // Posted, so the login starts on its worker even when called from another thread.
    reactor.post([this, &reactor, worker, settings, key = std::move(key), delay, probe,
                  backend]() mutable {
      asio::co_spawn(
          reactor.io(),
          [this, &reactor, worker, settings = std::move(settings), key = std::move(key), delay,
           probe, backend]() -> asio::awaitable<void> {
            LoginResult result;
            result.backend = backend;
            result.probe = probe;
            if (delay.count() > 0) {
              net::Timer backoff(reactor);
              co_await backoff.async_wait_for(delay, net::use_nothrow);
            }
            if (!probe && !backend->accepts_logins()) {
              // The breaker opened while this retry waited: its probe decides, not us.
              result.skipped = true;
              login_finished(std::move(result));
              co_return;
            }
            result.outcome = co_await login_server(reactor, worker, settings, key);
            if (probe && result.outcome.server && settings.server_check_enabled) {
              // The probe proves more than a login: the server also runs a query.
              if (!co_await run_internal_query(*result.outcome.server, settings.server_check_query,
                                               std::chrono::seconds(5))) {
                result.outcome.server.reset();
                result.outcome.error = Err::server_login_failed;
                result.outcome.detail = "server_check_query failed on the probe connection";
                result.outcome.connection_failure = true;
              }
            }
            if (result.outcome.server) result.outcome.server->id = manager_.next_server_id();
            login_finished(std::move(result));
          },
          asio::detached);
    });
  }
}

void Pool::login_finished(LoginResult result) {
  const auto now = Clock::now();
  auto& outcome = result.outcome;
  ServerPtr server = std::move(outcome.server);
  const bool failed = server == nullptr;
  Handoff handoff;
  std::vector<Handoff> failed_waiters;
  std::vector<unsigned> launches;
  auto change = Breaker::Change::none;
  {
    std::lock_guard lock(mutex_);
    --connecting_;
    if (server) {
      failures_in_row_ = 0;
      last_success_ = now;
      change = result.backend->login_succeeded(now);
      if (!defaults_) defaults_ = server->params;
      server->fingerprint =
          server->fingerprint.empty() ? settings_.fingerprint : server->fingerprint;
      server->pool = this;
      place_locked(std::move(server), handoff);
    } else {
      --total_;
      db_count_->fetch_sub(1);
      user_count_->fetch_sub(1);
      if (result.skipped) {
        // Nothing was attempted; if the breaker's opening left waiters here, tell them.
        if (total_ == 0) fail_waiters_locked(Err::backend_unavailable, {}, failed_waiters);
      } else if (outcome.connection_failure) {
        ++logins_failed_;
        ++failures_in_row_;
        last_error_ = outcome.detail;
        last_error_code_ = outcome.error;
        change = result.backend->login_failed(now, error_message(outcome.error, outcome.detail),
                                              result.probe);
        if (result.backend->accepts_logins()) {
          // The breaker is still closed: waiting clients keep waiting for the next attempt,
          // which spawn_logins() delays by the reconnect backoff.
          if (waiting_ > 0) launch_for_waiters_locked(launches);
        } else if (change != Breaker::Change::opened && total_ == 0) {
          // Open already (this attempt started before it opened): nothing will serve them.
          fail_waiters_locked(Err::backend_unavailable, {}, failed_waiters);
        }
        // Just opened: breaker_changed() below fails the waiters of every pool of the backend.
      } else {
        // An error of this pool's settings (no such database, connect_query): PgBouncer's fast
        // fail. With no server left to wait for, waiting clients get the error now, and new
        // requests get it at once for server_login_retry.
        ++logins_failed_;
        last_error_ = outcome.detail;
        last_error_code_ = outcome.error;
        last_failure_ = now;
        if (total_ == 0) fail_waiters_locked(outcome.error, outcome.detail, failed_waiters);
      }
    }
  }
  if (handoff.waiter) complete(std::move(handoff));
  for (auto& h : failed_waiters) complete(std::move(h));
  if (change != Breaker::Change::none) manager_.breaker_changed(*result.backend, change);
  spawn_logins(launches);
  if (failed) {
    if (!result.skipped) {
      spdlog::warn("pool {}/{}: server login failed{}: {}", database_, user_,
                   result.probe ? " (circuit breaker probe)" : "", outcome.detail);
    }
    manager_.capacity_freed(database_, user_);
  }
}

void Pool::enqueue_locked(Waiter& waiter) {
  waiters_[waiter.worker_].insert(&waiter);
  ++waiting_;
}

void Pool::dequeue_locked(Waiter& waiter) {
  waiters_[waiter.worker_].erase(&waiter);
  --waiting_;
}

bool Pool::eligible(const Waiter& waiter) const {
  return waiter.share_ == nullptr || waiter.share_->cap <= 0 ||
         waiter.share_->leased < waiter.share_->cap;
}

Waiter* Pool::oldest_waiter_locked() const {
  Waiter* oldest = nullptr;
  for (const auto& list : waiters_) {
    Waiter* first = list.front();
    if (first && (!oldest || first->since_ < oldest->since_)) oldest = first;
  }
  return oldest;
}

Waiter* Pool::next_waiter_locked(unsigned worker) {
  // How much longer another worker's client may have waited before it is served first.
  constexpr auto kLocalPreference = std::chrono::milliseconds(5);
  auto first_eligible = [this](const WaitList& list) -> Waiter* {
    for (Waiter* w : list) {
      if (eligible(*w)) return w;
    }
    return nullptr;
  };
  Waiter* local = worker < waiters_.size() ? first_eligible(waiters_[worker]) : nullptr;
  Waiter* remote = nullptr;
  for (unsigned i = 0; i < waiters_.size(); ++i) {
    if (i == worker) continue;
    Waiter* w = first_eligible(waiters_[i]);
    if (w && (!remote || w->since_ < remote->since_)) remote = w;
  }
  if (!local) return remote;
  if (remote && remote->since_ + kLocalPreference < local->since_) return remote;
  return local;
}

void Pool::take_locked(Waiter& waiter, Handoff& handoff) {
  dequeue_locked(waiter);
  if (waiter.share_) ++waiter.share_->leased;
  handoff.waiter = &waiter;
  // The waiter is alive while queued; a delivery posted to another thread must keep it so.
  if (!manager_.reactor(waiter.worker_).running_in_this_thread())
    handoff.keep = waiter.keep_alive();
}

void Pool::park_idle_locked(ServerPtr server) {
  server->conn.set_handler(server.get());  // watch it while idle
  idle_.push_back(std::move(server));
}

void Pool::place_locked(ServerPtr server, Handoff& handoff) {
  if (paused_) {
    // PAUSE: servers are closed as they come back (on their owner's thread: we are on it).
    drop_locked(server);
    return;
  }
  Waiter* waiter = waiting_ > 0 ? next_waiter_locked(server->worker) : nullptr;
  if (!waiter) {
    server->last_used = net::turn_now();
    park_idle_locked(std::move(server));
    return;
  }
  take_locked(*waiter, handoff);
  handoff.result.server = std::move(server);
}

void Pool::dispatch_idle_locked(std::vector<Handoff>& handoffs) {
  while (!idle_.empty() && waiting_ > 0 && !paused_) {
    Waiter* waiter = oldest_waiter_locked();
    // Only shares can hold waiters back while servers are idle: find one that may go now.
    for (auto& list : waiters_) {
      for (Waiter* w : list) {
        if (eligible(*w) && (!eligible(*waiter) || w->since_ < waiter->since_)) waiter = w;
      }
    }
    if (!waiter || !eligible(*waiter)) return;
    Handoff handoff;
    take_locked(*waiter, handoff);
    handoff.result.server = std::move(idle_.back());
    idle_.pop_back();
    handoffs.push_back(std::move(handoff));
  }
}

void Pool::drop_locked(ServerPtr& server) {
  --total_;
  db_count_->fetch_sub(1);
  user_count_->fetch_sub(1);
  server.reset();  // closes the socket: callers are on the owner's thread
}

void Pool::fail_waiters_locked(Err error, const std::string& detail,
                               std::vector<Handoff>& handoffs) {
  for (auto& list : waiters_) {
    while (Waiter* w = list.front()) {
      Handoff handoff;
      dequeue_locked(*w);
      handoff.waiter = w;
      if (!manager_.reactor(w->worker_).running_in_this_thread()) handoff.keep = w->keep_alive();
      handoff.result.error = error;
      handoff.result.detail = detail;
      handoffs.push_back(std::move(handoff));
    }
  }
}

void Pool::complete(Handoff handoff) {
  Waiter* waiter = handoff.waiter;
  const unsigned to = waiter->worker_;
  auto& target = manager_.reactor(to);
  ServerPtr& server = handoff.result.server;
  if (!server) {
    // An error: no socket to move.
    if (target.running_in_this_thread()) {
      waiter->deliver(std::move(handoff.result));
    } else {
      target.post([handoff = std::move(handoff)]() mutable {
        handoff.waiter->deliver(std::move(handoff.result));
      });
    }
    return;
  }
  if (server->worker == to) {
    // Same worker: the common case, no system call, no other thread.
    server->conn.set_handler(nullptr);
    waiter->deliver(std::move(handoff.result));
    return;
  }
  // Another worker: the owner's thread takes the socket out of its epoll set (no event of it
  // may be dispatched there afterwards), then the waiter's thread registers it with its own.
  auto move_over = [this, to](Handoff h) {
    ServerPtr& s = h.result.server;
    s->conn.detach();
    s->worker = to;
    manager_.reactor(to).post([this, to, h = std::move(h)]() mutable {
      h.result.server->conn.attach(manager_.reactor(to));
      h.waiter->deliver(std::move(h.result));
    });
  };
  auto& owner = manager_.reactor(server->worker);
  if (owner.running_in_this_thread()) {
    move_over(std::move(handoff));
  } else {
    owner.post(
        [move_over, handoff = std::move(handoff)]() mutable { move_over(std::move(handoff)); });
  }
}

void Pool::close_on_owner(ServerPtr server) {
  auto& owner = manager_.reactor(server->worker);
  if (owner.running_in_this_thread()) {
    server.reset();
    return;
  }
  owner.post([server = std::move(server)]() mutable { server.reset(); });
}

void Pool::evict_idle(ServerConn& server) {
  ServerPtr victim;
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    auto it = std::find_if(idle_.begin(), idle_.end(),
                           [&](const ServerPtr& s) { return s.get() == &server; });
    if (it == idle_.end()) return;  // on its way to a client: that side deals with it
    victim = std::move(*it);
    idle_.erase(it);
  }
  // Read what it said, for the log (a FATAL's message), then close.
  std::array<std::byte, 512> said{};
  auto got = victim->conn.read_some(said.data(), said.size());
  std::string reason = got.bytes == 0 ? "connection closed" : "unexpected message";
  std::string sqlstate;
  if (got.bytes > 0 && static_cast<char>(said[0]) == 'E') {
    auto parsed = proto::parse_message(std::span<const std::byte>(said.data(), got.bytes),
                                       proto::Direction::backend);
    if (auto* message = std::get_if<proto::Message>(&parsed)) {
      if (auto fields = proto::parse_error_fields(message->body)) {
        reason = std::string(fields->message) + " (" + std::string(fields->sqlstate) + ")";
        sqlstate = fields->sqlstate;
      }
    }
  }
  spdlog::info("pool {}/{}: idle server connection S-{} (backend pid {}) evicted: {}", database_,
               user_, victim->id, victim->backend_pid, reason);
  Backend* backend = nullptr;
  {
    std::lock_guard lock(mutex_);
    drop_locked(victim);
    backend = backend_;
    if (waiting_ > 0 && can_open_locked(false)) launch_for_waiters_locked(launches);
  }
  spawn_logins(launches);
  if (backend->connection_lost(Clock::now(), sqlstate)) manager_.backend_gone(*backend, reason);
  manager_.capacity_freed(database_, user_);
}

AcquireResult Pool::acquire_now(Waiter& waiter, AppShare* share) {
  std::vector<unsigned> launches;
  AcquireResult result;
  Handoff moving;
  {
    std::lock_guard lock(mutex_);
    if (manager_.draining()) {
      // Shutdown drain: a client that has no server is not inside a transaction; it gets no
      // new one.
      result.error = Err::shutting_down;
      return result;
    }
    waiter.share_ = share;
    const bool capped = share && share->cap > 0 && share->leased >= share->cap;
    if (!idle_.empty() && !paused_ && !capped) {
      // LIFO: the most recently used server is the warmest. Prefer one on this worker.
      auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                             [&](const ServerPtr& s) { return s->worker == waiter.worker_; });
      auto pick = it == idle_.rend() ? std::prev(idle_.end()) : std::prev(it.base());
      ServerPtr server = std::move(*pick);
      idle_.erase(pick);
      if (share) ++share->leased;
      if (server->worker == waiter.worker_) {
        server->conn.set_handler(nullptr);
        result.server = std::move(server);
        return result;
      }
      // Idle on another worker: it moves over (see complete()) and arrives by deliver().
      moving.waiter = &waiter;
      moving.keep = waiter.keep_alive();
      moving.result.server = std::move(server);
    } else if (total_ == 0 && last_failure_ != Clock::time_point{} &&
               Clock::now() - last_failure_ < settings_.server_login_retry) {
      result.error = last_error_code_;
      result.detail = last_error_;
      return result;
    } else if (!backend_->accepts_logins()) {
      // The backend's breaker is open: no server is on its way, so nobody waits (57P03 now).
      result.error = Err::backend_unavailable;
      return result;
    } else if (settings_.max_waiting > 0 && waiting_ >= settings_.max_waiting) {
      result.error = Err::max_waiting;
      return result;
    } else {
      waiter.since_ = Clock::now();
      enqueue_locked(waiter);
      if (!capped && can_open_locked(false) && connecting_ < waiting_) {
        launch_locked(waiter.worker_, launches);
      }
    }
  }
  result.queued = true;
  if (moving.waiter) complete(std::move(moving));
  spawn_logins(launches);
  return result;
}

bool Pool::cancel_wait(Waiter& waiter) {
  std::lock_guard lock(mutex_);
  if (!waiter.is_linked()) return false;
  dequeue_locked(waiter);
  return true;
}

asio::awaitable<AcquireResult> Pool::acquire(net::Reactor& reactor, unsigned worker,
                                             Clock::time_point deadline) {
  struct AsyncWaiter final : Waiter, std::enable_shared_from_this<AsyncWaiter> {
    explicit AsyncWaiter(unsigned w) : Waiter(w) {}
    void deliver(AcquireResult r) override {
      result = std::move(r);
      done.set();
    }
    std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
    net::Event done;
    AcquireResult result;
  };
  using asio::experimental::awaitable_operators::operator||;
  auto waiter = std::make_shared<AsyncWaiter>(worker);
  auto now = acquire_now(*waiter, nullptr);
  if (!now.queued) co_return now;
  net::Timer timer(reactor);
  auto& done = waiter->done;
  auto outcome = co_await (done.async_wait(net::use_nothrow) ||
                           timer.async_wait_until(deadline, net::use_nothrow));
  if (outcome.index() == 1 && !done.is_set()) {
    if (cancel_wait(*waiter)) {
      AcquireResult timeout;
      timeout.error = wait_timeout_error();
      co_return timeout;
    }
    co_await done.async_wait(net::use_nothrow);  // a server is on its way to us
  }
  co_return std::move(waiter->result);
}

AppShare* Pool::app_share(const std::string& application, int cap) {
  std::lock_guard lock(mutex_);
  auto& share = app_shares_[application];
  share.cap = cap;
  return &share;
}

void Pool::release(ServerPtr server, bool reusable, AppShare* share) {
  Handoff handoff;
  std::vector<Handoff> unblocked;
  std::vector<unsigned> launches;
  bool freed = false;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    const bool was_capped = share && share->cap > 0 && share->leased >= share->cap;
    if (share && share->leased > 0) --share->leased;
    // As in PgBouncer, server_lifetime = 0 means a server is used only once.
    const bool expired = now - server->created > settings_.server_lifetime;
    const bool too_many = total_ > settings_.pool_size + reserve_in_use_;
    if (!reusable || server->close_needed || expired || too_many ||
        server->fingerprint != settings_.fingerprint) {
      if (too_many && reserve_in_use_ > 0) --reserve_in_use_;
      drop_locked(server);
      freed = true;
      if (waiting_ > 0 && can_open_locked(false)) {
        if (Waiter* w = oldest_waiter_locked()) launch_locked(w->worker_, launches);
      }
    } else {
      server->last_used = now;
      place_locked(std::move(server), handoff);
    }
    // Waiters held back by this application's cap may take idle servers now.
    if (was_capped) dispatch_idle_locked(unblocked);
  }
  if (handoff.waiter) complete(std::move(handoff));
  for (auto& h : unblocked) complete(std::move(h));
  spawn_logins(launches);
  if (freed) manager_.capacity_freed(database_, user_);
}

void Pool::capacity_freed() {
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    if (waiting_ > 0 && connecting_ == 0 && can_open_locked(false)) {
      if (Waiter* w = oldest_waiter_locked()) launch_locked(w->worker_, launches);
    }
  }
  spawn_logins(launches);
}

void Pool::maintain(Clock::time_point now) {
  std::vector<ServerPtr> to_close;
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    for (auto it = idle_.begin(); it != idle_.end();) {
      auto& server = *it;
      const bool idle_too_long = settings_.server_idle_timeout.count() > 0 &&
                                 now - server->last_used > settings_.server_idle_timeout;
      const bool too_old = settings_.server_lifetime.count() > 0 &&
                           now - server->created > settings_.server_lifetime;
      const bool surplus = total_ > settings_.pool_size;
      if ((idle_too_long && total_ > settings_.min_pool_size) || too_old || surplus ||
          server->close_needed) {
        to_close.push_back(std::move(server));
        it = idle_.erase(it);
        --total_;
        db_count_->fetch_sub(1);
        user_count_->fetch_sub(1);
      } else {
        ++it;
      }
    }
    // reserve_pool_size: a client waiting longer than reserve_pool_timeout gets connections
    // beyond pool_size, one per upkeep round.
    if (settings_.reserve_pool_size > 0 && !paused_ && connecting_ == 0) {
      const Waiter* oldest = oldest_waiter_locked();
      if (oldest && now - oldest->since_ >= settings_.reserve_pool_timeout &&
          can_open_locked(true)) {
        const auto before = launches.size();
        launch_locked(oldest->worker_, launches);
        if (launches.size() > before) {
          ++reserve_in_use_;
          spdlog::info("pool {}/{}: taking connection from reserve_pool", database_, user_);
        }
      }
    }
    // min_pool_size: keep warm connections once the pool is in use.
    while (total_ < settings_.min_pool_size && connecting_ == 0 && can_open_locked(false)) {
      const auto before = launches.size();
      launch_locked(static_cast<unsigned>(launches.size() % manager_.worker_count()), launches);
      if (launches.size() == before) break;
    }
  }
  for (auto& server : to_close) close_on_owner(std::move(server));
  spawn_logins(launches);
}

void Pool::close_all(bool include_leased) {
  std::vector<ServerPtr> to_close;
  {
    std::lock_guard lock(mutex_);
    to_close = take_idle_locked();
    if (include_leased) settings_.fingerprint += "#closed";
  }
  for (auto& server : to_close) close_on_owner(std::move(server));
}

PoolStats Pool::stats() const {
  std::lock_guard lock(mutex_);
  PoolStats s;
  s.idle = static_cast<int>(idle_.size());
  s.connecting = connecting_;
  s.total = total_;
  s.active = total_ - connecting_ - s.idle;
  s.waiting = waiting_;
  if (const Waiter* oldest = oldest_waiter_locked()) s.max_wait = Clock::now() - oldest->since_;
  const auto now = Clock::now();
  for (const auto& server : idle_) {
    if (due_for_check(settings_, *server, now)) ++s.used;
  }
  s.paused = paused_;
  s.logins_failed = logins_failed_;
  s.last_error = last_error_;
  return s;
}

std::string Pool::fingerprint() const {
  std::lock_guard lock(mutex_);
  return settings_.fingerprint;
}

std::vector<ServerInfo> Pool::idle_servers() const {
  std::lock_guard lock(mutex_);
  std::vector<ServerInfo> out;
  const auto now = Clock::now();
  for (const auto& server : idle_) {
    // Only fields of the connection are read; no operation is pending on an idle socket.
    const bool used = due_for_check(settings_, *server, now);
    out.push_back(describe_server(*server, used ? "used" : "idle", settings_.fingerprint));
  }
  return out;
}

void Pool::pause() {
  std::vector<ServerPtr> to_close;
  {
    std::lock_guard lock(mutex_);
    paused_ = true;
    to_close = take_idle_locked();
  }
  for (auto& server : to_close) close_on_owner(std::move(server));
}

void Pool::resume() {
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    if (!paused_) return;
    paused_ = false;
    launch_for_waiters_locked(launches);
  }
  spawn_logins(launches);
}

bool Pool::paused() const {
  std::lock_guard lock(mutex_);
  return paused_;
}

StatValues Pool::stat_totals() const {
  StatValues out;
  for (unsigned i = 0; i < manager_.worker_count(); ++i) stat_slots_[i].read_into(out);
  return out;
}

void Pool::roll_stats(Clock::time_point now) {
  const auto totals = stat_totals();
  std::lock_guard lock(mutex_);
  if (stats_rolled_at_ != Clock::time_point{}) {
    stats_period_delta_ = totals - stats_at_roll_;
    stats_period_length_ = now - stats_rolled_at_;
  }
  stats_at_roll_ = totals;
  stats_rolled_at_ = now;
}

std::pair<StatValues, Clock::duration> Pool::last_period() const {
  std::lock_guard lock(mutex_);
  return {stats_period_delta_, stats_period_length_};
}

Pool& PoolManager::get(const std::string& database, const std::string& user,
                       const std::function<PoolSettings()>& settings) {
  std::lock_guard lock(mutex_);
  auto key = std::make_pair(database, user);
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  auto pool = std::make_unique<Pool>(*this, database, user, settings());
  if (paused_all_ || paused_databases_.contains(database)) pool->pause();
  auto& ref = *pool;
  pools_.emplace(std::move(key), std::move(pool));
  return ref;
}

void PoolManager::for_each(const std::function<void(Pool&)>& fn) {
  std::vector<Pool*> pools;
  {
    std::lock_guard lock(mutex_);
    for (auto& [key, pool] : pools_) pools.push_back(pool.get());
  }
  // Pools are never destroyed while the process runs, so the pointers stay valid.
  for (auto* pool : pools) fn(*pool);
}

void PoolManager::maintain(Clock::time_point now) {
  for_each([now](Pool& pool) { pool.maintain(now); });
  probe_backends(now);
}

void PoolManager::roll_stats(Clock::time_point now, Millis period) {
  // Only worker 0's janitor calls this, so stats_rolled_at_ needs no lock.
  if (period.count() <= 0 || now - stats_rolled_at_ < period) return;
  stats_rolled_at_ = now;
  for_each([now](Pool& pool) { pool.roll_stats(now); });
}

bool PoolManager::pause_database(const std::string& database) {
  {
    std::lock_guard lock(mutex_);
    if (database.empty()) {
      if (paused_all_) return false;
      paused_all_ = true;
    } else if (!paused_databases_.insert(database).second || paused_all_) {
      return false;
    }
  }
  for_each([&](Pool& pool) {
    if (database.empty() || pool.database() == database) pool.pause();
  });
  return true;
}

bool PoolManager::resume_database(const std::string& database) {
  {
    std::lock_guard lock(mutex_);
    if (database.empty()) {
      if (!paused_all_ && paused_databases_.empty()) return false;
      paused_all_ = false;
      paused_databases_.clear();
    } else {
      if (paused_all_ || paused_databases_.erase(database) == 0) return false;
    }
  }
  for_each([&](Pool& pool) {
    if (database.empty() || pool.database() == database) pool.resume();
  });
  return true;
}

bool PoolManager::database_paused(const std::string& database) {
  std::lock_guard lock(mutex_);
  return paused_all_ || paused_databases_.contains(database);
}

bool PoolManager::all_paused() {
  std::lock_guard lock(mutex_);
  return paused_all_;
}

int PoolManager::db_connections(const std::string& database) {
  std::lock_guard lock(mutex_);
  auto it = db_counts_.find(database);
  return it == db_counts_.end() ? 0 : it->second->load(std::memory_order_relaxed);
}

int PoolManager::user_connections(const std::string& user) {
  std::lock_guard lock(mutex_);
  auto it = user_counts_.find(user);
  return it == user_counts_.end() ? 0 : it->second->load(std::memory_order_relaxed);
}

std::shared_ptr<std::atomic<int>> PoolManager::db_counter(const std::string& database) {
  auto& counter = db_counts_[database];
  if (!counter) counter = std::make_shared<std::atomic<int>>(0);
  return counter;
}

std::shared_ptr<std::atomic<int>> PoolManager::user_counter(const std::string& user) {
  auto& counter = user_counts_[user];
  if (!counter) counter = std::make_shared<std::atomic<int>>(0);
  return counter;
}

// ---------------------------------------------------------------------------------------------
// Resilience: breakers, backends that go away, drain (docs/operations.md).

Backend& Pool::backend() const {
  std::lock_guard lock(mutex_);
  return *backend_;
}

Clock::time_point Pool::last_login_success() const {
  std::lock_guard lock(mutex_);
  return last_success_;
}

Err Pool::wait_timeout_error() const {
  std::lock_guard lock(mutex_);
  // The backend is the reason when the last attempt failed, the breaker is not closed, or no
  // login has finished at all (every server still connecting: the server is not answering).
  const bool unreachable =
      failures_in_row_ > 0 || !backend_->accepts_logins() || (total_ > 0 && total_ == connecting_);
  return unreachable ? Err::query_wait_unreachable : Err::query_wait_timeout;
}

PoolCondition Pool::condition() const {
  PoolCondition out;
  Backend* backend = nullptr;
  {
    std::lock_guard lock(mutex_);
    out.database = database_;
    out.user = user_;
    out.servers = total_;
    out.connecting = connecting_;
    out.waiting = waiting_;
    out.max_waiting = settings_.max_waiting;
    if (!last_error_.empty()) out.last_login_error = error_message(last_error_code_, last_error_);
    backend = backend_;
  }
  const auto status = backend->status(Clock::now());
  out.server = status.name;
  out.breaker = status.state == BreakerState::open        ? PoolCondition::Breaker::open
                : status.state == BreakerState::half_open ? PoolCondition::Breaker::half_open
                                                          : PoolCondition::Breaker::closed;
  out.backend_error = status.last_error;
  out.consecutive_failures = status.consecutive_failures;
  out.until_probe = std::chrono::ceil<std::chrono::milliseconds>(status.until_probe);
  return out;
}

void Pool::fail_waiters(Err code) {
  std::vector<Handoff> handoffs;
  {
    std::lock_guard lock(mutex_);
    fail_waiters_locked(code, {}, handoffs);
  }
  for (auto& h : handoffs) complete(std::move(h));
}

void Pool::evict_all_idle(std::string_view why) {
  std::vector<ServerPtr> to_close;
  {
    std::lock_guard lock(mutex_);
    to_close = take_idle_locked();
  }
  if (to_close.empty()) return;
  spdlog::info("pool {}/{}: closing {} idle server connections: {}", database_, user_,
               to_close.size(), why);
  for (auto& server : to_close) close_on_owner(std::move(server));
  manager_.capacity_freed(database_, user_);
}

void Pool::server_lost() {
  Backend& lost_from = backend();
  if (lost_from.connection_lost(Clock::now(), {})) {
    manager_.backend_gone(lost_from, "several connections to the server were lost at once");
  }
}

bool Pool::launch_probe() {
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    if (paused_ || manager_.draining() ||
        total_ >= settings_.pool_size + settings_.reserve_pool_size) {
      return false;
    }
    launch_locked(0, launches);
  }
  if (launches.empty()) return false;  // db / user connection limits reached
  spdlog::info("pool {}/{}: circuit breaker of {} half-open: probing the server", database_, user_,
               backend().name());
  spawn_logins(launches, true);
  return true;
}

Backend& PoolManager::backend_for(const std::string& host, int port) {
  const auto name = backend_name(host, port);
  std::lock_guard lock(backends_mutex_);
  auto& backend = backends_[name];
  if (!backend) backend = std::make_unique<Backend>(name, BreakerSettings{});
  return *backend;
}

std::vector<BackendStatus> PoolManager::backend_statuses(Clock::time_point now) {
  std::vector<Backend*> all;
  {
    std::lock_guard lock(backends_mutex_);
    for (auto& [name, backend] : backends_) all.push_back(backend.get());
  }
  std::vector<BackendStatus> out;
  for (auto* backend : all) out.push_back(backend->status(now));
  return out;
}

void PoolManager::breaker_changed(Backend& backend, Breaker::Change change) {
  const auto status = backend.status(Clock::now());
  if (change == Breaker::Change::closed) {
    spdlog::info("backend {}: circuit breaker closed, the server accepts connections again",
                 status.name);
    return;
  }
  spdlog::warn(
      "backend {}: circuit breaker open after {} failed connection attempts; next probe in "
      "{:.1f} s; last error: {}",
      status.name, status.consecutive_failures,
      std::chrono::duration<double>(status.until_probe).count(), status.last_error);
  // Clients already waiting get 57P03 now, not at query_wait_timeout.
  for_each([&](Pool& pool) {
    if (&pool.backend() == &backend) pool.fail_waiters(Err::backend_unavailable);
  });
}

void PoolManager::backend_gone(Backend& backend, std::string_view why) {
  spdlog::warn("backend {}: the server went away ({}); closing its idle connections",
               backend.name(), why);
  for_each([&](Pool& pool) {
    if (&pool.backend() == &backend) pool.evict_all_idle(why);
  });
}

void PoolManager::probe_backends(Clock::time_point now) {
  std::vector<Backend*> open;
  {
    std::lock_guard lock(backends_mutex_);
    for (auto& [name, backend] : backends_) {
      if (backend->state() == BreakerState::open) open.push_back(backend.get());
    }
  }
  for (auto* backend : open) {
    if (!backend->begin_probe(now)) continue;
    // The pool that logged in most recently is the likeliest to tell "the server is back" apart
    // from a problem of one user's credentials.
    std::vector<Pool*> candidates;
    for_each([&](Pool& pool) {
      if (&pool.backend() == backend) candidates.push_back(&pool);
    });
    std::stable_sort(candidates.begin(), candidates.end(), [](Pool* a, Pool* b) {
      return a->last_login_success() > b->last_login_success();
    });
    bool started = false;
    for (auto* pool : candidates) {
      if ((started = pool->launch_probe())) break;
    }
    if (!started) backend->probe_not_started(now);
  }
}

void PoolManager::begin_drain(Err code) {
  draining_.store(true, std::memory_order_relaxed);
  for_each([code](Pool& pool) { pool.fail_waiters(code); });
}

void PoolManager::capacity_freed(const std::string& database, const std::string& user) {
  for_each([&](Pool& pool) {
    if (pool.database() == database || pool.user() == user) pool.capacity_freed();
  });
}

}  // namespace pgw::pool
