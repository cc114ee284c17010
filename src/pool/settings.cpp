// The settings of a pool, from the configuration: [pgbouncer] defaults, overridden by the
// [databases] entry and the [users] entry.
#include "pool/pool.hpp"

namespace pgw::pool {

PoolSettings settings_for(const config::Config& config, const config::DatabaseEntry& database,
                          const std::string& user, const config::Secrets& secrets,
                          std::shared_ptr<const net::TlsContext> server_tls,
                          const KeyStore& learned) {
  PoolSettings s;
  const config::UserEntry* user_entry = nullptr;
  if (auto it = config.users.find(user); it != config.users.end()) user_entry = &it->second;

  s.mode = config.pool_mode;
  if (database.pool_mode) s.mode = *database.pool_mode;
  if (user_entry && user_entry->pool_mode) s.mode = *user_entry->pool_mode;
  s.pool_size = database.pool_size.value_or(config.default_pool_size);
  if (user_entry && user_entry->pool_size) s.pool_size = *user_entry->pool_size;
  s.min_pool_size = database.min_pool_size.value_or(config.min_pool_size);
  s.reserve_pool_size = database.reserve_pool.value_or(config.reserve_pool_size);
  if (user_entry && user_entry->reserve_pool_size)
    s.reserve_pool_size = *user_entry->reserve_pool_size;
  s.max_db_connections =
      database.max_db_connections_set ? database.max_db_connections : config.max_db_connections;
  s.max_user_connections = (user_entry && user_entry->max_user_connections_set)
                               ? user_entry->max_user_connections
                               : config.max_user_connections;
  s.reserve_pool_timeout = config.reserve_pool_timeout;
  s.server_lifetime = database.server_lifetime.value_or(config.server_lifetime);
  s.server_idle_timeout = config.server_idle_timeout;
  s.server_connect_timeout = config.server_connect_timeout;
  s.server_login_retry = config.server_login_retry;
  s.server_check_delay = config.server_check_delay;
  s.server_check_query = config.server_check_query;
  s.server_check_enabled = config.server_check_query != "\"\"";
  s.server_reset_query = config.server_reset_query;
  s.server_reset_query_always = config.server_reset_query_always;
  s.max_prepared_statements = config.max_prepared_statements;
  s.max_waiting = config.max_waiting;
  s.breaker = {config.breaker_failures, config.breaker_open_min, config.breaker_open_max};

  s.servers = database.servers;
  if (s.servers.empty()) s.servers.push_back({database.host, database.port});
  s.load_balance = database.load_balance_hosts;
  s.dbname = database.dbname.empty() ? database.name : database.dbname;
  s.server_user = database.user.empty() ? user : database.user;
  s.password = database.password;
  if (s.password.empty()) {
    if (auto it = secrets.find(s.server_user); it != secrets.end()) {
      s.password = it->second;
    } else if (auto fetched = learned.secret(s.server_user)) {
      s.password = std::move(*fetched);  // auth_query's answer for a user not in auth_file
    }
  }
  if (!database.client_encoding.empty())
    s.startup_params.emplace_back("client_encoding", database.client_encoding);
  if (!database.datestyle.empty()) s.startup_params.emplace_back("datestyle", database.datestyle);
  if (!database.timezone.empty()) s.startup_params.emplace_back("timezone", database.timezone);
  if (!database.application_name.empty()) {
    s.startup_params.emplace_back("application_name", database.application_name);
  }
  s.connect_query = database.connect_query;
  s.log_connections = config.log_connections;
  s.log_disconnections = config.log_disconnections;
  // TLS over TCP only: server_login skips it for a host that is a Unix socket directory.
  if (server_tls) {
    s.tls_mode = server_tls->mode();
    s.tls = std::move(server_tls);
  }
  // The hosts, not how logins pick among them: load_balance_hosts changes no connection.
  for (const auto& server : s.servers) {
    s.fingerprint += server.host + ':' + std::to_string(server.port) + '\x1f';
  }
  s.fingerprint +=
      s.dbname + '\x1f' + s.server_user + '\x1f' + s.password + '\x1f' + s.connect_query;
  for (const auto& [key, value] : s.startup_params) s.fingerprint += '\x1f' + key + '=' + value;
  // Another TLS context (changed settings or files): servers reconnect, as in PgBouncer.
  if (s.tls) s.fingerprint += "\x1ftls=" + std::to_string(s.tls->generation());
  return s;
}

void PoolManager::apply(const config::Config& config, const config::Secrets& secrets) {
  // Pools pick up new sizes and timeouts now; a changed [databases] entry changes the
  // fingerprint, so old server connections close as they come back. A pool whose database is
  // gone closes its servers.
  for_each([&](Pool& pool) {
    auto entry = config.find_database(pool.database());
    if (!entry) {
      pool.close_all(true);
      return;
    }
    pool.update_settings(settings_for(config, *entry, pool.user(), secrets, server_tls(), keys_));
  });
  // A database with a forced user has one pool whoever connects: it exists from the start (and
  // from the reload that adds it), so that its min_pool_size is warm before the first client,
  // as in PgBouncer. The janitor's upkeep opens the connections.
  for (const auto& [name, entry] : config.databases) {
    if (name == "*" || entry.user.empty()) continue;
    if (entry.min_pool_size.value_or(config.min_pool_size) <= 0) continue;
    get(name, entry.user, [&, &db = entry] {
      return settings_for(config, db, db.user, secrets, server_tls(), keys_);
    });
  }
}

}  // namespace pgw::pool
