#include "admin/tables.hpp"

#include "admin/resilience_rows.hpp"
#include "config/keys.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

namespace pgw::admin {
namespace {

using Clock = std::chrono::steady_clock;
using pool::Stat;

std::string num(std::int64_t v) {
  return std::to_string(v);
}
std::string unum(std::uint64_t v) {
  return std::to_string(v);
}
Cell opt(const std::string& s) {
  return s.empty() ? Cell{} : Cell{s};
}

std::string secs(std::chrono::milliseconds m) {
  if (m.count() % 1000 == 0) return std::to_string(m.count() / 1000);
  return fmt::format("{:g}", static_cast<double>(m.count()) / 1000.0);
}

// A steady_clock instant as wall-clock text, like PgBouncer's "2024-05-01 10:00:00 UTC".
Cell wall_time(const Snapshot& s, Clock::time_point t) {
  if (t == Clock::time_point{}) return std::nullopt;
  const auto wall =
      s.wall_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(s.now - t);
  const std::time_t tt = std::chrono::system_clock::to_time_t(wall);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return std::string(buf);
}

std::string hex(std::uintptr_t p) {
  return fmt::format("{:x}", p);
}

struct Builder {
  ResultSet rs;
  Builder& col(std::string name, std::int32_t oid = kTextOid) {
    rs.columns.push_back({std::move(name), oid});
    return *this;
  }
  Builder& ints(std::initializer_list<const char*> names) {
    for (const char* n : names) col(n, kInt8Oid);
    return *this;
  }
  Builder& texts(std::initializer_list<const char*> names) {
    for (const char* n : names) col(n, kTextOid);
    return *this;
  }
};

// load_balance_hosts as PgBouncer shows it: only for a host list.
Cell load_balance_cell(const std::vector<config::ServerAddress>& servers,
                       config::LoadBalanceHosts mode) {
  if (servers.size() < 2) return Cell{};
  return std::string(config::to_string(mode));
}

bool counts_as_client(const session::SessionInfo& info) {
  return info.state != session::ClientState::login;
}

// --- SHOW CLIENTS / SERVERS share PgBouncer's header.
void socket_header(Builder& b) {
  b.texts({"type", "user", "database", "replication", "state", "addr"})
      .ints({"port"})
      .texts({"local_addr"})
      .ints({"local_port"})
      .texts({"connect_time", "request_time"})
      .ints({"wait", "wait_us", "close_needed"})
      .texts({"ptr", "link"})
      .ints({"remote_pid"})
      .texts({"tls", "application_name"})
      .ints({"prepared_statements", "id"});
}

// Session state in transaction pooling: what the client holds, since when, the statement that
// began it, and whether it keeps the client on its server (SHOW CLIENTS, SHOW LEASES).
void session_state_header(Builder& b) {
  b.texts({"session_state", "session_state_since", "session_state_query"}).ints({"pinned"});
}
void append_session_state(Row& row, const Snapshot& s, const session::SessionInfo& c) {
  const bool held = !c.session_state.empty();
  row.push_back(c.session_state);
  row.push_back(held ? Cell{wall_time(s, c.session_state_since)} : Cell{});
  row.push_back(held ? Cell{c.session_state_statement} : Cell{});
  row.push_back(num(c.pinned ? 1 : 0));
}

ResultSet show_clients(const Snapshot& s) {
  Builder b;
  socket_header(b);
  session_state_header(b);
  auto sessions = s.sessions;
  std::sort(sessions.begin(), sessions.end(),
            [](const auto& a, const auto& c) { return a.id < c.id; });
  for (const auto& c : sessions) {
    std::int64_t wait_s = 0, wait_us = 0;
    const auto& state = session::names_of(c.state);
    if (state.list == session::ClientList::waiting) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::microseconds>(s.now - c.state_since).count();
      wait_s = waited / 1000000;
      wait_us = waited % 1000000;
    }
    b.rs.rows.push_back(Row{"C",
                            c.user,
                            c.database,
                            "none",
                            std::string(state.shown_as),
                            c.addr,
                            num(c.port),
                            c.local_addr,
                            num(c.local_port),
                            wall_time(s, c.connect_time),
                            wall_time(s, c.request_time),
                            num(wait_s),
                            num(wait_us),
                            "0",
                            hex(c.ptr),
                            c.server ? Cell{hex(c.server->ptr)} : Cell{},
                            "0",
                            c.tls,
                            c.application_name,
                            unum(c.prepared_statements),
                            unum(c.id)});
    append_session_state(b.rs.rows.back(), s, c);
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

Row server_row(const Snapshot& s, const pool::ServerInfo& sv, const std::string& database,
               const std::string& user) {
  return Row{"S",
             user,
             database,
             "none",
             std::string(sv.state),
             sv.addr,
             num(sv.port),
             sv.local_addr,
             num(sv.local_port),
             wall_time(s, sv.created),
             wall_time(s, sv.last_used),
             "0",
             "0",
             sv.close_needed ? "1" : "0",
             hex(sv.ptr),
             sv.link ? Cell{hex(sv.link)} : Cell{},
             num(sv.backend_pid),
             sv.tls,
             sv.application_name,
             unum(sv.prepared_statements),
             unum(sv.id)};
}

ResultSet show_servers(const Snapshot& s) {
  Builder b;
  socket_header(b);
  std::vector<std::pair<std::uint64_t, Row>> rows;
  for (const auto& c : s.sessions) {
    if (!c.server || !c.pool) continue;
    rows.emplace_back(c.server->id, server_row(s, *c.server, c.pool->database(), c.pool->user()));
  }
  for (const auto& p : s.pools) {
    for (const auto& sv : p.idle) rows.emplace_back(sv.id, server_row(s, sv, p.database, p.user));
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& c) { return a.first < c.first; });
  for (auto& [id, row] : rows) b.rs.rows.push_back(std::move(row));
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW POOLS
ResultSet show_pools(const Snapshot& s) {
  Builder b;
  b.texts({"database", "user"})
      .ints({"cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
             "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
             "sv_tested", "sv_login", "maxwait", "maxwait_us"})
      .texts({"pool_mode", "load_balance_hosts"});
  // The console's own pool, as PgBouncer lists it.
  int admins = 0;
  for (const auto& c : s.sessions) admins += c.admin ? 1 : 0;
  b.rs.rows.push_back(Row{"pgbouncer", "pgbouncer", num(admins), "0", "0", "0", "0", "0", "0", "0",
                          "0", "0", "0", "0", "0", "statement", Cell{}});
  for (const auto& p : s.pools) {
    int active = 0, waiting = 0, tested = 0;
    for (const auto& c : s.sessions) {
      if (c.pool != p.pool) continue;
      switch (session::names_of(c.state).list) {
        case session::ClientList::waiting:
          ++waiting;
          break;
        case session::ClientList::active:
          ++active;
          break;
        case session::ClientList::none:
          break;
      }
      if (c.server && c.server->state == "tested") ++tested;
    }
    const auto wait_us =
        std::chrono::duration_cast<std::chrono::microseconds>(p.stats.max_wait).count();
    b.rs.rows.push_back(Row{p.database, p.user, num(active), num(waiting), "0", "0",
                            num(std::max(0, p.stats.active - tested)), "0", "0",
                            num(p.stats.idle - p.stats.used), num(p.stats.used), num(tested),
                            num(p.stats.connecting), num(wait_us / 1000000), num(wait_us % 1000000),
                            std::string(config::to_string(p.settings.mode)),
                            load_balance_cell(p.settings.servers, p.settings.load_balance)});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW DATABASES
ResultSet show_databases(const Snapshot& s) {
  Builder b;
  b.texts({"name", "host"})
      .ints({"port"})
      .texts({"database", "force_user"})
      .ints({"pool_size", "min_pool_size", "reserve_pool_size", "server_lifetime"})
      .texts({"pool_mode", "load_balance_hosts"})
      .ints({"max_connections", "current_connections", "max_client_connections",
             "current_client_connections", "paused", "disabled"});
  for (auto& column : breaker_columns()) b.rs.columns.push_back(std::move(column));  // pgwarden's
  const auto& c = *s.config;
  // The count max_db_client_connections is checked against (clients logging in included, as
  // PgBouncer counts them).
  auto clients_of = [&](const std::string& db) {
    const auto it = s.database_clients.find(db);
    return it == s.database_clients.end() ? 0 : it->second;
  };
  // Configured databases, then those created through the "*" fallback (as PgBouncer's autodb).
  std::set<std::string> names;
  for (const auto& [name, entry] : c.databases) {
    if (name != "*") names.insert(name);
  }
  for (const auto& p : s.pools) names.insert(p.database);
  for (const auto& name : names) {
    auto entry = c.find_database(name);
    if (!entry) continue;  // removed by a reload; its pools are closing
    const std::string dbname = entry->dbname.empty() ? name : entry->dbname;
    const int max_conn =
        entry->max_db_connections_set ? entry->max_db_connections : c.max_db_connections;
    const auto conn = s.db_connections.find(name);
    b.rs.rows.push_back(
        Row{name, opt(entry->host), num(entry->port), dbname, opt(entry->user),
            num(entry->pool_size.value_or(c.default_pool_size)),
            num(entry->min_pool_size.value_or(c.min_pool_size)),
            num(entry->reserve_pool.value_or(c.reserve_pool_size)),
            secs(entry->server_lifetime.value_or(c.server_lifetime)),
            entry->pool_mode ? Cell{std::string(config::to_string(*entry->pool_mode))} : Cell{},
            load_balance_cell(entry->servers, entry->load_balance_hosts), num(max_conn),
            num(conn == s.db_connections.end() ? 0 : conn->second),
            num(c.max_db_client_connections_for(name)), num(clients_of(name)),
            s.paused_databases.contains(name) ? "1" : "0",
            s.disabled_databases.contains(name) ? "1" : "0"});
    for (auto& cell : breaker_cells(s, entry->servers)) b.rs.rows.back().push_back(cell);
  }
  int admins = 0;
  for (const auto& info : s.sessions) admins += info.admin ? 1 : 0;
  b.rs.rows.push_back(Row{"pgbouncer", Cell{}, num(c.listen_port), "pgbouncer", "pgbouncer", "2",
                          "0", "0", "0", "statement", Cell{}, "0", "0",
                          num(c.max_db_client_connections), num(admins), "0", "0"});
  for (auto& cell : no_breaker_cells()) b.rs.rows.back().push_back(cell);
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW USERS
std::set<std::string> user_names(const Snapshot& s) {
  std::set<std::string> names;
  for (const auto& [name, entry] : s.config->users) names.insert(name);
  if (s.secrets) {
    for (const auto& [name, secret] : *s.secrets) names.insert(name);
  }
  for (const auto& p : s.pools) names.insert(p.user);
  for (const auto& c : s.sessions) {
    if (counts_as_client(c)) names.insert(c.user);
  }
  return names;
}

ResultSet show_users(const Snapshot& s) {
  Builder b;
  b.texts({"name"})
      .ints({"pool_size", "reserve_pool_size"})
      .texts({"pool_mode"})
      .ints({"max_user_connections", "current_connections", "max_user_client_connections",
             "current_client_connections"});
  const auto& c = *s.config;
  for (const auto& name : user_names(s)) {
    const config::UserEntry* entry = nullptr;
    if (auto it = c.users.find(name); it != c.users.end()) entry = &it->second;
    const int max_conn = entry && entry->max_user_connections_set ? entry->max_user_connections
                                                                  : c.max_user_connections;
    // The count max_user_client_connections is checked against.
    const auto clients = s.user_clients.find(name);
    const auto conn = s.user_connections.find(name);
    b.rs.rows.push_back(
        Row{name, entry && entry->pool_size ? Cell{num(*entry->pool_size)} : Cell{},
            entry && entry->reserve_pool_size ? Cell{num(*entry->reserve_pool_size)} : Cell{},
            entry && entry->pool_mode ? Cell{std::string(config::to_string(*entry->pool_mode))}
                                      : Cell{},
            num(max_conn), num(conn == s.user_connections.end() ? 0 : conn->second),
            num(c.max_user_client_connections_for(name)),
            num(clients == s.user_clients.end() ? 0 : clients->second)});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW STATS family
constexpr Stat kStatOrder[] = {Stat::server_assignment, Stat::xact,         Stat::query,
                               Stat::received,          Stat::sent,         Stat::xact_time_us,
                               Stat::query_time_us,     Stat::wait_time_us, Stat::client_parse,
                               Stat::server_parse,      Stat::bind,         Stat::client_login};
constexpr const char* kTotalNames[] = {"total_server_assignment_count",
                                       "total_xact_count",
                                       "total_query_count",
                                       "total_received",
                                       "total_sent",
                                       "total_xact_time",
                                       "total_query_time",
                                       "total_wait_time",
                                       "total_client_parse_count",
                                       "total_server_parse_count",
                                       "total_bind_count",
                                       "total_client_login_count"};
constexpr const char* kAvgNames[] = {"avg_server_assignment_count",
                                     "avg_xact_count",
                                     "avg_query_count",
                                     "avg_recv",
                                     "avg_sent",
                                     "avg_xact_time",
                                     "avg_query_time",
                                     "avg_wait_time",
                                     "avg_client_parse_count",
                                     "avg_server_parse_count",
                                     "avg_bind_count",
                                     "avg_client_login_count"};
constexpr const char* kBareNames[] = {"server_assignment_count",
                                      "xact_count",
                                      "query_count",
                                      "bytes_received",
                                      "bytes_sent",
                                      "xact_time",
                                      "query_time",
                                      "wait_time",
                                      "client_parse_count",
                                      "server_parse_count",
                                      "bind_count",
                                      "client_login_count"};

struct DbStats {
  pool::StatValues totals, delta;
  Clock::duration period{};
};

std::map<std::string, DbStats> stats_by_database(const Snapshot& s) {
  std::map<std::string, DbStats> out;
  for (const auto& p : s.pools) {
    auto& d = out[p.database];
    d.totals += p.totals;
    d.delta += p.period_delta;
    d.period = std::max(d.period, p.period);
  }
  return out;
}

// Averages over the last stats_period: counts and bytes per second; times per transaction,
// per query and per server assignment (µs), as PgBouncer computes them.
std::vector<std::uint64_t> averages(const DbStats& d) {
  const double seconds = std::chrono::duration<double>(d.period).count();
  auto rate = [&](Stat st) -> std::uint64_t {
    return seconds > 0 ? static_cast<std::uint64_t>(static_cast<double>(d.delta[st]) / seconds) : 0;
  };
  auto per = [&](Stat time, Stat count) -> std::uint64_t {
    return d.delta[count] > 0 ? d.delta[time] / d.delta[count] : 0;
  };
  std::vector<std::uint64_t> out;
  for (Stat st : kStatOrder) {
    switch (st) {
      case Stat::xact_time_us:
        out.push_back(per(st, Stat::xact));
        break;
      case Stat::query_time_us:
        out.push_back(per(st, Stat::query));
        break;
      case Stat::wait_time_us:
        out.push_back(per(st, Stat::server_assignment));
        break;
      default:
        out.push_back(rate(st));
        break;
    }
  }
  return out;
}

ResultSet show_stats(const Snapshot& s, bool totals, bool avgs, bool bare) {
  Builder b;
  b.texts({"database"});
  if (totals) {
    for (std::size_t i = 0; i < std::size(kStatOrder); ++i)
      b.col(bare ? kBareNames[i] : kTotalNames[i], kInt8Oid);
  }
  if (avgs) {
    for (std::size_t i = 0; i < std::size(kStatOrder); ++i)
      b.col(bare ? kBareNames[i] : kAvgNames[i], kInt8Oid);
  }
  for (const auto& [database, d] : stats_by_database(s)) {
    Row row{database};
    if (totals) {
      for (Stat st : kStatOrder) row.push_back(unum(d.totals[st]));
    }
    if (avgs) {
      for (auto v : averages(d)) row.push_back(unum(v));
    }
    b.rs.rows.push_back(std::move(row));
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

ResultSet show_totals(const Snapshot& s) {
  Builder b;
  b.texts({"name"}).ints({"value"});
  DbStats all;
  for (const auto& [database, d] : stats_by_database(s)) {
    all.totals += d.totals;
    all.delta += d.delta;
    all.period = std::max(all.period, d.period);
  }
  for (std::size_t i = 0; i < std::size(kStatOrder); ++i) {
    b.rs.rows.push_back(Row{kTotalNames[i], unum(all.totals[kStatOrder[i]])});
  }
  const auto avg = averages(all);
  for (std::size_t i = 0; i < std::size(kStatOrder); ++i) {
    b.rs.rows.push_back(Row{kAvgNames[i], unum(avg[i])});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- small ones
ResultSet show_config(const Snapshot& s) {
  Builder b;
  b.texts({"key", "value", "default", "changeable"});
  const config::Config defaults;
  std::vector<const config::KeySpec*> keys;
  for (const auto& key : config::pgbouncer_keys()) {
    // Accepted-only keys show when set, as SHOW CONFIG rows do (config::show_config_rows).
    if (key.type == config::KeyType::accepted && !s.config->other.contains(std::string(key.name)))
      continue;
    keys.push_back(&key);
  }
  std::sort(keys.begin(), keys.end(), [](auto* x, auto* y) { return x->name < y->name; });
  for (const auto* key : keys) {
    b.rs.rows.push_back(Row{std::string(key->name), config::show_value(*s.config, *key),
                            config::show_value(defaults, *key),
                            key->applies == config::Applies::restart ? "no" : "yes"});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

ResultSet show_lists(const Snapshot& s) {
  Builder b;
  b.texts({"list"}).ints({"items"});
  std::set<std::string> databases;
  for (const auto& [name, entry] : s.config->databases) {
    if (name != "*") databases.insert(name);
  }
  for (const auto& p : s.pools) databases.insert(p.database);
  int used_clients = 0, login_clients = 0, servers = 0;
  for (const auto& c : s.sessions) (counts_as_client(c) ? used_clients : login_clients) += 1;
  for (const auto& p : s.pools) servers += p.stats.total;
  const std::pair<const char*, std::size_t> items[] = {
      {"databases", databases.size() + 1},  // + the console's "pgbouncer"
      {"users", user_names(s).size()},
      {"peers", 0},
      {"pools", s.pools.size() + 1},
      {"peer_pools", 0},
      {"free_clients", 0},  // no object free lists: sessions are allocated per connection
      {"used_clients", static_cast<std::size_t>(used_clients)},
      {"login_clients", static_cast<std::size_t>(login_clients)},
      {"free_servers", 0},
      {"used_servers", static_cast<std::size_t>(servers)},
      {"dns_names", 0},
      {"dns_zones", 0},
      {"dns_queries", 0},
      {"dns_pending", 0},
  };
  for (const auto& [name, count] : items) b.rs.rows.push_back(Row{name, unum(count)});
  b.rs.tag = "SHOW";
  return b.rs;
}

ResultSet show_state(const Snapshot& s) {
  Builder b;
  b.texts({"key", "value"});
  b.rs.rows.push_back(Row{"active", s.all_paused ? "no" : "yes"});
  b.rs.rows.push_back(Row{"paused", s.all_paused ? "yes" : "no"});
  b.rs.rows.push_back(Row{"suspended", "no"});
  for (auto& row : resilience_state_rows(s)) b.rs.rows.push_back(std::move(row));
  b.rs.tag = "SHOW";
  return b.rs;
}

ResultSet show_version() {
  Builder b;
  b.texts({"version"});
  b.rs.rows.push_back(
      Row{std::string("pgwarden " PGWARDEN_VERSION " (PgBouncer 1.25.0 compatible)")});
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW LEASES / LEAKS (leak guard, docs/leak-guard.md)
std::int64_t whole_seconds(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d).count();
}

bool is_leak(const session::LeaseInfo& l, const Snapshot& s) {
  return session::is_suspected_leak(
      session::facts_of(l),
      session::resolve_policy(*s.config, l.application_name, l.database, l.user), s.now);
}

ResultSet show_leases(const Snapshot& s, bool leaks_only) {
  Builder b;
  b.ints({"client_id"})
      .texts({"application_name", "user", "database", "client_addr"})
      .ints({"client_port", "backend_pid"})
      .texts({"state"})
      .ints({"lease_age_s", "xact_age_s", "idle_s", "statements"})
      .texts({"first_query", "last_query", "tags", "action_taken", "next_action"})
      .ints({"next_action_in_s"});
  session_state_header(b);
  std::vector<const session::SessionInfo*> leases;
  for (const auto& c : s.sessions) {
    if (!c.lease) continue;
    if (leaks_only && !is_leak(*c.lease, s)) continue;
    leases.push_back(&c);
  }
  // Oldest lease first.
  std::sort(leases.begin(), leases.end(), [](const auto* a, const auto* c) {
    return a->lease->start != c->lease->start ? a->lease->start < c->lease->start
                                              : a->lease->client_id < c->lease->client_id;
  });
  for (const auto* session : leases) {
    const auto* l = &*session->lease;
    const bool active = l->state == session::LeaseState::active;
    // The ladder's first step (the janitor takes it once it is due).
    const auto steps = session::ladder_steps(
        session::facts_of(*l),
        session::resolve_policy(*s.config, l->application_name, l->database, l->user));
    std::string next_what;
    Cell next_in;
    if (!steps.empty()) {
      next_what = session::describe(steps.begin()->action);
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(steps.begin()->at - s.now).count();
      next_in = num(left <= 0 ? 0 : (left + 999) / 1000);
    }
    b.rs.rows.push_back(
        Row{unum(l->client_id), l->application_name, l->user, l->database, l->addr, num(l->port),
            num(l->backend_pid), std::string(session::to_string(l->state)),
            num(whole_seconds(s.now - l->start)),
            l->xact_start == Clock::time_point{} ? Cell{}
                                                 : Cell{num(whole_seconds(s.now - l->xact_start))},
            active ? Cell{} : Cell{num(whole_seconds(s.now - l->idle_since))}, unum(l->statements),
            l->first_query, l->last_query, l->tags,
            l->reclaimed ? "reclaimed_under_pressure"
            : l->warned  ? "warned"
                         : "",
            next_what, next_in});
    append_session_state(b.rs.rows.back(), s, *session);
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW EVENTS
ResultSet show_events(const Snapshot& s) {
  Builder b;
  b.texts({"time"})
      .ints({"client_id"})
      .texts({"application_name", "action", "reason"})
      .ints({"lease_age_s"})
      .texts({"first_query"});
  for (const auto& e : s.events) {
    const std::time_t tt = std::chrono::system_clock::to_time_t(e.time);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    // client_id 0: an event about a whole application (growth alarm).
    b.rs.rows.push_back(Row{std::string(buf), e.client_id ? Cell{unum(e.client_id)} : Cell{},
                            e.application_name, e.action, e.reason, num(e.lease_age_ms / 1000),
                            e.first_query});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

// --- SHOW APPS (leak guard, docs/leak-guard.md#show-apps)
Cell growth(const std::optional<double>& per_minute) {
  if (!per_minute) return std::nullopt;
  return fmt::format("{:.1f}", *per_minute);
}

ResultSet show_apps(const Snapshot& s) {
  Builder b;
  b.texts({"application_name"})
      .ints({"clients", "waiting", "active", "idle_in_transaction", "idle_pinned",
             "total_xact_count", "total_query_count", "leaks", "total_leaks", "total_actions"})
      .col("client_growth_per_min", kFloat8Oid)
      .col("lease_growth_per_min", kFloat8Oid)
      .texts({"growth_alarm"})
      .ints({"max_client_conn", "max_server_conn"})
      .texts({"apps_pattern"});
  struct AppRow {
    session::AppLive live;
    session::SessionTally totals;
  };
  std::map<std::string, AppRow> apps;
  for (const auto& c : s.sessions) {
    if (c.admin) continue;
    const auto list = session::names_of(c.state).list;
    const bool counted = list != session::ClientList::none;
    if (!counted && c.unreported.empty()) continue;
    auto& row = apps[c.application_name];
    row.totals += c.unreported;
    if (!counted) continue;
    ++row.live.clients;
    if (list == session::ClientList::waiting) ++row.live.waiting;
    if (!c.lease) continue;
    switch (c.lease->state) {
      case session::LeaseState::active:
        ++row.live.active;
        break;
      case session::LeaseState::idle_in_transaction:
        ++row.live.idle_in_transaction;
        break;
      case session::LeaseState::idle_pinned:
        ++row.live.idle_pinned;
        break;
    }
    if (is_leak(*c.lease, s)) ++row.live.leaks;
  }
  for (const auto& [name, view] : s.apps) apps[name].totals += view.totals;
  for (const auto& [name, counters] : s.leak_counters) apps.try_emplace(name);
  for (const auto& [name, row] : apps) {
    const auto view_it = s.apps.find(name);
    const session::AppView view = view_it == s.apps.end() ? session::AppView{} : view_it->second;
    const auto counters_it = s.leak_counters.find(name);
    const auto counters = counters_it == s.leak_counters.end() ? session::LeakBook::AppCounters{}
                                                               : counters_it->second;
    const auto* line = s.config->find_app(name);
    auto cap = [](const std::optional<int>& value) { return value ? Cell{num(*value)} : Cell{}; };
    b.rs.rows.push_back(
        Row{name, num(row.live.clients), num(row.live.waiting), num(row.live.active),
            num(row.live.idle_in_transaction), num(row.live.idle_pinned),
            unum(row.totals.transactions), unum(row.totals.queries), num(row.live.leaks),
            unum(counters.suspected), unum(counters.actions), growth(view.client_growth_per_min),
            growth(view.lease_growth_per_min),
            view.alarm ? Cell{std::string(session::to_string(*view.alarm))} : Cell{""},
            line ? cap(line->max_client_conn) : Cell{}, line ? cap(line->max_server_conn) : Cell{},
            line ? Cell{line->pattern} : Cell{}});
  }
  b.rs.tag = "SHOW";
  return b.rs;
}

ResultSet show_help() {
  ResultSet rs;
  rs.notices.push_back(
      "Console usage\n"
      "\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
      "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|STATE\n"
      "\tSHOW LEASES|LEAKS|EVENTS|APPS\n"
      "\tSET key = arg\n"
      "\tRELOAD\n"
      "\tPAUSE [<db>]\n"
      "\tRESUME [<db>]\n"
      "\tRECONNECT [<db>]\n"
      "\tKILL [<db>]\n"
      "\tKILL_CLIENT <client_id>\n"
      "\tCANCEL_CLIENT <client_id>\n"
      "\tKILL_APP <application_name>\n"
      "\tWAIT_CLOSE [<db>]\n"
      "\tSHUTDOWN");
  rs.tag = "SHOW";
  return rs;
}

}  // namespace

bool show_needs_sessions(std::string_view subject) {
  return subject == "clients" || subject == "servers" || subject == "pools" ||
         subject == "databases" || subject == "users" || subject == "lists" ||
         subject == "leases" || subject == "leaks" || subject == "apps";
}

ResultSet build_show(std::string_view subject, const Snapshot& s) {
  if (subject == "clients") return show_clients(s);
  if (subject == "servers") return show_servers(s);
  if (subject == "pools") return show_pools(s);
  if (subject == "databases") return show_databases(s);
  if (subject == "users") return show_users(s);
  if (subject == "stats") return show_stats(s, true, true, false);
  if (subject == "stats_totals") return show_stats(s, true, false, true);
  if (subject == "stats_averages") return show_stats(s, false, true, true);
  if (subject == "totals") return show_totals(s);
  if (subject == "config") return show_config(s);
  if (subject == "lists") return show_lists(s);
  if (subject == "state") return show_state(s);
  if (subject == "version") return show_version();
  if (subject == "leases") return show_leases(s, false);
  if (subject == "leaks") return show_leases(s, true);
  if (subject == "events") return show_events(s);
  if (subject == "apps") return show_apps(s);
  return show_help();
}

std::vector<std::string> column_names(std::string_view subject) {
  Snapshot empty;
  empty.config = std::make_shared<const config::Config>();
  std::vector<std::string> out;
  for (const auto& column : build_show(subject, empty).columns) out.push_back(column.name);
  return out;
}

}  // namespace pgw::admin
