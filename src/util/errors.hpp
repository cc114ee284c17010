// The one table of errors pgwarden itself reports to clients: each error code maps to a
// SQLSTATE, a severity and a message template, so texts stay consistent across the code base
// and docs/errors.md can be checked against it.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace pgw {

enum class Err {
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
};

struct ErrorSpec {
  Err code;
  std::string_view sqlstate;
  std::string_view severity;  // FATAL: the connection closes; ERROR: it continues
  std::string_view text;      // fmt template; {} takes the one argument, if any
};

const ErrorSpec& error_spec(Err code);

// The message for `code` with its argument filled in.
template <typename... Args>
std::string error_message(Err code, const Args&... args) {
  return fmt::format(fmt::runtime(error_spec(code).text), args...);
}

}  // namespace pgw
