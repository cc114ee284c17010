#include "util/errors.hpp"

#include <array>
#include <cstdlib>

namespace pgw {
namespace {

// SQLSTATEs follow PostgreSQL where PostgreSQL has a matching condition, so drivers classify
// pgwarden's errors the way they classify the server's (e.g. 28P01 is never retried, 53300 is).
constexpr std::array kErrors{
    ErrorSpec{Err::protocol_violation, "08P01", "FATAL", "{}"},
    ErrorSpec{Err::unsupported_protocol, "0A000", "FATAL",
              "unsupported frontend protocol {}: server supports 3.0 to 3.0"},
    ErrorSpec{Err::no_user, "28000", "FATAL",
              "no PostgreSQL user name specified in startup packet"},
    ErrorSpec{Err::no_such_database, "3D000", "FATAL", "database \"{}\" does not exist"},
    ErrorSpec{Err::password_failed, "28P01", "FATAL",
              "password authentication failed for user \"{}\""},
    ErrorSpec{Err::sasl_failed, "08P01", "FATAL", "malformed SCRAM message: {}"},
    ErrorSpec{Err::auth_unsupported, "08P01", "FATAL",
              "server requested an unsupported authentication method: {}"},
    ErrorSpec{Err::max_client_conn, "53300", "FATAL",
              "no more connections allowed (max_client_conn)"},
    ErrorSpec{Err::query_wait_timeout, "53300", "FATAL",
              "query_wait_timeout: no server connection became available within {} s"},
    ErrorSpec{Err::server_login_failed, "08001", "FATAL", "server login failed: {}"},
    ErrorSpec{Err::server_connect_failed, "08001", "FATAL", "could not connect to server: {}"},
    ErrorSpec{Err::server_connection_lost, "08006", "FATAL", "connection to server lost{}"},
    ErrorSpec{Err::client_login_timeout, "08P01", "FATAL",
              "client_login_timeout: login took longer than {} s"},
    ErrorSpec{Err::client_idle_timeout, "57P05", "FATAL",
              "terminating connection due to idle-session timeout (client_idle_timeout)"},
    ErrorSpec{Err::idle_transaction_timeout, "25P03", "FATAL",
              "terminating connection due to idle-in-transaction timeout"},
    ErrorSpec{Err::query_timeout, "57014", "FATAL",
              "canceling statement due to statement timeout (query_timeout)"},
    ErrorSpec{Err::statement_mode_transaction, "0A000", "FATAL",
              "transaction blocks not allowed in statement pooling mode"},
    ErrorSpec{Err::shutting_down, "57P01", "FATAL",
              "terminating connection due to administrator command"},
    ErrorSpec{Err::admin_shutdown, "57P01", "FATAL",
              "terminating connection due to administrator command"},
    ErrorSpec{Err::unsupported_startup_parameter, "08P01", "FATAL",
              "unsupported startup parameter: {}"},
    ErrorSpec{Err::internal, "XX000", "FATAL", "internal error: {}"},
    ErrorSpec{Err::admin_not_allowed, "28000", "FATAL",
              "not allowed: user \"{}\" is in neither admin_users nor stats_users"},
    ErrorSpec{Err::admin_permission_denied, "42501", "ERROR",
              "permission denied: {} needs a user listed in admin_users"},
    ErrorSpec{Err::admin_unknown_command, "42601", "ERROR", "unknown command: {}"},
    ErrorSpec{Err::admin_syntax_error, "42601", "ERROR", "syntax error: {}"},
    ErrorSpec{Err::admin_no_such_database, "3D000", "ERROR", "no such database: {}"},
    ErrorSpec{Err::admin_no_such_client, "42704", "ERROR", "no client with id {}"},
    ErrorSpec{Err::admin_unknown_setting, "42704", "ERROR",
              "unrecognized configuration parameter \"{}\""},
    ErrorSpec{Err::admin_setting_fixed, "55P02", "ERROR",
              "parameter \"{}\" cannot be changed without restarting"},
    ErrorSpec{Err::admin_invalid_value, "22023", "ERROR", "{}"},
    ErrorSpec{Err::admin_wrong_state, "55000", "ERROR", "{}"},
    ErrorSpec{Err::admin_reload_failed, "F0000", "ERROR", "reload failed: {}"},
    ErrorSpec{Err::app_max_client_conn, "53300", "FATAL",
              "no more connections allowed for application \"{}\" (max_client_conn in [apps])"},
    // PostgreSQL's 57P05 is its idle_session_timeout; the text says which pgwarden limit it was.
    ErrorSpec{Err::idle_pinned_timeout, "57P05", "FATAL",
              "terminating connection due to idle-session timeout (idle_pinned_timeout: the "
              "session held a server connection without using it for more than {} s)"},
    ErrorSpec{Err::admin_no_such_app, "42704", "ERROR", "no client with application_name \"{}\""},
    // PostgreSQL's own texts for the conditions it has (postmaster.c, CAC_*), so drivers that
    // match them treat these as the transient errors they are; pgwarden's details go in DETAIL
    // and HINT.
    ErrorSpec{Err::backend_unavailable, "57P03", "FATAL",
              "the database system is not accepting connections"},
    ErrorSpec{Err::draining, "57P03", "FATAL", "the database system is shutting down"},
    ErrorSpec{Err::max_waiting, "53300", "FATAL",
              "too many clients waiting for a server connection (max_waiting)"},
    ErrorSpec{Err::query_wait_unreachable, "08001", "FATAL",
              "query_wait_timeout: could not connect to the server within {} s"},
    ErrorSpec{Err::query_wait_notice, "00000", "NOTICE",
              "no server connection available yet, waiting for {} s (query_wait_notify)"},
    ErrorSpec{Err::overloaded, "53300", "FATAL", "sorry, too many clients already"},
};

}  // namespace

const ErrorSpec& error_spec(Err code) {
  for (const auto& spec : kErrors) {
    if (spec.code == code) return spec;
  }
  std::abort();  // every enumerator has a row; a missing one is a programming error
}

}  // namespace pgw
