#include "session/client_session.hpp"

#include "net/tls.hpp"

#include <spdlog/spdlog.h>

#include "session/login.hpp"

namespace pgw::session {

ClientSession::ClientSession(SessionServices& services, net::Reactor& reactor, unsigned worker,
                             int fd, const net::Endpoint& peer, bool first_packet_waiting)
    : services_(services),
      reactor_(reactor),
      config_(services.config.config()),
      login_reader_(std::make_unique<net::MessageReader>()),
      relay_(*this, worker) {
  who_.id = services.sessions.next_id();
  client_.open(reactor, fd);
  if (first_packet_waiting) client_.assume_readable();
  std::tie(who_.addr, who_.port) = net::address_of(peer);
  unix_client_ = peer.data()->sa_family == AF_UNIX;
  if (net::is_tcp(peer)) {
    net::set_nodelay(fd);
    net::set_keepalive(fd, {config_->tcp_keepalive, config_->tcp_keepidle, config_->tcp_keepintvl,
                            config_->tcp_keepcnt, config_->tcp_user_timeout});
  }
}

ClientSession::~ClientSession() {
  if (registered_) services_.cancels.remove(cancel_key_);
  release_counts();
}

void ClientSession::release_counts() {
  if (app_counted_as_) services_.admission.release_app(*app_counted_as_);
  app_counted_as_.reset();
  if (client_counted_) services_.admission.release_client(who_.database, who_.user);
  client_counted_ = false;
}

net::DetachedTask ClientSession::run([[maybe_unused]] std::shared_ptr<ClientSession> self) {
  // `self` (a parameter, so it lives in the frame from the start) keeps the session alive as
  // long as its coroutine. The phases are Asio coroutines run one after the other; while the
  // relay serves the client, only this frame exists (net/task.hpp says why).
  // g++ 12 mishandles temporaries in co_await expressions (PR 99576): the awaiters are named.
  services_.sessions.sessions(worker()).insert(this);
  auto& io = reactor_.io();
  bool logged_in = false;
  {
    LoginFlow login(*this);
    auto logging_in = net::in_asio(io, login.run());  // startup, authenticate, route, welcome
    logged_in = co_await logging_in;
  }
  if (logged_in && state_ == ClientState::idle) {
    relay_.start();  // the relay runs on readiness events until it stops
    co_await relay_.done().wait_on(io);
  }
  auto ending = net::in_asio(io, finish(logged_in));  // the console, or why it stopped; cleanup
  co_await ending;
  services_.sessions.sessions(worker()).erase(this);
  services_.admission.leave(worker());  // counted by ClientAdmission::place() at accept
  if (const auto left = lease_guard_.unreported(); !left.empty()) {
    services_.apps.retire(who_.application_name, left);
  }
  lease_guard_.mark_reported();
}

asio::awaitable<void> ClientSession::finish(bool logged_in) {
  if (logged_in && state_ == ClientState::console) co_await serve_console();
  if (logged_in && state_ == ClientState::closing) co_await report_end();
  co_await cleanup();
}

// ---------------------------------------------------------------------------------------------
// The end of a session.

asio::awaitable<void> ClientSession::report_end() {
  // The relay stopped; tell the client why (a FATAL, or nothing after a Terminate). Nothing
  // reads the client socket any more, so the writer drains it itself.
  const auto after = net::AfterError::drain;
  switch (relay_.stop_reason()) {
    case RelayStop::none:
    case RelayStop::client_gone:
      break;
    case RelayStop::client_terminate:
      disconnect_reason_ = std::make_unique<std::string>("client close request");
      break;
    case RelayStop::server_lost: {
      // Several at once: the backend went away (evicts its idle connections).
      relay_.pool()->server_lost(relay_.server());
      if (relay_.server_fatal()) {
        // The client has the server's own FATAL (pg_terminate_backend, shutdown): close.
        disconnect_reason_ = std::make_unique<std::string>("the server ended the connection");
        co_await close_quietly(after);
      } else {
        const auto error =
            report(Err::server_connection_lost,
                   ": the server closed the connection while the client was using it");
        co_await end_with(error, after, Log::always);
      }
      break;
    }
    case RelayStop::pool_error: {
      const Err code = relay_.stop_error();
      auto argument = relay_.stop_argument();
      if ((code == Err::query_wait_timeout || code == Err::query_wait_unreachable) &&
          argument.empty()) {
        argument = std::to_string(
            config_->query_wait_timeout_for(who_.database, who_.user).count() / 1000);
      }
      const auto error = explain(code, argument, relay_.pool()->condition());
      co_await end_with(error, after, Log::always);
      break;
    }
    case RelayStop::client_protocol:
    case RelayStop::server_protocol:
    case RelayStop::statement_mode_txn:
    case RelayStop::terminated: {
      const auto error = report(relay_.stop_error(), relay_.stop_argument());
      co_await end_with(error, after, Log::always);
      break;
    }
  }
}

asio::awaitable<void> ClientSession::serve_console() {
  // The login reader keeps whatever the client pipelined after its password.
  ConsoleService::Who who{who_.id, who_.user, console_full_access_};
  auto end = co_await services_.console.serve(client_, *login_reader_, std::move(who));
  if (!disconnect_reason_) disconnect_reason_ = std::make_unique<std::string>(end.reason);
  if (end.error) co_await end_with(*end.error, net::AfterError::drain, Log::always);
}

asio::awaitable<void> ClientSession::cleanup() {
  const auto now = Clock::now();
  if (state_ != ClientState::closing) set_state(ClientState::closing, now);
  co_await relay_.return_server(disconnect_reason());
  relay_.release_buffer();
  if (!disconnect_logged_) log_disconnect(disconnect_reason());
  client_.close();
}

// ---------------------------------------------------------------------------------------------
// Writing to the client.

asio::awaitable<bool> ClientSession::write_client(const std::string& bytes) {
  auto ec = co_await client_.async_write_all(bytes);
  co_return !ec;
}

asio::awaitable<void> ClientSession::end_with(const ErrorReport& report, net::AfterError after,
                                              Log log) {
  // A timeout or drain that fires while this error is written must not send a second FATAL.
  ending_ = true;
  const auto& spec = error_spec(report.code);
  if (log == Log::always || (config_ && config_->log_pooler_errors)) {
    spdlog::warn("C-{}: {}/{}@{}:{} pooler error: {} ({})", who_.id, who_.database, who_.user,
                 who_.addr, who_.port, report.message, spec.sqlstate);
  }
  if (!disconnect_reason_) disconnect_reason_ = std::make_unique<std::string>(report.message);
  // Logged before the FATAL goes out, as PgBouncer does: the client may read the error and look
  // in the log before the drain below is over.
  log_disconnect(disconnect_reason());
  disconnect_logged_ = true;
  // Nor is it a client of its database, user or application any more (SHOW USERS and the
  // max_*_client_connections caps), though its socket lingers a moment.
  release_counts();
  // Mid-way through a server message the error cannot be written without corrupting the
  // stream: then the connection only closes.
  const bool can_write = !relay_.mid_server_message();
  co_await net::end_with_error(client_, can_write ? &report : nullptr, after);
}

asio::awaitable<void> ClientSession::close_quietly(net::AfterError after) {
  ending_ = true;
  co_await net::end_with_error(client_, nullptr, after);
}

void ClientSession::log_disconnect(std::string_view reason) {
  if (!config_ || !config_->log_disconnections) return;
  const auto age =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - connect_time_);
  spdlog::info("C-{}: {}/{}@{}:{} closing because: {} (age={}s)", who_.id, who_.database, who_.user,
               who_.addr, who_.port, reason, age.count() / 1000);
}

const std::string& ClientSession::disconnect_reason() const {
  static const std::string kDefault = "client disconnected";
  return disconnect_reason_ ? *disconnect_reason_ : kDefault;
}

// ---------------------------------------------------------------------------------------------
// Control from outside the coroutine (janitor, console, shutdown): all on this worker's thread.

void ClientSession::terminate(Err reason, std::string argument) {
  PGW_ASSERT_OWNED(&reactor_);
  if (ending_) return;
  ending_ = true;
  switch (state_) {
    case ClientState::idle:
    case ClientState::waiting:
    case ClientState::linking:
    case ClientState::active:
      // The relay stops; report_end() sends the error and cleanup cancels, rolls back and
      // returns the server like for any vanished client.
      relay_.stop(RelayStop::terminated, reason, std::move(argument));
      return;
    case ClientState::closing:
      return;  // already on its way out
    case ClientState::login:
    case ClientState::waiting_login:
    case ClientState::console:
      break;
  }
  // The login or the console coroutine reads the socket: end the connection under it; it sees
  // the close and unwinds.
  asio::co_spawn(
      reactor_.io(),
      [](std::shared_ptr<ClientSession> self, Err code, std::string text) -> asio::awaitable<void> {
        const auto error = report(code, text);
        co_await self->end_with(error, net::AfterError::wait, Log::always);
      }(shared_from_this(), reason, std::move(argument)),
      asio::detached);
}

void ClientSession::check_timeouts(Clock::time_point now, const config::Config& c) {
  PGW_ASSERT_OWNED(&reactor_);
  if (ending_) return;
  switch (state_) {
    case ClientState::login:
      if (c.client_login_timeout.count() > 0 && now - connect_time_ > c.client_login_timeout) {
        terminate(Err::client_login_timeout,
                  fmt::format("{:g}", static_cast<double>(c.client_login_timeout.count()) / 1000));
      }
      break;
    case ClientState::idle: {
      // The [users] entry's client_idle_timeout over the [pgbouncer] key, as in PgBouncer.
      auto limit = c.client_idle_timeout;
      if (auto entry = c.users.find(who_.user); entry != c.users.end()) {
        limit = entry->second.client_idle_timeout.value_or(limit);
      }
      if (limit.count() > 0 && now - state_since_ > limit) terminate(Err::client_idle_timeout);
      break;
    }
    case ClientState::waiting:
      relay_.check_wait(now, c);  // query_wait_timeout, query_wait_notify
      break;
    case ClientState::active:
      run_ladder(now, c);
      break;
    case ClientState::waiting_login:  // the first server login has its own deadline
    case ClientState::console:
    case ClientState::linking:
    case ClientState::closing:
      break;
  }
}

LeaseFacts ClientSession::lease_facts() const {
  return lease_guard_.facts(relay_.lease_state(), holds_server_between_transactions(),
                            relay_.query_start());
}

void ClientSession::run_ladder(Clock::time_point now, const config::Config& c) {
  if (!lease_guard_.held() || !relay_.holds_server()) return;
  const auto& policy = lease_guard_.policy(c, who_);  // [apps] lines apply
  const auto facts = lease_facts();
  for (const auto& step : ladder_steps(facts, policy)) {
    if (!(step.at < now)) break;  // the steps come in time order
    switch (step.action) {
      case LadderAction::warn: {
        const auto info =
            lease_guard_.info(who_, facts.state, facts.session_mode, facts.query_start);
        lease_guard_.warn(now, info, policy, who_, services_.leaks);
        break;
      }
      case LadderAction::cancel_query:
        // Cancel first: PostgreSQL answers the client with 57014 and the session goes on.
        lease_guard_.note_query_cancelled(facts.query_start, now);
        spdlog::info("C-{}: query_timeout: cancelling the running query (backend pid {})", who_.id,
                     relay_.server()->backend_pid);
        relay_.forward_cancel();
        note_forced_action("cancel", "query_timeout");
        break;
      case LadderAction::disconnect_ignored_cancel:
        // The backend ignored the cancel: the client gets the error, the server is closed
        // unless cleanup finds it clean.
        note_forced_action("disconnect", "query_timeout: the backend ignored the cancel");
        terminate(Err::query_timeout);
        break;
      case LadderAction::disconnect_idle_transaction:
        // The client gets its FATAL first; cleanup then rolls the server back (and resets it
        // in session mode) and returns it to the pool only if it is clean.
        note_forced_action(
            "disconnect",
            fmt::format("idle_transaction_timeout ({:g}s)",
                        std::chrono::duration<double>(policy.idle_transaction_timeout).count()));
        terminate(Err::idle_transaction_timeout);
        break;
      case LadderAction::disconnect_transaction: {
        // As for idle_transaction_timeout: the FATAL first, then cleanup cancels what runs,
        // rolls back and returns the server only if it is clean.
        const auto limit =
            fmt::format("{:g}", std::chrono::duration<double>(policy.transaction_timeout).count());
        note_forced_action("disconnect", "transaction_timeout (" + limit + "s)");
        terminate(Err::transaction_timeout, limit);
        break;
      }
      case LadderAction::disconnect_idle_pinned: {
        const auto limit =
            fmt::format("{:g}", std::chrono::duration<double>(policy.idle_pinned_timeout).count());
        note_forced_action("disconnect", "idle_pinned_timeout (" + limit + "s)");
        terminate(Err::idle_pinned_timeout, limit);
        break;
      }
    }
  }
}

std::optional<ClientSession::Reclaimable> ClientSession::reclaimable(Clock::time_point now,
                                                                     const config::Config& c) {
  PGW_ASSERT_OWNED(&reactor_);
  if (ending_ || state_ != ClientState::active) return std::nullopt;
  if (!lease_guard_.held() || !relay_.holds_server()) return std::nullopt;
  const auto after = lease_guard_.policy(c, who_).reclaim_under_pressure_after;
  if (after.count() == 0) return std::nullopt;
  const auto facts = lease_facts();
  if (facts.state != LeaseState::idle_in_transaction || !(now - facts.idle_since > after)) {
    return std::nullopt;
  }
  return Reclaimable{relay_.pool(), facts.idle_since};
}

void ClientSession::reclaim(int waiting, Clock::time_point now, const config::Config& c) {
  PGW_ASSERT_OWNED(&reactor_);
  const auto after = lease_guard_.policy(c, who_).reclaim_under_pressure_after;
  const auto idle = std::chrono::duration<double>(now - lease_facts().idle_since).count();
  spdlog::info(
      "C-{}: reclaimed under pressure: app='{}' idle in transaction for {:.1f}s "
      "(reclaim_under_pressure_after {:g}s), {} clients waiting for pool {}/{}",
      who_.id, printable(who_.application_name), idle, std::chrono::duration<double>(after).count(),
      waiting, who_.database, who_.user);
  lease_guard_.note_reclaimed();
  note_forced_action("reclaimed_under_pressure",
                     fmt::format("idle in transaction for {:.1f}s (reclaim_under_pressure_after "
                                 "{:g}s) while {} clients were waiting",
                                 idle, std::chrono::duration<double>(after).count(), waiting));
  terminate(Err::reclaimed_under_pressure, std::to_string(waiting));
}

void ClientSession::note_forced_action(std::string_view action, std::string reason) {
  PGW_ASSERT_OWNED(&reactor_);
  lease_guard_.note_forced_action(action, std::move(reason), relay_.holds_server(), who_,
                                  services_.leaks);
}

void ClientSession::note_session_state(proto::SessionStateMask fresh,
                                       const proto::SessionState& state) {
  const auto mode = to_string(state.mode());
  const auto first = services_.leaks.note_session_state(who_.application_name, fresh);
  for (int k = 0; k < proto::kSessionStateKinds; ++k) {
    const auto kind = static_cast<proto::SessionStateKind>(k);
    if (!(first & proto::mask_of(kind))) continue;
    const auto what = fmt::format(
        "{} in transaction pooling (session_state = {}{})", proto::describe(kind), mode,
        state.pinned() && kind != proto::SessionStateKind::parameter ? ": the client is pinned"
                                                                     : "");
    report_session_state("session_state", "takes", what, state.origin_statement(kind));
  }
}

void ClientSession::report_session_state(std::string_view action, std::string_view verb,
                                         const std::string& what, std::string_view statement) {
  const auto text = std::string(statement.substr(0, 200));
  spdlog::warn("C-{}: app '{}' ({}@{}, {}:{}) {} {}; statement: {}", who_.id, who_.application_name,
               who_.user, who_.database, who_.addr, who_.port, verb, what, printable(text));
  services_.leaks.events.push(LeakEvent{std::chrono::system_clock::now(), who_.id,
                                        who_.application_name, std::string(action), what, 0, text});
}

void ClientSession::note_session_state_refused(proto::SessionStateKind kind,
                                               std::string_view statement) {
  if (!services_.leaks.note_session_state(who_.application_name, proto::mask_of(kind))) return;
  report_session_state("session_state_refused", "is refused",
                       fmt::format("{} (session_state = reject)", proto::describe(kind)),
                       statement);
}

void ClientSession::drain(bool force) {
  PGW_ASSERT_OWNED(&reactor_);
  if (state_ == ClientState::closing) return;
  if (force) {
    // The drain window is over: like any session that is cut off, cleanup cancels what runs,
    // rolls back, and returns or closes the server.
    terminate(Err::shutting_down);
    return;
  }
  switch (state_) {
    case ClientState::login:
      // Accepted before the drain began, still logging in: told what a new login is told.
      terminate(Err::draining);
      break;
    case ClientState::waiting_login:
    case ClientState::console:
    case ClientState::idle:
    case ClientState::waiting:
    case ClientState::linking:
      terminate(Err::shutting_down);
      break;
    case ClientState::active:
      // Inside a transaction: it may finish (its COMMIT goes through); the next round ends the
      // session once it is idle again.
      if (!relay_.inside_transaction()) terminate(Err::shutting_down);
      break;
    case ClientState::closing:
      break;
  }
}

void ClientSession::add_to_sample(Clock::time_point now, const config::Config& c,
                                  WorkerSample& sample) {
  if (state_ == ClientState::console) return;
  // Work done since the last sample goes to the application the client has now.
  if (const auto delta = lease_guard_.unreported(); !delta.empty()) {
    sample.counted[who_.application_name] += delta;
    lease_guard_.mark_reported();
  }
  const auto list = names_of(state_).list;
  if (list == ClientList::none) return;
  AppLive& app = sample.apps[who_.application_name];
  ++app.clients;
  auto* pool = relay_.pool();
  PoolLive* pool_live = pool ? &sample.pools[pool] : nullptr;
  if (list == ClientList::waiting) {
    ++app.waiting;
    if (pool_live) ++pool_live->clients_waiting;
  } else if (pool_live) {
    ++pool_live->clients_active;
  }
  if (!lease_guard_.held() || !relay_.holds_server()) return;
  const auto facts = lease_facts();
  switch (facts.state) {
    case LeaseState::active:
      ++app.active;
      break;
    case LeaseState::idle_in_transaction:
      ++app.idle_in_transaction;
      break;
    case LeaseState::idle_pinned:
      ++app.idle_pinned;
      break;
  }
  if (is_suspected_leak(facts, lease_guard_.policy(c, who_), now)) {
    ++app.leaks;
    if (pool_live) ++pool_live->leaks;
  }
  const auto xact_start = lease_guard_.lease().xact_start;
  if (pool_live && xact_start != Clock::time_point{} &&
      (pool_live->oldest_xact == Clock::time_point{} || xact_start < pool_live->oldest_xact)) {
    pool_live->oldest_xact = xact_start;
  }
}

SessionInfo ClientSession::info() const {
  PGW_ASSERT_OWNED(&reactor_);
  SessionInfo info;
  info.id = who_.id;
  info.state = state_;
  info.admin = state_ == ClientState::console;
  info.user = who_.user;
  info.database = who_.database;
  info.application_name = who_.application_name;
  info.addr = who_.addr;
  info.port = who_.port;
  std::tie(info.local_addr, info.local_port) = net::local_of(client_.fd());
  if (const auto* tls = client_.tls()) info.tls = tls->describe();
  info.connect_time = connect_time_;
  info.request_time =
      relay_.request_time() != Clock::time_point{} ? relay_.request_time() : connect_time_;
  info.state_since = state_since_;
  info.pool = relay_.pool();
  info.ptr = reinterpret_cast<std::uintptr_t>(this);
  if (const auto* statements = relay_.statements()) {
    info.prepared_statements = statements->statements().size();
  }
  if (const auto* server = relay_.server(); server && relay_.pool()) {
    // Leased: "active" while it carries client traffic; "tested" while the session runs a
    // check, reset or ROLLBACK on it.
    info.server = pool::describe_server(
        *server, state_ == ClientState::active ? "active" : "tested", relay_.pool()->generation());
    info.server->link = info.ptr;
  }
  if (lease_guard_.held() && relay_.holds_server()) {
    info.lease = lease_guard_.info(who_, relay_.lease_state(), holds_server_between_transactions(),
                                   relay_.query_start());
  }
  if (const auto* state = relay_.session_state(); state && state->holds_anything()) {
    info.session_state = proto::to_string(state->held());
    info.session_state_since = state->since();
    info.session_state_statement = state->first_statement();
  }
  info.pinned = relay_.pinned();
  info.unreported = lease_guard_.unreported();
  return info;
}

}  // namespace pgw::session
