#include "session/client_session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "auth/auth.hpp"
#include "net/buffer_pool.hpp"

namespace pgw::session {

using asio::experimental::awaitable_operators::operator||;
using proto::TransactionStatus;

namespace {

constexpr std::size_t kMinBuffer = 4096;
// How long a backend may take to act on the CancelRequest sent at query_timeout before the
// client is disconnected instead.
constexpr std::chrono::seconds kCancelGrace{5};
// How long a vanished client's in-flight query may take to end after its cancel, before the
// server connection is closed instead of being reused.
constexpr std::chrono::seconds kCleanupTimeout{5};

// Splits a libpq "options" value into "-c name=value" / "--name=value" settings.
std::vector<std::pair<std::string, std::string>> parse_options(std::string_view options, bool& ok) {
  std::vector<std::string> words;
  std::string word;
  bool escaped = false;
  for (char c : options) {
    if (escaped) {
      word += c;
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (c == ' ' || c == '\t') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  std::vector<std::pair<std::string, std::string>> settings;
  ok = true;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].rfind("-c", 0) == 0 && words[i].size() > 2) {
      setting = std::string_view(words[i]).substr(2);
    } else if (words[i].rfind("--", 0) == 0) {
      setting = std::string_view(words[i]).substr(2);
    } else {
      ok = false;
      return settings;
    }
    const auto eq = setting.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      ok = false;
      return settings;
    }
    std::string name(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    settings.emplace_back(std::move(name), std::string(setting.substr(eq + 1)));
  }
  return settings;
}

// A string literal that means the same whatever standard_conforming_strings is: with a
// backslash in the value, the E'' form with doubled backslashes.
std::string quote_literal(std::string_view value) {
  const bool escape = value.find('\\') != std::string_view::npos;
  std::string out = escape ? "E'" : "'";
  for (char c : value) {
    if (c == '\'' || (escape && c == '\\')) out += c;
    out += c;
  }
  out += '\'';
  return out;
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// set_config() parses the value exactly like a startup "-c name=value" does, so list settings
// such as search_path keep their elements ("SET x = 'a,b'" would make that one element).
std::string set_config_sql(std::string_view name, std::string_view value) {
  return "SELECT pg_catalog.set_config(" + quote_literal(name) + ", " + quote_literal(value) +
         ", false);";
}

}  // namespace

std::string_view to_string(ClientState state) {
  switch (state) {
    case ClientState::login:
      return "login";
    case ClientState::idle:
      return "idle";
    case ClientState::waiting:
      return "waiting";
    case ClientState::active:
      return "active";
    case ClientState::closing:
      return "closing";
  }
  return "?";
}

ClientSession::ClientSession(Shared& shared, net::Reactor& reactor, unsigned worker, int fd,
                             const net::Endpoint& peer, bool first_packet_waiting)
    : pool::Waiter(worker),
      shared_(shared),
      reactor_(reactor),
      id_(++shared.next_client_id),
      config_(shared.config()) {
  client_.open(reactor, fd);
  if (first_packet_waiting) client_.assume_readable();
  std::tie(peer_addr_, peer_port_) = net::address_of(peer);
  if (net::is_tcp(peer)) {
    net::set_nodelay(fd);
    net::set_keepalive(fd, {config_->tcp_keepalive, config_->tcp_keepidle, config_->tcp_keepintvl,
                            config_->tcp_keepcnt, config_->tcp_user_timeout});
  }
}

ClientSession::~ClientSession() {
  if (registered_) shared_.cancels.remove(cancel_key_);
  if (counted_) shared_.clients.fetch_sub(1, std::memory_order_relaxed);
  if (app_counted_as_) shared_.release_app_client(*app_counted_as_);
}

net::DetachedTask ClientSession::run([[maybe_unused]] std::shared_ptr<ClientSession> self) {
  // `self` (a parameter, so it lives in the frame from the start) keeps the session alive as
  // long as its coroutine. The phases are Asio coroutines run one after the other; while the
  // data path serves the client, only this frame exists (net/task.hpp says why).
  // g++ 12 mishandles temporaries in co_await expressions (PR 99576): the awaiters are named.
  shared_.sessions(waiter_worker()).insert(this);
  auto& io = reactor_.io();
  auto logging_in = net::in_asio(io, log_in());  // startup, authenticate, route, welcome
  const bool ok = co_await logging_in;
  if (ok && !admin_) {
    serve();  // the data path runs on readiness events until it stops
    co_await data_path_done_.wait_on(io);
  }
  auto ending = net::in_asio(io, finish(ok));  // the console, or why serving stopped; cleanup
  co_await ending;
  shared_.sessions(waiter_worker()).erase(this);
  shared_.client_left(waiter_worker());  // counted by Shared::assign_worker() at accept
  retire_app_tally();
}

asio::awaitable<bool> ClientSession::log_in() {
  // One statement per phase: g++ 12 miscompiles co_await inside short-circuit operators.
  std::string greeting;  // written by welcome(): one send for the end of the login
  bool ok = co_await startup();
  if (ok) ok = co_await authenticate(greeting);
  if (ok) ok = co_await route();
  if (ok) ok = co_await welcome(greeting);
  co_return ok;
}

asio::awaitable<void> ClientSession::finish(bool logged_in) {
  if (logged_in && admin_) co_await serve_admin();
  if (logged_in && !admin_) co_await report_end();
  co_await cleanup();
}

// ---------------------------------------------------------------------------------------------
// startup: SSL/GSS negotiation, CancelRequest, StartupMessage.

asio::awaitable<bool> ClientSession::startup() {
  for (;;) {
    auto result = co_await login_reader_->first_packet(client_);
    if (std::holds_alternative<std::error_code>(result)) co_return false;
    if (auto* error = std::get_if<proto::CodecError>(&result)) {
      if (*error == proto::CodecError::unsupported_protocol) {
        co_await fail(Err::unsupported_protocol, "(not 3.x)");
      } else {
        co_await fail(Err::protocol_violation,
                      "invalid startup packet: " + std::string(proto::describe(*error)));
      }
      co_return false;
    }
    auto& packet = std::get<proto::FirstPacket>(result);
    if (std::holds_alternative<proto::SslRequest>(packet) ||
        std::holds_alternative<proto::GssEncRequest>(packet)) {
      // TLS and GSS encryption are not offered (yet): 'N' makes the client continue in clear.
      if (!co_await write_client("N")) co_return false;
      continue;
    }
    if (auto* cancel = std::get_if<proto::CancelRequest>(&packet)) {
      auto target = shared_.cancels.find({cancel->process_id, cancel->secret_key});
      if (target) {
        // The reference moves to the target's worker: the session is only ever destroyed there.
        auto& reactor = shared_.pools.reactor(target->worker());
        reactor.post([target = std::move(target)] { target->forward_cancel(); });
      }
      co_return false;  // PostgreSQL closes a cancel connection without a reply
    }
    auto& start = std::get<proto::StartupMessage>(packet);
    std::vector<std::string> unrecognized;
    for (const auto& [name, value] : start.parameters) {
      if (name == "user") {
        user_ = value;
      } else if (name == "database") {
        database_ = value;
      } else if (name.rfind("_pq_.", 0) == 0) {
        unrecognized.push_back(name);
      } else if (name == "replication") {
        co_await fail(Err::unsupported_startup_parameter, name);
        co_return false;
      } else if (name == "options") {
        bool ok = true;
        auto settings = parse_options(value, ok);
        const bool ignored = std::find(config_->ignore_startup_parameters.begin(),
                                       config_->ignore_startup_parameters.end(),
                                       "options") != config_->ignore_startup_parameters.end();
        if (!ok && !ignored) {
          co_await fail(Err::unsupported_startup_parameter, "options=" + value);
          co_return false;
        }
        for (auto& [key, setting] : settings) params_.set(key, setting);
      } else if (std::find(config_->ignore_startup_parameters.begin(),
                           config_->ignore_startup_parameters.end(),
                           name) != config_->ignore_startup_parameters.end()) {
        continue;
      } else {
        params_.set(name, value);
      }
    }
    if (user_.empty()) {
      co_await fail(Err::no_user);
      co_return false;
    }
    if (database_.empty()) database_ = user_;
    if (auto* app = params_.find("application_name")) application_name_ = *app;
    params_fingerprint_ = params_.fingerprint();
    if ((start.protocol & 0xffff) != 0 || !unrecognized.empty()) {
      std::string out;
      proto::MessageWriter(out).negotiate_protocol_version(0, unrecognized);
      if (!co_await write_client(out)) co_return false;
    }
    break;
  }
  // Count the client against max_client_conn once it is a real session (not a cancel).
  counted_ = true;
  if (shared_.clients.fetch_add(1, std::memory_order_relaxed) >= config_->max_client_conn) {
    co_await fail(Err::max_client_conn);
    co_return false;
  }
  if (shared_.shutting_down.load()) {
    co_await fail(Err::draining);  // PostgreSQL's 57P03 while it shuts down
    co_return false;
  }
  // Per-application cap ([apps] max_client_conn), counted by the startup application_name.
  if (const auto* app = config_->find_app(application_name_); app && app->max_client_conn) {
    if (!shared_.admit_app_client(application_name_, *app->max_client_conn)) {
      co_await fail(
          Err::app_max_client_conn, application_name_,
          fmt::format("application \"{}\" is limited to {} client connections by [apps] "
                      "line \"{}\" ({})",
                      application_name_, *app->max_client_conn, app->pattern, app->source));
      co_return false;
    }
    // Counted under the startup name: a later SET application_name does not move it.
    app_counted_as_ = std::make_unique<std::string>(application_name_);
  }
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// authenticate: against auth_file, with the method of auth_type.

asio::awaitable<std::optional<proto::Message>> ClientSession::read_auth_reply() {
  auto result = co_await login_reader_->next(client_, proto::Direction::frontend);
  if (auto* message = std::get_if<proto::Message>(&result)) {
    if (message->header.type == 'p') co_return *message;
    co_await fail(
        Err::protocol_violation,
        std::string("expected password response, got message type '") + message->header.type + "'");
    co_return std::nullopt;
  }
  if (auto* error = std::get_if<proto::CodecError>(&result)) {
    co_await fail(Err::protocol_violation, std::string(proto::describe(*error)));
  }
  co_return std::nullopt;
}

asio::awaitable<bool> ClientSession::authenticate(std::string& greeting) {
  auto secrets = shared_.secrets();
  const std::string* secret = nullptr;
  if (auto it = secrets->find(user_); it != secrets->end()) secret = &it->second;
  bool ok = false;
  switch (config_->auth_type) {
    case config::AuthType::any:
      ok = true;
      break;
    case config::AuthType::trust:
      // As in PgBouncer, trust still requires the user to be known when an auth_file is set.
      ok = config_->auth_file.empty() || secret != nullptr;
      if (!ok) {
        co_await fail(Err::password_failed, user_);
        co_return false;
      }
      break;
    case config::AuthType::plain:
      ok = co_await auth_cleartext(secret);
      break;
    case config::AuthType::md5:
      // A SCRAM secret cannot answer an md5 challenge: switch to SCRAM, as PostgreSQL does.
      if (secret && auth::is_scram_secret(*secret)) {
        ok = co_await auth_scram(secret, greeting);
      } else {
        ok = co_await auth_md5(secret);
      }
      break;
    case config::AuthType::scram_sha_256:
      ok = co_await auth_scram(secret, greeting);
      break;
  }
  if (!ok) co_return false;
  // Not written yet: a route or welcome failure sends only its FATAL, which every driver
  // reports during authentication as well.
  proto::MessageWriter(greeting).authentication_ok();
  co_return true;
}

asio::awaitable<bool> ClientSession::auth_cleartext(const std::string* secret) {
  std::string out;
  proto::MessageWriter(out).authentication_cleartext();
  if (!co_await write_client(out)) co_return false;
  auto reply = co_await read_auth_reply();
  if (!reply) co_return false;
  auto password = proto::parse_password_message(reply->body);
  bool ok = false;
  if (password && secret) {
    if (auth::is_md5_hash(*secret)) {
      ok = auth::md5_password_hash(user_, *password) == *secret;
    } else if (auth::is_scram_secret(*secret)) {
      auto parsed = auth::parse_scram_secret(*secret);
      ok = parsed &&
           auth::format_scram_secret(auth::make_scram_secret(
               *password, parsed->salt, parsed->iterations)) == auth::format_scram_secret(*parsed);
    } else {
      ok = *password == *secret;
    }
  }
  if (!ok) co_await fail(Err::password_failed, user_);
  co_return ok;
}

asio::awaitable<bool> ClientSession::auth_md5(const std::string* secret) {
  const std::string salt = auth::random_bytes(4);
  std::string out;
  proto::MessageWriter(out).authentication_md5(
      std::span<const std::byte, 4>(reinterpret_cast<const std::byte*>(salt.data()), 4));
  if (!co_await write_client(out)) co_return false;
  auto reply = co_await read_auth_reply();
  if (!reply) co_return false;
  auto response = proto::parse_password_message(reply->body);
  const bool ok = response && secret && !secret->empty() &&
                  *response == auth::md5_response(user_, *secret, salt);
  if (!ok) co_await fail(Err::password_failed, user_);
  co_return ok;
}

asio::awaitable<bool> ClientSession::auth_scram(const std::string* secret, std::string& greeting) {
  // Unknown users and md5-only secrets go through a full exchange against a random secret,
  // so the reply does not reveal which users exist.
  std::optional<auth::ScramSecret> scram_secret;
  bool stored_scram = false;
  if (secret && auth::is_scram_secret(*secret)) {
    scram_secret = auth::parse_scram_secret(*secret);
    stored_scram = scram_secret.has_value();
  } else if (secret && !secret->empty() && !auth::is_md5_hash(*secret)) {
    scram_secret = auth::parse_scram_secret(shared_.scram_secret_for(user_, *secret));
  }
  const bool can_succeed = scram_secret.has_value();
  if (!scram_secret)
    scram_secret = auth::make_scram_secret(auth::random_bytes(16), auth::random_bytes(16), 4096);

  std::string out;
  const std::string_view mechanisms[] = {"SCRAM-SHA-256"};
  proto::MessageWriter(out).authentication_sasl(mechanisms);
  if (!co_await write_client(out)) co_return false;

  auto first = co_await read_auth_reply();
  if (!first) co_return false;
  auto initial = proto::parse_sasl_initial_response(first->body);
  if (!initial || initial->mechanism != "SCRAM-SHA-256") {
    co_await fail(Err::sasl_failed, "client selected an invalid SASL authentication mechanism");
    co_return false;
  }
  auth::ScramServer server(*scram_secret);
  auto server_first = server.handle_client_first(proto::as_chars(initial->data));
  if (!server_first) {
    co_await fail(Err::sasl_failed, "invalid client-first-message");
    co_return false;
  }
  out.clear();
  proto::MessageWriter(out).authentication_sasl_continue(*server_first);
  if (!co_await write_client(out)) co_return false;

  auto final_message = co_await read_auth_reply();
  if (!final_message) co_return false;
  auto server_final = server.handle_client_final(proto::as_chars(final_message->body));
  if (!server_final || !can_succeed) {
    co_await fail(Err::password_failed, user_);
    co_return false;
  }
  if (stored_scram) shared_.pools.keys().put(user_, server.client_key());
  proto::MessageWriter(greeting).authentication_sasl_final(*server_final);
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// route: find the database entry and the pool.

asio::awaitable<bool> ClientSession::route() {
  if (database_ == "pgbouncer" || database_ == "pgwarden") {
    // The admin console: no pool, no server; serve_admin() answers the commands itself.
    auto listed = [this](const std::vector<std::string>& users) {
      return std::find(users.begin(), users.end(), user_) != users.end();
    };
    admin_full_access_ =
        listed(config_->admin_users) || config_->auth_type == config::AuthType::any;
    if (!admin_full_access_ && !listed(config_->stats_users)) {
      co_await fail(Err::admin_not_allowed, user_);
      co_return false;
    }
    admin_ = true;
    co_return true;
  }
  auto entry = config_->find_database(database_);
  if (!entry) {
    co_await fail(Err::no_such_database, database_);
    co_return false;
  }
  const std::string pool_user = entry->user.empty() ? user_ : entry->user;
  auto secrets = shared_.secrets();
  const auto& config = *config_;
  pool_ = &shared_.pools.get(database_, pool_user, [&] {
    return Shared::pool_settings(config, *entry, pool_user, *secrets);
  });
  stats_ = &pool_->stat_slot(waiter_worker());
  transaction_pooling_ = pool_->mode() != config::PoolMode::session;
  statement_pooling_ = pool_->mode() == config::PoolMode::statement;
  // [apps] max_server_conn: this application's share of the pool (by the startup
  // application_name, like max_client_conn; a later SET does not move it).
  if (const auto* app = config.find_app(application_name_);
      app && app->max_server_conn && *app->max_server_conn > 0) {
    app_share_ = pool_->app_share(application_name_, *app->max_server_conn);
  }
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// welcome: server parameters, cancel key, ReadyForQuery.

asio::awaitable<bool> ClientSession::welcome(std::string& greeting) {
  if (admin_) co_return co_await welcome_admin(greeting);
  if (pool_->refuses_logins()) {
    // The backend's circuit breaker is open: 57P03 now rather than a session that cannot work.
    co_await fail_explained(Err::backend_unavailable);
    co_return false;
  }
  auto defaults = pool_->defaults();
  if (!defaults) {
    // The first client of a pool: log in to the server once to learn its parameters (and to
    // report a server-side login problem now, not at the first query).
    if (!co_await first_server()) co_return false;
    defaults = pool_->defaults();
    if (!defaults) {
      co_await fail(Err::internal, "no server parameters");
      co_return false;
    }
  }
  std::string& out = greeting;
  proto::MessageWriter writer(out);
  for (const auto& [name, value] : *defaults) {
    const std::string* own = params_.find(name);
    writer.parameter_status(name, own ? *own : value);
  }
  shared_.cancels.add(this);  // sets cancel_key_
  registered_ = true;
  writer.backend_key_data(cancel_key_.pid, cancel_key_.secret);
  writer.ready_for_query(TransactionStatus::idle);
  if (!co_await write_client(out)) co_return false;

  // Whatever the client pipelined after its last login message is the start of its traffic.
  in_buffer_size_ = std::max<std::size_t>(kMinBuffer, static_cast<std::size_t>(config_->pkt_buf));
  auto pending = login_reader_->remaining();
  if (!pending.empty()) {
    in_ = net::BufferPool::take(in_buffer_size_);
    if (pending.size() > in_.size()) in_.resize(pending.size());
    std::memcpy(in_.data(), pending.data(), pending.size());
  }
  in_len_ = pending.size();
  login_reader_.reset();
  state_ = ClientState::idle;
  state_since_ = Clock::now();
  stats_->add(pool::Stat::client_login, 1);
  if (config_->log_connections) {
    spdlog::info("C-{}: {}/{}@{}:{} login attempt: db={} user={} application_name={}", id_,
                 database_, user_, peer_addr_, peer_port_, database_, user_, application_name_);
  }
  co_return true;
}

// ---------------------------------------------------------------------------------------------
// serve: the data path (client_session_relay.cpp) runs until it stops; then tell the client why.

void ClientSession::serve() {
  serving_ = true;
  client_.set_handler(this);
  pump();  // bytes pipelined behind the login, and whatever arrived meanwhile
}

asio::awaitable<void> ClientSession::report_end() {
  switch (end_) {
    case End::none:
    case End::client_gone:
      client_gone_ = true;
      break;
    case End::client_terminate:
      client_gone_ = true;
      end_texts().disconnect_reason = "client close request";
      break;
    case End::server_lost: {
      client_gone_ = true;
      // g++ 12 mishandles temporaries in co_await expressions (PR 99576): named arguments.
      const std::string why = ": the server closed the connection while the client was using it";
      pool_->server_lost();  // several at once: the backend went away (evicts its idle ones)
      if (server_fatal_sent_) {
        // The client has the server's own FATAL (pg_terminate_backend, shutdown): close.
        end_texts().disconnect_reason = "the server ended the connection";
        co_await abort_client(Err::server_connection_lost, why, false);
      } else {
        co_await abort_client(Err::server_connection_lost, why);
      }
      break;
    }
    case End::pool_error: {
      if ((end_error_ == Err::query_wait_timeout || end_error_ == Err::query_wait_unreachable) &&
          end_texts().argument.empty()) {
        end_texts().argument = std::to_string(config_->query_wait_timeout.count() / 1000);
      }
      client_gone_ = true;
      const auto context = pool_->explain(end_error_);
      co_await abort_client(end_error_, end_texts().argument, true, context.detail, context.hint);
      break;
    }
    case End::client_protocol:
    case End::server_protocol:
    case End::statement_mode_txn:
    case End::terminated:
      client_gone_ = true;
      co_await abort_client(end_error_, end_texts().argument);
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Servers off the data path: the welcome's first login, parameter sync.

asio::awaitable<bool> ClientSession::first_server() {
  state_ = ClientState::waiting;
  state_since_ = Clock::now();
  const auto wait = config_->query_wait_timeout;
  const auto deadline =
      wait.count() > 0 ? Clock::now() + wait : Clock::time_point::max() - std::chrono::hours(24);
  auto result = co_await pool_->acquire(reactor_, waiter_worker(), deadline);
  if (!result.server) {
    if (result.error == Err::query_wait_timeout || result.error == Err::query_wait_unreachable) {
      co_await fail_explained(result.error, std::to_string(wait.count() / 1000));
    } else {
      co_await fail_explained(result.error, result.detail);
    }
    co_return false;
  }
  pool_->release(std::move(result.server), true);
  co_return true;
}

asio::awaitable<bool> ClientSession::sync_parameters() {
  if (server_->applied_params == params_fingerprint_) co_return true;
  std::string sql;
  std::vector<std::string> resets;
  for (const auto& [name, value] : params_) {
    const std::string* current = server_->params.find(name);
    if (!current || *current != value) sql += set_config_sql(name, value);
  }
  // Parameters an earlier client changed and this one did not ask for: back to the default.
  if (auto defaults = pool_->defaults()) {
    for (const auto& [name, value] : server_->params) {
      if (params_.find(name)) continue;
      const std::string* original = defaults->find(name);
      if (!original) {
        sql += "RESET " + quote_ident(name) + ";";
        resets.push_back(name);
      } else if (*original != value) {
        sql += set_config_sql(name, *original);
      }
    }
  }
  if (!sql.empty()) {
    if (!co_await pool::run_internal_query(*server_, sql, std::chrono::seconds(10))) {
      spdlog::warn("C-{}: could not apply session parameters on the server: {}", id_, sql);
      co_return false;
    }
    // Values not reported by ParameterStatus (search_path, ...) are now what we set.
    for (const auto& [name, value] : params_) server_->params.set(name, value);
    for (const auto& name : resets) server_->params.erase(name);
  }
  server_->applied_params = params_fingerprint_;
  co_return true;
}

void ClientSession::note_parameter(std::string_view name, std::string_view value) {
  server_->params.set(name, value);
  if (params_.set(name, value)) {
    params_fingerprint_ = params_.fingerprint();
    // The server mirrors the pool's defaults plus this client's parameters, as before.
    server_->applied_params = params_fingerprint_;
  }
  if (ParamSet::equal_names(name, "application_name")) application_name_ = value;
}

void ClientSession::note_request() {
  if (query_start_ != Clock::time_point{}) return;  // pipelined: timed from the previous one
  query_start_ = net::turn_now();
  request_time_ = query_start_;
  if (xact_start_ == Clock::time_point{}) xact_start_ = query_start_;
}

void ClientSession::count_ready(TransactionStatus status, Clock::time_point now) {
  // PgBouncer's definitions: every ReadyForQuery ends a query; one that returns to 'I' ends a
  // transaction. Plain stores into this worker's slot: no lock, no shared cache line.
  stats_->add(pool::Stat::query, 1);
  if (query_start_ != Clock::time_point{}) {
    stats_->add_time(pool::Stat::query_time_us, now - query_start_);
  }
  if (status == TransactionStatus::idle && xact_start_ != Clock::time_point{}) {
    stats_->add(pool::Stat::xact, 1);
    stats_->add_time(pool::Stat::xact_time_us, now - xact_start_);
    xact_start_ = expected_ready_ > 0 ? now : Clock::time_point{};
  }
  // A pipelined query behind this one starts now.
  query_start_ = expected_ready_ > 0 ? now : Clock::time_point{};
}

// ---------------------------------------------------------------------------------------------
// cleanup: give the server back only if it is provably clean.

asio::awaitable<void> ClientSession::cleanup() {
  state_ = ClientState::closing;
  client_gone_ = true;
  serving_ = false;
  if (waiting_ && pool_->cancel_wait(*this)) waiting_ = false;
  // A check or parameter sync still running on the server finishes first (it owns server_).
  while (linking_) co_await link_done_.async_wait(net::use_nothrow);
  if (server_) {
    server_->conn.set_handler(nullptr);
    if (!server_failed_ && !server_owes_nothing()) {
      // A query is still running for a client that left: cancel it rather than wait for it,
      // then read what the server still sends until it is idle again.
      forward_cancel();
      if (!co_await drain_server(kCleanupTimeout)) server_failed_ = true;
    }
    // A cancel still on its way could hit the next client's query on this backend: the server
    // stays here until PostgreSQL has acted on it (bounded by send_cancel's own limits).
    while (!server_failed_ && cancels_in_flight_ > 0) {
      cancel_done_.reset();
      co_await cancel_done_.async_wait(net::use_nothrow);
    }
    // An extended-protocol batch without its Sync cannot be ended without committing or
    // guessing at its state: such a server is closed, not reused.
    bool clean = !server_failed_ && server_owes_nothing() && !mid_batch_;
    if (clean && server_->status != TransactionStatus::idle) {
      clean = co_await pool::run_internal_query(*server_, "ROLLBACK", kCleanupTimeout);
    }
    const auto settings = pool_->settings();
    const bool reset =
        settings.mode == config::PoolMode::session || settings.server_reset_query_always;
    if (clean && reset && !settings.server_reset_query.empty()) {
      clean =
          co_await pool::run_internal_query(*server_, settings.server_reset_query, kCleanupTimeout);
      if (clean) {
        server_->params = pool_->defaults().value_or(ParamSet{});
        server_->applied_params = 0;
      }
    }
    end_lease(disconnect_reason());
    pool_->release(std::move(server_), clean, app_share_);
  }
  if (!in_.empty()) net::BufferPool::give(std::move(in_), in_buffer_size_);
  if (state_ != ClientState::login) log_disconnect(disconnect_reason());
  client_.close();
}

// ---------------------------------------------------------------------------------------------
// Control from outside the coroutine (janitor, cancel, shutdown): all on this worker's thread.

void ClientSession::forward_cancel() {
  if (!server_ || expected_ready_ == 0) return;  // nothing running: PostgreSQL ignores it too
  // Until PostgreSQL has closed the cancel connection (it signals the backend first), the
  // server is not given to anyone else: a late cancel must not hit another client's query.
  ++cancels_in_flight_;
  auto endpoint = server_->endpoint;
  const auto pid = server_->backend_pid;
  const auto key = server_->backend_key;
  asio::co_spawn(
      reactor_.io(),
      [](std::shared_ptr<ClientSession> self, net::Endpoint to, std::int32_t backend_pid,
         std::int32_t backend_key) -> asio::awaitable<void> {
        co_await pool::send_cancel(self->reactor_, to, backend_pid, backend_key);
        self->cancel_finished();
      }(shared_from_this(), std::move(endpoint), pid, key),
      asio::detached);
}

void ClientSession::cancel_finished() {
  if (--cancels_in_flight_ > 0) return;
  cancel_done_.set();
  // The transaction ended while the cancel was on its way: the server can go back now.
  if (serving_ && server_ && !linking_ && transaction_over()) {
    release_server();
    pump();
  }
}

void ClientSession::terminate(Err reason, std::string argument) {
  if (ending_) return;
  ending_ = true;
  if (serving_) {
    // The data path stops; serve() sends the error and cleanup() cancels, rolls back and
    // returns the server like for any vanished client.
    stop_data_path(End::terminated, reason, std::move(argument));
    return;
  }
  auto self = shared_from_this();
  asio::co_spawn(
      reactor_.io(),
      [self, reason, argument = std::move(argument)]() -> asio::awaitable<void> {
        // Ending the client connection ends serve(); cleanup() then cancels, rolls back and
        // returns the server like for any vanished client.
        co_await self->abort_client(reason, argument);
      },
      asio::detached);
}

asio::awaitable<void> ClientSession::abort_client(Err code, const std::string& argument,
                                                  bool send_error, const std::string& detail,
                                                  const std::string& hint) {
  // Another coroutine may be reading the socket (login, console), so unlike fail() this does
  // not drain itself: it writes the error, half-closes, and lets that read see the close. A
  // client that does not close is cut off shortly after. Mid-way through a server message the
  // error cannot be written without corrupting the stream: then the connection only closes.
  auto self = shared_from_this();
  const auto& spec = error_spec(code);
  const std::string message = error_message(code, argument);
  if (send_error) {
    spdlog::warn("C-{}: {}/{}@{}:{} pooler error: {} ({})", id_, database_, user_, peer_addr_,
                 peer_port_, message, spec.sqlstate);
    end_texts().disconnect_reason = message;
  }
  if (!client_.is_open()) co_return;
  const bool mid_message = server_ && (relay_remaining_ > 0 || relay_out_begin_ < relay_out_end_);
  if (send_error && !mid_message) {
    std::string out;
    proto::MessageWriter(out).error_response(spec.severity, spec.sqlstate, message, detail, hint);
    co_await write_client(out);
  }
  client_.shutdown_send();
  net::Timer timer(reactor_);
  co_await timer.async_wait_for(std::chrono::milliseconds(250), net::use_nothrow);
  client_.close();
}

void ClientSession::check_timeouts(Clock::time_point now, const config::Config& c) {
  // `c` is the current configuration, not the one the client logged in with: a SIGHUP that
  // changes a timeout applies to connected clients too.
  if (ending_) return;
  switch (state_) {
    case ClientState::login:
      if (c.client_login_timeout.count() > 0 && now - connect_time_ > c.client_login_timeout) {
        terminate(Err::client_login_timeout,
                  fmt::format("{:g}", static_cast<double>(c.client_login_timeout.count()) / 1000));
      }
      break;
    case ClientState::idle:
      if (c.client_idle_timeout.count() > 0 && now - state_since_ > c.client_idle_timeout) {
        terminate(Err::client_idle_timeout);
      }
      break;
    case ClientState::waiting:
      // query_wait_timeout of the data path (the welcome's first login has its own deadline).
      // The error says why: a full pool (53300) or an unreachable backend (08001).
      if (waiting_ && c.query_wait_timeout.count() > 0 &&
          now - wait_start_ > c.query_wait_timeout && pool_->cancel_wait(*this)) {
        waiting_ = false;
        stop_data_path(End::pool_error, pool_->wait_timeout_error(),
                       std::to_string(c.query_wait_timeout.count() / 1000));
      } else {
        notify_waiting(now, c);
      }
      break;
    case ClientState::active: {
      const auto query_timeout = policy(c).query_timeout;  // [apps] lines may set their own
      if (server_ && expected_ready_ > 0 && query_start_ != Clock::time_point{} &&
          query_timeout.count() > 0 && now - query_start_ > query_timeout) {
        if (query_timeout_cancelled_ != query_start_) {
          // Cancel first: PostgreSQL answers the client with 57014 and the session goes on.
          query_timeout_cancelled_ = query_start_;
          query_timeout_cancel_sent_ = now;
          spdlog::info("C-{}: query_timeout: cancelling the running query (backend pid {})", id_,
                       server_->backend_pid);
          forward_cancel();
          note_forced_action("cancel", "query_timeout");
        } else if (now - query_timeout_cancel_sent_ > kCancelGrace) {
          // The backend ignored the cancel: the client gets the error, the server is closed
          // unless cleanup() finds it clean.
          note_forced_action("disconnect", "query_timeout: the backend ignored the cancel");
          terminate(Err::query_timeout);
        }
      } else {
        check_idle_lease(now, c);  // idle_transaction_timeout, idle_pinned_timeout
      }
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing to the client.

asio::awaitable<bool> ClientSession::write_client(const std::string& bytes) {
  auto ec = co_await client_.async_write_all(bytes);
  co_return !ec;
}

asio::awaitable<void> ClientSession::fail(Err code, const std::string& argument,
                                          const std::string& detail, const std::string& hint) {
  // A drain or timeout that fires while this error is written must not send a second FATAL.
  ending_ = true;
  const auto& spec = error_spec(code);
  const std::string message = error_message(code, argument);
  if (config_ && config_->log_pooler_errors) {
    spdlog::warn("C-{}: {}/{}@{}:{} pooler error: {} ({})", id_, database_, user_, peer_addr_,
                 peer_port_, message, spec.sqlstate);
  }
  std::string out;
  proto::MessageWriter(out).error_response(spec.severity, spec.sqlstate, message, detail, hint);
  if (!client_.is_open()) co_return;
  co_await write_client(out);
  // Half-close and drain briefly so the error reaches the driver instead of a reset.
  client_.shutdown_send();
  net::Timer timer(reactor_);
  auto drain = [this]() -> asio::awaitable<void> {
    std::array<std::byte, 512> sink{};
    for (;;) {
      auto got = co_await client_.async_read_some(sink.data(), sink.size());
      if (got.error || got.bytes == 0) co_return;
    }
  };
  co_await (drain() || timer.async_wait_for(std::chrono::milliseconds(250), net::use_nothrow));
  client_.close();
}

void ClientSession::log_disconnect(std::string_view reason) {
  if (!config_ || !config_->log_disconnections) return;
  const auto age =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - connect_time_);
  spdlog::info("C-{}: {}/{}@{}:{} closing because: {} (age={}s)", id_, database_, user_, peer_addr_,
               peer_port_, reason, age.count() / 1000);
}

}  // namespace pgw::session
