#include "config/config.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

namespace pgw::config {
namespace {

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

struct Location {
  std::string file;
  int line = 0;
  std::string str() const { return file + ":" + std::to_string(line); }
};

[[noreturn]] void invalid(const Location& at, const std::string& key, const std::string& value,
                          const std::string& allowed) {
  throw ConfigError(at.str() + ": invalid value '" + value + "' for " + key + ": expected " +
                    allowed);
}

int parse_int(const Location& at, const std::string& key, const std::string& value, long min,
              long max) {
  std::size_t used = 0;
  long parsed = 0;
  try {
    parsed = std::stol(value, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != value.size() || parsed < min || parsed > max) {
    invalid(at, key, value,
            "an integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return static_cast<int>(parsed);
}

bool parse_bool(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(value);
  if (v == "1" || v == "yes" || v == "on" || v == "true") return true;
  if (v == "0" || v == "no" || v == "off" || v == "false") return false;
  invalid(at, key, value, "a boolean (0/1, yes/no, on/off, true/false)");
}

// Seconds (fractions allowed) or a number with a unit: us, ms, s, min, h, d.
Millis parse_duration(const Location& at, const std::string& key, const std::string& value) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(value, &used);
  } catch (...) {
    used = 0;
  }
  const std::string unit = trim(std::string_view(value).substr(used));
  double scale = 1000.0;
  if (unit.empty() || unit == "s") {
    scale = 1000.0;
  } else if (unit == "ms") {
    scale = 1.0;
  } else if (unit == "us") {
    scale = 0.001;
  } else if (unit == "min") {
    scale = 60000.0;
  } else if (unit == "h") {
    scale = 3600000.0;
  } else if (unit == "d") {
    scale = 86400000.0;
  } else {
    used = 0;
  }
  // Larger values would overflow llround (giving a negative duration) or a conversion to
  // nanoseconds (steady_clock): cap at what fits in int64 nanoseconds (about 292 years).
  constexpr double kMaxMillis =
      static_cast<double>(std::chrono::nanoseconds::max().count() / 1'000'000);
  if (used == 0 || number < 0 || !std::isfinite(number) || number * scale > kMaxMillis) {
    invalid(at, key, value, "a duration in seconds (e.g. 30, 0.5, 250ms, 5min)");
  }
  return Millis(static_cast<long long>(std::llround(number * scale)));
}

PoolMode parse_pool_mode(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(value);
  if (v == "session") return PoolMode::session;
  if (v == "transaction") return PoolMode::transaction;
  if (v == "statement") return PoolMode::statement;
  invalid(at, key, value, "session, transaction or statement");
}

std::vector<std::string> parse_list(const std::string& value) {
  std::vector<std::string> out;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::uint64_t next_version() {
  static std::atomic<std::uint64_t> last{0};
  return ++last;
}

// Keys PgBouncer has that pgwarden accepts without acting on them yet; kept for SHOW CONFIG.
const std::set<std::string>& known_other_keys() {
  static const std::set<std::string> keys{"client_tls_sslmode",
                                          "client_tls_key_file",
                                          "client_tls_cert_file",
                                          "client_tls_ca_file",
                                          "client_tls_protocols",
                                          "client_tls_ciphers",
                                          "client_tls13_ciphers",
                                          "client_tls_ecdhcurve",
                                          "client_tls_dheparams",
                                          "server_tls_sslmode",
                                          "server_tls_ca_file",
                                          "server_tls_key_file",
                                          "server_tls_cert_file",
                                          "server_tls_protocols",
                                          "server_tls_ciphers",
                                          "server_tls13_ciphers",
                                          "auth_hba_file",
                                          "auth_ident_file",
                                          "auth_user",
                                          "auth_query",
                                          "auth_dbname",
                                          "syslog",
                                          "syslog_ident",
                                          "syslog_facility",
                                          "log_stats",
                                          "max_prepared_statements",
                                          "server_round_robin",
                                          "application_name_add_host",
                                          "track_extra_parameters",
                                          "tcp_socket_buffer",
                                          "dns_max_ttl",
                                          "dns_nxdomain_ttl",
                                          "dns_zone_check_period",
                                          "resolv_conf",
                                          "cancel_wait_timeout",
                                          "suspend_timeout",
                                          "max_packet_size",
                                          "sbuf_loopcnt",
                                          "unix_socket_mode",
                                          "unix_socket_group",
                                          "user",
                                          "disable_pqexec",
                                          "server_fast_close",
                                          "autodb_idle_timeout",
                                          "transaction_timeout",
                                          "max_db_client_connections",
                                          "max_user_client_connections",
                                          "peer_id",
                                          "scram_iterations",
                                          "login_notify_message",
                                          "pool_idle_timeout",
                                          "conffile",
                                          "service_name",
                                          "job_name"};
  return keys;
}

void set_pgbouncer_key(Config& c, const Location& at, const std::string& key,
                       const std::string& value, std::vector<Warning>& warnings) {
  auto duration = [&](Millis& target) { target = parse_duration(at, key, value); };
  auto integer = [&](int& target, long min, long max) {
    target = parse_int(at, key, value, min, max);
  };
  auto boolean = [&](bool& target) { target = parse_bool(at, key, value); };
  constexpr long kMax = 2147483647;
  if (key == "listen_addr")
    c.listen_addr = value;
  else if (key == "listen_port")
    integer(c.listen_port, 1, 65535);
  else if (key == "unix_socket_dir")
    c.unix_socket_dir = value;
  else if (key == "listen_backlog")
    integer(c.listen_backlog, 1, 65535);
  else if (key == "so_reuseport")
    boolean(c.so_reuseport);
  else if (key == "tcp_defer_accept")
    integer(c.tcp_defer_accept, 0, kMax);
  else if (key == "pkt_buf")
    integer(c.pkt_buf, 512, 1 << 24);
  else if (key == "auth_type") {
    const auto v = lower(value);
    if (v == "trust")
      c.auth_type = AuthType::trust;
    else if (v == "plain")
      c.auth_type = AuthType::plain;
    else if (v == "md5")
      c.auth_type = AuthType::md5;
    else if (v == "scram-sha-256")
      c.auth_type = AuthType::scram_sha_256;
    else if (v == "any")
      c.auth_type = AuthType::any;
    else
      invalid(at, key, value,
              "trust, plain, md5, scram-sha-256 or any (hba, cert, peer, pam and ldap are not "
              "supported)");
  } else if (key == "auth_file")
    c.auth_file = value;
  else if (key == "admin_users")
    c.admin_users = parse_list(value);
  else if (key == "stats_users")
    c.stats_users = parse_list(value);
  else if (key == "pool_mode")
    c.pool_mode = parse_pool_mode(at, key, value);
  else if (key == "default_pool_size")
    integer(c.default_pool_size, 1, kMax);
  else if (key == "min_pool_size")
    integer(c.min_pool_size, 0, kMax);
  else if (key == "reserve_pool_size")
    integer(c.reserve_pool_size, 0, kMax);
  else if (key == "reserve_pool_timeout")
    duration(c.reserve_pool_timeout);
  else if (key == "max_client_conn")
    integer(c.max_client_conn, 1, kMax);
  else if (key == "max_db_connections")
    integer(c.max_db_connections, 0, kMax);
  else if (key == "max_user_connections")
    integer(c.max_user_connections, 0, kMax);
  else if (key == "server_reset_query")
    c.server_reset_query = value;
  else if (key == "server_reset_query_always")
    boolean(c.server_reset_query_always);
  else if (key == "server_check_query")
    c.server_check_query = value;
  else if (key == "server_check_delay")
    duration(c.server_check_delay);
  else if (key == "server_lifetime")
    duration(c.server_lifetime);
  else if (key == "server_idle_timeout")
    duration(c.server_idle_timeout);
  else if (key == "server_connect_timeout")
    duration(c.server_connect_timeout);
  else if (key == "server_login_retry")
    duration(c.server_login_retry);
  else if (key == "query_timeout")
    duration(c.query_timeout);
  else if (key == "query_wait_timeout")
    duration(c.query_wait_timeout);
  else if (key == "client_idle_timeout")
    duration(c.client_idle_timeout);
  else if (key == "client_login_timeout")
    duration(c.client_login_timeout);
  else if (key == "idle_transaction_timeout")
    duration(c.idle_transaction_timeout);
  else if (key == "stats_period")
    duration(c.stats_period);
  else if (key == "leak_warn_after")
    duration(c.leak_warn_after);
  else if (key == "idle_pinned_timeout")
    duration(c.idle_pinned_timeout);
  else if (key == "leak_growth_window")
    duration(c.leak_growth_window);
  else if (key == "leak_growth_interval")
    duration(c.leak_growth_interval);
  else if (key == "breaker_failures")
    integer(c.breaker_failures, 0, kMax);
  else if (key == "breaker_open_min")
    duration(c.breaker_open_min);
  else if (key == "breaker_open_max")
    duration(c.breaker_open_max);
  else if (key == "max_waiting")
    integer(c.max_waiting, 0, kMax);
  else if (key == "query_wait_notify")
    duration(c.query_wait_notify);
  else if (key == "shutdown_drain_timeout")
    duration(c.shutdown_drain_timeout);
  else if (key == "ignore_startup_parameters")
    c.ignore_startup_parameters = parse_list(value);
  else if (key == "logfile")
    c.logfile = value;
  else if (key == "pidfile")
    c.pidfile = value;
  else if (key == "log_connections")
    boolean(c.log_connections);
  else if (key == "log_disconnections")
    boolean(c.log_disconnections);
  else if (key == "log_pooler_errors")
    boolean(c.log_pooler_errors);
  else if (key == "verbose")
    c.verbose = parse_int(at, key, value, 0, 10) > 0;
  else if (key == "tcp_keepalive")
    boolean(c.tcp_keepalive);
  else if (key == "tcp_keepcnt")
    integer(c.tcp_keepcnt, 0, kMax);
  else if (key == "tcp_keepidle")
    integer(c.tcp_keepidle, 0, kMax);
  else if (key == "tcp_keepintvl")
    integer(c.tcp_keepintvl, 0, kMax);
  else if (key == "tcp_user_timeout")
    integer(c.tcp_user_timeout, 0, kMax);
  else if (key == "workers")
    integer(c.workers, 0, 1024);
  else if (key == "io_uring")
    boolean(c.io_uring);
  else if (known_other_keys().count(key))
    c.other[key] = value;
  else
    warnings.push_back({at.str() + ": unknown key '" + key + "' in [pgbouncer]"});
}

// libpq-style "k=v k='quoted value'" pairs.
std::vector<std::pair<std::string, std::string>> parse_connstring(const Location& at,
                                                                  const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  };
  for (;;) {
    skip_space();
    if (i >= text.size()) break;
    const auto key_start = i;
    while (i < text.size() && text[i] != '=' && !std::isspace(static_cast<unsigned char>(text[i])))
      ++i;
    std::string key = lower(text.substr(key_start, i - key_start));
    skip_space();
    if (i >= text.size() || text[i] != '=' || key.empty()) {
      throw ConfigError(at.str() + ": syntax error in connection string near '" +
                        text.substr(key_start) + "': expected key=value");
    }
    ++i;
    skip_space();
    std::string value;
    if (i < text.size() && text[i] == '\'') {
      ++i;
      bool closed = false;
      while (i < text.size()) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          value += text[i + 1];
          i += 2;
        } else if (text[i] == '\'') {
          ++i;
          closed = true;
          break;
        } else {
          value += text[i++];
        }
      }
      if (!closed) throw ConfigError(at.str() + ": unterminated quoted value for " + key);
    } else {
      while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          value += text[i + 1];
          i += 2;
        } else {
          value += text[i++];
        }
      }
    }
    out.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

DatabaseEntry parse_database(const Location& at, const std::string& name, const std::string& text) {
  DatabaseEntry db;
  db.name = name;
  db.source = at.str();
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "host")
      db.host = value;
    else if (key == "port")
      db.port = parse_int(at, key, value, 1, 65535);
    else if (key == "dbname")
      db.dbname = value;
    else if (key == "user")
      db.user = value;
    else if (key == "password")
      db.password = value;
    else if (key == "pool_size")
      db.pool_size = parse_int(at, key, value, 0, 2147483647);
    else if (key == "min_pool_size")
      db.min_pool_size = parse_int(at, key, value, 0, 2147483647);
    else if (key == "reserve_pool" || key == "reserve_pool_size")
      db.reserve_pool = parse_int(at, key, value, 0, 2147483647);
    else if (key == "pool_mode")
      db.pool_mode = parse_pool_mode(at, key, value);
    else if (key == "max_db_connections") {
      db.max_db_connections = parse_int(at, key, value, 0, 2147483647);
      db.max_db_connections_set = true;
    } else if (key == "server_lifetime")
      db.server_lifetime = parse_duration(at, key, value);
    else if (key == "client_encoding")
      db.client_encoding = value;
    else if (key == "datestyle")
      db.datestyle = value;
    else if (key == "timezone")
      db.timezone = value;
    else if (key == "application_name")
      db.application_name = value;
    else if (key == "connect_query")
      db.connect_query = value;
    else if (key == "auth_user" || key == "auth_query" || key == "auth_dbname" ||
             key == "load_balance_hosts" || key == "max_db_client_connections" ||
             key == "query_wait_timeout") {
      // Accepted for compatibility; not acted on yet.
    } else {
      throw ConfigError(at.str() + ": unknown key '" + key + "' in [databases] entry " + name +
                        ": expected host, port, dbname, user, password, pool_size, min_pool_size, "
                        "reserve_pool, pool_mode, max_db_connections, server_lifetime, "
                        "client_encoding, datestyle, timezone, application_name or connect_query");
    }
  }
  return db;
}

UserEntry parse_user(const Location& at, const std::string& name, const std::string& text) {
  UserEntry user;
  user.name = name;
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "pool_mode")
      user.pool_mode = parse_pool_mode(at, key, value);
    else if (key == "pool_size")
      user.pool_size = parse_int(at, key, value, 0, 2147483647);
    else if (key == "reserve_pool_size" || key == "reserve_pool")
      user.reserve_pool_size = parse_int(at, key, value, 0, 2147483647);
    else if (key == "max_user_connections") {
      user.max_user_connections = parse_int(at, key, value, 0, 2147483647);
      user.max_user_connections_set = true;
    } else if (key == "query_timeout")
      user.query_timeout = parse_duration(at, key, value);
    else if (key == "idle_transaction_timeout")
      user.idle_transaction_timeout = parse_duration(at, key, value);
    else if (key == "client_idle_timeout")
      user.client_idle_timeout = parse_duration(at, key, value);
    else if (key == "query_wait_timeout" || key == "transaction_timeout" ||
             key == "max_user_client_connections") {
      // Accepted for compatibility; not acted on yet.
    } else {
      throw ConfigError(at.str() + ": unknown key '" + key + "' in [users] entry " + name +
                        ": expected pool_mode, pool_size, reserve_pool_size, max_user_connections, "
                        "query_timeout, idle_transaction_timeout or client_idle_timeout");
    }
  }
  return user;
}

// The key=value pairs of an [apps] line. Unknown keys are errors, as in [databases] and
// [users]: a misspelt timeout silently ignored would leave an application unprotected.
void parse_app_settings(const Location& at, const std::string& text, Config::AppLine& app) {
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "leak_warn_after") {
      app.leak_warn_after = parse_duration(at, key, value);
    } else if (key == "idle_transaction_timeout") {
      app.idle_transaction_timeout = parse_duration(at, key, value);
    } else if (key == "idle_pinned_timeout") {
      app.idle_pinned_timeout = parse_duration(at, key, value);
    } else if (key == "query_timeout") {
      app.query_timeout = parse_duration(at, key, value);
    } else if (key == "max_client_conn") {
      app.max_client_conn = parse_int(at, key, value, 0, 1'000'000);
    } else if (key == "max_server_conn") {
      app.max_server_conn = parse_int(at, key, value, 0, 1'000'000);
    } else {
      throw ConfigError(at.str() + ": unknown key '" + key + "' in [apps] line " + app.pattern +
                        ": expected leak_warn_after, idle_transaction_timeout, "
                        "idle_pinned_timeout, query_timeout, max_client_conn or max_server_conn");
    }
  }
}

std::string unquote_name(const std::string& name) {
  if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
    std::string out;
    for (std::size_t i = 1; i + 1 < name.size(); ++i) {
      if (name[i] == '"' && i + 2 < name.size() && name[i + 1] == '"') ++i;
      out += name[i];
    }
    return out;
  }
  return name;
}

void parse_text(Config& c, const std::string& text, const std::string& name,
                const std::string& base_dir, std::vector<Warning>& warnings, std::string& section,
                int depth) {
  if (depth > 10) throw ConfigError(name + ": %include nested too deeply (more than 10 levels)");
  std::istringstream in(text);
  std::string raw;
  Location at{name, 0};
  while (std::getline(in, raw)) {
    ++at.line;
    const std::string line = trim(raw);
    if (line.empty() || line[0] == ';' || line[0] == '#') continue;
    if (line.rfind("%include", 0) == 0) {
      std::string path = trim(std::string_view(line).substr(8));
      if (path.empty()) throw ConfigError(at.str() + ": %include needs a file name");
      std::filesystem::path p(path);
      if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
      std::ifstream file(p);
      if (!file) throw ConfigError(at.str() + ": cannot open included file " + p.string());
      std::stringstream buffer;
      buffer << file.rdbuf();
      parse_text(c, buffer.str(), p.string(), p.parent_path().string(), warnings, section,
                 depth + 1);
      continue;
    }
    if (line.front() == '[') {
      if (line.back() != ']') throw ConfigError(at.str() + ": malformed section header " + line);
      section = lower(trim(std::string_view(line).substr(1, line.size() - 2)));
      if (section != "pgbouncer" && section != "databases" && section != "users" &&
          section != "apps") {
        warnings.push_back({at.str() + ": section [" + section + "] is not supported, ignored"});
      }
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw ConfigError(at.str() + ": expected key = value, got '" + line + "'");
    const std::string key = trim(std::string_view(line).substr(0, eq));
    const std::string value = trim(std::string_view(line).substr(eq + 1));
    if (key.empty()) throw ConfigError(at.str() + ": missing key before '='");
    if (section == "pgbouncer") {
      set_pgbouncer_key(c, at, lower(key), value, warnings);
    } else if (section == "databases") {
      const std::string db = unquote_name(key);
      c.databases[db] = parse_database(at, db, value);
    } else if (section == "users") {
      const std::string user = unquote_name(key);
      c.users[user] = parse_user(at, user, value);
    } else if (section == "apps") {
      Config::AppLine app;
      app.pattern = key;
      app.settings = value;
      app.source = at.str();
      parse_app_settings(at, value, app);
      c.apps.push_back(std::move(app));
    } else if (section.empty()) {
      throw ConfigError(at.str() + ": key '" + key + "' outside of any section");
    }
  }
}

}  // namespace

std::string_view to_string(PoolMode mode) {
  switch (mode) {
    case PoolMode::session:
      return "session";
    case PoolMode::transaction:
      return "transaction";
    case PoolMode::statement:
      return "statement";
  }
  return "?";
}

std::string_view to_string(AuthType type) {
  switch (type) {
    case AuthType::trust:
      return "trust";
    case AuthType::plain:
      return "plain";
    case AuthType::md5:
      return "md5";
    case AuthType::scram_sha_256:
      return "scram-sha-256";
    case AuthType::any:
      return "any";
  }
  return "?";
}

std::optional<DatabaseEntry> Config::find_database(const std::string& name) const {
  if (auto it = databases.find(name); it != databases.end()) return it->second;
  if (auto it = databases.find("*"); it != databases.end()) {
    DatabaseEntry entry = it->second;
    entry.name = name;
    if (entry.dbname.empty()) entry.dbname = name;
    return entry;
  }
  return std::nullopt;
}

const Config::AppLine* Config::find_app(std::string_view application_name) const {
  if (apps.empty()) return nullptr;
  const std::string name(application_name);
  for (const auto& app : apps) {
    if (::fnmatch(app.pattern.c_str(), name.c_str(), 0) == 0) return &app;
  }
  return nullptr;
}

int Config::effective_workers() const {
  if (workers > 0) return workers;
  return auto_workers(std::thread::hardware_concurrency());
}

int Config::auto_workers(unsigned cores) {
  return std::max(1, static_cast<int>(cores / 2));
}

Config load_string(const std::string& text, const std::string& name, std::vector<Warning>& warnings,
                   const std::string& base_dir) {
  Config c;
  c.path = name;
  std::string section;
  parse_text(c, text, name, base_dir, warnings, section, 0);
  if (!c.auth_file.empty() && std::filesystem::path(c.auth_file).is_relative()) {
    c.auth_file = (std::filesystem::path(base_dir) / c.auth_file).string();
  }
  c.version = next_version();
  return c;
}

Config load_file(const std::string& path, std::vector<Warning>& warnings) {
  std::ifstream file(path);
  if (!file) throw ConfigError("cannot open configuration file " + path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  auto dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Config c = load_string(buffer.str(), path, warnings, dir);
  c.path = path;
  return c;
}

std::map<std::string, std::string> parse_auth_file(const std::string& text,
                                                   const std::string& name) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string trimmed = trim(line);
    if (trimmed.empty() || trimmed[0] == ';' || trimmed[0] == '#') continue;
    std::vector<std::string> fields;
    std::size_t i = 0;
    while (fields.size() < 2) {
      while (i < trimmed.size() && std::isspace(static_cast<unsigned char>(trimmed[i]))) ++i;
      if (i >= trimmed.size() || trimmed[i] != '"') {
        throw ConfigError(name + ":" + std::to_string(number) +
                          ": expected \"user\" \"password\" in auth file");
      }
      ++i;
      std::string field;
      bool closed = false;
      while (i < trimmed.size()) {
        if (trimmed[i] == '"') {
          if (i + 1 < trimmed.size() && trimmed[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        field += trimmed[i++];
      }
      if (!closed) {
        throw ConfigError(name + ":" + std::to_string(number) +
                          ": unterminated quote in auth file");
      }
      fields.push_back(std::move(field));
    }
    out[fields[0]] = fields[1];
  }
  return out;
}

std::map<std::string, std::string> load_auth_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw ConfigError("cannot open auth_file " + path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return parse_auth_file(buffer.str(), path);
}

bool is_runtime_changeable(const std::string& key) {
  // PgBouncer's CF_NO_RELOAD keys, plus workers (threads are started once).
  static const std::set<std::string> fixed{"listen_addr",
                                           "listen_port",
                                           "listen_backlog",
                                           "unix_socket_dir",
                                           "unix_socket_mode",
                                           "unix_socket_group",
                                           "user",
                                           "pidfile",
                                           "pkt_buf",
                                           "so_reuseport",
                                           "tcp_defer_accept",
                                           "resolv_conf",
                                           "disable_pqexec",
                                           "track_extra_parameters",
                                           "job_name",
                                           "service_name",
                                           "workers",
                                           "io_uring"};
  return !fixed.contains(lower(key));
}

void set_key(Config& config, const std::string& key, const std::string& value) {
  const std::string name = lower(key);
  bool known = false;
  for (const auto& [row_key, row_value] : show_config_rows(config)) {
    if (row_key == name) known = true;
  }
  if (!known && !known_other_keys().count(name)) {
    throw ConfigError("unknown configuration key '" + key + "'");
  }
  std::vector<Warning> warnings;
  set_pgbouncer_key(config, Location{"SET", 0}, name, value, warnings);
  if (!warnings.empty()) throw ConfigError(warnings.front().text);
  config.version = next_version();
}

std::vector<std::pair<std::string, std::string>> show_config_rows(const Config& c) {
  auto secs = [](Millis m) {
    std::ostringstream out;
    if (m.count() % 1000 == 0) {
      out << m.count() / 1000;
    } else {
      out << static_cast<double>(m.count()) / 1000.0;
    }
    return out.str();
  };
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
    return out;
  };
  std::vector<std::pair<std::string, std::string>> rows{
      {"listen_addr", c.listen_addr},
      {"listen_port", std::to_string(c.listen_port)},
      {"unix_socket_dir", c.unix_socket_dir},
      {"listen_backlog", std::to_string(c.listen_backlog)},
      {"so_reuseport", c.so_reuseport ? "1" : "0"},
      {"tcp_defer_accept", std::to_string(c.tcp_defer_accept)},
      {"pkt_buf", std::to_string(c.pkt_buf)},
      {"auth_type", std::string(to_string(c.auth_type))},
      {"auth_file", c.auth_file},
      {"admin_users", join(c.admin_users)},
      {"stats_users", join(c.stats_users)},
      {"pool_mode", std::string(to_string(c.pool_mode))},
      {"default_pool_size", std::to_string(c.default_pool_size)},
      {"min_pool_size", std::to_string(c.min_pool_size)},
      {"reserve_pool_size", std::to_string(c.reserve_pool_size)},
      {"reserve_pool_timeout", secs(c.reserve_pool_timeout)},
      {"max_client_conn", std::to_string(c.max_client_conn)},
      {"max_db_connections", std::to_string(c.max_db_connections)},
      {"max_user_connections", std::to_string(c.max_user_connections)},
      {"server_reset_query", c.server_reset_query},
      {"server_reset_query_always", c.server_reset_query_always ? "1" : "0"},
      {"server_check_query", c.server_check_query},
      {"server_check_delay", secs(c.server_check_delay)},
      {"server_lifetime", secs(c.server_lifetime)},
      {"server_idle_timeout", secs(c.server_idle_timeout)},
      {"server_connect_timeout", secs(c.server_connect_timeout)},
      {"server_login_retry", secs(c.server_login_retry)},
      {"query_timeout", secs(c.query_timeout)},
      {"query_wait_timeout", secs(c.query_wait_timeout)},
      {"client_idle_timeout", secs(c.client_idle_timeout)},
      {"client_login_timeout", secs(c.client_login_timeout)},
      {"idle_transaction_timeout", secs(c.idle_transaction_timeout)},
      {"stats_period", secs(c.stats_period)},
      {"leak_warn_after", secs(c.leak_warn_after)},
      {"idle_pinned_timeout", secs(c.idle_pinned_timeout)},
      {"leak_growth_window", secs(c.leak_growth_window)},
      {"leak_growth_interval", secs(c.leak_growth_interval)},
      {"breaker_failures", std::to_string(c.breaker_failures)},
      {"breaker_open_min", secs(c.breaker_open_min)},
      {"breaker_open_max", secs(c.breaker_open_max)},
      {"max_waiting", std::to_string(c.max_waiting)},
      {"query_wait_notify", secs(c.query_wait_notify)},
      {"shutdown_drain_timeout", secs(c.shutdown_drain_timeout)},
      {"ignore_startup_parameters", join(c.ignore_startup_parameters)},
      {"logfile", c.logfile},
      {"pidfile", c.pidfile},
      {"log_connections", c.log_connections ? "1" : "0"},
      {"log_disconnections", c.log_disconnections ? "1" : "0"},
      {"log_pooler_errors", c.log_pooler_errors ? "1" : "0"},
      {"verbose", c.verbose ? "1" : "0"},
      {"tcp_keepalive", c.tcp_keepalive ? "1" : "0"},
      {"tcp_keepcnt", std::to_string(c.tcp_keepcnt)},
      {"tcp_keepidle", std::to_string(c.tcp_keepidle)},
      {"tcp_keepintvl", std::to_string(c.tcp_keepintvl)},
      {"tcp_user_timeout", std::to_string(c.tcp_user_timeout)},
      {"workers", std::to_string(c.workers)},
      {"io_uring", c.io_uring ? "1" : "0"},
  };
  for (const auto& [key, value] : c.other) rows.emplace_back(key, value);
  return rows;
}

}  // namespace pgw::config
