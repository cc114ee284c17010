#include "config/config.hpp"

#include "config/hba.hpp"
#include "config/keys.hpp"
#include "config/parse.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <type_traits>
#include <variant>

namespace pgw::config {
namespace {

// A whole file as text; `where` and `what` name it in the error ("cannot open auth_file").
std::string read_text_file(const std::string& path, const std::string& where,
                           const std::string& what) {
  std::ifstream file(path);
  if (!file) throw ConfigError(ConfigError::Kind::file, where, "cannot open " + what);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

using parse::Location;
using parse::lower;
using parse::trim;
using Kind = ConfigError::Kind;

std::uint64_t next_version() {
  static std::atomic<std::uint64_t> last{0};
  return ++last;
}

// Sets `key` (lower case, a row of the key table) to `value` with the row's type and range.
void set_from_table(Config& c, const Location& at, const KeySpec& key, const std::string& value) {
  const std::string name(key.name);
  switch (key.type) {
    case KeyType::text:
      c.*std::get<std::string Config::*>(key.target) = value;
      return;
    case KeyType::integer:
      c.*std::get<int Config::*>(key.target) = parse::integer(at, name, value, key.min, key.max);
      return;
    case KeyType::boolean:
      c.*std::get<bool Config::*>(key.target) = parse::boolean(at, name, value);
      return;
    case KeyType::verbosity:
      c.*std::get<bool Config::*>(key.target) =
          parse::integer(at, name, value, key.min, key.max) > 0;
      return;
    case KeyType::duration:
      c.*std::get<Millis Config::*>(key.target) = parse::duration(at, name, value);
      return;
    case KeyType::list:
      c.*std::get<std::vector<std::string> Config::*>(key.target) = parse::list(value);
      return;
    case KeyType::pool_mode:
      c.*std::get<PoolMode Config::*>(key.target) = parse::pool_mode(at, name, value);
      return;
    case KeyType::session_state:
      c.*std::get<proto::SessionStateMode Config::*>(key.target) =
          parse::session_state(at, name, value);
      return;
    case KeyType::auth_type:
      c.*std::get<AuthType Config::*>(key.target) = parse::auth_type(at, name, value);
      return;
    case KeyType::ssl_mode:
      c.*std::get<SslMode Config::*>(key.target) = parse::ssl_mode(at, name, value);
      return;
    case KeyType::accepted:
      c.other[name] = value;
      return;
  }
}

void set_pgbouncer_key(Config& c, const Location& at, const std::string& key,
                       const std::string& value, std::vector<Warning>& warnings) {
  if (const KeySpec* spec = find_key(key)) {
    set_from_table(c, at, *spec, value);
  } else {
    warnings.push_back({at.str() + ": unknown key '" + key + "' in [pgbouncer]"});
  }
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
      throw ConfigError(Kind::syntax, at.str(),
                        "syntax error in connection string near '" + text.substr(key_start) +
                            "': expected key=value");
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
      if (!closed)
        throw ConfigError(Kind::syntax, at.str(), "unterminated quoted value for " + key);
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

// query_wait_timeout in a [databases] or [users] entry: a duration, or PgBouncer's -1 for "not
// set here".
std::optional<Millis> entry_wait_timeout(const Location& at, const std::string& key,
                                         const std::string& value) {
  if (value == "-1") return std::nullopt;
  return parse::duration(at, key, value);
}

// `host` as PgBouncer takes it: one host, or a comma-separated list (blanks around the commas
// allowed), each with the port of `port`: one port for all, or one per host as libpq takes a
// list (PgBouncer itself reads one port).
std::vector<ServerAddress> parse_servers(const Location& at, const std::string& host,
                                         const std::string& port) {
  std::vector<ServerAddress> servers;
  if (host.find(',') == std::string::npos) {
    servers.push_back({host, 5432});
  } else {
    std::istringstream items(host);
    std::string item;
    while (std::getline(items, item, ',')) {
      servers.push_back({trim(item), 5432});
      if (servers.back().host.empty()) {
        parse::invalid(at, "host", host, "a host, or a comma-separated list of hosts");
      }
    }
    if (host.back() == ',') parse::invalid(at, "host", host, "a comma-separated list of hosts");
  }
  if (port.empty()) return servers;
  std::vector<int> ports;
  std::istringstream items(port);
  std::string item;
  while (std::getline(items, item, ','))
    ports.push_back(parse::integer(at, "port", trim(item), 1, 65535));
  if (port.back() == ',') parse::invalid(at, "port", port, "a comma-separated list of ports");
  if (ports.size() != 1 && ports.size() != servers.size()) {
    parse::invalid(at, "port", port,
                   "one port, or one per host of host (" + std::to_string(servers.size()) + ")");
  }
  for (std::size_t i = 0; i < servers.size(); ++i) {
    servers[i].port = ports.size() == 1 ? ports[0] : ports[i];
  }
  return servers;
}

LoadBalanceHosts parse_load_balance_hosts(const Location& at, const std::string& key,
                                          const std::string& value) {
  const auto v = lower(value);
  if (v == "round-robin") return LoadBalanceHosts::round_robin;
  if (v == "disable") return LoadBalanceHosts::disable;
  parse::invalid(at, key, value, "round-robin or disable");
}

DatabaseEntry parse_database(const Location& at, const std::string& name, const std::string& text) {
  DatabaseEntry db;
  db.name = name;
  db.source = at.str();
  std::string port;  // checked with the host list, which may come after it
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "host")
      db.host = value;
    else if (key == "port")
      port = value;
    else if (key == "load_balance_hosts")
      db.load_balance_hosts = parse_load_balance_hosts(at, key, value);
    else if (key == "dbname")
      db.dbname = value;
    else if (key == "user")
      db.user = value;
    else if (key == "password")
      db.password = value;
    else if (key == "pool_size")
      db.pool_size = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "min_pool_size")
      db.min_pool_size = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "reserve_pool" || key == "reserve_pool_size")
      db.reserve_pool = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "pool_mode")
      db.pool_mode = parse::pool_mode(at, key, value);
    else if (key == "max_db_connections") {
      db.max_db_connections = parse::integer(at, key, value, 0, 2147483647);
      db.max_db_connections_set = true;
    } else if (key == "max_db_client_connections")
      db.max_db_client_connections = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "query_wait_timeout")
      db.query_wait_timeout = entry_wait_timeout(at, key, value);
    else if (key == "server_lifetime")
      db.server_lifetime = parse::duration(at, key, value);
    else if (key == "reclaim_under_pressure_after")
      db.reclaim_under_pressure_after = parse::duration(at, key, value);
    else if (key == "session_state")
      db.session_state = parse::session_state(at, key, value);
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
    else if (key == "auth_user")
      db.auth_user = value;
    else if (key == "auth_query")
      db.auth_query = value;
    else if (key == "auth_dbname")
      db.auth_dbname = value;
    else {
      throw ConfigError(
          Kind::unknown_key, at.str(),
          "unknown key '" + key + "' in [databases] entry " + name +
              ": expected host, port, dbname, user, password, load_balance_hosts, pool_size, "
              "min_pool_size, reserve_pool, pool_mode, max_db_connections, "
              "max_db_client_connections, query_wait_timeout, server_lifetime, "
              "reclaim_under_pressure_after, session_state, client_encoding, datestyle, "
              "timezone, application_name, connect_query, auth_user, auth_query or auth_dbname");
    }
  }
  db.servers = parse_servers(at, db.host, port);
  db.port = db.servers.front().port;
  return db;
}

UserEntry parse_user(const Location& at, const std::string& name, const std::string& text) {
  UserEntry user;
  user.name = name;
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "pool_mode")
      user.pool_mode = parse::pool_mode(at, key, value);
    else if (key == "pool_size")
      user.pool_size = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "reserve_pool_size" || key == "reserve_pool")
      user.reserve_pool_size = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "max_user_connections") {
      user.max_user_connections = parse::integer(at, key, value, 0, 2147483647);
      user.max_user_connections_set = true;
    } else if (key == "max_user_client_connections")
      user.max_user_client_connections = parse::integer(at, key, value, 0, 2147483647);
    else if (key == "query_timeout")
      user.query_timeout = parse::duration(at, key, value);
    else if (key == "idle_transaction_timeout")
      user.idle_transaction_timeout = parse::duration(at, key, value);
    else if (key == "client_idle_timeout")
      user.client_idle_timeout = parse::duration(at, key, value);
    else if (key == "transaction_timeout")
      user.transaction_timeout = parse::duration(at, key, value);
    else if (key == "query_wait_timeout")
      user.query_wait_timeout = entry_wait_timeout(at, key, value);
    else {
      throw ConfigError(
          Kind::unknown_key, at.str(),
          "unknown key '" + key + "' in [users] entry " + name +
              ": expected pool_mode, pool_size, reserve_pool_size, max_user_connections, "
              "max_user_client_connections, query_timeout, query_wait_timeout, "
              "idle_transaction_timeout, transaction_timeout or client_idle_timeout");
    }
  }
  return user;
}

// The key=value pairs of an [apps] line. Unknown keys are errors, as in [databases] and
// [users]: a misspelt timeout silently ignored would leave an application unprotected.
void parse_app_settings(const Location& at, const std::string& text, Config::AppLine& app) {
  for (const auto& [key, value] : parse_connstring(at, text)) {
    if (key == "leak_warn_after") {
      app.leak_warn_after = parse::duration(at, key, value);
    } else if (key == "idle_transaction_timeout") {
      app.idle_transaction_timeout = parse::duration(at, key, value);
    } else if (key == "idle_pinned_timeout") {
      app.idle_pinned_timeout = parse::duration(at, key, value);
    } else if (key == "query_timeout") {
      app.query_timeout = parse::duration(at, key, value);
    } else if (key == "reclaim_under_pressure_after") {
      app.reclaim_under_pressure_after = parse::duration(at, key, value);
    } else if (key == "max_client_conn") {
      app.max_client_conn = parse::integer(at, key, value, 0, 1'000'000);
    } else if (key == "max_server_conn") {
      app.max_server_conn = parse::integer(at, key, value, 0, 1'000'000);
    } else if (key == "session_state") {
      app.session_state = parse::session_state(at, key, value);
    } else {
      throw ConfigError(Kind::unknown_key, at.str(),
                        "unknown key '" + key + "' in [apps] line " + app.pattern +
                            ": expected leak_warn_after, idle_transaction_timeout, "
                            "idle_pinned_timeout, query_timeout, reclaim_under_pressure_after, "
                            "max_client_conn, max_server_conn or session_state");
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
  if (depth > 10)
    throw ConfigError(Kind::file, name, "%include nested too deeply (more than 10 levels)");
  std::istringstream in(text);
  std::string raw;
  Location at{name, 0};
  while (std::getline(in, raw)) {
    ++at.line;
    const std::string line = trim(raw);
    if (line.empty() || line[0] == ';' || line[0] == '#') continue;
    if (line.rfind("%include", 0) == 0) {
      std::string path = trim(std::string_view(line).substr(8));
      if (path.empty()) throw ConfigError(Kind::syntax, at.str(), "%include needs a file name");
      std::filesystem::path p(path);
      if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
      const auto included = read_text_file(p.string(), at.str(), "included file " + p.string());
      parse_text(c, included, p.string(), p.parent_path().string(), warnings, section, depth + 1);
      continue;
    }
    if (line.front() == '[') {
      if (line.back() != ']')
        throw ConfigError(Kind::syntax, at.str(), "malformed section header " + line);
      section = lower(trim(std::string_view(line).substr(1, line.size() - 2)));
      if (section != "pgbouncer" && section != "databases" && section != "users" &&
          section != "apps") {
        warnings.push_back({at.str() + ": section [" + section + "] is not supported, ignored"});
      }
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw ConfigError(Kind::syntax, at.str(), "expected key = value, got '" + line + "'");
    const std::string key = trim(std::string_view(line).substr(0, eq));
    const std::string value = trim(std::string_view(line).substr(eq + 1));
    if (key.empty()) throw ConfigError(Kind::syntax, at.str(), "missing key before '='");
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
      throw ConfigError(Kind::syntax, at.str(), "key '" + key + "' outside of any section");
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

std::string_view to_string(SslMode mode) {
  switch (mode) {
    case SslMode::disable:
      return "disable";
    case SslMode::allow:
      return "allow";
    case SslMode::prefer:
      return "prefer";
    case SslMode::require:
      return "require";
    case SslMode::verify_ca:
      return "verify-ca";
    case SslMode::verify_full:
      return "verify-full";
  }
  return "?";
}

std::string_view to_string(LoadBalanceHosts mode) {
  switch (mode) {
    case LoadBalanceHosts::round_robin:
      return "round-robin";
    case LoadBalanceHosts::disable:
      return "disable";
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
    case AuthType::cert:
      return "cert";
    case AuthType::peer:
      return "peer";
    case AuthType::hba:
      return "hba";
  }
  return "?";
}

const DatabaseEntry* Config::database_line(const std::string& name) const {
  if (auto it = databases.find(name); it != databases.end()) return &it->second;
  if (auto it = databases.find("*"); it != databases.end()) return &it->second;
  return nullptr;
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

int Config::max_db_client_connections_for(const std::string& database) const {
  const DatabaseEntry* line = database_line(database);
  if (line && line->max_db_client_connections) return *line->max_db_client_connections;
  return max_db_client_connections;
}

int Config::max_user_client_connections_for(const std::string& user) const {
  if (auto it = users.find(user); it != users.end() && it->second.max_user_client_connections) {
    return *it->second.max_user_client_connections;
  }
  return max_user_client_connections;
}

Millis Config::query_wait_timeout_for(const std::string& database, const std::string& user) const {
  if (auto it = users.find(user); it != users.end() && it->second.query_wait_timeout) {
    return *it->second.query_wait_timeout;
  }
  auto it = databases.find(database);
  if (it == databases.end()) it = databases.find("*");
  if (it != databases.end() && it->second.query_wait_timeout) {
    return *it->second.query_wait_timeout;
  }
  return query_wait_timeout;
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

void load_hba_rules(Config& c) {
  if (c.auth_type != AuthType::hba) {
    c.hba.reset();
    c.ident.reset();
    return;
  }
  if (c.auth_ident_file.empty()) {
    c.ident.reset();
  } else {
    c.ident = std::make_shared<const IdentFile>(
        parse_ident(read_text_file(c.auth_ident_file, c.auth_ident_file, "auth_ident_file"),
                    c.auth_ident_file));
  }
  if (c.auth_hba_file.empty()) {
    throw ConfigError(Kind::invalid_value, c.path, "auth_type = hba needs auth_hba_file");
  }
  const auto dir = std::filesystem::path(c.auth_hba_file).parent_path();
  auto hba = parse_hba(
      read_text_file(c.auth_hba_file, c.auth_hba_file, "auth_hba_file"), c.auth_hba_file,
      [&](const std::string& name) {
        const auto path = std::filesystem::path(name).is_relative() ? (dir / name).string() : name;
        return read_text_file(path, path, "an @file of auth_hba_file");
      });
  c.hba = std::make_shared<const HbaFile>(std::move(hba));
}

Config load_string(const std::string& text, const std::string& name, std::vector<Warning>& warnings,
                   const std::string& base_dir) {
  Config c;
  c.path = name;
  std::string section;
  parse_text(c, text, name, base_dir, warnings, section, 0);
  // A relative path is the config file's directory's; if nothing is there but the file is in
  // the current directory, that one (PgBouncer reads relative paths from its working
  // directory, and its users' files may count on it).
  auto resolve = [&](std::string& path) {
    if (path.empty() || !std::filesystem::path(path).is_relative()) return;
    const auto beside = (std::filesystem::path(base_dir) / path).string();
    std::error_code ec;
    if (!std::filesystem::exists(beside, ec) && std::filesystem::exists(path, ec)) {
      path = std::filesystem::absolute(path, ec).string();
      return;
    }
    path = beside;
  };
  resolve(c.auth_file);
  resolve(c.auth_hba_file);
  resolve(c.auth_ident_file);
  // The console is not a PostgreSQL database: auth_query cannot run there (PgBouncer's rule).
  if (is_console_database(c.auth_dbname)) {
    throw ConfigError(
        Kind::invalid_value, c.path,
        "cannot use the reserved \"" + c.auth_dbname + "\" database as an auth_dbname");
  }
  load_hba_rules(c);
  c.version = next_version();
  return c;
}

Config load_file(const std::string& path, std::vector<Warning>& warnings) {
  const auto text = read_text_file(path, path, "the configuration file");
  auto dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Config c = load_string(text, path, warnings, dir);
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
        throw ConfigError(Kind::syntax, name + ":" + std::to_string(number),
                          "expected \"user\" \"password\" in auth file");
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
        throw ConfigError(Kind::syntax, name + ":" + std::to_string(number),
                          "unterminated quote in auth file");
      }
      fields.push_back(std::move(field));
    }
    out[fields[0]] = fields[1];
  }
  return out;
}

std::map<std::string, std::string> load_auth_file(const std::string& path) {
  return parse_auth_file(read_text_file(path, path, "auth_file"), path);
}

bool is_runtime_changeable(const std::string& key) {
  const KeySpec* spec = find_key(lower(key));
  return spec != nullptr && spec->applies != Applies::restart;
}

void set_key(Config& config, const std::string& key, const std::string& value) {
  const KeySpec* spec = find_key(lower(key));
  if (spec == nullptr) {
    throw ConfigError(Kind::unknown_key, "SET", "unknown configuration key '" + key + "'");
  }
  set_from_table(config, Location{"SET", 0}, *spec, value);
  if (spec->name == "auth_type" || spec->name == "auth_hba_file" || spec->name == "auth_ident_file")
    load_hba_rules(config);
  config.version = next_version();
}

std::vector<Warning> keep_restart_values(const Config& running, Config& loaded) {
  std::vector<Warning> warnings;
  for (const auto& key : pgbouncer_keys()) {
    if (key.applies != Applies::restart) continue;
    const std::string was = show_value(running, key);
    const std::string now = show_value(loaded, key);
    if (was == now) continue;
    warnings.push_back({std::string(key.name) + " changed from '" + was + "' to '" + now +
                        "' but takes effect only at restart: keeping '" + was + "'"});
    if (key.type == KeyType::accepted) {
      if (auto it = running.other.find(std::string(key.name)); it != running.other.end()) {
        loaded.other[it->first] = it->second;
      } else {
        loaded.other.erase(std::string(key.name));
      }
      continue;
    }
    std::visit(
        [&](auto member) {
          if constexpr (!std::is_same_v<decltype(member), std::monostate>) {
            loaded.*member = running.*member;
          }
        },
        key.target);
  }
  return warnings;
}

std::vector<std::pair<std::string, std::string>> show_config_rows(const Config& c) {
  // Accepted keys show only when the file sets them: pgwarden has no default of its own for a
  // setting it does not act on.
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& key : pgbouncer_keys()) {
    if (key.type == KeyType::accepted && !c.other.contains(std::string(key.name))) continue;
    rows.emplace_back(std::string(key.name), show_value(c, key));
  }
  return rows;
}

}  // namespace pgw::config
