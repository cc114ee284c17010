#include "pool/pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "net/turn_clock.hpp"

namespace pgw::pool {

// A finished (or skipped) login: what login_server() returned, and how it was started.
struct Pool::LoginResult {
  LoginOutcome outcome;
  Backend* backend = nullptr;  // the backend it was made toward (the last host tried)
  std::size_t host = 0;        // that host's index, as first_host() counts
  config::LoadBalanceHosts load_balance = config::LoadBalanceHosts::round_robin;
  std::uint32_t generation = 0;  // the login target it was made for
  bool probe = false;            // the one attempt of a half-open breaker
  bool skipped = false;          // not attempted: every breaker opened while it waited to retry
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

void KeyStore::put_secret(const std::string& user, const std::string& secret) {
  std::lock_guard lock(mutex_);
  secrets_[user] = secret;
}

std::optional<std::string> KeyStore::secret(const std::string& user) const {
  std::lock_guard lock(mutex_);
  auto it = secrets_.find(user);
  if (it == secrets_.end()) return std::nullopt;
  return it->second;
}

namespace {

// Uniform in [0, 1) for the reconnect jitter; one generator per thread (logins start on
// every worker).
double jitter01() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator);
}

// The pool's own type back from the policy's (every server a pool holds is a ServerConn).
ServerPtr as_server(PooledPtr server) {
  return ServerPtr(static_cast<ServerConn*>(server.release()));
}

}  // namespace

PoolLimits limits_of(const PoolSettings& settings) {
  PoolLimits limits;
  limits.pool_size = settings.pool_size;
  limits.min_pool_size = settings.min_pool_size;
  limits.reserve_pool_size = settings.reserve_pool_size;
  limits.reserve_pool_timeout = settings.reserve_pool_timeout;
  limits.max_db_connections = settings.max_db_connections;
  limits.max_user_connections = settings.max_user_connections;
  limits.max_waiting = settings.max_waiting;
  limits.server_lifetime = settings.server_lifetime;
  limits.server_idle_timeout = settings.server_idle_timeout;
  limits.server_login_retry = settings.server_login_retry;
  limits.server_check_delay =
      settings.server_check_enabled ? settings.server_check_delay : Millis(-1);
  return limits;
}

ServerInfo describe_server(const ServerConn& server, std::string_view state,
                           std::uint32_t generation) {
  ServerInfo info;
  info.id = server.id;
  info.backend_pid = server.backend_pid;
  info.state = state;
  std::tie(info.addr, info.port) = net::address_of(server.endpoint);
  std::tie(info.local_addr, info.local_port) = net::local_of(server.conn.fd());
  if (const auto* tls = server.conn.tls()) info.tls = tls->describe();
  info.created = server.created;
  info.last_used = server.last_used;
  info.close_needed = server.close_needed || server.generation != generation;
  info.ptr = reinterpret_cast<std::uintptr_t>(&server);
  if (const auto* app = server.params.find("application_name")) info.application_name = *app;
  info.prepared_statements = server.statements.size();
  return info;
}

Pool::Pool(PoolManager& manager, std::string database, std::string user, PoolSettings settings)
    : manager_(manager),
      database_(std::move(database)),
      user_(std::move(user)),
      mode_(settings.mode),
      core_(manager.worker_count(), limits_of(settings), manager.db_counter(database_),
            manager.user_counter(user_)),
      settings_(std::make_shared<const PoolSettings>(std::move(settings))),
      stat_slots_(new StatSlot[manager.worker_count()]) {
  check_delay_ms_.store(core_.limits().server_check_delay.count());
  max_prepared_statements_.store(settings_->max_prepared_statements);
  targets_ = targets_for(*settings_);
}

std::shared_ptr<const Pool::Targets> Pool::targets_for(const PoolSettings& settings) {
  auto targets = std::make_shared<Targets>();
  for (const auto& address : settings.servers) {
    Backend& backend = manager_.backend_for(address.host, address.port);
    backend.configure(settings.breaker);
    targets->push_back(Target{address, &backend});
  }
  return targets;
}

bool Pool::any_accepts(const Targets& targets) {
  for (const auto& target : targets) {
    if (target.backend->accepts_logins()) return true;
  }
  return false;
}

Pool::~Pool() = default;

std::shared_ptr<const PoolSettings> Pool::settings() const {
  std::lock_guard lock(mutex_);
  return settings_;
}

// ---------------------------------------------------------------------------------------------
// The executor: a decision of the policy under the mutex, its actions after it

Conditions Pool::conditions_locked(Clock::time_point now) const {
  return Conditions{now, any_accepts(*targets_), manager_.draining()};
}

void Pool::keep_waiters_locked(PoolActions& actions) const {
  actions.for_each_handoff([this](Handoff& h) {
    auto& waiter = static_cast<Waiter&>(*h.waiter);
    const unsigned to = waiter.waiter_worker();
    // Delivered right here, on this thread, only when both the waiter and the server are ours.
    const bool here = manager_.reactor(to).running_in_this_thread() &&
                      (h.server == nullptr || h.server->worker == to);
    if (!here) h.keep = waiter.keep_alive();
  });
}

Pool::LoginPlan Pool::login_plan_locked() const {
  return LoginPlan{settings_, targets_, core_.failures_in_row(), core_.generation()};
}

template <typename Decision>
void Pool::decide(Clock::time_point now, Decision&& decision, Backend* probe) {
  PoolActions actions;
  LoginPlan plan;
  {
    std::lock_guard lock(mutex_);
    decision(conditions_locked(now), actions);
    keep_waiters_locked(actions);
    if (!actions.launches.empty()) plan = login_plan_locked();
  }
  execute(actions, plan, probe);
}

void Pool::execute(PoolActions& actions, const LoginPlan& plan, Backend* probe) {
  actions.for_each_handoff([this](Handoff& h) { complete(std::move(h)); });
  for (auto& server : actions.to_close) close_on_owner(as_server(std::move(server)));
  if (actions.took_reserve) {
    spdlog::info("pool {}/{}: taking connection from reserve_pool", database_, user_);
  }
  if (!actions.launches.empty()) spawn_logins(actions.launches, plan, probe);
  if (actions.capacity_freed) manager_.capacity_freed(database_, user_);
  if (actions.shared_limit_reached) manager_.make_room(*this);
}

void Pool::update_settings(PoolSettings settings) {
  auto next = std::make_shared<const PoolSettings>(std::move(settings));
  std::shared_ptr<const PoolSettings> current;
  std::shared_ptr<const Targets> targets;
  {
    std::lock_guard lock(mutex_);
    current = settings_;
    targets = targets_;
  }
  // Reloads are serialized (the configuration's change mutex), so nothing changes the
  // settings between here and the decision below.
  const bool target_changed = next->fingerprint != current->fingerprint;
  if (target_changed) {
    targets = targets_for(*next);
    // What failed with the old settings (a wrong CA, password, host) may work with the new:
    // the next client gets a login attempt, not the cached error of the breaker.
    for (const auto& target : *targets) target.backend->reset_breaker();
    spdlog::info(
        "pool {}/{}: database configuration changed: its server connections made before are "
        "obsolete and close as they come back",
        database_, user_);
  } else {
    for (const auto& target : *targets) target.backend->configure(next->breaker);
  }
  const auto limits = limits_of(*next);
  mode_.store(next->mode, std::memory_order_relaxed);
  check_delay_ms_.store(limits.server_check_delay.count());
  max_prepared_statements_.store(next->max_prepared_statements, std::memory_order_relaxed);
  const auto now = net::turn_now();
  PoolActions actions;
  LoginPlan plan;
  {
    std::lock_guard lock(mutex_);
    settings_ = std::move(next);
    // Idle servers of an old target are closed; leased ones close on release.
    if (target_changed) {
      targets_ = std::move(targets);
      core_.retarget(/*forget_failures=*/true, actions);
    }
    core_.set_limits(limits, conditions_locked(now), actions);
    keep_waiters_locked(actions);
    if (!actions.launches.empty()) plan = login_plan_locked();
  }
  execute(actions, plan);
}

std::shared_ptr<const ParamSet> Pool::defaults() const {
  std::lock_guard lock(mutex_);
  return defaults_;
}

// ---------------------------------------------------------------------------------------------
// Leasing: once per transaction in transaction mode, so each is one short critical section

AcquireResult Pool::acquire_now(Waiter& waiter, AppShare* share) {
  const auto now = net::turn_now();
  PoolActions actions;
  LoginPlan plan;
  Acquired acquired;
  {
    std::lock_guard lock(mutex_);
    acquired = core_.acquire(waiter, share, conditions_locked(now), actions);
    keep_waiters_locked(actions);
    if (!actions.launches.empty()) plan = login_plan_locked();
  }
  AcquireResult result;
  result.queued = acquired.queued;
  result.error = acquired.error;
  result.detail = std::move(acquired.detail);
  if (acquired.server) {
    result.server = as_server(std::move(acquired.server));
    result.server->conn.set_handler(nullptr);  // no longer watched as idle: the client's now
  }
  execute(actions, plan);
  return result;
}

bool Pool::cancel_wait(Waiter& waiter) {
  std::lock_guard lock(mutex_);
  return core_.cancel_wait(waiter);
}

void Pool::release(ServerPtr server, bool reusable, AppShare* share) {
  PGW_ASSERT_OWNED(server->conn.reactor());
  // Watched as idle from now on if the policy parks it (it may be taken by another worker as
  // soon as the mutex is released); a hand-off or a close replaces the handler.
  server->conn.set_handler(server.get());
  decide(net::turn_now(), [&](const Conditions& at, PoolActions& out) {
    core_.release(std::move(server), reusable, share, at, out);
  });
}

AppShare* Pool::app_share(const std::string& application, int cap) {
  AppShare* share = nullptr;
  {
    std::lock_guard lock(shares_mutex_);
    share = &app_shares_[application];
  }
  std::lock_guard lock(mutex_);
  core_.set_share_cap(*share, cap);
  return share;
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

void Pool::complete(Handoff handoff) {
  auto* waiter = static_cast<Waiter*>(handoff.waiter);
  const unsigned to = waiter->waiter_worker();
  auto& target = manager_.reactor(to);
  AcquireResult result;
  result.error = handoff.error;
  result.detail = std::move(handoff.detail);
  if (!handoff.server) {
    // An error: no socket to move.
    if (target.running_in_this_thread()) {
      waiter->deliver(std::move(result));
    } else {
      target.post([waiter, keep = std::move(handoff.keep), result = std::move(result)]() mutable {
        waiter->deliver(std::move(result));
      });
    }
    return;
  }
  result.server = as_server(std::move(handoff.server));
  ServerConn& server = *result.server;
  if (server.worker == to && target.running_in_this_thread()) {
    // Same worker: the common case, no system call, no other thread.
    server.conn.set_handler(nullptr);
    waiter->deliver(std::move(result));
    return;
  }
  // Another worker (or another thread): the owner's thread takes the socket out of its epoll
  // set (no event of it may be dispatched there afterwards), then the waiter's thread
  // registers it with its own.
  auto move_over = [this, to, waiter](std::shared_ptr<void> keep, AcquireResult r) {
    ServerConn& s = *r.server;
    s.conn.set_handler(nullptr);
    const bool moves = s.worker != to;
    if (moves) {
      s.conn.detach();
      s.worker = to;
    }
    manager_.reactor(to).post(
        [this, to, moves, waiter, keep = std::move(keep), r = std::move(r)]() mutable {
          if (moves) r.server->conn.attach(manager_.reactor(to));
          waiter->deliver(std::move(r));
        });
  };
  auto& owner = manager_.reactor(server.worker);
  if (owner.running_in_this_thread()) {
    move_over(std::move(handoff.keep), std::move(result));
  } else {
    owner.post([move_over, keep = std::move(handoff.keep), r = std::move(result)]() mutable {
      move_over(std::move(keep), std::move(r));
    });
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

// ---------------------------------------------------------------------------------------------
// Logins

void Pool::spawn_logins(const std::vector<unsigned>& launches, const LoginPlan& plan,
                        Backend* probe) {
  const PoolSettings& settings = *plan.settings;
  // server_login_retry is PgBouncer's pause before a failed login is retried: here it caps the
  // jittered backoff.
  const auto cap = std::min(kReconnectCap, settings.server_login_retry);
  for (unsigned worker : launches) {
    auto& reactor = manager_.reactor(worker);
    const Millis delay =
        probe ? Millis(0) : reconnect_delay(plan.failures_in_row, jitter01(), kReconnectBase, cap);
    std::optional<std::string> key;
    if (settings.password.rfind("SCRAM-SHA-256$", 0) == 0)
      key = manager_.keys().get(settings.server_user);
    // Posted, so the login starts on its worker even when called from another thread.
    reactor.post([this, &reactor, worker, plan, key = std::move(key), delay, probe]() mutable {
      asio::co_spawn(reactor.io(),
                     log_in(reactor, worker, std::move(plan), std::move(key), delay, probe),
                     asio::detached);
    });
  }
}

std::size_t Pool::first_host(const Targets& targets, config::LoadBalanceHosts mode) {
  if (targets.size() < 2) return 0;
  // round-robin: every login takes the next host; disable: the host of the last login, until
  // one fails (host_failed() moves it on).
  if (mode == config::LoadBalanceHosts::round_robin) {
    return next_host_.fetch_add(1, std::memory_order_relaxed);
  }
  return next_host_.load(std::memory_order_relaxed);
}

void Pool::host_failed(const LoginResult& attempt, bool trying_next) {
  const auto& outcome = attempt.outcome;
  auto& backend = *attempt.backend;
  if (attempt.load_balance == config::LoadBalanceHosts::disable) {
    // Later logins start at the next host; unless another login moved on already.
    auto expected = attempt.host;
    next_host_.compare_exchange_strong(expected, attempt.host + 1, std::memory_order_relaxed);
  }
  if (!trying_next) return;  // login_finished() feeds the breaker and logs
  const auto change =
      backend.login_failed(net::turn_now(), error_message(outcome.error, outcome.detail), false);
  if (change != Breaker::Change::none) manager_.breaker_changed(backend, change);
  spdlog::warn("pool {}/{}: server login to {} failed, trying the next host: {}", database_, user_,
               backend.name(), outcome.detail);
}

asio::awaitable<void> Pool::log_in(net::Reactor& reactor, unsigned worker, LoginPlan plan,
                                   std::optional<std::string> key, Millis delay, Backend* probe) {
  LoginResult result;
  result.generation = plan.generation;
  result.probe = probe != nullptr;
  if (delay.count() > 0) {
    net::Timer backoff(reactor);
    co_await backoff.async_wait_for(delay, net::use_nothrow);
  }
  const PoolSettings& settings = *plan.settings;
  const Targets& targets = *plan.targets;
  result.load_balance = settings.load_balance;
  // A probe tries its own backend. Any other login goes down the host list from where
  // load_balance_hosts says, past the hosts whose breaker is open (their probe decides, not
  // us), and on to the next host when one cannot be reached or refuses pgwarden.
  const std::size_t first = probe ? 0 : first_host(targets, settings.load_balance);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const Target& target = targets[(first + i) % targets.size()];
    if (probe ? target.backend != probe : !target.backend->accepts_logins()) continue;
    if (result.backend != nullptr) host_failed(result, /*trying_next=*/true);
    result.backend = target.backend;
    result.host = first + i;
    result.outcome = co_await login_server(reactor, worker, settings, target.address, key);
    if (!result.outcome.server && settings.log_disconnections) {
      // PgBouncer's line for the server connection that closes: the server's own words, so
      // that one refused password reads the same in the pooler's log as in PostgreSQL's.
      spdlog::info("S-{}: {}/{}@{} closing because: {} (age=0s)", manager_.next_server_id(),
                   database_, user_, target.backend->name(), result.outcome.detail);
    }
    if (result.outcome.server && settings.log_connections) {
      // PgBouncer's line, with the local end that PostgreSQL's log shows as the client.
      const auto [local_addr, local_port] = net::local_of(result.outcome.server->conn.fd());
      spdlog::info("pool {}/{}: {} new connection to server (from {}:{}){}", database_, user_,
                   target.backend->name(), local_addr, local_port,
                   result.outcome.server->conn.tls() ? " over TLS" : "");
    }
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
    if (result.outcome.server || !result.outcome.connection_failure || probe) break;
  }
  if (result.backend == nullptr && probe != nullptr) {
    // The host left the pool's list since the probe was decided: a failed probe, so that its
    // breaker waits for the next one rather than stay half-open.
    result.backend = probe;
    result.outcome.error = Err::server_connect_failed;
    result.outcome.detail = "the host is no longer in the pool's host list";
    result.outcome.connection_failure = true;
  } else if (result.backend == nullptr) {
    // Every host's breaker opened while this retry waited.
    result.skipped = true;
  } else if (!result.outcome.server && result.outcome.connection_failure && !probe) {
    host_failed(result, /*trying_next=*/false);
  }
  if (result.outcome.server) result.outcome.server->id = manager_.next_server_id();
  login_finished(std::move(result));
}

void Pool::login_finished(LoginResult result) {
  const auto now = net::turn_now();
  auto& outcome = result.outcome;
  ServerPtr server = std::move(outcome.server);
  const bool failed = server == nullptr;
  // The breaker first (its own lock, not under the pool's): the decision below reads it.
  auto change = Breaker::Change::none;
  if (!server && outcome.auth_failure && !result.probe && !result.skipped &&
      result.backend->served_recently(now)) {
    // The server refused this pool's user while it lets others in: that user's password or
    // pg_hba.conf line, not the backend. The pool's own clients get the error (and for
    // server_login_retry the cached one); the breaker of every other pool stays closed.
    outcome.connection_failure = false;
  }
  if (server) {
    change = result.backend->login_succeeded(now);
    server->backend = result.backend;
    server->generation = result.generation;
    server->pool = this;
    server->conn.set_handler(server.get());  // watched while idle, if the policy parks it
  } else if (!result.skipped && outcome.connection_failure) {
    change = result.backend->login_failed(now, error_message(outcome.error, outcome.detail),
                                          result.probe);
  }
  const LoginFailure kind = result.skipped               ? LoginFailure::skipped
                            : outcome.connection_failure ? LoginFailure::connection
                                                         : LoginFailure::settings;
  decide(now, [&](const Conditions& at, PoolActions& out) {
    if (server) {
      if (!defaults_) defaults_ = std::make_shared<const ParamSet>(server->params);
      core_.login_succeeded(std::move(server), at, out);
    } else {
      core_.login_failed(kind, change == Breaker::Change::opened, outcome.error, outcome.detail, at,
                         out);
    }
  });
  if (change != Breaker::Change::none) manager_.breaker_changed(*result.backend, change);
  if (failed && !result.skipped) {
    spdlog::warn("pool {}/{}: server login failed{}: {}", database_, user_,
                 result.probe ? " (circuit breaker probe)" : "", outcome.detail);
  }
}

// ---------------------------------------------------------------------------------------------
// Idle servers and upkeep

void Pool::evict_idle(ServerConn& server) {
  PooledPtr victim;
  {
    std::lock_guard lock(mutex_);
    victim = core_.take_idle(server);
  }
  if (!victim) return;                // on its way to a client: that side deals with it
  Backend* backend = server.backend;  // the server is gone once the decision below closes it
  auto& conn = static_cast<ServerConn&>(*victim).conn;
  // Read what it said, for the log (a FATAL's message), then close.
  std::array<std::byte, 512> said{};
  auto got = conn.read_some(said.data(), said.size());
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
               user_, server.id, server.backend_pid, reason);
  const auto now = net::turn_now();
  decide(now,
         [&](const Conditions& at, PoolActions& out) { core_.closed(std::move(victim), at, out); });
  if (backend != nullptr && backend->connection_lost(now, sqlstate)) {
    manager_.backend_gone(*backend, reason);
  }
}

void Pool::maintain(Clock::time_point now) {
  decide(now, [&](const Conditions& at, PoolActions& out) { core_.maintain(at, out); });
}

void Pool::close_all(bool include_leased) {
  decide(net::turn_now(), [&](const Conditions&, PoolActions& out) {
    if (include_leased) {
      core_.retarget(/*forget_failures=*/false, out);
    } else {
      core_.close_idle(out);
    }
  });
}

bool Pool::evict_one_idle() {
  bool evicted = false;
  decide(net::turn_now(),
         [&](const Conditions&, PoolActions& out) { evicted = core_.close_one_idle(out); });
  if (evicted) {
    spdlog::info(
        "pool {}/{}: idle server closed for another pool of the same database or user "
        "(max_db_connections / max_user_connections)",
        database_, user_);
  }
  return evicted;
}

void Pool::capacity_freed() {
  decide(net::turn_now(),
         [&](const Conditions& at, PoolActions& out) { core_.capacity_freed(at, out); });
}

void Pool::pause() {
  decide(net::turn_now(), [&](const Conditions&, PoolActions& out) { core_.pause(out); });
}

void Pool::resume() {
  decide(net::turn_now(), [&](const Conditions& at, PoolActions& out) { core_.resume(at, out); });
}

bool Pool::paused() const {
  std::lock_guard lock(mutex_);
  return core_.paused();
}

// ---------------------------------------------------------------------------------------------
// What the console and the clients' errors read

PoolStats Pool::stats() const {
  const auto now = Clock::now();
  PoolStats s;
  PoolCounts counts;
  {
    std::lock_guard lock(mutex_);
    counts = core_.counts(now);
    s.last_error = core_.last_error();
  }
  s.idle = counts.idle;
  s.active = counts.active;
  s.connecting = counts.connecting;
  s.waiting = counts.waiting;
  s.total = counts.total;
  s.used = counts.used;
  s.max_wait = counts.max_wait;
  s.paused = counts.paused;
  s.logins_failed = counts.logins_failed;
  return s;
}

std::uint32_t Pool::generation() const {
  std::lock_guard lock(mutex_);
  return core_.generation();
}

std::vector<ServerInfo> Pool::idle_servers() const {
  const auto now = Clock::now();
  std::lock_guard lock(mutex_);
  std::vector<ServerInfo> out;
  for (const auto& pooled : core_.idle()) {
    // Only fields of the connection are read; no operation is pending on an idle socket.
    const auto& server = static_cast<const ServerConn&>(*pooled);
    const bool used = core_.check_due(server, now);
    out.push_back(describe_server(server, used ? "used" : "idle", core_.generation()));
  }
  return out;
}

StatValues Pool::stat_totals() const {
  StatValues out;
  for (unsigned i = 0; i < manager_.worker_count(); ++i) stat_slots_[i].read_into(out);
  return out;
}

void Pool::roll_stats(Clock::time_point now) {
  const auto totals = stat_totals();
  std::lock_guard lock(stats_mutex_);
  if (stats_rolled_at_ != Clock::time_point{}) {
    stats_period_delta_ = totals - stats_at_roll_;
    stats_period_length_ = now - stats_rolled_at_;
  }
  stats_at_roll_ = totals;
  stats_rolled_at_ = now;
}

std::pair<StatValues, Clock::duration> Pool::last_period() const {
  std::lock_guard lock(stats_mutex_);
  return {stats_period_delta_, stats_period_length_};
}

// ---------------------------------------------------------------------------------------------
// Resilience: breakers, backends that go away, drain (docs/operations.md).

bool Pool::uses(const Backend& backend) const {
  std::lock_guard lock(mutex_);
  for (const auto& target : *targets_) {
    if (target.backend == &backend) return true;
  }
  return false;
}

bool Pool::refuses_logins() const {
  std::lock_guard lock(mutex_);
  return !any_accepts(*targets_);
}

Clock::time_point Pool::last_login_success() const {
  std::lock_guard lock(mutex_);
  return core_.last_success();
}

Err Pool::wait_timeout_error() const {
  std::lock_guard lock(mutex_);
  return core_.wait_timeout_error(any_accepts(*targets_));
}

PoolCondition Pool::condition() const {
  PoolCondition out;
  std::shared_ptr<const Targets> targets;
  Err last_code = Err::server_login_failed;
  std::string last_error;
  {
    std::lock_guard lock(mutex_);
    out.servers = core_.total();
    out.connecting = core_.connecting();
    out.waiting = core_.waiting();
    out.max_waiting = core_.limits().max_waiting;
    last_error = core_.last_error();
    last_code = core_.last_error_code();
    targets = targets_;
  }
  out.database = database_;
  out.user = user_;
  if (!last_error.empty()) out.last_login_error = error_message(last_code, last_error);
  // The backend that explains the pool: the first host that takes logins, else (every breaker
  // open) the one whose probe comes first. One host: that one.
  const auto now = Clock::now();
  auto status = targets->front().backend->status(now);
  for (const auto& target : *targets) {
    auto candidate = target.backend->status(now);
    if (candidate.state == BreakerState::closed) {
      status = std::move(candidate);
      break;
    }
    if (status.state == BreakerState::closed || candidate.until_probe < status.until_probe) {
      status = std::move(candidate);
    }
  }
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
  decide(net::turn_now(),
         [&](const Conditions&, PoolActions& out) { core_.fail_waiters(code, {}, out); });
}

Pool::ReclaimGrant Pool::grant_reclaims(int wanted) {
  const auto now = net::turn_now();
  std::lock_guard lock(mutex_);
  return ReclaimGrant{core_.grant_reclaims(wanted, now), core_.waiting()};
}

void Pool::evict_idle_of(const Backend& backend, std::string_view why) {
  std::size_t closed = 0;
  decide(net::turn_now(), [&](const Conditions&, PoolActions& out) {
    core_.close_idle_if(
        [&](const PooledServer& idle) {
          return static_cast<const ServerConn&>(idle).backend == &backend;
        },
        out);
    closed = out.to_close.size();
    out.capacity_freed = closed > 0;
  });
  if (closed > 0) {
    spdlog::info("pool {}/{}: closing {} idle server connections to {}: {}", database_, user_,
                 closed, backend.name(), why);
  }
}

void Pool::server_lost(const ServerConn* server) {
  Backend* lost_from = server != nullptr ? server->backend : nullptr;
  if (lost_from == nullptr) {
    std::lock_guard lock(mutex_);
    lost_from = targets_->front().backend;
  }
  if (lost_from->connection_lost(Clock::now(), {})) {
    manager_.backend_gone(*lost_from, "several connections to the server were lost at once");
  }
}

bool Pool::launch_probe(Backend& backend) {
  bool started = false;
  decide(
      net::turn_now(),
      [&](const Conditions& at, PoolActions& out) { started = core_.launch_probe(at, out); },
      &backend);
  if (started) {
    spdlog::info("pool {}/{}: circuit breaker of {} half-open: probing the server", database_,
                 user_, backend.name());
  }
  return started;
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

void PoolManager::set_database_disabled(const std::string& database, bool disabled) {
  std::lock_guard lock(mutex_);
  if (disabled) {
    disabled_databases_.insert(database);
  } else {
    disabled_databases_.erase(database);
  }
  any_disabled_.store(!disabled_databases_.empty(), std::memory_order_relaxed);
}

bool PoolManager::database_disabled(const std::string& database) {
  if (!any_disabled_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(mutex_);
  return disabled_databases_.contains(database);
}

std::set<std::string> PoolManager::disabled_databases() {
  std::lock_guard lock(mutex_);
  return disabled_databases_;
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
  // Those of a pool with other hosts still taking logins keep waiting for them.
  for_each([&](Pool& pool) {
    if (pool.uses(backend) && pool.refuses_logins()) pool.fail_waiters(Err::backend_unavailable);
  });
}

void PoolManager::backend_gone(Backend& backend, std::string_view why) {
  spdlog::warn("backend {}: the server went away ({}); closing its idle connections",
               backend.name(), why);
  for_each([&](Pool& pool) {
    if (pool.uses(backend)) pool.evict_idle_of(backend, why);
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
      if (pool.uses(*backend)) candidates.push_back(&pool);
    });
    std::stable_sort(candidates.begin(), candidates.end(), [](Pool* a, Pool* b) {
      return a->last_login_success() > b->last_login_success();
    });
    bool started = false;
    for (auto* pool : candidates) {
      if ((started = pool->launch_probe(*backend))) break;
    }
    if (!started) backend->probe_not_started(now);
  }
}

void PoolManager::begin_drain(Err code) {
  draining_.store(true, std::memory_order_relaxed);
  for_each([code](Pool& pool) { pool.fail_waiters(code); });
}

void PoolManager::make_room(const Pool& requester) {
  const auto limits = limits_of(*requester.settings());
  bool done = false;
  for_each([&](Pool& pool) {
    if (done || &pool == &requester) return;
    const bool shares_database =
        limits.max_db_connections > 0 && pool.database() == requester.database();
    const bool shares_user = limits.max_user_connections > 0 && pool.user() == requester.user();
    if ((shares_database || shares_user) && pool.evict_one_idle()) done = true;
  });
}

void PoolManager::capacity_freed(const std::string& database, const std::string& user) {
  for_each([&](Pool& pool) {
    if (pool.database() == database || pool.user() == user) pool.capacity_freed();
  });
}

}  // namespace pgw::pool
