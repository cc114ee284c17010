// Invariants of a parsed config::Config (every value within the range its key allows),
// shared by the config and admin_command fuzz targets.
#pragma once

#include <chrono>
#include <optional>

#include "config/config.hpp"
#include "fuzz_common.hpp"

namespace pgw::fuzz {

using pgw::config::Millis;

// Durations must be usable by std::chrono timers: not negative, and convertible to the
// nanosecond steady_clock without overflow.
inline bool sane(Millis m) {
  return m.count() >= 0 && m <= std::chrono::duration_cast<Millis>(std::chrono::nanoseconds::max());
}
inline bool sane(const std::optional<Millis>& m) {
  return !m || sane(*m);
}

inline void check_config(const pgw::config::Config& c) {
  FUZZ_CHECK(c.listen_port >= 1 && c.listen_port <= 65535);
  FUZZ_CHECK(c.listen_backlog >= 1 && c.listen_backlog <= 65535);
  FUZZ_CHECK(c.pkt_buf >= 512 && c.pkt_buf <= (1 << 24));
  FUZZ_CHECK(c.default_pool_size >= 1 && c.max_client_conn >= 1);
  FUZZ_CHECK(c.min_pool_size >= 0 && c.reserve_pool_size >= 0 && c.max_db_connections >= 0 &&
             c.max_user_connections >= 0);
  FUZZ_CHECK(c.workers >= 0 && c.workers <= 1024 && c.effective_workers() >= 1);
  FUZZ_CHECK(c.tcp_keepcnt >= 0 && c.tcp_keepidle >= 0 && c.tcp_keepintvl >= 0 &&
             c.tcp_user_timeout >= 0);
  for (const auto d : {c.reserve_pool_timeout, c.server_check_delay, c.server_lifetime,
                       c.server_idle_timeout, c.server_connect_timeout, c.server_login_retry,
                       c.query_timeout, c.query_wait_timeout, c.client_idle_timeout,
                       c.client_login_timeout, c.idle_transaction_timeout, c.stats_period}) {
    FUZZ_CHECK(sane(d));
  }
  for (const auto& item : c.admin_users) FUZZ_CHECK(!item.empty());
  for (const auto& item : c.ignore_startup_parameters) FUZZ_CHECK(!item.empty());
  for (const auto& [name, db] : c.databases) {
    FUZZ_CHECK(db.name == name);
    FUZZ_CHECK(db.port >= 1 && db.port <= 65535);
    FUZZ_CHECK(!db.pool_size || *db.pool_size >= 0);
    FUZZ_CHECK(!db.min_pool_size || *db.min_pool_size >= 0);
    FUZZ_CHECK(!db.reserve_pool || *db.reserve_pool >= 0);
    FUZZ_CHECK(db.max_db_connections >= 0);
    FUZZ_CHECK(sane(db.server_lifetime));
    const auto found = c.find_database(name);
    FUZZ_CHECK(found && found->name == name);
  }
  if (const auto fallback = c.find_database("pgwarden_fuzz_no_such_db"); fallback) {
    FUZZ_CHECK(c.databases.count("*") == 1 && fallback->name == "pgwarden_fuzz_no_such_db");
    FUZZ_CHECK(!fallback->dbname.empty());
  } else {
    FUZZ_CHECK(c.databases.count("*") == 0);
  }
  for (const auto& [name, user] : c.users) {
    FUZZ_CHECK(user.name == name);
    FUZZ_CHECK(!user.pool_size || *user.pool_size >= 0);
    FUZZ_CHECK(!user.reserve_pool_size || *user.reserve_pool_size >= 0);
    FUZZ_CHECK(user.max_user_connections >= 0);
    FUZZ_CHECK(sane(user.query_timeout) && sane(user.idle_transaction_timeout) &&
               sane(user.client_idle_timeout));
  }
  const auto rows = pgw::config::show_config_rows(c);
  FUZZ_CHECK(!rows.empty());
  for (const auto& [key, value] : rows) FUZZ_CHECK(!key.empty());
}

}  // namespace pgw::fuzz
