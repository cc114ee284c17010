#include "config/keys.hpp"

#include <sstream>

namespace pgw::config {
namespace {

constexpr long kMax = 2147483647;

using A = Applies;
using T = KeyType;

// The table. Ranges and classes are what docs/configuration.md says; `applies` follows what
// the code does with a changed snapshot: the janitor and the pools read the current one
// (live), a session keeps the one it logged in with (next_login), a login toward a server
// reads the pool's settings (next_server), and the listeners, the workers and the log are set
// up once (restart).
constexpr KeySpec kKeys[] = {
    // Listening
    {"listen_addr", T::text, &Config::listen_addr, 0, 0, A::restart, "addresses to listen on"},
    {"listen_port", T::integer, &Config::listen_port, 1, 65535, A::restart, "TCP port"},
    {"unix_socket_dir", T::text, &Config::unix_socket_dir, 0, 0, A::restart,
     "directory of the Unix socket; empty: none"},
    {"listen_backlog", T::integer, &Config::listen_backlog, 1, 65535, A::restart,
     "listen(2) backlog"},
    {"so_reuseport", T::boolean, &Config::so_reuseport, 0, 0, A::restart,
     "SO_REUSEPORT on the TCP listeners"},
    {"tcp_defer_accept", T::integer, &Config::tcp_defer_accept, 0, kMax, A::restart,
     "seconds of TCP_DEFER_ACCEPT on the TCP listeners"},
    {"pkt_buf", T::integer, &Config::pkt_buf, 64, 1 << 24, A::next_login,
     "starting size of a client's and a server's relay buffer"},
    // Authentication
    {"auth_type", T::auth_type, &Config::auth_type, 0, 0, A::next_login,
     "how clients are checked against auth_file"},
    {"auth_file", T::text, &Config::auth_file, 0, 0, A::next_login, "the userlist file"},
    {"scram_iterations", T::integer, &Config::scram_iterations, 1, kMax, A::next_login,
     "PBKDF2 iterations of the SCRAM secret made from a plaintext auth_file password"},
    {"admin_users", T::list, &Config::admin_users, 0, 0, A::next_login,
     "users who may run every console command"},
    {"stats_users", T::list, &Config::stats_users, 0, 0, A::next_login,
     "users who may run the console's SHOW commands"},
    // Pool sizing and limits
    {"pool_mode", T::pool_mode, &Config::pool_mode, 0, 0, A::live, "default pool mode"},
    {"default_pool_size", T::integer, &Config::default_pool_size, 1, kMax, A::live,
     "server connections per pool"},
    {"min_pool_size", T::integer, &Config::min_pool_size, 0, kMax, A::live,
     "connections the janitor keeps open per pool"},
    {"reserve_pool_size", T::integer, &Config::reserve_pool_size, 0, kMax, A::live,
     "extra connections per pool after reserve_pool_timeout"},
    {"reserve_pool_timeout", T::duration, &Config::reserve_pool_timeout, 0, 0, A::live,
     "wait before the reserve pool opens"},
    {"max_client_conn", T::integer, &Config::max_client_conn, 1, kMax, A::next_login,
     "clients connected at once"},
    {"max_db_connections", T::integer, &Config::max_db_connections, 0, kMax, A::live,
     "server connections per database"},
    {"max_user_connections", T::integer, &Config::max_user_connections, 0, kMax, A::live,
     "server connections per user"},
    {"max_db_client_connections", T::integer, &Config::max_db_client_connections, 0, kMax,
     A::next_login, "client connections per database"},
    {"max_user_client_connections", T::integer, &Config::max_user_client_connections, 0, kMax,
     A::next_login, "client connections per user"},
    // Server health and reset
    {"server_reset_query", T::text, &Config::server_reset_query, 0, 0, A::live,
     "query run when a session-mode client leaves"},
    {"server_reset_query_always", T::boolean, &Config::server_reset_query_always, 0, 0, A::live,
     "also reset in transaction and statement mode"},
    {"max_prepared_statements", T::integer, &Config::max_prepared_statements, 0, kMax, A::live,
     "named prepared statements kept per server connection in transaction pooling; 0: off"},
    {"session_state", T::session_state, &Config::session_state, 0, 0, A::next_login,
     "transaction pooling: track, pin, reject or allow session state (SET, locks, LISTEN...)"},
    {"server_check_query", T::text, &Config::server_check_query, 0, 0, A::live,
     "test of an idle server before reuse"},
    {"server_check_delay", T::duration, &Config::server_check_delay, 0, 0, A::live,
     "idle time after which a server is tested"},
    {"server_lifetime", T::duration, &Config::server_lifetime, 0, 0, A::live,
     "age at which a server connection is closed"},
    {"server_idle_timeout", T::duration, &Config::server_idle_timeout, 0, 0, A::live,
     "idle time at which a pooled connection is closed"},
    {"server_connect_timeout", T::duration, &Config::server_connect_timeout, 0, 0, A::next_server,
     "limit on opening one server connection"},
    {"server_login_retry", T::duration, &Config::server_login_retry, 0, 0, A::live,
     "pause before a failed server login is retried"},
    // Timeouts
    {"query_timeout", T::duration, &Config::query_timeout, 0, 0, A::live,
     "cancel a query running this long"},
    {"query_wait_timeout", T::duration, &Config::query_wait_timeout, 0, 0, A::live,
     "longest wait for a server connection"},
    {"client_idle_timeout", T::duration, &Config::client_idle_timeout, 0, 0, A::live,
     "disconnect a client idle without a server this long"},
    {"client_login_timeout", T::duration, &Config::client_login_timeout, 0, 0, A::live,
     "time allowed for a login"},
    {"idle_transaction_timeout", T::duration, &Config::idle_transaction_timeout, 0, 0, A::live,
     "disconnect a client idle in a transaction this long"},
    {"transaction_timeout", T::duration, &Config::transaction_timeout, 0, 0, A::live,
     "disconnect a client whose transaction lasts this long"},
    {"stats_period", T::duration, &Config::stats_period, 0, 0, A::live,
     "period of SHOW STATS averages and pool health lines"},
    {"leak_warn_after", T::duration, &Config::leak_warn_after, 0, 0, A::live,
     "warn about a lease idle this long"},
    {"idle_pinned_timeout", T::duration, &Config::idle_pinned_timeout, 0, 0, A::live,
     "session mode: disconnect a client idle on its server"},
    {"reclaim_under_pressure_after", T::duration, &Config::reclaim_under_pressure_after, 0, 0,
     A::live,
     "while clients wait, end a transaction idle this long (never before leak_warn_after)"},
    {"leak_growth_window", T::duration, &Config::leak_growth_window, 0, 0, A::live,
     "growth alarm: how long a count must grow"},
    {"leak_growth_interval", T::duration, &Config::leak_growth_interval, 0, 0, A::live,
     "growth alarm: sampling interval"},
    // Resilience
    {"breaker_failures", T::integer, &Config::breaker_failures, 0, kMax, A::live,
     "failed connection attempts that open the breaker"},
    {"breaker_open_min", T::duration, &Config::breaker_open_min, 0, 0, A::live,
     "first wait of an open breaker"},
    {"breaker_open_max", T::duration, &Config::breaker_open_max, 0, 0, A::live,
     "longest wait of an open breaker"},
    {"max_waiting", T::integer, &Config::max_waiting, 0, kMax, A::live,
     "clients waiting per pool at once"},
    {"query_wait_notify", T::duration, &Config::query_wait_notify, 0, 0, A::live,
     "NOTICE to a client waiting this long"},
    {"shutdown_drain_timeout", T::duration, &Config::shutdown_drain_timeout, 0, 0, A::live,
     "time transactions get to finish at shutdown"},
    // Client parameters, logging and process
    {"ignore_startup_parameters", T::list, &Config::ignore_startup_parameters, 0, 0, A::next_login,
     "startup parameters to drop"},
    {"logfile", T::text, &Config::logfile, 0, 0, A::restart, "log file"},
    {"pidfile", T::text, &Config::pidfile, 0, 0, A::restart, "pid file"},
    {"log_connections", T::boolean, &Config::log_connections, 0, 0, A::next_login,
     "log each login"},
    {"log_disconnections", T::boolean, &Config::log_disconnections, 0, 0, A::next_login,
     "log each disconnect"},
    {"log_pooler_errors", T::boolean, &Config::log_pooler_errors, 0, 0, A::next_login,
     "log the errors refusing a login"},
    {"verbose", T::verbosity, &Config::verbose, 0, 10, A::live, "debug logging"},
    // TCP
    {"tcp_keepalive", T::boolean, &Config::tcp_keepalive, 0, 0, A::next_login,
     "SO_KEEPALIVE on client sockets"},
    {"tcp_keepcnt", T::integer, &Config::tcp_keepcnt, 0, kMax, A::next_login,
     "keepalive probes before a drop"},
    {"tcp_keepidle", T::integer, &Config::tcp_keepidle, 0, kMax, A::next_login,
     "idle seconds before the first keepalive probe"},
    {"tcp_keepintvl", T::integer, &Config::tcp_keepintvl, 0, kMax, A::next_login,
     "seconds between keepalive probes"},
    {"tcp_user_timeout", T::integer, &Config::tcp_user_timeout, 0, kMax, A::next_login,
     "TCP_USER_TIMEOUT in milliseconds"},
    // Threads
    {"workers", T::integer, &Config::workers, 0, 1024, A::restart, "worker threads"},
    {"io_uring", T::boolean, &Config::io_uring, 0, 0, A::restart,
     "batch a turn's sends and reads through io_uring"},
    // Accepted for compatibility, not acted on (docs/configuration.md lists them).
    // TLS (docs/security.md). Read when a connection starts TLS: a change (SET, RELOAD,
    // SIGHUP) builds new contexts for new connections; a context that fails to build keeps
    // the old one and logs why.
    {"client_tls_sslmode", T::ssl_mode, &Config::client_tls_sslmode, 0, 0, A::next_login,
     "TLS toward clients: disable, allow, prefer, require, verify-ca, verify-full"},
    {"client_tls_key_file", T::text, &Config::client_tls_key_file, 0, 0, A::next_login,
     "private key of pgwarden's certificate for clients (PEM)"},
    {"client_tls_cert_file", T::text, &Config::client_tls_cert_file, 0, 0, A::next_login,
     "pgwarden's certificate (chain) for clients (PEM)"},
    {"client_tls_ca_file", T::text, &Config::client_tls_ca_file, 0, 0, A::next_login,
     "CA certificates that client certificates are checked against"},
    {"client_tls_protocols", T::text, &Config::client_tls_protocols, 0, 0, A::next_login,
     "TLS versions offered to clients"},
    {"client_tls_ciphers", T::text, &Config::client_tls_ciphers, 0, 0, A::next_login,
     "TLS 1.2 cipher list for clients"},
    {"client_tls13_ciphers", T::text, &Config::client_tls13_ciphers, 0, 0, A::next_login,
     "TLS 1.3 cipher suites for clients"},
    {"client_tls_ecdhcurve", T::text, &Config::client_tls_ecdhcurve, 0, 0, A::next_login,
     "ECDH groups for clients"},
    {"client_tls_dheparams", T::text, &Config::client_tls_dheparams, 0, 0, A::next_login,
     "DH parameters for clients: auto, none, legacy"},
    {"server_tls_sslmode", T::ssl_mode, &Config::server_tls_sslmode, 0, 0, A::next_server,
     "TLS toward PostgreSQL: disable, allow, prefer, require, verify-ca, verify-full"},
    {"server_tls_ca_file", T::text, &Config::server_tls_ca_file, 0, 0, A::next_server,
     "CA certificates the server's certificate is checked against"},
    {"server_tls_key_file", T::text, &Config::server_tls_key_file, 0, 0, A::next_server,
     "private key of pgwarden's client certificate toward PostgreSQL"},
    {"server_tls_cert_file", T::text, &Config::server_tls_cert_file, 0, 0, A::next_server,
     "pgwarden's client certificate toward PostgreSQL"},
    {"server_tls_protocols", T::text, &Config::server_tls_protocols, 0, 0, A::next_server,
     "TLS versions pgwarden accepts from PostgreSQL"},
    {"server_tls_ciphers", T::text, &Config::server_tls_ciphers, 0, 0, A::next_server,
     "TLS 1.2 cipher list toward PostgreSQL"},
    {"server_tls13_ciphers", T::text, &Config::server_tls13_ciphers, 0, 0, A::next_server,
     "TLS 1.3 cipher suites toward PostgreSQL"},
    {"auth_hba_file", T::text, &Config::auth_hba_file, 0, 0, A::next_login,
     "pg_hba.conf-style rules for auth_type = hba"},
    {"auth_ident_file", T::text, &Config::auth_ident_file, 0, 0, A::next_login,
     "pg_ident.conf-style user name maps for hba cert and peer lines"},
    {"auth_user", T::text, &Config::auth_user, 0, 0, A::next_login,
     "user that runs auth_query for clients not in auth_file"},
    {"auth_query", T::text, &Config::auth_query, 0, 0, A::next_login,
     "query returning (user, secret) for $1"},
    {"auth_dbname", T::text, &Config::auth_dbname, 0, 0, A::next_login,
     "database auth_query runs in; empty: the client's"},
    {"syslog", T::accepted, {}, 0, 0, A::live, "logging to syslog"},
    {"syslog_ident", T::accepted, {}, 0, 0, A::live, "logging to syslog"},
    {"syslog_facility", T::accepted, {}, 0, 0, A::live, "logging to syslog"},
    {"log_stats", T::accepted, {}, 0, 0, A::live, "statistics log lines"},
    {"server_round_robin", T::accepted, {}, 0, 0, A::live, "server choice"},
    {"application_name_add_host", T::accepted, {}, 0, 0, A::live, "application_name suffix"},
    {"track_extra_parameters", T::accepted, {}, 0, 0, A::restart, "parameter tracking"},
    {"tcp_socket_buffer", T::accepted, {}, 0, 0, A::live, "socket buffers"},
    {"dns_max_ttl", T::accepted, {}, 0, 0, A::live, "DNS cache"},
    {"dns_nxdomain_ttl", T::accepted, {}, 0, 0, A::live, "DNS cache"},
    {"dns_zone_check_period", T::accepted, {}, 0, 0, A::live, "DNS cache"},
    {"resolv_conf", T::accepted, {}, 0, 0, A::restart, "DNS resolver"},
    {"cancel_wait_timeout", T::accepted, {}, 0, 0, A::live, "cancel timing"},
    {"suspend_timeout", T::accepted, {}, 0, 0, A::live, "SUSPEND"},
    {"max_packet_size", T::accepted, {}, 0, 0, A::live, "packet size limit"},
    {"sbuf_loopcnt", T::accepted, {}, 0, 0, A::live, "PgBouncer's loop fairness"},
    {"unix_socket_mode", T::text, &Config::unix_socket_mode, 0, 0, A::restart,
     "file mode of the Unix socket (octal)"},
    {"unix_socket_group", T::text, &Config::unix_socket_group, 0, 0, A::restart,
     "group of the Unix socket; empty: pgwarden's"},
    {"user", T::accepted, {}, 0, 0, A::restart, "switch user"},
    {"disable_pqexec", T::accepted, {}, 0, 0, A::restart, "refuse multi-statement queries"},
    {"server_fast_close", T::accepted, {}, 0, 0, A::live, "close servers early"},
    {"autodb_idle_timeout", T::accepted, {}, 0, 0, A::live, "automatic databases"},
    {"peer_id", T::accepted, {}, 0, 0, A::live, "peering"},
    {"login_notify_message", T::accepted, {}, 0, 0, A::live, "login message"},
    {"pool_idle_timeout", T::accepted, {}, 0, 0, A::live, "idle pools"},
    {"conffile", T::accepted, {}, 0, 0, A::live, "the config file's name"},
    {"service_name", T::accepted, {}, 0, 0, A::restart, "Windows service"},
    {"job_name", T::accepted, {}, 0, 0, A::restart, "Windows service"},
};

std::string seconds(Millis m) {
  std::ostringstream out;
  if (m.count() % 1000 == 0) {
    out << m.count() / 1000;
  } else {
    out << static_cast<double>(m.count()) / 1000.0;
  }
  return out.str();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

}  // namespace

std::string_view to_string(Applies applies) {
  switch (applies) {
    case Applies::live:
      return "live";
    case Applies::next_login:
      return "next login";
    case Applies::next_server:
      return "next server connection";
    case Applies::restart:
      return "restart";
  }
  return "?";
}

std::span<const KeySpec> pgbouncer_keys() {
  return kKeys;
}

const KeySpec* find_key(std::string_view name) {
  for (const auto& key : kKeys) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

std::string show_value(const Config& config, const KeySpec& key) {
  switch (key.type) {
    case KeyType::text:
      return config.*std::get<std::string Config::*>(key.target);
    case KeyType::integer:
      return std::to_string(config.*std::get<int Config::*>(key.target));
    case KeyType::boolean:
    case KeyType::verbosity:
      return config.*std::get<bool Config::*>(key.target) ? "1" : "0";
    case KeyType::duration:
      return seconds(config.*std::get<Millis Config::*>(key.target));
    case KeyType::list:
      return join(config.*std::get<std::vector<std::string> Config::*>(key.target));
    case KeyType::pool_mode:
      return std::string(to_string(config.*std::get<PoolMode Config::*>(key.target)));
    case KeyType::session_state:
      return std::string(
          proto::to_string(config.*std::get<proto::SessionStateMode Config::*>(key.target)));
    case KeyType::auth_type:
      return std::string(to_string(config.*std::get<AuthType Config::*>(key.target)));
    case KeyType::ssl_mode:
      return std::string(to_string(config.*std::get<SslMode Config::*>(key.target)));
    case KeyType::accepted: {
      auto it = config.other.find(std::string(key.name));
      return it == config.other.end() ? std::string() : it->second;
    }
  }
  return {};
}

}  // namespace pgw::config
