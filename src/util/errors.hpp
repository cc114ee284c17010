// The one table of errors pgwarden itself reports to clients: each error code maps to a
// SQLSTATE, a severity, a message template and the templates of its DETAIL and HINT, so texts
// stay consistent across the code base and docs/errors.md can be checked against it. The
// wording that depends on the state of a pool (a circuit breaker, the servers in use) lives
// here too (explain()); the pool only supplies the facts (PoolCondition). An ErrorReport is
// what a client is told; append_error_response() is the one place that turns it into bytes.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgw {

enum class Err : std::uint8_t {
  protocol_violation,          // malformed or oversized input
  unsupported_protocol,        // protocol major version not 3
  no_user,                     // startup packet without "user"
  no_such_database,            // unknown database, no "*" fallback
  password_failed,             // wrong password / unknown user with password auth
  sasl_failed,                 // malformed SCRAM exchange
  auth_unsupported,            // the server asked for an auth method we can't do
  max_client_conn,             // global client limit
  query_wait_timeout,          // waited too long for a server connection
  server_login_failed,         // cached login error toward the server
  server_connect_failed,       // could not reach the server
  server_connection_lost,      // server went away while a client was using it
  client_login_timeout,        // client did not finish authenticating in time
  client_idle_timeout,         // client idle too long
  idle_transaction_timeout,    // idle in transaction too long
  query_timeout,               // query ran past query_timeout
  statement_mode_transaction,  // a transaction block under pool_mode = statement
  shutting_down,               // pgwarden is stopping
  admin_shutdown,              // connection closed by an administrator
  unsupported_startup_parameter,
  internal,
  // Admin console (ERROR unless noted: the console session continues). Kept after `internal`
  // so the list of pooler errors above stays as it is.
  admin_not_allowed,        // FATAL: user not in admin_users / stats_users
  admin_permission_denied,  // a stats user ran a command that needs admin_users
  admin_unknown_command,    // not a console command
  admin_syntax_error,       // a console command with bad arguments
  admin_no_such_database,   // PAUSE/RESUME/... of an unknown database
  admin_no_such_client,     // KILL_CLIENT of an unknown id
  admin_unknown_setting,    // SET of an unknown key
  admin_setting_fixed,      // SET of a key that needs a restart
  admin_invalid_value,      // SET with a value the key does not accept
  admin_wrong_state,        // PAUSE when paused, RESUME when not paused, ...
  admin_reload_failed,      // RELOAD could not read the configuration
  app_max_client_conn,      // an [apps] line's max_client_conn reached
  idle_pinned_timeout,      // session mode: held a server while idle too long
  admin_no_such_app,        // KILL_APP of an application_name no client has
  // Resilience (docs/operations.md).
  backend_unavailable,     // the backend's circuit breaker is open (or probing)
  draining,                // a new login while pgwarden drains for shutdown
  max_waiting,             // the pool's wait queue is full
  query_wait_unreachable,  // query_wait_timeout while the backend could not be reached
  query_wait_notice,       // NOTICE: still waiting for a server (query_wait_notify)
  overloaded,              // open files near RLIMIT_NOFILE: no new connections
  // Leak guard: an idle transaction ended for the clients waiting (reclaim_under_pressure_after)
  reclaimed_under_pressure,
  // Prepared statements in transaction pooling (docs/transaction-pooling.md): PostgreSQL's
  // own errors for a client's statement names, which pgwarden maps to its own names.
  prepared_statement_missing,    // Bind/Describe of a name the client never prepared
  prepared_statement_exists,     // a second Parse of a name
  prepared_statement_too_large,  // a named Parse, Describe or Close over 1 MB
  // session_state = reject: a statement that would leave session state on a shared server.
  session_state_rejected,
  // auth_type = hba (docs/configuration.md#auth_hba_file): PostgreSQL's wording.
  hba_no_entry,  // no line matches the client
  hba_rejected,  // the matching line's method is reject
  peer_failed,   // peer: the socket's OS user is not the user asked for
  // TLS toward clients (docs/security.md).
  tls_required,    // client_tls_sslmode require or above, and the client came in clear
  tls_after_data,  // bytes behind the SSLRequest, before the handshake (buffer stuffing)
  cert_failed,     // cert: no verified client certificate, or its CN is not the user
  // Client caps per database and per user, as PgBouncer counts them (docs/configuration.md).
  max_db_client_connections,    // the database's max_db_client_connections reached
  max_user_client_connections,  // the login user's max_user_client_connections reached
  transaction_timeout,          // a transaction lasted longer than transaction_timeout
  auth_query_failed,            // auth_query could not be run, or failed (the server's message)
  trust_failed,                 // trust, and the user is not in auth_file (PgBouncer's words)
  scram_failed,                 // a SCRAM exchange that does not prove the password (or the user)
  // auth_hba_file's ldap method: the bind was refused, the user not found, or the LDAP server
  // not reached in time (the log says which; the client only that it failed, as PostgreSQL).
  ldap_failed,
  // DISABLE (admin console): the database, or the one its auth_query runs in, takes no logins.
  database_disabled,
  auth_database_disabled,
};

struct ErrorSpec {
  Err code;
  std::string_view sqlstate;
  std::string_view severity;  // FATAL: the connection closes; ERROR: it continues
  std::string_view text;      // fmt template; {} takes the (first) argument, if any
  // DETAIL and HINT templates ("" = none), formatted with the same arguments as the text
  // ({0}, {1}, ... when there are several).
  std::string_view detail = {};
  std::string_view hint = {};
};

const ErrorSpec& error_spec(Err code);

// The message for `code` with its argument filled in.
template <typename... Args>
std::string error_message(Err code, const Args&... args) {
  return fmt::format(fmt::runtime(error_spec(code).text), args...);
}

// What a client is told: the row's SQLSTATE and severity, a message, DETAIL and HINT.
struct ErrorReport {
  Err code = Err::internal;
  std::string message;
  std::string detail;  // "" = none
  std::string hint;    // "" = none
};

// The report for `code`: message, DETAIL and HINT from the table, formatted with `args`.
template <typename... Args>
ErrorReport report(Err code, const Args&... args) {
  const auto& spec = error_spec(code);
  ErrorReport out{code, fmt::format(fmt::runtime(spec.text), args...), {}, {}};
  if (!spec.detail.empty()) out.detail = fmt::format(fmt::runtime(spec.detail), args...);
  if (!spec.hint.empty()) out.hint = fmt::format(fmt::runtime(spec.hint), args...);
  return out;
}

// Facts about a pool and its backend that explain the errors a pool gives
// (pool::Pool::condition() fills it in under the pool's mutex).
struct PoolCondition {
  enum class Breaker : std::uint8_t { closed, open, half_open };
  std::string database, user;  // the pool
  std::string server;          // its backend, "host:port"
  Breaker breaker = Breaker::closed;
  std::string backend_error;  // the breaker's last recorded error ("" = none)
  int consecutive_failures = 0;
  std::chrono::milliseconds until_probe{0};  // while open: until the next probe
  std::string last_login_error;              // the pool's last failed login ("" = none)
  int servers = 0, connecting = 0, waiting = 0, max_waiting = 0;
};

// The report for a pool error (backend_unavailable, query_wait_timeout, query_wait_unreachable,
// max_waiting, query_wait_notice and the rest): the table's message with `argument`, and a
// DETAIL and HINT that say what the pool was doing.
ErrorReport explain(Err code, std::string_view argument, const PoolCondition& pool);

// Appends the ErrorResponse (NoticeResponse for a NOTICE row) carrying `report` to `out`.
void append_error_response(std::string& out, const ErrorReport& report);

}  // namespace pgw
