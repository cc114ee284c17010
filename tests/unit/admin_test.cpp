// Admin console: command parsing (src/admin/command.cpp) and the shape of the SHOW result
// sets (src/admin/tables.cpp), which must match PgBouncer 1.25 column for column.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "admin/command.hpp"
#include "admin/tables.hpp"

namespace pgw::admin {
namespace {

Command ok(std::string_view sql) {
  auto parsed = parse_command(sql);
  auto* command = std::get_if<Command>(&parsed);
  EXPECT_NE(command, nullptr) << sql;
  return command ? *command : Command{};
}

ParseError bad(std::string_view sql) {
  auto parsed = parse_command(sql);
  auto* error = std::get_if<ParseError>(&parsed);
  EXPECT_NE(error, nullptr) << sql;
  return error ? *error : ParseError{Err::internal, {}};
}

TEST(AdminCommand, ShowIsCaseInsensitiveWithOptionalSemicolon) {
  for (auto sql :
       {"SHOW POOLS", "show pools", "  Show   Pools ;", "SHOW pools;;", "show\tpools\n"}) {
    auto c = ok(sql);
    EXPECT_EQ(c.verb, Verb::show) << sql;
    EXPECT_EQ(c.arg, "pools") << sql;
  }
  for (auto subject :
       {"help", "version", "config", "databases", "pools", "clients", "servers", "users", "stats",
        "stats_totals", "stats_averages", "totals", "lists", "state"}) {
    EXPECT_EQ(ok(std::string("SHOW ") + subject).arg, subject);
  }
}

TEST(AdminCommand, UnknownShowAndUnknownCommandsAreErrors) {
  EXPECT_EQ(bad("SHOW NOTHING").code, Err::admin_unknown_command);
  EXPECT_EQ(bad("FROBNICATE").code, Err::admin_unknown_command);
  EXPECT_EQ(bad("SELECT 1").code, Err::admin_unknown_command);
  EXPECT_EQ(bad("SHOW").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SHOW POOLS EXTRA").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SHOW 'pools'").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("= 1").code, Err::admin_unknown_command);
}

TEST(AdminCommand, EmptyQuery) {
  EXPECT_EQ(ok("").verb, Verb::empty);
  EXPECT_EQ(ok("  ; ").verb, Verb::empty);
}

TEST(AdminCommand, OptionalDatabaseArgument) {
  const std::pair<const char*, Verb> cases[] = {{"PAUSE", Verb::pause},
                                                {"RESUME", Verb::resume},
                                                {"RECONNECT", Verb::reconnect},
                                                {"KILL", Verb::kill},
                                                {"WAIT_CLOSE", Verb::wait_close}};
  for (const auto& [word, verb] : cases) {
    auto all = ok(word);
    EXPECT_EQ(all.verb, verb) << word;
    EXPECT_EQ(all.arg, "") << word;
    auto one = ok(std::string(word) + " Sales_DB;");
    EXPECT_EQ(one.verb, verb) << word;
    EXPECT_EQ(one.arg, "Sales_DB") << word;  // database names keep their case
    EXPECT_EQ(ok(std::string(word) + " \"odd name\"").arg, "odd name") << word;
    EXPECT_EQ(bad(std::string(word) + " a b").code, Err::admin_syntax_error) << word;
    EXPECT_EQ(bad(std::string(word) + " = a").code, Err::admin_syntax_error) << word;
  }
}

TEST(AdminCommand, Set) {
  auto c = ok("SET default_pool_size = 5");
  EXPECT_EQ(c.verb, Verb::set);
  EXPECT_EQ(c.arg, "default_pool_size");
  EXPECT_EQ(c.value, "5");
  c = ok("set Query_Timeout to '2.5';");
  EXPECT_EQ(c.arg, "query_timeout");
  EXPECT_EQ(c.value, "2.5");
  c = ok("SET server_reset_query = 'DISCARD ALL; SELECT ''x'''");
  EXPECT_EQ(c.value, "DISCARD ALL; SELECT 'x'");
  c = ok("SET admin_users = ''");
  EXPECT_EQ(c.value, "");
  EXPECT_EQ(bad("SET default_pool_size").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SET default_pool_size 5").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SET = 5").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SET a = 'unterminated").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("SET a = 1 2").code, Err::admin_syntax_error);
}

TEST(AdminCommand, KillClientTakesAnId) {
  auto c = ok("KILL_CLIENT 42");
  EXPECT_EQ(c.verb, Verb::kill_client);
  EXPECT_EQ(c.arg, "42");
  EXPECT_EQ(bad("KILL_CLIENT").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("KILL_CLIENT x1").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("KILL_CLIENT 1 2").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("KILL_CLIENT 99999999999999999999").code, Err::admin_syntax_error);
}

TEST(AdminCommand, DisableAndEnableTakeOneDatabase) {
  auto c = ok("DISABLE authdb;");
  EXPECT_EQ(c.verb, Verb::disable);
  EXPECT_EQ(c.arg, "authdb");
  EXPECT_EQ(ok("enable \"My Db\"").arg, "My Db");
  EXPECT_EQ(ok("enable x").verb, Verb::enable);
  EXPECT_EQ(verb_name(Verb::disable), "DISABLE");
  EXPECT_EQ(bad("DISABLE").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("ENABLE a b").code, Err::admin_syntax_error);
  EXPECT_EQ(bad("DISABLE 'a'").code, Err::admin_syntax_error);
  EXPECT_TRUE(needs_admin(c));
}

TEST(AdminCommand, ReloadAndShutdown) {
  EXPECT_EQ(ok("reload").verb, Verb::reload);
  EXPECT_EQ(bad("RELOAD now").code, Err::admin_syntax_error);
  EXPECT_EQ(ok("SHUTDOWN;").verb, Verb::shutdown);
  EXPECT_EQ(ok("shutdown wait_for_clients").arg, "wait_for_clients");
  EXPECT_EQ(ok("SHUTDOWN WAIT_FOR_SERVERS").arg, "wait_for_servers");
  EXPECT_EQ(bad("SHUTDOWN NOW").code, Err::admin_syntax_error);
}

TEST(AdminCommand, StatsUsersMayOnlyShow) {
  EXPECT_FALSE(needs_admin(ok("SHOW POOLS")));
  EXPECT_FALSE(needs_admin(ok("")));
  for (auto sql : {"PAUSE", "RESUME", "RECONNECT", "KILL", "KILL_CLIENT 1", "WAIT_CLOSE", "RELOAD",
                   "SHUTDOWN", "SET a = 1"}) {
    EXPECT_TRUE(needs_admin(ok(sql))) << sql;
  }
}

TEST(AdminCommand, WeirdInputDoesNotThrow) {
  for (auto sql : {"\"", "'", "SHOW \"", "PAUSE \"\"", "SET \"\" = \"\"", "\x01", "ÄÖÜ", ";;;",
                   "SHOW POOLS; SHOW STATS"}) {
    EXPECT_NO_THROW(parse_command(sql)) << sql;
  }
  EXPECT_EQ(bad("SHOW POOLS; SHOW STATS").code, Err::admin_syntax_error);  // one per query
}

// The column lists are PgBouncer 1.25's (its admin.c / stats.c RowDescriptions).
TEST(AdminTables, ColumnsFollowPgBouncer) {
  const std::vector<std::string> socket{"type",
                                        "user",
                                        "database",
                                        "replication",
                                        "state",
                                        "addr",
                                        "port",
                                        "local_addr",
                                        "local_port",
                                        "connect_time",
                                        "request_time",
                                        "wait",
                                        "wait_us",
                                        "close_needed",
                                        "ptr",
                                        "link",
                                        "remote_pid",
                                        "tls",
                                        "application_name",
                                        "prepared_statements",
                                        "id"};
  EXPECT_EQ(column_names("servers"), socket);
  // SHOW CLIENTS: PgBouncer's, then pgwarden's session state (docs/admin.md).
  auto clients = socket;
  for (const char* extra :
       {"session_state", "session_state_since", "session_state_query", "pinned"}) {
    clients.push_back(extra);
  }
  EXPECT_EQ(column_names("clients"), clients);
  EXPECT_EQ(column_names("pools"),
            (std::vector<std::string>{"database", "user", "cl_active", "cl_waiting",
                                      "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                                      "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used",
                                      "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
                                      "load_balance_hosts"}));
  EXPECT_EQ(column_names("databases"),
            (std::vector<std::string>{
                "name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts",
                "max_connections", "current_connections", "max_client_connections",
                "current_client_connections", "paused", "disabled",
                // pgwarden's, after PgBouncer's: the circuit breaker
                "breaker_state", "breaker_last_error", "breaker_next_probe"}));
  EXPECT_EQ(
      column_names("users"),
      (std::vector<std::string>{"name", "pool_size", "reserve_pool_size", "pool_mode",
                                "max_user_connections", "current_connections",
                                "max_user_client_connections", "current_client_connections"}));
  EXPECT_EQ(column_names("config"),
            (std::vector<std::string>{"key", "value", "default", "changeable"}));
  EXPECT_EQ(column_names("lists"), (std::vector<std::string>{"list", "items"}));
  EXPECT_EQ(column_names("state"), (std::vector<std::string>{"key", "value"}));
  EXPECT_EQ(column_names("totals"), (std::vector<std::string>{"name", "value"}));
  EXPECT_EQ(column_names("version"), (std::vector<std::string>{"version"}));
  const auto stats = column_names("stats");
  ASSERT_EQ(stats.size(), 25u);
  EXPECT_EQ(stats[1], "total_server_assignment_count");
  EXPECT_EQ(stats[4], "total_received");
  EXPECT_EQ(stats[12], "total_client_login_count");
  EXPECT_EQ(stats[13], "avg_server_assignment_count");
  EXPECT_EQ(stats[16], "avg_recv");
  EXPECT_EQ(stats[17], "avg_sent");
  EXPECT_EQ(column_names("stats_totals")[4], "bytes_received");
  EXPECT_EQ(column_names("stats_averages"), column_names("stats_totals"));
  EXPECT_TRUE(column_names("help").empty());  // a NOTICE, no rows
}

TEST(AdminTables, StatsAveragesUseTheLastPeriod) {
  Snapshot s;
  s.config = std::make_shared<const config::Config>();
  PoolSnapshot p;
  p.database = "db";
  p.user = "u";
  auto set = [](pool::StatValues& v, pool::Stat st, std::uint64_t n) {
    v.v[static_cast<std::size_t>(st)] = n;
  };
  set(p.totals, pool::Stat::xact, 1000);
  set(p.period_delta, pool::Stat::xact, 120);
  set(p.period_delta, pool::Stat::xact_time_us, 120 * 500);
  set(p.period_delta, pool::Stat::query, 240);
  set(p.period_delta, pool::Stat::query_time_us, 240 * 100);
  set(p.period_delta, pool::Stat::received, 6000);
  p.period = std::chrono::seconds(60);
  s.pools.push_back(p);
  p.user = "v";  // a second pool of the same database adds up
  s.pools.push_back(p);
  const auto rs = build_show("stats", s);
  ASSERT_EQ(rs.rows.size(), 1u);
  std::map<std::string, std::string> row;
  for (std::size_t i = 0; i < rs.columns.size(); ++i) row[rs.columns[i].name] = *rs.rows[0][i];
  EXPECT_EQ(row["database"], "db");
  EXPECT_EQ(row["total_xact_count"], "2000");
  EXPECT_EQ(row["avg_xact_count"], "4");    // 240 per 60 s
  EXPECT_EQ(row["avg_xact_time"], "500");   // µs per transaction
  EXPECT_EQ(row["avg_query_time"], "100");  // µs per query
  EXPECT_EQ(row["avg_recv"], "200");        // bytes per second
  EXPECT_EQ(row["avg_wait_time"], "0");     // no assignments: no division by zero
}

}  // namespace
}  // namespace pgw::admin
