#include "session/shared.hpp"

#include "auth/auth.hpp"
#include "session/client_session.hpp"

namespace pgw::session {

std::uint64_t CancelRegistry::KeyOf::operator()(const ClientSession* session) const {
  return pack(session->cancel_key());
}

void CancelRegistry::add(ClientSession* session) {
  std::lock_guard lock(mutex_);
  for (;;) {
    const auto bits = random_();
    const Key key{static_cast<std::int32_t>(bits & 0x7fffffff),
                  static_cast<std::int32_t>(bits >> 32)};
    if (key.pid == 0) continue;
    // The table reads the key from the session, so it is written first; insert() refuses a
    // key another session holds, and the loop draws again.
    session->cancel_key_ = key;
    if (sessions_.insert(session)) return;
  }
}

void CancelRegistry::remove(Key key) {
  std::lock_guard lock(mutex_);
  sessions_.erase(pack(key));
}

std::shared_ptr<ClientSession> CancelRegistry::find(Key key) const {
  std::lock_guard lock(mutex_);
  ClientSession* session = sessions_.find(pack(key));
  // A session removes itself in its destructor, under this mutex; until then its weak self
  // reference tells whether it is still alive (lock() fails once the last owner let go).
  return session ? session->weak_from_this().lock() : nullptr;
}

bool Shared::admit_app_client(const std::string& application_name, int cap) {
  std::lock_guard lock(app_clients_mutex_);
  int& count = app_clients_[application_name];
  if (count >= cap) {
    if (count == 0) app_clients_.erase(application_name);
    return false;
  }
  ++count;
  return true;
}

void Shared::release_app_client(const std::string& application_name) {
  std::lock_guard lock(app_clients_mutex_);
  auto it = app_clients_.find(application_name);
  if (it != app_clients_.end() && --it->second <= 0) app_clients_.erase(it);
}

std::string Shared::scram_secret_for(const std::string& user, const std::string& password) {
  {
    std::lock_guard lock(scram_mutex_);
    auto it = scram_cache_.find(user);
    if (it != scram_cache_.end() && it->second.first == password) return it->second.second;
  }
  std::string secret = auth::scram_secret_from_password(password);
  std::lock_guard lock(scram_mutex_);
  scram_cache_[user] = {password, secret};
  return secret;
}

void Shared::apply_config(std::shared_ptr<const config::Config> config,
                          std::shared_ptr<const std::map<std::string, std::string>> secrets) {
  set_config(config, secrets);
  // Pools pick up new sizes and timeouts now; a changed [databases] entry changes the
  // fingerprint, so old server connections close as they come back.
  pools.for_each([&](pool::Pool& pool) {
    auto entry = config->find_database(pool.database());
    if (!entry) {
      pool.close_all(true);
      return;
    }
    pool.update_settings(pool_settings(*config, *entry, pool.user(), *secrets));
  });
}

pool::PoolSettings Shared::pool_settings(const config::Config& config,
                                         const config::DatabaseEntry& database,
                                         const std::string& user,
                                         const std::map<std::string, std::string>& secrets) {
  pool::PoolSettings s;
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
  s.max_waiting = config.max_waiting;
  s.breaker = {config.breaker_failures, config.breaker_open_min, config.breaker_open_max};

  s.host = database.host;
  s.port = database.port;
  s.dbname = database.dbname.empty() ? database.name : database.dbname;
  s.server_user = database.user.empty() ? user : database.user;
  s.password = database.password;
  if (s.password.empty()) {
    if (auto it = secrets.find(s.server_user); it != secrets.end()) s.password = it->second;
  }
  if (!database.client_encoding.empty())
    s.startup_params.emplace_back("client_encoding", database.client_encoding);
  if (!database.datestyle.empty()) s.startup_params.emplace_back("datestyle", database.datestyle);
  if (!database.timezone.empty()) s.startup_params.emplace_back("timezone", database.timezone);
  if (!database.application_name.empty()) {
    s.startup_params.emplace_back("application_name", database.application_name);
  }
  s.connect_query = database.connect_query;
  s.fingerprint = s.host + '\x1f' + std::to_string(s.port) + '\x1f' + s.dbname + '\x1f' +
                  s.server_user + '\x1f' + s.password + '\x1f' + s.connect_query;
  for (const auto& [key, value] : s.startup_params) s.fingerprint += '\x1f' + key + '=' + value;
  return s;
}

}  // namespace pgw::session
