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

ServerInfo describe_server(const ServerConn& server, std::string_view state,
                           std::string_view fingerprint) {
  ServerInfo info;
  info.id = server.id;
  info.backend_pid = server.backend_pid;
  info.state = state;
  std::tie(info.addr, info.port) = net::address_of(server.endpoint);
  std::tie(info.local_addr, info.local_port) = net::local_of(server.socket);
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
      db_count_(manager.db_counter(database_)),
      user_count_(manager.user_counter(user_)),
      stat_slots_(new StatSlot[manager.worker_count()]) {}

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
  const int limit = settings_.pool_size + (use_reserve ? settings_.reserve_pool_size : 0);
  return total_ < limit;
}

void Pool::launch_for_waiters_locked(std::vector<unsigned>& launches) {
  for (std::size_t i = 0; i < waiters_.size(); ++i) {
    if (!can_open_locked(false)) break;
    launch_locked(waiters_[i]->worker, launches);
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
  if (paused_) {
    // PAUSE: servers are closed as they come back (on their owner's thread: we are on it).
    drop_locked(std::move(server));
    return;
  }
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
    if (!idle_.empty() && !paused_) {
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
      if (!reserve_tried && settings_.reserve_pool_size > 0 && !paused_) {
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
    if (!reserve_tried && settings_.reserve_pool_size > 0 && !paused_ &&
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
    // As in PgBouncer, server_lifetime = 0 means a server is used only once.
    const bool expired = now - server->created > settings_.server_lifetime;
    const bool too_many = total_ > settings_.pool_size + reserve_in_use_;
    if (!reusable || server->close_needed || expired || too_many ||
        server->fingerprint != settings_.fingerprint) {
      if (too_many && reserve_in_use_ > 0) --reserve_in_use_;
      drop_locked(std::move(server));
      freed = true;
      if (!waiters_.empty() && can_open_locked(false)) {
        launch_locked(waiters_.front()->worker, launches);
      }
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
  s.waiting = static_cast<int>(waiters_.size());
  if (!waiters_.empty()) s.max_wait = Clock::now() - waiters_.front()->since;
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

void PoolManager::capacity_freed(const std::string& database, const std::string& user) {
  for_each([&](Pool& pool) {
    if (pool.database() == database || pool.user() == user) pool.capacity_freed();
  });
}

}  // namespace pgw::pool
