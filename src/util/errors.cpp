#include "util/errors.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>

#include "protocol/codec.hpp"

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
    // Arguments: the application_name, its cap, the [apps] pattern, where that line is.
    ErrorSpec{Err::app_max_client_conn, "53300", "FATAL",
              "no more connections allowed for application \"{}\" (max_client_conn in [apps])",
              "application \"{0}\" is limited to {1} client connections by [apps] line \"{2}\" "
              "({3})"},
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
    // Arguments: the open descriptors, RLIMIT_NOFILE.
    ErrorSpec{Err::overloaded, "53300", "FATAL", "sorry, too many clients already",
              "pgwarden has {0} of its {1} file descriptors open (RLIMIT_NOFILE) and takes no "
              "new connections until it is under 80 %.",
              "Retry later; raise the open files limit (ulimit -n) if this happens often."},
    // Argument: how many clients were waiting for a server of the pool.
    ErrorSpec{Err::reclaimed_under_pressure, "25P03", "FATAL",
              "terminating connection due to idle-in-transaction timeout (reclaimed under "
              "pressure)",
              "The transaction stayed idle past reclaim_under_pressure_after while {} clients "
              "were waiting for a server connection of this pool; pgwarden rolled it back and "
              "gave the server connection to the oldest of them.",
              "Commit or roll back transactions promptly: an open transaction holds a server "
              "connection that other clients wait for."},
    // PostgreSQL's texts: the client's statement names are its own, whatever the server's.
    ErrorSpec{Err::prepared_statement_missing, "26000", "ERROR",
              "prepared statement \"{}\" does not exist"},
    ErrorSpec{Err::prepared_statement_exists, "42P05", "ERROR",
              "prepared statement \"{}\" already exists"},
    ErrorSpec{Err::prepared_statement_too_large, "54000", "FATAL",
              "a named prepared statement's Parse, Describe or Close message is larger than 1 MB",
              "pgwarden reads these messages whole to map statement names in transaction pooling.",
              "Use an unnamed statement for such a query, or session pooling."},
    // Raised by PostgreSQL itself, in place of the refused statement: {0} says what the
    // statement does (proto::describe()), {1} is the hint for that kind.
    ErrorSpec{Err::session_state_rejected, "0A000", "ERROR",
              "{} is not allowed in transaction pooling",
              "session_state = reject: the statement would leave {0} on a server connection "
              "that other clients use after this transaction.",
              "{1}"},
    // {} is 'host "ADDR", user "U", database "D", no encryption', as PostgreSQL writes it.
    ErrorSpec{Err::hba_no_entry, "28000", "FATAL", "no pg_hba.conf entry for {}"},
    ErrorSpec{Err::hba_rejected, "28000", "FATAL", "pg_hba.conf rejects connection for {}"},
    ErrorSpec{Err::peer_failed, "28000", "FATAL", "Peer authentication failed for user \"{}\""},
    ErrorSpec{Err::tls_required, "08P01", "FATAL", "SSL required", "",
              "client_tls_sslmode is {}: connect with sslmode=require (or prefer)."},
    ErrorSpec{Err::tls_after_data, "08P01", "FATAL", "received unencrypted data after SSL request",
              "This could be either a client-software bug or evidence of an attempted "
              "man-in-the-middle attack."},
    ErrorSpec{Err::cert_failed, "28000", "FATAL",
              "certificate authentication failed for user \"{}\""},
    // PgBouncer's texts (client.c), with max_client_conn's SQLSTATE: drivers retry a 53300.
    // Arguments: the database (the name the client asked for) or the login user, the cap.
    ErrorSpec{Err::max_db_client_connections, "53300", "FATAL",
              "client connections exceeded (max_db_client_connections)",
              "database \"{0}\" allows {1} client connections at once"},
    ErrorSpec{Err::max_user_client_connections, "53300", "FATAL",
              "client connections exceeded (max_user_client_connections)",
              "user \"{0}\" may have {1} client connections at once"},
    // PostgreSQL 17's own condition and text for its transaction_timeout (PgBouncer sends
    // 08P01 "transaction timeout"); the text says which pgwarden limit it was.
    ErrorSpec{Err::transaction_timeout, "25P04", "FATAL",
              "terminating connection due to transaction timeout (transaction_timeout: the "
              "transaction lasted more than {} s)"},
    ErrorSpec{Err::auth_query_failed, "08P01", "FATAL", "authentication query failed", "{}",
              "a bouncer config error: check auth_user, auth_query and auth_dbname"},
    ErrorSpec{Err::trust_failed, "28000", "FATAL",
              "\"trust\" authentication failed for user \"{}\"", "{1}"},
    // PostgreSQL's text; the DETAIL is PgBouncer's, which drivers and its tests look for.
    ErrorSpec{Err::scram_failed, "28P01", "FATAL", "password authentication failed for user \"{}\"",
              "SASL authentication failed"},
    // PostgreSQL's text (auth.c, auth_failed()) and SQLSTATE for a failed ldap login.
    ErrorSpec{Err::ldap_failed, "28000", "FATAL", "LDAP authentication failed for user \"{}\""},
    // PgBouncer's texts; the SQLSTATE is PostgreSQL's for a database that takes no
    // connections (datallowconn false), where PgBouncer sends 08P01.
    ErrorSpec{Err::database_disabled, "55000", "FATAL", "database \"{}\" is disabled", "",
              "an administrator ran DISABLE {0}; ENABLE {0} admits logins again"},
    ErrorSpec{Err::auth_database_disabled, "55000", "FATAL",
              "authentication database \"{}\" is disabled", "",
              "an administrator ran DISABLE {0}; ENABLE {0} admits logins again"},
};

}  // namespace

const ErrorSpec& error_spec(Err code) {
  for (const auto& spec : kErrors) {
    if (spec.code == code) return spec;
  }
  std::abort();  // every enumerator has a row; a missing one is a programming error
}

ErrorReport explain(Err code, std::string_view argument, const PoolCondition& pool) {
  ErrorReport out{code, error_message(code, argument), {}, {}};
  using Breaker = PoolCondition::Breaker;
  const int in_use = pool.servers - pool.connecting;
  switch (code) {
    case Err::backend_unavailable: {
      const char* state = pool.breaker == Breaker::open        ? "is open"
                          : pool.breaker == Breaker::half_open ? "is testing the server"
                                                               : "has just closed again";
      out.detail =
          fmt::format("pgwarden's circuit breaker for the server at {} {}", pool.server, state);
      if (!pool.backend_error.empty()) out.detail += "; last error: " + pool.backend_error;
      if (pool.breaker == Breaker::open) {
        const auto seconds = std::chrono::ceil<std::chrono::seconds>(pool.until_probe).count();
        out.hint =
            fmt::format("pgwarden tries to connect again in {} s; retry the connection after that.",
                        std::max<std::int64_t>(seconds, 1));
      } else if (pool.breaker == Breaker::half_open) {
        out.hint = "pgwarden is testing the connection to the server now; retry in a few seconds.";
      } else {
        out.hint = "Retry the connection now.";
      }
      break;
    }
    case Err::query_wait_unreachable:
      out.detail = !pool.last_login_error.empty()
                       ? "last error: " + pool.last_login_error
                       : fmt::format("connecting to the server at {} did not finish", pool.server);
      out.hint = "Check that the server is running and reachable; pgwarden keeps retrying.";
      break;
    case Err::query_wait_timeout:
      out.detail =
          fmt::format("all {} server connections of pool {}/{} were in use ({} clients waiting)",
                      in_use, pool.database, pool.user, pool.waiting);
      out.hint = "Look for clients that hold transactions open (SHOW LEASES), or raise pool_size.";
      break;
    case Err::max_waiting:
      out.detail =
          fmt::format("{} clients are already waiting for a server connection of pool {}/{}",
                      pool.max_waiting, pool.database, pool.user);
      out.hint = "Retry later.";
      break;
    case Err::query_wait_notice:
      if (!pool.backend_error.empty() &&
          (pool.breaker != Breaker::closed || pool.consecutive_failures > 0)) {
        out.detail =
            fmt::format("the server at {} cannot be reached: {}", pool.server, pool.backend_error);
      } else if (pool.servers > 0 && pool.servers == pool.connecting) {
        out.detail = fmt::format("connecting to the server at {}", pool.server);
      } else {
        out.detail = fmt::format("all {} server connections of pool {}/{} are in use", in_use,
                                 pool.database, pool.user);
      }
      break;
    default:
      break;
  }
  return out;
}

void append_error_response(std::string& out, const ErrorReport& report) {
  const auto& spec = error_spec(report.code);
  proto::MessageWriter writer(out);
  if (spec.severity == "NOTICE" || spec.severity == "WARNING") {
    writer.notice_response(spec.severity, spec.sqlstate, report.message, report.detail,
                           report.hint);
  } else {
    writer.error_response(spec.severity, spec.sqlstate, report.message, report.detail, report.hint);
  }
}

}  // namespace pgw
