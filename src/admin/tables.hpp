// The result sets of the SHOW commands, built from a Snapshot of the process state. Pure
// functions: the console gathers the snapshot (across workers, under pool mutexes) and these
// only format it, with PgBouncer 1.25's column names and order (pgwarden extras go last).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "pool/pool.hpp"
#include "session/apps.hpp"
#include "session/session_info.hpp"
#include "util/health.hpp"

namespace pgw::admin {

inline constexpr std::int32_t kInt8Oid = 20;
inline constexpr std::int32_t kTextOid = 25;
inline constexpr std::int32_t kFloat8Oid = 701;

struct Column {
  std::string name;
  std::int32_t type_oid = kTextOid;
};
using Cell = std::optional<std::string>;  // nullopt = SQL NULL
using Row = std::vector<Cell>;

struct ResultSet {
  std::vector<Column> columns;  // empty: a command without rows (only the tag)
  std::vector<Row> rows;
  std::string tag;  // CommandComplete
  std::vector<std::string> notices;
};

// One pool as the console sees it.
struct PoolSnapshot {
  const pool::Pool* pool = nullptr;
  std::string database, user;
  pool::PoolSettings settings;
  pool::PoolStats stats;
  pool::StatValues totals;
  pool::StatValues period_delta;
  std::chrono::steady_clock::duration period{};
  std::vector<pool::ServerInfo> idle;
};

struct Snapshot {
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<const std::map<std::string, std::string>> secrets;
  std::vector<session::SessionInfo> sessions;  // every worker's, gathered on each worker
  std::vector<PoolSnapshot> pools;
  std::map<std::string, int> db_connections, user_connections;
  // Clients counted per database and per login user (max_db_client_connections,
  // max_user_client_connections): current_client_connections.
  std::map<std::string, int> database_clients, user_clients;
  std::set<std::string> paused_databases;  // paused individually or globally
  bool all_paused = false;
  std::set<std::string> disabled_databases;      // DISABLE: new logins refused
  std::vector<session::LeakEvent> events;        // SHOW EVENTS: newest first
  std::map<std::string, session::AppView> apps;  // SHOW APPS: totals and growth by application
  std::map<std::string, session::LeakBook::AppCounters> leak_counters;  // SHOW APPS
  std::vector<pool::BackendStatus> backends;  // circuit breakers (admin/resilience_rows.hpp)
  HealthFigures health;                       // watchdog, open files, shutdown
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now();
  std::chrono::system_clock::time_point wall_now = std::chrono::system_clock::now();
};

// Which pieces of the snapshot a SHOW needs (gathering sessions visits every worker).
bool show_needs_sessions(std::string_view subject);
// The result of SHOW <subject> (a subject is_show_subject() accepts).
ResultSet build_show(std::string_view subject, const Snapshot& snapshot);

// Column names of each SHOW, in order (for the tests and docs).
std::vector<std::string> column_names(std::string_view subject);

}  // namespace pgw::admin
