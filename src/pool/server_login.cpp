// Server-side connection setup: connect, StartupMessage, authentication as the pool's user,
// parameter collection. Also the small internal-query and cancel helpers.
#include <spdlog/spdlog.h>

#include "auth/auth.hpp"
#include "net/message_reader.hpp"
#include "pool/pool.hpp"
#include "protocol/message_types.hpp"
#include "util/activity.hpp"

namespace pgw::pool {
namespace {

using asio::experimental::awaitable_operators::operator||;

std::string error_text(const proto::ErrorFields& fields) {
  std::string text(fields.message);
  if (!fields.sqlstate.empty()) text += " (" + std::string(fields.sqlstate) + ")";
  return text;
}

// Server errors at login that say the backend is unavailable or refuses pgwarden itself, as
// opposed to one pool's settings (3D000 no such database, 42501, ...): connection exceptions
// (08), starting up / shutting down / crashed (57P01-57P03), authentication (28; but see
// Pool::login_finished: not while the backend serves other pools).
bool is_connection_class(std::string_view sqlstate) {
  return sqlstate.starts_with("08") || sqlstate.starts_with("28") || sqlstate == "57P01" ||
         sqlstate == "57P02" || sqlstate == "57P03";
}

asio::awaitable<bool> write_all(net::Connection& connection, const std::string& bytes) {
  auto ec = co_await connection.async_write_all(bytes);
  co_return !ec;
}

// server_tls_sslmode: SSLRequest, and the handshake if the server says 'S'. "" when the login
// may go on (over TLS, or in clear where the mode lets it), else why not. `allow` asks for no
// TLS (PgBouncer's reading of it): libpq's retry with TLS after a refused clear login is not
// done.
asio::awaitable<std::string> start_server_tls(ServerConn& server, const PoolSettings& settings,
                                              const std::string& host) {
  // Not over a Unix socket (PostgreSQL offers no TLS there, and libpq does not ask).
  if (!settings.tls || settings.tls_mode <= config::SslMode::allow || !net::is_tcp(server.endpoint))
    co_return std::string();
  static constexpr std::array<std::byte, 8> kSslRequest{
      std::byte{0},    std::byte{0},    std::byte{0},    std::byte{8},
      std::byte{0x04}, std::byte{0xd2}, std::byte{0x16}, std::byte{0x2f}};  // 80877103
  if (auto ec = co_await server.conn.async_write_all(kSslRequest))
    co_return "connection closed before TLS: " + ec.message();
  // One byte, read alone: what follows 'S' is the handshake, which OpenSSL reads itself.
  std::byte answer{};
  auto got = co_await server.conn.async_read_some(&answer, 1);
  if (got.error || got.bytes == 0)
    co_return std::string("server closed the connection at SSLRequest");
  if (answer == std::byte{'N'}) {
    if (settings.tls_mode >= config::SslMode::require)
      co_return "server does not support TLS, but server_tls_sslmode is " +
          std::string(config::to_string(settings.tls_mode));
    co_return std::string();  // prefer: in clear
  }
  if (answer != std::byte{'S'}) co_return std::string("server answered SSLRequest with an error");
  server.conn.start_tls(std::make_unique<net::TlsStream>(settings.tls, server.conn, host));
  auto why = co_await server.conn.async_tls_handshake();
  if (!why.empty()) co_return "TLS to the server failed: " + why;
  co_return std::string();
}

// The login conversation proper, without the deadline.
asio::awaitable<LoginOutcome> login_steps(net::Reactor& reactor, unsigned worker,
                                          const PoolSettings& settings,
                                          const config::ServerAddress& address,
                                          std::optional<std::string> client_key) {
  LoginOutcome out;
  std::error_code resolve_error;
  net::Endpoint endpoint;
  {
    // getaddrinfo blocks this worker's loop: the watchdog names it if DNS is slow.
    activity::Scope scope("resolving a server host name (DNS)");
    endpoint = net::server_endpoint(address.host, address.port, resolve_error);
  }
  if (resolve_error) {
    out.error = Err::server_connect_failed;
    out.detail = "could not resolve host \"" + address.host + "\"";
    out.connection_failure = true;
    co_return out;
  }
  auto server = std::make_unique<ServerConn>(worker);
  server->endpoint = endpoint;
  auto connect_error =
      co_await net::connect(server->conn, reactor, endpoint, settings.server_connect_timeout);
  if (connect_error) {
    out.error = Err::server_connect_failed;
    out.detail = net::describe(endpoint) + ": " + connect_error.message();
    out.connection_failure = true;
    co_return out;
  }
  if (net::is_tcp(endpoint)) net::set_nodelay(server->conn.fd());
  if (auto why = co_await start_server_tls(*server, settings, address.host); !why.empty()) {
    out.error = Err::server_login_failed;
    out.detail = std::move(why);
    out.connection_failure = true;
    co_return out;
  }

  std::string packet;
  proto::MessageWriter writer(packet);
  std::vector<std::pair<std::string, std::string>> params;
  params.emplace_back("user", settings.server_user);
  params.emplace_back("database", settings.dbname);
  for (const auto& param : settings.startup_params) params.push_back(param);
  writer.startup_message(params);
  if (!co_await write_all(server->conn, packet)) {
    out.error = Err::server_connect_failed;
    out.detail = "connection closed during login";
    out.connection_failure = true;
    co_return out;
  }

  net::MessageReader reader;
  std::optional<auth::ScramClient> scram;
  for (;;) {
    auto next = co_await reader.next(server->conn, proto::Direction::backend);
    if (!std::holds_alternative<proto::Message>(next)) {
      out.error = Err::server_login_failed;
      out.detail = std::holds_alternative<std::error_code>(next)
                       ? "server closed the connection during login"
                       : "invalid message from server during login";
      out.connection_failure = true;
      co_return out;
    }
    const auto message = std::get<proto::Message>(next);
    packet.clear();
    switch (message.header.type) {
      case proto::from_server::kAuthentication: {
        auto request = proto::parse_auth_request(message.body);
        if (!request) {
          out.error = Err::server_login_failed;
          out.detail = "malformed authentication request";
          out.connection_failure = true;
          co_return out;
        }
        switch (request->kind) {
          case proto::AuthRequestKind::ok:
            break;
          case proto::AuthRequestKind::cleartext:
            if (settings.password.empty() || auth::is_md5_hash(settings.password) ||
                auth::is_scram_secret(settings.password)) {
              out.error = Err::server_login_failed;
              out.detail =
                  settings.password.empty()
                      ? "server asked for a cleartext password, but none is configured"
                      : "server asked for a cleartext password, but only a hash is configured "
                        "(wrong password type)";
              co_return out;
            }
            writer.password_message(settings.password);
            break;
          case proto::AuthRequestKind::md5: {
            if (settings.password.empty() || auth::is_scram_secret(settings.password)) {
              out.error = Err::server_login_failed;
              out.detail = settings.password.empty()
                               ? "server asked for an md5 password, but none is configured"
                               : "server asked for an md5 password, but a SCRAM secret is "
                                 "configured (wrong password type)";
              co_return out;
            }
            const std::string salt(reinterpret_cast<const char*>(request->md5_salt.data()), 4);
            writer.password_message(
                auth::md5_response(settings.server_user, settings.password, salt));
            break;
          }
          case proto::AuthRequestKind::sasl: {
            const bool offered = std::find(request->mechanisms.begin(), request->mechanisms.end(),
                                           "SCRAM-SHA-256") != request->mechanisms.end();
            if (!offered) {
              out.error = Err::auth_unsupported;
              out.detail = "SASL without SCRAM-SHA-256";
              co_return out;
            }
            if (auth::is_scram_secret(settings.password)) {
              auto secret = auth::parse_scram_secret(settings.password);
              if (!secret || !client_key) {
                out.error = Err::server_login_failed;
                out.detail =
                    "SCRAM secret in auth_file but no plaintext password: a client must log in "
                    "with SCRAM first (wrong password type)";
                co_return out;
              }
              scram =
                  auth::ScramClient::with_client_key(settings.server_user, *client_key, *secret);
            } else if (!settings.password.empty() && !auth::is_md5_hash(settings.password)) {
              scram = auth::ScramClient::with_password(settings.server_user, settings.password);
            } else {
              out.error = Err::server_login_failed;
              out.detail = settings.password.empty()
                               ? "server asked for SCRAM, but no password is configured"
                               : "server asked for SCRAM, but an md5 hash is configured (wrong "
                                 "password type)";
              co_return out;
            }
            writer.sasl_initial_response("SCRAM-SHA-256", scram->client_first());
            break;
          }
          case proto::AuthRequestKind::sasl_continue: {
            auto reply =
                scram ? scram->handle_server_first(proto::as_chars(request->data)) : std::nullopt;
            if (!reply) {
              out.error = Err::server_login_failed;
              out.detail = "invalid SCRAM exchange with server";
              out.connection_failure = true;
              co_return out;
            }
            writer.sasl_response(*reply);
            break;
          }
          case proto::AuthRequestKind::sasl_final:
            if (!scram || !scram->verify_server_final(proto::as_chars(request->data))) {
              out.error = Err::server_login_failed;
              out.detail = "server SCRAM signature did not verify";
              out.connection_failure = true;
              co_return out;
            }
            break;
        }
        bool written = true;
        if (!packet.empty()) written = co_await write_all(server->conn, packet);
        if (!written) {
          out.error = Err::server_login_failed;
          out.detail = "connection closed during authentication";
          out.connection_failure = true;
          co_return out;
        }
        break;
      }
      case proto::from_server::kParameterStatus:
        if (auto status = proto::parse_parameter_status(message.body)) {
          server->params.set(status->name, status->value);
        }
        break;
      case proto::from_server::kBackendKeyData:
        if (auto key = proto::parse_backend_key_data(message.body)) {
          server->backend_pid = key->process_id;
          server->backend_key = key->secret_key;
        }
        break;
      case proto::from_server::kErrorResponse: {
        auto fields = proto::parse_error_fields(message.body);
        out.error = Err::server_login_failed;
        out.detail = fields ? error_text(*fields) : "server sent an error during login";
        out.connection_failure = !fields || is_connection_class(fields->sqlstate);
        out.auth_failure = fields && fields->sqlstate.starts_with("28");
        co_return out;
      }
      case proto::from_server::kReadyForQuery: {
        server->created = Clock::now();
        server->last_used = server->created;
        bool connected = true;
        if (!settings.connect_query.empty()) {
          connected = co_await run_internal_query(*server, settings.connect_query,
                                                  settings.server_connect_timeout);
        }
        if (!connected) {
          out.error = Err::server_login_failed;
          out.detail = "connect_query failed";
          co_return out;
        }
        out.server = std::move(server);
        co_return out;
      }
      default:
        break;  // NoticeResponse, NegotiateProtocolVersion: nothing to do
    }
  }
}

}  // namespace

asio::awaitable<LoginOutcome> login_server(net::Reactor& reactor, unsigned worker,
                                           const PoolSettings& settings,
                                           const config::ServerAddress& address,
                                           std::optional<std::string> client_key) {
  net::Timer deadline(reactor);
  auto result =
      co_await (login_steps(reactor, worker, settings, address, std::move(client_key)) ||
                deadline.async_wait_for(settings.server_connect_timeout, net::use_nothrow));
  if (result.index() == 1) {
    LoginOutcome timeout;
    timeout.error = Err::server_connect_failed;
    timeout.detail =
        fmt::format("server_connect_timeout ({:g} s) expired connecting to {}",
                    static_cast<double>(settings.server_connect_timeout.count()) / 1000,
                    backend_name(address.host, address.port));
    timeout.connection_failure = true;
    co_return timeout;
  }
  co_return std::move(std::get<0>(result));
}

asio::awaitable<bool> run_internal_query(ServerConn& server, std::string_view sql,
                                         std::chrono::milliseconds timeout) {
  std::string packet;
  proto::MessageWriter(packet).query(sql);
  if (!server.conn.is_open() || server.conn.reactor() == nullptr) co_return false;
  net::Timer deadline(*server.conn.reactor());
  auto conversation = [&]() -> asio::awaitable<bool> {
    if (!co_await write_all(server.conn, packet)) co_return false;
    net::MessageReader reader;
    bool failed = false;
    for (;;) {
      auto next = co_await reader.next(server.conn, proto::Direction::backend);
      if (!std::holds_alternative<proto::Message>(next)) co_return false;
      const auto message = std::get<proto::Message>(next);
      if (message.header.type == proto::from_server::kParameterStatus) {
        if (auto status = proto::parse_parameter_status(message.body)) {
          server.params.set(status->name, status->value);
        }
      } else if (message.header.type == proto::from_server::kErrorResponse) {
        failed = true;
        auto fields = proto::parse_error_fields(message.body);
        if (fields) spdlog::debug("internal query failed: {}", fields->message);
        if (fields && fields->is_fatal()) co_return false;
      } else if (message.header.type == proto::from_server::kReadyForQuery) {
        auto status = proto::parse_ready_for_query(message.body);
        if (!status) co_return false;
        server.status = *status;
        co_return !failed && *status == proto::TransactionStatus::idle;
      }
    }
  };
  auto result = co_await (conversation() || deadline.async_wait_for(timeout, net::use_nothrow));
  co_return result.index() == 0 && std::get<0>(result);
}

asio::awaitable<SecretLookup> run_auth_query(ServerConn& server, std::string_view sql,
                                             std::string_view user,
                                             std::chrono::milliseconds timeout) {
  SecretLookup out;
  out.error = "server connection lost";
  if (!server.conn.is_open() || server.conn.reactor() == nullptr) co_return out;
  std::string packet;
  proto::MessageWriter writer(packet);
  writer.parse(sql);
  const std::string_view parameters[] = {user};
  writer.bind(parameters);
  writer.execute();
  writer.sync();
  net::Timer deadline(*server.conn.reactor());
  auto conversation = [&]() -> asio::awaitable<void> {
    if (!co_await write_all(server.conn, packet)) co_return;
    net::MessageReader reader;
    int rows = 0;
    std::string failure;
    for (;;) {
      auto next = co_await reader.next(server.conn, proto::Direction::backend);
      if (!std::holds_alternative<proto::Message>(next)) co_return;
      const auto message = std::get<proto::Message>(next);
      switch (message.header.type) {
        case proto::from_server::kDataRow: {
          auto columns = proto::parse_data_row(message.body);
          if (!columns || columns->size() < 2) {
            failure = "auth_query must return two columns (user name, secret)";
          } else if (++rows == 1) {
            out.found = true;
            if ((*columns)[1]) out.secret = std::string(*(*columns)[1]);
          } else {
            failure = "auth_query returned more than one row";
          }
          break;
        }
        case proto::from_server::kErrorResponse: {
          auto fields = proto::parse_error_fields(message.body);
          failure = fields ? error_text(*fields) : "auth_query failed";
          if (fields && fields->is_fatal()) {
            out.error = std::move(failure);
            co_return;
          }
          break;
        }
        case proto::from_server::kParameterStatus:
          if (auto status = proto::parse_parameter_status(message.body))
            server.params.set(status->name, status->value);
          break;
        case proto::from_server::kReadyForQuery: {
          auto status = proto::parse_ready_for_query(message.body);
          if (!status) co_return;
          server.status = *status;
          out.reusable = *status == proto::TransactionStatus::idle;
          out.error = std::move(failure);
          co_return;
        }
        default:  // ParseComplete, BindComplete, CommandComplete, NoticeResponse
          break;
      }
    }
  };
  auto result = co_await (conversation() || deadline.async_wait_for(timeout, net::use_nothrow));
  if (result.index() != 0) out.error = "auth_query timed out";
  if (!out.error.empty()) {  // a failed query answers nothing
    out.found = false;
    out.secret.reset();
    if (result.index() != 0) out.reusable = false;
  }
  co_return out;
}

asio::awaitable<void> send_cancel(net::Reactor& reactor, net::Endpoint endpoint, std::int32_t pid,
                                  std::int32_t key) {
  net::Connection connection;
  auto ec = co_await net::connect(connection, reactor, endpoint, std::chrono::seconds(5));
  if (ec) {
    spdlog::warn("could not forward cancel request to {}: {}", net::describe(endpoint),
                 ec.message());
    co_return;
  }
  std::string packet;
  proto::MessageWriter(packet).cancel_request(pid, key);
  co_await write_all(connection, packet);
  // PostgreSQL closes the connection after reading the request; wait for that (bounded) so
  // the cancel is processed before we report anything.
  std::array<char, 16> sink{};
  net::Timer limit(reactor);
  auto read_to_end = [&]() -> asio::awaitable<void> {
    for (;;) {
      auto got = co_await connection.async_read_some(sink.data(), sink.size());
      if (got.error || got.bytes == 0) co_return;
    }
  };
  co_await (read_to_end() || limit.async_wait_for(std::chrono::seconds(5), net::use_nothrow));
}

}  // namespace pgw::pool
