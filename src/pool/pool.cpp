#include "pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace pgw::pool {

void ServerConn::rehome(asio::io_context& io, unsigned new_worker) {
  if (new_worker == worker) return;
  const auto protocol = socket.local_endpoint().protocol();
  const int fd = socket.release();
  socket = net::Socket(io, protocol, fd);
  worker = new_worker;
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

Pool::Pool(PoolManager& manager, std::string database, std::string user, PoolSettings settings)
    : manager_(manager),
      database_(std::move(database)),
      user_(std::move(user)),
      mode_(settings.mode),
      settings_(std::move(settings)),
      db_count_(manager.db_counter(database_)),
      user_count_(manager.user_counter(user_)) {}

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
    mode_.store(settings_.mode, std::memory_order_relaxed);
    if (target_changed) {
      // Idle servers point at the old target: close them; leased ones close on release.
      for (auto& server : idle_) to_close.push_back(std::move(server));
      idle_.clear();
      total_ -= static_cast<int>(to_close.size());
      db_count_->fetch_sub(static_cast<int>(to_close.size()));
      user_count_->fetch_sub(static_cast<int>(to_close.size()));
    }
    // A larger pool may let waiters in right away.
    for (std::size_t i = 0; i < waiters_.size(); ++i) {
      if (!can_open_locked(false)) break;
      launch_locked(waiters_[i]->worker, launches);
    }
  }
  for (auto& server : to_close) close_on_owner(std::move(server));
  spawn_logins(launches);
}

std::optional<ParamSet> Pool::defaults() const {
  std::lock_guard lock(mutex_);
  return defaults_;
}

bool Pool::can_open_locked(bool use_reserve) const {
  const int limit = settings_.pool_size + (use_reserve ? settings_.reserve_pool_size : 0);
  return total_ < limit;
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

void Pool::spawn_logins(const std::vector<unsigned>& launches) {
  for (unsigned worker : launches) {
    auto& io = manager_.worker_io(worker);
    PoolSettings settings = this->settings();
    std::optional<std::string> key;
    if (settings.password.rfind("SCRAM-SHA-256$", 0) == 0) key = manager_.keys().get(settings.server_user);
    asio::co_spawn(
        io,
        [this, &io, worker, settings = std::move(settings), key = std::move(key)]()
            -> asio::awaitable<void> {
          auto outcome = co_await login_server(io, worker, settings, key);
          if (outcome.server) outcome.server->id = manager_.next_server_id();
          login_finished(std::move(outcome.server), outcome.error, std::move(outcome.detail));
        },
        asio::detached);
  }
}

void Pool::login_finished(ServerPtr server, Err error, std::string detail) {
  const bool failed = server == nullptr;
  std::vector<WaiterPtr> wake_list;
  std::vector<unsigned> launches;
  ServerPtr stale;
  {
    std::lock_guard lock(mutex_);
    --connecting_;
    if (server) {
      if (!defaults_) defaults_ = server->params;
      server->fingerprint = server->fingerprint.empty() ? settings_.fingerprint : server->fingerprint;
      place_locked(std::move(server), wake_list);
    } else {
      --total_;
      db_count_->fetch_sub(1);
      user_count_->fetch_sub(1);
      ++logins_failed_;
      last_error_ = detail;
      last_error_code_ = error;
      last_failure_ = Clock::now();
      // With no server left to wait for, waiting clients get the login error now rather than
      // at query_wait_timeout (PgBouncer's fast fail).
      if (total_ == 0) fail_waiters_locked(error, detail, wake_list);
    }
  }
  wake(wake_list);
  spawn_logins(launches);
  if (failed) {
    spdlog::warn("pool {}/{}: server login failed: {}", database_, user_, detail);
    manager_.capacity_freed(database_, user_);
  }
}

void Pool::place_locked(ServerPtr server, std::vector<WaiterPtr>& wake_list) {
  if (waiters_.empty()) {
    server->last_used = Clock::now();
    idle_.push_back(std::move(server));
    return;
  }
  // Prefer the oldest waiter on the server's own worker: no re-registration, no cross-thread
  // wake-up. Fairness holds because the other worker's waiters are served by its own releases
  // and, when no local waiter exists, by this one.
  auto it = std::find_if(waiters_.begin(), waiters_.end(),
                         [&](const WaiterPtr& w) { return w->worker == server->worker; });
  if (it == waiters_.end()) it = waiters_.begin();
  WaiterPtr waiter = *it;
  waiters_.erase(it);
  waiter->done = true;
  waiter->result.server = std::move(server);
  wake_list.push_back(std::move(waiter));
}

void Pool::drop_locked(ServerPtr server) {
  --total_;
  db_count_->fetch_sub(1);
  user_count_->fetch_sub(1);
  server.reset();
}

void Pool::fail_waiters_locked(Err error, const std::string& detail,
                               std::vector<WaiterPtr>& wake_list) {
  for (auto& waiter : waiters_) {
    waiter->done = true;
    waiter->result.error = error;
    waiter->result.detail = detail;
    wake_list.push_back(waiter);
  }
  waiters_.clear();
}

void Pool::wake(const std::vector<WaiterPtr>& waiters) {
  for (const auto& waiter : waiters) {
    // The timer belongs to the waiter's worker: cancel it there.
    asio::post(waiter->timer.get_executor(), [waiter] { waiter->timer.cancel(); });
  }
}

void Pool::close_on_owner(ServerPtr server) {
  auto& io = manager_.worker_io(server->worker);
  asio::post(io, [server = std::shared_ptr<ServerConn>(std::move(server))] {
    asio::error_code ec;
    server->socket.close(ec);
  });
}

asio::awaitable<AcquireResult> Pool::acquire(unsigned worker, Clock::time_point deadline) {
  auto executor = co_await asio::this_coro::executor;
  WaiterPtr waiter;
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      // LIFO: the most recently used server is the warmest. Prefer one on this worker.
      auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                             [&](const ServerPtr& s) { return s->worker == worker; });
      auto pick = it == idle_.rend() ? std::prev(idle_.end()) : std::prev(it.base());
      AcquireResult result;
      result.server = std::move(*pick);
      idle_.erase(pick);
      if (result.server->worker != worker) result.server->rehome(manager_.worker_io(worker), worker);
      co_return result;
    }
    if (total_ == 0 && last_failure_ != Clock::time_point{} &&
        Clock::now() - last_failure_ < settings_.server_login_retry) {
      co_return AcquireResult{nullptr, last_error_code_, last_error_};
    }
    waiter = std::make_shared<Waiter>(executor, worker);
    waiters_.push_back(waiter);
    if (can_open_locked(false)) launch_locked(worker, launches);
  }
  spawn_logins(launches);

  bool reserve_tried = false;
  for (;;) {
    auto wake_at = deadline;
    {
      std::lock_guard lock(mutex_);
      if (!reserve_tried && settings_.reserve_pool_size > 0) {
        wake_at = std::min(wake_at, waiter->since + settings_.reserve_pool_timeout);
      }
    }
    waiter->timer.expires_at(wake_at);
    co_await waiter->timer.async_wait(net::use_nothrow);

    std::lock_guard lock(mutex_);
    if (waiter->done) {
      auto result = std::move(waiter->result);
      if (result.server && result.server->worker != worker) {
        result.server->rehome(manager_.worker_io(worker), worker);
      }
      co_return result;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      std::erase(waiters_, waiter);
      AcquireResult timeout;
      timeout.error = Err::query_wait_timeout;
      co_return timeout;
    }
    if (!reserve_tried && settings_.reserve_pool_size > 0 &&
        now >= waiter->since + settings_.reserve_pool_timeout) {
      reserve_tried = true;
      if (can_open_locked(true)) {
        spdlog::info("pool {}/{}: taking connection from reserve_pool", database_, user_);
        ++reserve_in_use_;
        std::vector<unsigned> reserve_launch;
        launch_locked(worker, reserve_launch);
        // Spawning takes the lock in settings(); release it first by deferring.
        asio::post(executor, [this, reserve_launch] { spawn_logins(reserve_launch); });
      }
    }
  }
}

void Pool::release(ServerPtr server, bool reusable) {
  std::vector<WaiterPtr> wake_list;
  std::vector<unsigned> launches;
  bool freed = false;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    const bool expired = settings_.server_lifetime.count() > 0 &&
                         now - server->created > settings_.server_lifetime;
    const bool too_many = total_ > settings_.pool_size + reserve_in_use_;
    if (!reusable || server->close_needed || expired || too_many ||
        server->fingerprint != settings_.fingerprint) {
      if (too_many && reserve_in_use_ > 0) --reserve_in_use_;
      drop_locked(std::move(server));
      freed = true;
      if (!waiters_.empty() && can_open_locked(false)) launch_locked(waiters_.front()->worker, launches);
    } else {
      server->last_used = now;
      place_locked(std::move(server), wake_list);
    }
  }
  wake(wake_list);
  spawn_logins(launches);
  if (freed) manager_.capacity_freed(database_, user_);
}

void Pool::capacity_freed() {
  std::vector<unsigned> launches;
  {
    std::lock_guard lock(mutex_);
    if (!waiters_.empty() && connecting_ == 0 && can_open_locked(false)) {
      launch_locked(waiters_.front()->worker, launches);
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
    for (auto& server : idle_) to_close.push_back(std::move(server));
    total_ -= static_cast<int>(idle_.size());
    db_count_->fetch_sub(static_cast<int>(idle_.size()));
    user_count_->fetch_sub(static_cast<int>(idle_.size()));
    idle_.clear();
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
  s.waiting = static_cast<int>(waiters_.size());
  s.logins_failed = logins_failed_;
  s.last_error = last_error_;
  return s;
}

Pool& PoolManager::get(const std::string& database, const std::string& user,
                       const std::function<PoolSettings()>& settings) {
  std::lock_guard lock(mutex_);
  auto key = std::make_pair(database, user);
  auto it = pools_.find(key);
  if (it != pools_.end()) return *it->second;
  auto pool = std::make_unique<Pool>(*this, database, user, settings());
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

void PoolManager::capacity_freed(const std::string& database, const std::string& user) {
  for_each([&](Pool& pool) {
    if (pool.database() == database || pool.user() == user) pool.capacity_freed();
  });
}

}  // namespace pgw::pool
