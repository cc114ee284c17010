// pgbouncer.ini compatible configuration: the [pgbouncer], [databases] and [users] sections,
// %include, PgBouncer's defaults, plus pgwarden's own keys. Parsing is pure (no I/O besides
// reading the files) so it is unit-tested directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/session_state.hpp"

namespace pgw::config {

enum class PoolMode { session, transaction, statement };
// cert: the client's verified TLS certificate names the user (its CN); peer: the Unix socket's
// OS user is the user.
enum class AuthType { trust, plain, md5, scram_sha_256, any, hba, cert, peer };
// client_tls_sslmode and server_tls_sslmode, libpq's sslmode values in its order (a mode
// demands at least what the ones before it do).
enum class SslMode { disable, allow, prefer, require, verify_ca, verify_full };

class HbaFile;    // config/hba.hpp
class IdentFile;  // config/hba.hpp

std::string_view to_string(PoolMode mode);
std::string_view to_string(AuthType type);
std::string_view to_string(SslMode mode);

// The admin console's database names: a login there reaches the console, not PostgreSQL.
inline bool is_console_database(std::string_view name) {
  return name == "pgbouncer" || name == "pgwarden";
}

// The TLS settings of one side (client_tls_* or server_tls_*), as the key table stores them.
struct TlsSettings {
  SslMode sslmode = SslMode::disable;
  std::string key_file, cert_file, ca_file;
  std::string protocols = "secure";
  std::string ciphers = "default";
  std::string tls13_ciphers;  // empty: OpenSSL's TLS 1.3 suites
  std::string ecdhcurve = "auto";
  std::string dheparams = "auto";  // client side only
};

// Durations are kept in milliseconds; the ini takes seconds (fractions allowed, like 0.5),
// or a value with a unit suffix (ms, s, min, h, d) as PgBouncer does.
using Millis = std::chrono::milliseconds;

// One server a [databases] entry connects to: an IP address, a host name, or a directory
// (starting with '/') holding the server's Unix socket ("" = /var/run/postgresql), and its port.
struct ServerAddress {
  std::string host;
  int port = 5432;
  bool operator==(const ServerAddress&) const = default;
};

// How a new server connection picks one of an entry's hosts (PgBouncer's load_balance_hosts).
enum class LoadBalanceHosts : std::uint8_t {
  round_robin,  // each new connection takes the next host of the list
  disable,      // new connections stay on one host until connecting to it fails
};
std::string_view to_string(LoadBalanceHosts mode);

// One [databases] entry: "name = host=... port=... dbname=... user=... ...".
struct DatabaseEntry {
  std::string name;  // the name clients connect to ("*" for the fallback)
  std::string host;  // as written: one host or a comma-separated list; empty = Unix socket
  int port = 5432;   // the first host's
  // Each host of `host` with its port (`port` is one port for all, or one per host), in list
  // order; parsing leaves at least one.
  std::vector<ServerAddress> servers;
  LoadBalanceHosts load_balance_hosts = LoadBalanceHosts::round_robin;
  std::string dbname;    // empty = same as name
  std::string user;      // forced user; empty = the client's user
  std::string password;  // for the forced user (or the client's user)
  std::optional<int> pool_size;
  std::optional<int> min_pool_size;
  std::optional<int> reserve_pool;
  std::optional<PoolMode> pool_mode;
  int max_db_connections = 0;  // 0 = unlimited, falls back to the global key when unset
  bool max_db_connections_set = false;
  std::optional<int> max_db_client_connections;  // unset: the [pgbouncer] key
  std::optional<Millis> query_wait_timeout;      // unset: the [users] entry's, else the key
  std::optional<Millis> server_lifetime;
  std::optional<Millis> reclaim_under_pressure_after;    // leak guard; unset: the global key
  std::optional<proto::SessionStateMode> session_state;  // unset: the [pgbouncer] key
  // Startup parameters sent to the server for this database.
  std::string client_encoding, datestyle, timezone, application_name;
  std::string connect_query;
  // auth_query for this entry's clients (empty: the [pgbouncer] keys').
  std::string auth_user, auth_query, auth_dbname;
  std::string source;  // "file:line" of the entry, for messages
};

// One [users] entry.
struct UserEntry {
  std::string name;
  std::optional<PoolMode> pool_mode;
  std::optional<int> pool_size;
  std::optional<int> reserve_pool_size;
  int max_user_connections = 0;
  bool max_user_connections_set = false;
  std::optional<int> max_user_client_connections;  // unset: the [pgbouncer] key
  std::optional<Millis> query_timeout;
  std::optional<Millis> idle_transaction_timeout;
  std::optional<Millis> client_idle_timeout;
  std::optional<Millis> transaction_timeout;
  std::optional<Millis> query_wait_timeout;  // over the [databases] entry's, as in PgBouncer
};

struct Config {
  // [pgbouncer]
  std::string listen_addr;  // empty = no TCP listener; "*" = all
  int listen_port = 6432;
  std::string unix_socket_dir = "/tmp";   // empty disables the unix socket
  std::string unix_socket_mode = "0777";  // octal: who may connect over the socket
  std::string unix_socket_group;          // the socket's group; empty: pgwarden's
  int listen_backlog = 128;
  bool so_reuseport = false;
  // TCP_DEFER_ACCEPT on the TCP listeners, in seconds (0: off). The kernel hands pgwarden a
  // connection only once its first bytes have arrived, so a login costs one wake-up less and
  // a connection that never says anything costs no session (PgBouncer's default on Linux).
  int tcp_defer_accept = 45;
  int pkt_buf = 4096;
  AuthType auth_type = AuthType::md5;
  // The iteration count of the SCRAM secrets pgwarden derives from plaintext auth_file passwords
  // (PostgreSQL's and PgBouncer's default; secrets from PostgreSQL keep their own).
  int scram_iterations = 4096;
  std::string auth_file;
  // auth_type = hba: the pg_hba.conf-style rules (PgBouncer's subset), read with the
  // configuration (load_string(), set_key(), a reload) and kept parsed in `hba`.
  std::string auth_hba_file;
  // auth_query: a client not in auth_file is looked up in PostgreSQL, as auth_user, in
  // auth_dbname (empty: the database it asked for); PgBouncer's default query.
  std::string auth_user;
  std::string auth_query =
      "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
      "FROM pg_authid WHERE rolname=$1 AND rolcanlogin";
  std::string auth_dbname;
  // TLS toward clients (pgwarden is the TLS server) and toward PostgreSQL (the TLS client),
  // flat as the key table writes them; client_tls() and server_tls() gather each side, and
  // net/tls.hpp builds OpenSSL contexts from that.
  SslMode client_tls_sslmode = SslMode::disable;
  std::string client_tls_key_file, client_tls_cert_file, client_tls_ca_file;
  std::string client_tls_protocols = "secure";
  std::string client_tls_ciphers = "default";
  std::string client_tls13_ciphers;
  std::string client_tls_ecdhcurve = "auto";
  std::string client_tls_dheparams = "auto";
  SslMode server_tls_sslmode = SslMode::prefer;
  std::string server_tls_key_file, server_tls_cert_file, server_tls_ca_file;
  std::string server_tls_protocols = "secure";
  std::string server_tls_ciphers = "default";
  std::string server_tls13_ciphers;
  TlsSettings client_tls() const {
    return {client_tls_sslmode,   client_tls_key_file,  client_tls_cert_file,
            client_tls_ca_file,   client_tls_protocols, client_tls_ciphers,
            client_tls13_ciphers, client_tls_ecdhcurve, client_tls_dheparams};
  }
  TlsSettings server_tls() const {
    return {server_tls_sslmode,
            server_tls_key_file,
            server_tls_cert_file,
            server_tls_ca_file,
            server_tls_protocols,
            server_tls_ciphers,
            server_tls13_ciphers,
            "auto",
            "none"};
  }
  std::shared_ptr<const HbaFile> hba;
  // auth_ident_file: the user name maps of hba cert and peer lines (map=), read with the hba
  // rules; null without the key.
  std::string auth_ident_file;
  std::shared_ptr<const IdentFile> ident;
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  PoolMode pool_mode = PoolMode::session;
  int default_pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  Millis reserve_pool_timeout{5000};
  int max_client_conn = 100;
  int max_db_connections = 0;
  int max_user_connections = 0;
  // Client connections per database (the name clients ask for) and per login user, as
  // PgBouncer counts them; 0 = unlimited.
  int max_db_client_connections = 0;
  int max_user_client_connections = 0;
  std::string server_reset_query = "DISCARD ALL";
  bool server_reset_query_always = false;
  // Transaction and statement pooling: named prepared statements per server connection (LRU);
  // 0 passes statement names through unchanged (docs/transaction-pooling.md).
  int max_prepared_statements = 200;
  // Transaction and statement pooling: what to do with session state a client's statements
  // create (SET, advisory locks, LISTEN, temp tables...); docs/transaction-pooling.md.
  proto::SessionStateMode session_state = proto::SessionStateMode::track;
  std::string server_check_query = "";  // PgBouncer's "<empty>": an empty query
  Millis server_check_delay{30000};
  Millis server_lifetime{3600000};
  Millis server_idle_timeout{600000};
  Millis server_connect_timeout{15000};
  Millis server_login_retry{15000};
  Millis query_timeout{0};
  Millis query_wait_timeout{120000};
  Millis client_idle_timeout{0};
  Millis client_login_timeout{60000};
  Millis idle_transaction_timeout{0};
  Millis transaction_timeout{0};  // disconnect a client whose transaction lasts this long
  Millis stats_period{60000};
  Millis leak_warn_after{60000};  // leak guard: warn about a lease idle this long; 0 = off
  Millis idle_pinned_timeout{0};  // session mode: disconnect a client idle on its server; 0 = off
  // Leak guard: while clients wait for a server, end a transaction idle this long; 0 = off.
  Millis reclaim_under_pressure_after{0};
  Millis leak_growth_window{300000};  // growth alarm: how long a count must grow; 0 = off
  Millis leak_growth_interval{5000};  // growth alarm (and pool health): sampling interval
  // Resilience (docs/operations.md): circuit breaker per backend, bounded waiting, drain.
  int breaker_failures = 5;  // consecutive failed connection attempts that open it; 0 = off
  Millis breaker_open_min{5000};
  Millis breaker_open_max{60000};
  int max_waiting = 0;  // clients queued per pool; 0 = unlimited
  Millis query_wait_notify{5000};
  Millis shutdown_drain_timeout{30000};
  std::vector<std::string> ignore_startup_parameters;
  std::string logfile;
  std::string pidfile;
  bool log_connections = true;
  bool log_disconnections = true;
  bool log_pooler_errors = true;
  bool verbose = false;
  bool tcp_keepalive = true;
  int tcp_keepcnt = 0;
  int tcp_keepidle = 0;
  int tcp_keepintvl = 0;
  int tcp_user_timeout = 0;
  int workers = 0;       // 0 = automatic: auto_workers(cores)
  bool io_uring = true;  // workers batch each turn's sends and reads through io_uring

  std::map<std::string, DatabaseEntry> databases;  // by client-visible name, "*" included
  std::map<std::string, UserEntry> users;
  // [apps] lines (application_name pattern = settings), kept in file order for the leak guard.
  struct AppLine {
    std::string pattern;
    std::string settings;
    std::string source;  // "file:line"
    // The policy ladder's keys, where the line sets them (else the [pgbouncer] values apply).
    std::optional<Millis> leak_warn_after;
    std::optional<Millis> idle_transaction_timeout;
    std::optional<Millis> idle_pinned_timeout;
    std::optional<Millis> query_timeout;
    std::optional<Millis> reclaim_under_pressure_after;
    std::optional<int> max_client_conn;  // clients of one application_name at a time
    std::optional<int> max_server_conn;  // server connections one application_name may hold
    std::optional<proto::SessionStateMode> session_state;  // over the database's and the key's
  };
  std::vector<AppLine> apps;
  // PgBouncer keys accepted but not acted on yet, shown by SHOW CONFIG.
  std::map<std::string, std::string> other;

  std::string path;  // the main file, for RELOAD
  // Different for every configuration the loaders or set_key() produce (0 for a default-made
  // one), so per-session caches of values derived from a snapshot can tell snapshots apart
  // even when a new one is allocated where an old one was.
  std::uint64_t version = 0;

  // The entry for a client-visible database name: exact match, else "*" (with dbname = name).
  std::optional<DatabaseEntry> find_database(const std::string& name) const;
  // The [databases] line that serves `name` without a copy (a login reads a few of its keys):
  // its own, else "*" as written (name "*", dbname maybe empty), else null.
  const DatabaseEntry* database_line(const std::string& name) const;
  // max_db_client_connections of a client-visible database name: its entry's (or "*"'s), else
  // the key. max_user_client_connections of a login user: its [users] entry's, else the key.
  int max_db_client_connections_for(const std::string& database) const;
  int max_user_client_connections_for(const std::string& user) const;
  // query_wait_timeout of a client of `database` logged in as `user`: its [users] entry's,
  // else its [databases] entry's (or "*"'s), else the key (PgBouncer's order). No allocation:
  // the janitor asks for every waiting client.
  Millis query_wait_timeout_for(const std::string& database, const std::string& user) const;
  // The first [apps] line whose pattern matches `application_name` (fnmatch), or null.
  const AppLine* find_app(std::string_view application_name) const;
  // `workers`, or auto_workers() of this machine's cores when it is 0.
  int effective_workers() const;
  // The automatic worker count: one per two cores, at least one. The pooler's work per
  // transaction is a small part of PostgreSQL's, and where they share the cores a worker per
  // core only splits the batches and wakes more threads (docs/benchmarks.md: on 2 cores one
  // worker cost 15 % less CPU per transaction than two, at 100 and at 1000 clients).
  static int auto_workers(unsigned cores);
};

// A problem that stops start-up, a RELOAD or a SET: what kind it is (callers decide on the kind,
// never on the wording), where it is ("file:line", "SET", a file name) and what is wrong,
// naming the key and what it accepts. what() is "where: message".
class ConfigError : public std::runtime_error {
 public:
  enum class Kind : std::uint8_t {
    syntax,         // a line that is not "key = value", a bad section header or connstring
    unknown_key,    // a key the section (or SET) does not have
    invalid_value,  // a known key with a value outside what it accepts
    file,           // a file that cannot be read, or %include nested too deeply
  };
  ConfigError(Kind kind, std::string where, std::string message)
      : std::runtime_error(where.empty() ? message : where + ": " + message),
        kind_(kind),
        where_(std::move(where)),
        message_(std::move(message)) {}
  Kind kind() const { return kind_; }
  const std::string& where() const { return where_; }
  // The problem without the place (SET's answer names no file).
  const std::string& message() const { return message_; }

 private:
  Kind kind_;
  std::string where_;
  std::string message_;
};

struct Warning {
  std::string text;  // "file:line: unknown key 'foo' in [pgbouncer]"
};

// Parses the ini file at `path` (following %include). Throws ConfigError; appends warnings.
Config load_file(const std::string& path, std::vector<Warning>& warnings);
// Same, from text (for tests). `name` stands in for the file name in messages; %include paths
// are resolved relative to `base_dir`.
Config load_string(const std::string& text, const std::string& name, std::vector<Warning>& warnings,
                   const std::string& base_dir = ".");

// userlist.txt: "user" "secret" per line; secret is plaintext, md5<32 hex> or SCRAM-SHA-256$...
struct UserSecret {
  std::string user;
  std::string secret;
};
// user -> secret (plaintext, md5 hash or SCRAM verifier), as auth_file lists them.
using Secrets = std::map<std::string, std::string>;
Secrets load_auth_file(const std::string& path);
// auth_type = hba: reads and parses auth_hba_file (and its @files) into `hba`; otherwise clears
// it. Throws ConfigError for an unreadable or malformed file, or a method not supported yet.
void load_hba_rules(Config& config);
// key/value rows of every [pgbouncer] setting (durations in seconds), for SHOW CONFIG: the
// key table's rows in its order (config/keys.hpp).
std::vector<std::pair<std::string, std::string>> show_config_rows(const Config& config);
// Whether SET on the console may change `key` while running, and a RELOAD applies a change to
// it: every key but those the table marks Applies::restart (the listeners, the threads, the
// log, the pid file).
bool is_runtime_changeable(const std::string& key);
// Sets one [pgbouncer] key as the ini would (same validation). Throws ConfigError: Kind
// unknown_key or invalid_value.
void set_key(Config& config, const std::string& key, const std::string& value);
// A reloaded configuration keeps the running value of every restart-only key that changed in
// the file (the listeners and threads cannot follow it); the warnings name each one.
std::vector<Warning> keep_restart_values(const Config& running, Config& loaded);
std::map<std::string, std::string> parse_auth_file(const std::string& text,
                                                   const std::string& name);

}  // namespace pgw::config
