// Unit tests for src/config: pgbouncer.ini parsing ([pgbouncer], [databases], [users],
// %include), PgBouncer's defaults, error and warning messages, userlist.txt and SHOW CONFIG.
#include "config/config.hpp"
#include "config/hba.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
using pgw::config::AuthType;
using pgw::config::Config;
using pgw::config::ConfigError;
using pgw::config::Millis;
using pgw::config::PoolMode;
using pgw::config::Warning;
using namespace std::chrono_literals;

constexpr const char* kName = "pgbouncer.ini";

Config load(const std::string& text, std::vector<Warning>* warnings_out = nullptr) {
  std::vector<Warning> warnings;
  Config config = pgw::config::load_string(text, kName, warnings);
  if (warnings_out != nullptr) {
    *warnings_out = warnings;
  } else {
    EXPECT_TRUE(warnings.empty()) << "unexpected warning: " << warnings.front().text;
  }
  return config;
}

Config load_pgbouncer(const std::string& body) {
  return load("[pgbouncer]\n" + body + "\n");
}

// The ConfigError message for `text`, or "" (and a test failure) if it loads.
std::string error_of(const std::string& text) {
  std::vector<Warning> warnings;
  try {
    pgw::config::load_string(text, kName, warnings);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for:\n" << text;
  return {};
}

void expect_error(const std::string& text, std::initializer_list<std::string_view> fragments) {
  const std::string message = error_of(text);
  for (const auto fragment : fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "error message lacks '" << fragment << "': " << message;
  }
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("pgwarden-config-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& text) const {
    const fs::path file = path_ / name;
    fs::create_directories(file.parent_path());
    std::ofstream out(file, std::ios::binary);
    out << text;
    return file.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::map<std::string, std::string> rows_map(const Config& config) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : pgw::config::show_config_rows(config)) out[key] = value;
  return out;
}

// --- defaults -----------------------------------------------------------------------------

TEST(ConfigDefaultsTest, EmptyFileGivesPgBouncerDefaults) {
  const Config c = load("");
  // Values documented in PgBouncer's doc/config.md.
  EXPECT_EQ(c.listen_addr, "");
  EXPECT_EQ(c.listen_port, 6432);
  EXPECT_EQ(c.unix_socket_dir, "/tmp");
  EXPECT_EQ(c.listen_backlog, 128);
  EXPECT_FALSE(c.so_reuseport);
  EXPECT_EQ(c.tcp_defer_accept, 45);  // Linux
  EXPECT_EQ(c.pkt_buf, 4096);
  EXPECT_EQ(c.auth_type, AuthType::md5);
  EXPECT_EQ(c.auth_file, "");
  EXPECT_TRUE(c.admin_users.empty());
  EXPECT_TRUE(c.stats_users.empty());
  EXPECT_EQ(c.pool_mode, PoolMode::session);
  EXPECT_EQ(c.default_pool_size, 20);
  EXPECT_EQ(c.min_pool_size, 0);
  EXPECT_EQ(c.reserve_pool_size, 0);
  EXPECT_EQ(c.reserve_pool_timeout, 5s);
  EXPECT_EQ(c.max_client_conn, 100);
  EXPECT_EQ(c.max_db_connections, 0);
  EXPECT_EQ(c.max_user_connections, 0);
  EXPECT_EQ(c.server_reset_query, "DISCARD ALL");
  EXPECT_FALSE(c.server_reset_query_always);
  EXPECT_EQ(c.server_check_query, "");  // PgBouncer's "<empty>": an empty query
  EXPECT_EQ(c.server_check_delay, 30s);
  EXPECT_EQ(c.server_lifetime, 3600s);
  EXPECT_EQ(c.server_idle_timeout, 600s);
  EXPECT_EQ(c.server_connect_timeout, 15s);
  EXPECT_EQ(c.server_login_retry, 15s);
  EXPECT_EQ(c.query_timeout, 0s);
  EXPECT_EQ(c.query_wait_timeout, 120s);
  EXPECT_EQ(c.client_idle_timeout, 0s);
  EXPECT_EQ(c.client_login_timeout, 60s);
  EXPECT_EQ(c.idle_transaction_timeout, 0s);
  EXPECT_EQ(c.stats_period, 60s);
  EXPECT_TRUE(c.ignore_startup_parameters.empty());
  EXPECT_EQ(c.logfile, "");
  EXPECT_EQ(c.pidfile, "");
  EXPECT_TRUE(c.log_connections);
  EXPECT_TRUE(c.log_disconnections);
  EXPECT_TRUE(c.log_pooler_errors);
  EXPECT_FALSE(c.verbose);
  EXPECT_TRUE(c.tcp_keepalive);
  EXPECT_EQ(c.tcp_keepcnt, 0);
  EXPECT_EQ(c.tcp_keepidle, 0);
  EXPECT_EQ(c.tcp_keepintvl, 0);
  EXPECT_EQ(c.tcp_user_timeout, 0);
  EXPECT_EQ(c.workers, 0);
  EXPECT_TRUE(c.io_uring);
  EXPECT_TRUE(c.databases.empty());
  EXPECT_TRUE(c.users.empty());
  EXPECT_TRUE(c.apps.empty());
  EXPECT_TRUE(c.other.empty());
  EXPECT_EQ(c.path, kName);
}

TEST(ConfigDefaultsTest, CommentsBlankLinesAndCrlfAreIgnored) {
  const Config c = load(
      "; a comment\r\n"
      "# another comment\r\n"
      "\r\n"
      "[pgbouncer]\r\n"
      "   ; indented comment\r\n"
      "listen_port = 7000\r\n"
      "  pool_mode   =   transaction  \r\n");
  EXPECT_EQ(c.listen_port, 7000);
  EXPECT_EQ(c.pool_mode, PoolMode::transaction);
}

TEST(ConfigDefaultsTest, ToStringNames) {
  EXPECT_EQ(pgw::config::to_string(PoolMode::session), "session");
  EXPECT_EQ(pgw::config::to_string(PoolMode::transaction), "transaction");
  EXPECT_EQ(pgw::config::to_string(PoolMode::statement), "statement");
  EXPECT_EQ(pgw::config::to_string(AuthType::trust), "trust");
  EXPECT_EQ(pgw::config::to_string(AuthType::plain), "plain");
  EXPECT_EQ(pgw::config::to_string(AuthType::md5), "md5");
  EXPECT_EQ(pgw::config::to_string(AuthType::scram_sha_256), "scram-sha-256");
  EXPECT_EQ(pgw::config::to_string(AuthType::any), "any");
}

// --- [pgbouncer] --------------------------------------------------------------------------

constexpr const char* kRealisticIni = R"ini(
;; A typical production pgbouncer.ini
[databases]
appdb = host=10.0.0.5 port=5433 dbname=app_production user=app password='s3cret pass' pool_size=40 min_pool_size=5 reserve_pool=10 pool_mode=transaction max_db_connections=80 client_encoding=UTF8 datestyle='ISO, MDY' timezone=UTC application_name=pgwarden
reporting = host=replica.internal dbname=app_production pool_mode=statement
* = host=localhost port=5432

[users]
batch = pool_mode=session max_user_connections=5
"quoted ""user""" = pool_size=3

[pgbouncer]
listen_addr = *
listen_port = 6543
unix_socket_dir = /var/run/postgresql
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
admin_users = postgres, admin
stats_users = stats
pool_mode = transaction
default_pool_size = 25
min_pool_size = 2
reserve_pool_size = 5
reserve_pool_timeout = 3
max_client_conn = 1000
max_db_connections = 50
max_user_connections = 60
server_reset_query = DISCARD ALL; RESET ROLE
server_reset_query_always = 1
server_check_query = select 1
server_check_delay = 10
server_lifetime = 1800
server_idle_timeout = 300
server_connect_timeout = 5
server_login_retry = 2
query_timeout = 0
query_wait_timeout = 60
client_idle_timeout = 0
client_login_timeout = 30
idle_transaction_timeout = 120
stats_period = 30
ignore_startup_parameters = extra_float_digits, options
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
log_connections = 0
log_disconnections = no
log_pooler_errors = off
verbose = 2
tcp_keepalive = 1
tcp_keepcnt = 5
tcp_keepidle = 30
tcp_keepintvl = 10
tcp_user_timeout = 20000
so_reuseport = yes
listen_backlog = 4096
tcp_defer_accept = 0
pkt_buf = 8192
workers = 4
max_prepared_statements = 100
)ini";

TEST(ConfigPgbouncerTest, RealisticFileSetsEveryKey) {
  const Config c = load(kRealisticIni);
  EXPECT_EQ(c.listen_addr, "*");
  EXPECT_EQ(c.listen_port, 6543);
  EXPECT_EQ(c.unix_socket_dir, "/var/run/postgresql");
  EXPECT_EQ(c.auth_type, AuthType::scram_sha_256);
  EXPECT_EQ(c.auth_file, "/etc/pgbouncer/userlist.txt");
  EXPECT_EQ(c.admin_users, (std::vector<std::string>{"postgres", "admin"}));
  EXPECT_EQ(c.stats_users, (std::vector<std::string>{"stats"}));
  EXPECT_EQ(c.pool_mode, PoolMode::transaction);
  EXPECT_EQ(c.default_pool_size, 25);
  EXPECT_EQ(c.min_pool_size, 2);
  EXPECT_EQ(c.reserve_pool_size, 5);
  EXPECT_EQ(c.reserve_pool_timeout, 3s);
  EXPECT_EQ(c.max_client_conn, 1000);
  EXPECT_EQ(c.max_db_connections, 50);
  EXPECT_EQ(c.max_user_connections, 60);
  EXPECT_EQ(c.server_reset_query, "DISCARD ALL; RESET ROLE");
  EXPECT_TRUE(c.server_reset_query_always);
  EXPECT_EQ(c.server_check_query, "select 1");
  EXPECT_EQ(c.server_check_delay, 10s);
  EXPECT_EQ(c.server_lifetime, 1800s);
  EXPECT_EQ(c.server_idle_timeout, 300s);
  EXPECT_EQ(c.server_connect_timeout, 5s);
  EXPECT_EQ(c.server_login_retry, 2s);
  EXPECT_EQ(c.query_timeout, 0s);
  EXPECT_EQ(c.query_wait_timeout, 60s);
  EXPECT_EQ(c.client_idle_timeout, 0s);
  EXPECT_EQ(c.client_login_timeout, 30s);
  EXPECT_EQ(c.idle_transaction_timeout, 120s);
  EXPECT_EQ(c.stats_period, 30s);
  EXPECT_EQ(c.ignore_startup_parameters,
            (std::vector<std::string>{"extra_float_digits", "options"}));
  EXPECT_EQ(c.logfile, "/var/log/pgbouncer/pgbouncer.log");
  EXPECT_EQ(c.pidfile, "/var/run/pgbouncer/pgbouncer.pid");
  EXPECT_FALSE(c.log_connections);
  EXPECT_FALSE(c.log_disconnections);
  EXPECT_FALSE(c.log_pooler_errors);
  EXPECT_TRUE(c.verbose);
  EXPECT_TRUE(c.tcp_keepalive);
  EXPECT_EQ(c.tcp_keepcnt, 5);
  EXPECT_EQ(c.tcp_keepidle, 30);
  EXPECT_EQ(c.tcp_keepintvl, 10);
  EXPECT_EQ(c.tcp_user_timeout, 20000);
  EXPECT_TRUE(c.so_reuseport);
  EXPECT_EQ(c.listen_backlog, 4096);
  EXPECT_EQ(c.tcp_defer_accept, 0);
  EXPECT_EQ(c.pkt_buf, 8192);
  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.effective_workers(), 4);
  EXPECT_EQ(c.max_prepared_statements, 100);
  EXPECT_TRUE(c.other.empty());
}

TEST(ConfigPgbouncerTest, KeysSectionsAndEnumValuesAreCaseInsensitive) {
  const Config c = load(
      "[PgBouncer]\n"
      "Pool_Mode = Transaction\n"
      "AUTH_TYPE = SCRAM-SHA-256\n"
      "Log_Connections = FALSE\n");
  EXPECT_EQ(c.pool_mode, PoolMode::transaction);
  EXPECT_EQ(c.auth_type, AuthType::scram_sha_256);
  EXPECT_FALSE(c.log_connections);
}

TEST(ConfigPgbouncerTest, EveryAuthTypeIsAccepted) {
  const std::pair<const char*, AuthType> cases[] = {{"trust", AuthType::trust},
                                                    {"plain", AuthType::plain},
                                                    {"md5", AuthType::md5},
                                                    {"scram-sha-256", AuthType::scram_sha_256},
                                                    {"any", AuthType::any}};
  for (const auto& [text, type] : cases) {
    EXPECT_EQ(load_pgbouncer(std::string("auth_type = ") + text).auth_type, type) << text;
  }
}

TEST(ConfigPgbouncerTest, ListsAreTrimmedAndEmptyItemsDropped) {
  const Config c = load_pgbouncer("admin_users = ,alice ,  bob,,carol  ,\nstats_users =");
  EXPECT_EQ(c.admin_users, (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_TRUE(c.stats_users.empty());
}

TEST(ConfigPgbouncerTest, ValuesKeepEqualsSignsAndInnerSpaces) {
  const Config c = load_pgbouncer("server_reset_query = SET search_path = public; DISCARD ALL");
  EXPECT_EQ(c.server_reset_query, "SET search_path = public; DISCARD ALL");
}

TEST(ConfigPgbouncerTest, LaterValueWins) {
  EXPECT_EQ(load_pgbouncer("listen_port = 7000\nlisten_port = 7001").listen_port, 7001);
}

TEST(ConfigPgbouncerTest, Durations) {
  const std::pair<const char*, Millis> cases[] = {
      {"30", 30s},     {"0", 0ms},     {"0.5", 500ms}, {"1.25", 1250ms}, {"250ms", 250ms},
      {"5min", 5min},  {"2h", 2h},     {"1d", 24h},    {"10s", 10s},     {"10 s", 10s},
      {"1500us", 2ms}, {"0.001", 1ms}, {"1e3", 1000s},
  };
  for (const auto& [text, expected] : cases) {
    EXPECT_EQ(load_pgbouncer(std::string("server_lifetime = ") + text).server_lifetime, expected)
        << "server_lifetime = " << text;
  }
}

TEST(ConfigPgbouncerTest, InvalidDurationsAreRejectedWithAllowedForm) {
  for (const char* text : {"abc", "-1", "-0.5", "5 weeks", "5m", "", "s", "inf", "nan", "1,5"}) {
    expect_error(std::string("[pgbouncer]\nquery_wait_timeout = ") + text,
                 {"pgbouncer.ini:2", "query_wait_timeout", "a duration in seconds"});
  }
}

TEST(ConfigPgbouncerTest, HugeDurationIsRejectedNotWrappedNegative) {
  // 1e300 seconds does not fit in milliseconds: it must be refused, not turned into a
  // negative (or otherwise wrong) duration.
  expect_error("[pgbouncer]\nserver_lifetime = 1e300", {"pgbouncer.ini:2", "server_lifetime"});
  expect_error("[pgbouncer]\nserver_lifetime = 1e16", {"server_lifetime", "a duration"});
  expect_error("[pgbouncer]\nserver_lifetime = 1e30d", {"server_lifetime"});
  // Long but representable durations still load (about 31 years).
  EXPECT_EQ(load_pgbouncer("server_lifetime = 1e9").server_lifetime, Millis(1'000'000'000'000));
  EXPECT_EQ(load_pgbouncer("server_lifetime = 36500d").server_lifetime, 36500 * 24h);
}

TEST(ConfigPgbouncerTest, Booleans) {
  for (const char* yes : {"1", "yes", "on", "true", "YES", "True"}) {
    EXPECT_TRUE(load_pgbouncer(std::string("so_reuseport = ") + yes).so_reuseport) << yes;
  }
  for (const char* no : {"0", "no", "off", "false", "OFF"}) {
    EXPECT_FALSE(load_pgbouncer(std::string("tcp_keepalive = ") + no).tcp_keepalive) << no;
  }
}

TEST(ConfigPgbouncerTest, InvalidBooleanNamesAllowedValues) {
  for (const char* text : {"maybe", "2", "", "y"}) {
    expect_error(std::string("[pgbouncer]\n\nlog_connections = ") + text,
                 {"pgbouncer.ini:3", "log_connections", "a boolean", "yes/no"});
  }
}

TEST(ConfigPgbouncerTest, VerboseIsALevel) {
  EXPECT_FALSE(load_pgbouncer("verbose = 0").verbose);
  EXPECT_TRUE(load_pgbouncer("verbose = 1").verbose);
  expect_error("[pgbouncer]\nverbose = yes", {"verbose", "an integer from 0 to 10"});
}

TEST(ConfigPgbouncerTest, Workers) {
  EXPECT_EQ(load_pgbouncer("workers = 8").workers, 8);
  EXPECT_EQ(load_pgbouncer("workers = 8").effective_workers(), 8);
  const Config automatic = load_pgbouncer("workers = 0");
  EXPECT_EQ(automatic.workers, 0);
  EXPECT_EQ(automatic.effective_workers(),
            Config::auto_workers(std::thread::hardware_concurrency()));
  // One per two cores, at least one (0: the count is unknown).
  EXPECT_EQ(Config::auto_workers(0), 1);
  EXPECT_EQ(Config::auto_workers(1), 1);
  EXPECT_EQ(Config::auto_workers(2), 1);
  EXPECT_EQ(Config::auto_workers(3), 1);
  EXPECT_EQ(Config::auto_workers(4), 2);
  EXPECT_EQ(Config::auto_workers(64), 32);
  expect_error("[pgbouncer]\nworkers = 1025", {"workers", "an integer from 0 to 1024"});
  expect_error("[pgbouncer]\nworkers = -1", {"workers", "an integer from 0 to 1024"});
  expect_error("[pgbouncer]\nworkers = auto", {"workers", "'auto'"});
}

TEST(ConfigPgbouncerTest, IoUring) {
  EXPECT_TRUE(load_pgbouncer("io_uring = 1").io_uring);
  EXPECT_FALSE(load_pgbouncer("io_uring = 0").io_uring);
  EXPECT_FALSE(load_pgbouncer("io_uring = off").io_uring);
  expect_error("[pgbouncer]\nio_uring = sometimes", {"io_uring", "a boolean"});
  // The workers' loops are set up once.
  EXPECT_FALSE(pgw::config::is_runtime_changeable("io_uring"));
  bool shown = false;
  for (const auto& [key, value] : pgw::config::show_config_rows(load_pgbouncer("io_uring = 0")))
    if (key == "io_uring") shown = value == "0";
  EXPECT_TRUE(shown);
}

TEST(ConfigPgbouncerTest, AcceptedPgBouncerKeysAreKeptForShowConfig) {
  std::vector<Warning> warnings;
  const Config c = load(
      "[pgbouncer]\nsyslog = 1\nauth_query = SELECT usename, passwd FROM "
      "pg_shadow "
      "WHERE usename=$1\nserver_round_robin = 1\n",
      &warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(c.other.at("syslog"), "1");
  EXPECT_EQ(c.auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
  EXPECT_EQ(c.other.at("server_round_robin"), "1");
}

TEST(ConfigPgbouncerTest, TlsKeysAreTyped) {
  std::vector<Warning> warnings;
  const Config c = load(
      "[pgbouncer]\nclient_tls_sslmode = Verify-Full\nclient_tls_key_file = /k.pem\n"
      "server_tls_sslmode = disable\nserver_tls13_ciphers = TLS_AES_128_GCM_SHA256\n",
      &warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(c.client_tls().sslmode, pgw::config::SslMode::verify_full);
  EXPECT_EQ(c.client_tls().key_file, "/k.pem");
  EXPECT_EQ(c.server_tls().sslmode, pgw::config::SslMode::disable);
  EXPECT_EQ(c.server_tls().tls13_ciphers, "TLS_AES_128_GCM_SHA256");
  // PgBouncer's defaults: no TLS toward clients, TLS when the server offers it.
  const Config defaults;
  EXPECT_EQ(defaults.client_tls().sslmode, pgw::config::SslMode::disable);
  EXPECT_EQ(defaults.server_tls().sslmode, pgw::config::SslMode::prefer);
  EXPECT_THROW(load("[pgbouncer]\nclient_tls_sslmode = sometimes\n", &warnings),
               pgw::config::ConfigError);
}

TEST(ConfigPgbouncerTest, UnknownKeyWarnsWithFileAndLine) {
  std::vector<Warning> warnings;
  const Config c =
      load("[pgbouncer]\nlisten_port = 7000\nno_such_key = 1\npool_mode = statement\n", &warnings);
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_TRUE(contains(warnings[0].text, "pgbouncer.ini:3")) << warnings[0].text;
  EXPECT_TRUE(contains(warnings[0].text, "no_such_key")) << warnings[0].text;
  EXPECT_TRUE(contains(warnings[0].text, "[pgbouncer]")) << warnings[0].text;
  // Loading carries on around it.
  EXPECT_EQ(c.listen_port, 7000);
  EXPECT_EQ(c.pool_mode, PoolMode::statement);
  EXPECT_EQ(c.other.count("no_such_key"), 0U);
}

TEST(ConfigPgbouncerTest, UnsupportedSectionWarnsAndIsSkipped) {
  std::vector<Warning> warnings;
  const Config c = load("[peers]\n1 = host=/tmp/a\n[pgbouncer]\nlisten_port = 7000\n", &warnings);
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_TRUE(contains(warnings[0].text, "pgbouncer.ini:1")) << warnings[0].text;
  EXPECT_TRUE(contains(warnings[0].text, "[peers]")) << warnings[0].text;
  EXPECT_EQ(c.listen_port, 7000);
}

TEST(ConfigPgbouncerTest, AppsSectionKeepsLinesInOrder) {
  const Config c = load("[apps]\nreport* = max_client_conn=5\nweb = leak_warn_after=3\n");
  ASSERT_EQ(c.apps.size(), 2U);
  EXPECT_EQ(c.apps[0].pattern, "report*");
  EXPECT_EQ(c.apps[0].settings, "max_client_conn=5");
  EXPECT_EQ(c.apps[0].source, "pgbouncer.ini:2");
  EXPECT_EQ(c.apps[1].pattern, "web");
  EXPECT_EQ(c.apps[1].source, "pgbouncer.ini:3");
}

TEST(ConfigPgbouncerTest, AppsLineTakesEveryLadderKeyAndBothCaps) {
  const Config c = load(
      "[apps]\nbilling = max_client_conn=200 max_server_conn=8 leak_warn_after=30 "
      "idle_transaction_timeout=300 idle_pinned_timeout=5min query_timeout=2.5\n"
      "web = max_server_conn=0\n");
  ASSERT_EQ(c.apps.size(), 2U);
  const auto& billing = c.apps[0];
  EXPECT_EQ(billing.max_client_conn, std::optional<int>(200));
  EXPECT_EQ(billing.max_server_conn, std::optional<int>(8));
  EXPECT_EQ(billing.leak_warn_after, std::optional<Millis>(30s));
  EXPECT_EQ(billing.idle_transaction_timeout, std::optional<Millis>(300s));
  EXPECT_EQ(billing.idle_pinned_timeout, std::optional<Millis>(300s));
  EXPECT_EQ(billing.query_timeout, std::optional<Millis>(2500ms));
  EXPECT_EQ(c.apps[1].max_server_conn, std::optional<int>(0));
  EXPECT_FALSE(c.apps[1].max_client_conn.has_value());
  EXPECT_FALSE(c.apps[1].idle_pinned_timeout.has_value());
}

TEST(ConfigPgbouncerTest, AppsLineRejectsUnknownKeysAndBadValues) {
  // A misspelt key would leave the application without the protection it was meant to get.
  expect_error("[apps]\nweb = idle_transaction_timout=30\n",
               {"pgbouncer.ini:2", "idle_transaction_timout", "[apps] line web",
                "idle_pinned_timeout", "max_server_conn"});
  expect_error("[apps]\nweb = max_server_conn=-1\n",
               {"pgbouncer.ini:2", "max_server_conn", "'-1'"});
  expect_error("[apps]\nweb = idle_pinned_timeout=soon\n",
               {"pgbouncer.ini:2", "idle_pinned_timeout", "'soon'"});
}

TEST(ConfigPgbouncerTest, GrowthAlarmAndIdlePinnedKeys) {
  const Config defaults = load("");
  EXPECT_EQ(defaults.idle_pinned_timeout, 0s);
  EXPECT_EQ(defaults.leak_growth_window, 300s);
  EXPECT_EQ(defaults.leak_growth_interval, 5s);
  const Config c = load_pgbouncer(
      "idle_pinned_timeout = 90\nleak_growth_window = 2min\nleak_growth_interval = 250ms");
  EXPECT_EQ(c.idle_pinned_timeout, 90s);
  EXPECT_EQ(c.leak_growth_window, 120s);
  EXPECT_EQ(c.leak_growth_interval, 250ms);
  Config set = c;
  pgw::config::set_key(set, "leak_growth_window", "0");
  EXPECT_EQ(set.leak_growth_window, 0s);
  for (const char* key : {"idle_pinned_timeout", "leak_growth_window", "leak_growth_interval"}) {
    EXPECT_TRUE(pgw::config::is_runtime_changeable(key)) << key;
  }
}

TEST(ConfigPgbouncerTest, InvalidIntegerErrorNamesFileLineKeyValueAndRange) {
  expect_error(
      "[pgbouncer]\nlisten_port = 6432\n\ndefault_pool_size = abc\n",
      {"pgbouncer.ini:4", "default_pool_size", "'abc'", "an integer from 1 to 2147483647"});
}

TEST(ConfigPgbouncerTest, InvalidPoolModeNamesAllowedModes) {
  expect_error(
      "[pgbouncer]\npool_mode = transactions\n",
      {"pgbouncer.ini:2", "pool_mode", "'transactions'", "session, transaction or statement"});
}

TEST(ConfigPgbouncerTest, InvalidAuthTypeNamesAllowedTypes) {
  for (const char* type : {"ldap", "scram", "password", ""}) {
    expect_error(std::string("[pgbouncer]\nauth_type = ") + type,
                 {"pgbouncer.ini:2", "auth_type", "trust, plain, md5, scram-sha-256, cert, peer"});
  }
  // hba needs its file.
  expect_error("[pgbouncer]\nauth_type = hba", {"auth_type = hba needs auth_hba_file"});
}

TEST(ConfigPgbouncerTest, HbaRulesAreReadWithTheConfiguration) {
  const auto dir = std::filesystem::temp_directory_path() / "pgw-hba-config-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "hba.conf") << "host all @people.txt 10.0.0.0/8 md5\n";
  std::ofstream(dir / "people.txt") << "alice bob\n";
  std::vector<pgw::config::Warning> warnings;
  auto c = pgw::config::load_string("[pgbouncer]\nauth_type = hba\nauth_hba_file = hba.conf\n",
                                    "t.ini", warnings, dir.string());
  ASSERT_TRUE(c.hba);
  ASSERT_EQ(c.hba->rules().size(), 1u);
  EXPECT_EQ(c.hba->rules()[0].users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(c.auth_hba_file, (dir / "hba.conf").string());
  // SET auth_type back: the rules go; SET it again: they are read again.
  pgw::config::set_key(c, "auth_type", "md5");
  EXPECT_FALSE(c.hba);
  pgw::config::set_key(c, "auth_type", "hba");
  EXPECT_TRUE(c.hba);
  // An ldap line is read with its options; a wrong combination fails the load, naming the line.
  std::ofstream(dir / "hba.conf") << "host all all 10.0.0.0/8 md5\n"
                                  << "host all all 0.0.0.0/0 ldap ldapserver=x ldapprefix=a\n";
  pgw::config::set_key(c, "auth_hba_file", (dir / "hba.conf").string());
  ASSERT_EQ(c.hba->rules().size(), 2u);
  EXPECT_EQ(c.hba->rules()[1].ldap.prefix, "a");
  std::ofstream(dir / "hba.conf") << "host all all 10.0.0.0/8 md5\n"
                                  << "host all all 0.0.0.0/0 ldap ldapserver=x ldapprefix=a "
                                     "ldapbasedn=dc=x\n";
  try {
    pgw::config::set_key(c, "auth_hba_file", (dir / "hba.conf").string());
    ADD_FAILURE() << "a mixed ldap line was accepted";
  } catch (const pgw::config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("hba.conf:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("together with ldapprefix"), std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(ConfigPgbouncerTest, NegativeSizesAreRejected) {
  for (const char* key :
       {"default_pool_size", "min_pool_size", "reserve_pool_size", "max_client_conn",
        "max_db_connections", "max_user_connections", "tcp_keepcnt", "tcp_user_timeout"}) {
    expect_error(std::string("[pgbouncer]\n") + key + " = -1", {"pgbouncer.ini:2", key, "'-1'"});
  }
}

TEST(ConfigPgbouncerTest, ZeroIsRejectedWhereAtLeastOneIsNeeded) {
  expect_error("[pgbouncer]\ndefault_pool_size = 0", {"an integer from 1 to"});
  expect_error("[pgbouncer]\nmax_client_conn = 0", {"an integer from 1 to"});
  EXPECT_EQ(load_pgbouncer("max_db_connections = 0").max_db_connections, 0);
}

TEST(ConfigPgbouncerTest, GarbageNumbersAreRejected) {
  for (const char* value : {"20abc", "", "1.5", "0x10", "2147483648", "1e3", "twenty", "20 30"}) {
    expect_error(std::string("[pgbouncer]\ndefault_pool_size = ") + value,
                 {"pgbouncer.ini:2", "default_pool_size", "an integer from 1 to 2147483647"});
  }
  for (const char* port : {"0", "65536", "-6432", "64k"}) {
    expect_error(std::string("[pgbouncer]\nlisten_port = ") + port,
                 {"listen_port", "an integer from 1 to 65535"});
  }
}

TEST(ConfigPgbouncerTest, SyntaxErrors) {
  expect_error("[pgbouncer]\nlisten_port 6432\n", {"pgbouncer.ini:2", "expected key = value"});
  expect_error("listen_port = 6432\n", {"pgbouncer.ini:1", "outside of any section"});
  expect_error("[pgbouncer\nlisten_port = 6432\n", {"pgbouncer.ini:1", "malformed section header"});
  expect_error("[pgbouncer]\n = 6432\n", {"pgbouncer.ini:2", "missing key"});
}

// --- [databases] --------------------------------------------------------------------------

TEST(ConfigDatabasesTest, RealisticEntry) {
  const Config c = load(kRealisticIni);
  ASSERT_EQ(c.databases.count("appdb"), 1U);
  const auto& db = c.databases.at("appdb");
  EXPECT_EQ(db.name, "appdb");
  EXPECT_EQ(db.host, "10.0.0.5");
  EXPECT_EQ(db.port, 5433);
  EXPECT_EQ(db.dbname, "app_production");
  EXPECT_EQ(db.user, "app");
  EXPECT_EQ(db.password, "s3cret pass");
  EXPECT_EQ(db.pool_size, 40);
  EXPECT_EQ(db.min_pool_size, 5);
  EXPECT_EQ(db.reserve_pool, 10);
  EXPECT_EQ(db.pool_mode, PoolMode::transaction);
  EXPECT_EQ(db.max_db_connections, 80);
  EXPECT_TRUE(db.max_db_connections_set);
  EXPECT_EQ(db.client_encoding, "UTF8");
  EXPECT_EQ(db.datestyle, "ISO, MDY");
  EXPECT_EQ(db.timezone, "UTC");
  EXPECT_EQ(db.application_name, "pgwarden");
  EXPECT_EQ(db.source, "pgbouncer.ini:4");
}

TEST(ConfigDatabasesTest, UnsetFieldsKeepDefaults) {
  const Config c = load(kRealisticIni);
  const auto& db = c.databases.at("reporting");
  EXPECT_EQ(db.host, "replica.internal");
  EXPECT_EQ(db.port, 5432);
  EXPECT_EQ(db.user, "");
  EXPECT_EQ(db.password, "");
  EXPECT_FALSE(db.pool_size.has_value());
  EXPECT_FALSE(db.min_pool_size.has_value());
  EXPECT_FALSE(db.reserve_pool.has_value());
  EXPECT_EQ(db.pool_mode, PoolMode::statement);
  EXPECT_EQ(db.max_db_connections, 0);
  EXPECT_FALSE(db.max_db_connections_set);
  EXPECT_FALSE(db.server_lifetime.has_value());
  EXPECT_EQ(db.client_encoding, "");
  EXPECT_EQ(load("[databases]\nbare =\n").databases.at("bare").dbname, "");
}

TEST(ConfigDatabasesTest, QuotedValuesEscapesAndSpacing) {
  const Config c = load(
      "[databases]\n"
      R"(db = host = 'my host'  password='it\'s a \\ test' application_name=a\ b )"
      "dbname='' connect_query='SELECT 1' server_lifetime=90 reserve_pool_size=3 PORT=6000\n");
  const auto& db = c.databases.at("db");
  EXPECT_EQ(db.host, "my host");
  EXPECT_EQ(db.password, R"(it's a \ test)");
  EXPECT_EQ(db.application_name, "a b");
  EXPECT_EQ(db.dbname, "");
  EXPECT_EQ(db.connect_query, "SELECT 1");
  EXPECT_EQ(db.server_lifetime, std::optional<Millis>(90s));
  EXPECT_EQ(db.reserve_pool, 3);
  EXPECT_EQ(db.port, 6000);  // connection string keys are case-insensitive
}

TEST(ConfigDatabasesTest, QuotedDatabaseNameWithDoubledQuotes) {
  const Config c = load("[databases]\n\"my \"\"db\"\"\" = dbname=real\n");
  ASSERT_EQ(c.databases.count("my \"db\""), 1U);
  EXPECT_EQ(c.databases.at("my \"db\"").dbname, "real");
}

TEST(ConfigPgbouncerTest, TheConsoleIsNoAuthDbname) {
  expect_error("[pgbouncer]\nauth_dbname = pgbouncer\n",
               {"cannot use the reserved \"pgbouncer\" database as an auth_dbname"});
}

TEST(ConfigDatabasesTest, AuthQueryKeysPerEntry) {
  const Config c = load(
      "[databases]\ndb = host=h auth_user=pgb auth_dbname=postgres load_balance_hosts=disable "
      "max_db_client_connections=10 query_wait_timeout=5 auth_query='SELECT 1'\n"
      "[pgbouncer]\nauth_user = global_auth\n");
  const auto& db = c.databases.at("db");
  EXPECT_EQ(db.host, "h");
  EXPECT_EQ(db.auth_user, "pgb");
  EXPECT_EQ(db.auth_dbname, "postgres");
  EXPECT_EQ(db.auth_query, "SELECT 1");
  EXPECT_EQ(c.auth_user, "global_auth");
  // PgBouncer's default query: an expired role has no password.
  EXPECT_NE(c.auth_query.find("rolvaliduntil < now() THEN NULL"), std::string::npos);
}

TEST(ConfigDatabasesTest, HostListsWithOnePortOrOnePerHost) {
  using pgw::config::LoadBalanceHosts;
  using pgw::config::ServerAddress;
  const Config c = load(
      "[databases]\n"
      "one = host=10.0.0.5 port=5433\n"
      "list = host=10.0.0.5,10.0.0.6,/var/run/postgresql port=5433\n"
      "ports = host='a , b' port=5433,5434 load_balance_hosts=disable\n"
      "socket = dbname=x\n");
  const auto& one = c.databases.at("one");
  EXPECT_EQ(one.servers, (std::vector<ServerAddress>{{"10.0.0.5", 5433}}));
  EXPECT_EQ(one.load_balance_hosts, LoadBalanceHosts::round_robin);  // PgBouncer's default
  const auto& list = c.databases.at("list");
  EXPECT_EQ(list.host, "10.0.0.5,10.0.0.6,/var/run/postgresql");  // as written (SHOW DATABASES)
  EXPECT_EQ(list.servers,
            (std::vector<ServerAddress>{
                {"10.0.0.5", 5433}, {"10.0.0.6", 5433}, {"/var/run/postgresql", 5433}}));
  const auto& ports = c.databases.at("ports");
  EXPECT_EQ(ports.servers, (std::vector<ServerAddress>{{"a", 5433}, {"b", 5434}}));
  EXPECT_EQ(ports.port, 5433);
  EXPECT_EQ(ports.load_balance_hosts, LoadBalanceHosts::disable);
  EXPECT_EQ(c.databases.at("socket").servers, (std::vector<ServerAddress>{{"", 5432}}));
  // The fallback's list reaches every name it serves.
  const auto wild = load("[databases]\n* = host=a,b port=1,2\n").find_database("x");
  ASSERT_TRUE(wild.has_value());
  EXPECT_EQ(wild->servers, (std::vector<ServerAddress>{{"a", 1}, {"b", 2}}));
  expect_error("[databases]\nd = host=a,,b\n", {"pgbouncer.ini:2", "host", "'a,,b'"});
  expect_error("[databases]\nd = host=a,b,\n", {"pgbouncer.ini:2", "host", "'a,b,'"});
  expect_error("[databases]\nd = host=a,b port=1,2,3\n",
               {"pgbouncer.ini:2", "port", "'1,2,3'", "one port, or one per host"});
  expect_error("[databases]\nd = host=a port=1,2\n", {"pgbouncer.ini:2", "port", "'1,2'"});
  expect_error("[databases]\nd = host=a,b port=1,x\n",
               {"pgbouncer.ini:2", "port", "'x'", "an integer from 1 to 65535"});
  expect_error("[databases]\nd = host=a,b load_balance_hosts=random\n",
               {"pgbouncer.ini:2", "load_balance_hosts", "round-robin or disable"});
}

TEST(ConfigDatabasesTest, FindDatabaseExactMatch) {
  const Config c = load(kRealisticIni);
  const auto db = c.find_database("appdb");
  ASSERT_TRUE(db.has_value());
  EXPECT_EQ(db->host, "10.0.0.5");
  EXPECT_EQ(db->dbname, "app_production");
}

TEST(ConfigDatabasesTest, FindDatabaseFallsBackToWildcard) {
  const Config c = load(kRealisticIni);
  const auto db = c.find_database("unlisted");
  ASSERT_TRUE(db.has_value());
  EXPECT_EQ(db->name, "unlisted");
  EXPECT_EQ(db->dbname, "unlisted");
  EXPECT_EQ(db->host, "localhost");
  EXPECT_EQ(db->port, 5432);
  // The stored "*" entry itself is unchanged.
  EXPECT_EQ(c.databases.at("*").name, "*");
  EXPECT_EQ(c.databases.at("*").dbname, "");
}

TEST(ConfigDatabasesTest, WildcardWithExplicitDbnameKeepsIt) {
  const Config c = load("[databases]\n* = host=h dbname=shared\n");
  const auto db = c.find_database("anything");
  ASSERT_TRUE(db.has_value());
  EXPECT_EQ(db->name, "anything");
  EXPECT_EQ(db->dbname, "shared");
}

TEST(ConfigDatabasesTest, FindDatabaseWithoutWildcard) {
  const Config c = load("[databases]\nonly = host=h\n");
  EXPECT_FALSE(c.find_database("other").has_value());
  EXPECT_TRUE(c.find_database("only").has_value());
  EXPECT_FALSE(c.find_database("ONLY").has_value());  // database names are case-sensitive
}

TEST(ConfigDatabasesTest, DuplicateEntryLastWins) {
  const Config c = load("[databases]\ndb = host=a\ndb = host=b\n");
  EXPECT_EQ(c.databases.at("db").host, "b");
  EXPECT_EQ(c.databases.at("db").source, "pgbouncer.ini:3");
}

TEST(ConfigDatabasesTest, UnknownKeyIsAnErrorNamingEntryAndAllowedKeys) {
  expect_error("[databases]\n\ndb = host=h sslmode=require\n",
               {"pgbouncer.ini:3", "unknown key 'sslmode'", "db", "expected host, port, dbname"});
}

TEST(ConfigDatabasesTest, InvalidValues) {
  expect_error("[databases]\ndb = port=99999\n",
               {"pgbouncer.ini:2", "port", "'99999'", "an integer from 1 to 65535"});
  expect_error("[databases]\ndb = pool_size=-1\n", {"pgbouncer.ini:2", "pool_size", "'-1'"});
  expect_error("[databases]\ndb = min_pool_size=x\n", {"min_pool_size", "'x'"});
  expect_error("[databases]\ndb = reserve_pool=1.5\n", {"reserve_pool", "'1.5'"});
  expect_error("[databases]\ndb = max_db_connections=-3\n", {"max_db_connections", "'-3'"});
  expect_error("[databases]\ndb = pool_mode=batch\n",
               {"pool_mode", "'batch'", "session, transaction or statement"});
  expect_error("[databases]\ndb = server_lifetime=soon\n", {"server_lifetime", "a duration"});
}

TEST(ConfigDatabasesTest, MalformedConnectionStrings) {
  expect_error("[databases]\ndb = host\n", {"pgbouncer.ini:2", "expected key=value"});
  expect_error("[databases]\ndb = host=h =x\n", {"pgbouncer.ini:2", "expected key=value"});
  expect_error("[databases]\ndb = password='unterminated\n",
               {"pgbouncer.ini:2", "unterminated quoted value", "password"});
}

// --- [users] ------------------------------------------------------------------------------

TEST(ConfigUsersTest, RealisticEntries) {
  const Config c = load(kRealisticIni);
  ASSERT_EQ(c.users.count("batch"), 1U);
  const auto& batch = c.users.at("batch");
  EXPECT_EQ(batch.name, "batch");
  EXPECT_EQ(batch.pool_mode, PoolMode::session);
  EXPECT_EQ(batch.max_user_connections, 5);
  EXPECT_TRUE(batch.max_user_connections_set);
  EXPECT_FALSE(batch.pool_size.has_value());

  ASSERT_EQ(c.users.count("quoted \"user\""), 1U);
  const auto& quoted = c.users.at("quoted \"user\"");
  EXPECT_EQ(quoted.pool_size, 3);
  EXPECT_FALSE(quoted.pool_mode.has_value());
  EXPECT_FALSE(quoted.max_user_connections_set);
}

TEST(ConfigUsersTest, AllUserKeys) {
  const Config c = load(
      "[users]\nu = pool_mode=statement pool_size=7 reserve_pool_size=2 max_user_connections=9 "
      "query_timeout=30 idle_transaction_timeout=1.5 client_idle_timeout=10min "
      "query_wait_timeout=3 transaction_timeout=4 max_user_client_connections=5\n");
  const auto& u = c.users.at("u");
  EXPECT_EQ(u.pool_mode, PoolMode::statement);
  EXPECT_EQ(u.pool_size, 7);
  EXPECT_EQ(u.reserve_pool_size, 2);
  EXPECT_EQ(u.max_user_connections, 9);
  EXPECT_EQ(u.query_timeout, std::optional<Millis>(30s));
  EXPECT_EQ(u.idle_transaction_timeout, std::optional<Millis>(1500ms));
  EXPECT_EQ(u.client_idle_timeout, std::optional<Millis>(10min));
  EXPECT_EQ(u.max_user_client_connections, 5);
  EXPECT_EQ(u.transaction_timeout, std::optional<Millis>(4s));
  EXPECT_EQ(u.query_wait_timeout, std::optional<Millis>(3s));
}

TEST(ConfigUsersTest, QueryWaitTimeoutOfTheUserOverTheDatabaseOverTheKey) {
  const Config c = load(
      "[databases]\nslow = query_wait_timeout=30\nunset = query_wait_timeout=-1\n"
      "* = host=h query_wait_timeout=7\n"
      "[users]\nalice = query_wait_timeout=2\nbob = query_wait_timeout=0\n"
      "carol = query_wait_timeout=-1\n"
      "[pgbouncer]\nquery_wait_timeout = 60\n");
  EXPECT_EQ(c.query_wait_timeout_for("slow", "dave"), 30s);
  EXPECT_EQ(c.query_wait_timeout_for("slow", "alice"), 2s);   // the user's wins, as in PgBouncer
  EXPECT_EQ(c.query_wait_timeout_for("slow", "bob"), 0s);     // 0: this user waits forever
  EXPECT_EQ(c.query_wait_timeout_for("slow", "carol"), 30s);  // PgBouncer's -1: not set
  EXPECT_EQ(c.query_wait_timeout_for("unset", "dave"), 60s);
  EXPECT_EQ(c.query_wait_timeout_for("elsewhere", "dave"), 7s);  // through "*"
  EXPECT_EQ(load("[users]\nu = pool_size=1\n").query_wait_timeout_for("db", "u"), 120s);
  expect_error("[users]\nu = query_wait_timeout=-2\n",
               {"pgbouncer.ini:2", "query_wait_timeout", "'-2'"});
  expect_error("[databases]\nd = query_wait_timeout=soon\n",
               {"pgbouncer.ini:2", "query_wait_timeout", "'soon'"});
}

TEST(ConfigUsersTest, ClientCapsOfAnEntryOverTheGlobalKeys) {
  const Config c = load(
      "[databases]\ncapped = max_db_client_connections=3\nopen = max_db_client_connections=0\n"
      "plain = host=h\n"
      "[users]\nalice = max_user_client_connections=2\nbob = pool_size=1\n"
      "[pgbouncer]\nmax_db_client_connections = 50\nmax_user_client_connections = 40\n");
  EXPECT_EQ(c.max_db_client_connections_for("capped"), 3);
  EXPECT_EQ(c.max_db_client_connections_for("open"), 0);  // 0 in the entry: unlimited
  EXPECT_EQ(c.max_db_client_connections_for("plain"), 50);
  EXPECT_EQ(c.max_db_client_connections_for("unlisted"), 50);
  EXPECT_EQ(c.max_user_client_connections_for("alice"), 2);
  EXPECT_EQ(c.max_user_client_connections_for("bob"), 40);
  EXPECT_EQ(c.max_user_client_connections_for("carol"), 40);
  // A name that reaches "*" takes the fallback entry's cap.
  const Config wild = load("[databases]\n* = host=h max_db_client_connections=7\n");
  EXPECT_EQ(wild.max_db_client_connections_for("anything"), 7);
  expect_error("[databases]\nd = max_db_client_connections=-1\n",
               {"pgbouncer.ini:2", "max_db_client_connections", "'-1'"});
  expect_error("[users]\nu = max_user_client_connections=x\n",
               {"pgbouncer.ini:2", "max_user_client_connections", "'x'"});
}

TEST(ConfigUsersTest, InvalidEntries) {
  expect_error("[users]\nu = pool_mode=sometimes\n",
               {"pgbouncer.ini:2", "pool_mode", "session, transaction or statement"});
  expect_error("[users]\nu = max_user_connections=-1\n", {"max_user_connections", "'-1'"});
  expect_error("[users]\nu = pool_size=lots\n", {"pool_size", "'lots'"});
  expect_error("[users]\nu = host=h\n",
               {"pgbouncer.ini:2", "unknown key 'host'", "[users] entry u", "expected pool_mode"});
}

// --- %include and load_file ---------------------------------------------------------------

TEST(ConfigIncludeTest, IncludeRelativeToTheIncludingFile) {
  TempDir dir;
  dir.write("conf.d/databases.ini", "[databases]\nincluded = host=inc.example port=5555\n");
  dir.write("conf.d/limits.ini",
            "max_client_conn = 500\n"
            "%include databases.ini\n");  // relative to conf.d/
  const auto main = dir.write("pgbouncer.ini",
                              "[pgbouncer]\n"
                              "listen_port = 7000\n"
                              "%include conf.d/limits.ini\n"
                              "[pgbouncer]\n"
                              "max_client_conn = 600\n");  // after the include: wins
  std::vector<Warning> warnings;
  const Config c = pgw::config::load_file(main, warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(c.path, main);
  EXPECT_EQ(c.listen_port, 7000);
  EXPECT_EQ(c.max_client_conn, 600);
  ASSERT_EQ(c.databases.count("included"), 1U);
  EXPECT_EQ(c.databases.at("included").port, 5555);
  EXPECT_TRUE(contains(c.databases.at("included").source, "databases.ini:2"))
      << c.databases.at("included").source;
}

TEST(ConfigIncludeTest, IncludedFileContinuesTheCurrentSection) {
  TempDir dir;
  dir.write("more.ini", "default_pool_size = 33\n");
  const auto main = dir.write("main.ini", "[pgbouncer]\n%include more.ini\n");
  std::vector<Warning> warnings;
  EXPECT_EQ(pgw::config::load_file(main, warnings).default_pool_size, 33);
}

TEST(ConfigIncludeTest, AbsoluteIncludePath) {
  TempDir dir;
  const auto extra = dir.write("abs/extra.ini", "[pgbouncer]\npool_mode = statement\n");
  std::vector<Warning> warnings;
  const Config c =
      pgw::config::load_string("%include " + extra + "\n", "inline.ini", warnings, "/nonexistent");
  EXPECT_EQ(c.pool_mode, PoolMode::statement);
}

TEST(ConfigIncludeTest, LoadStringResolvesIncludesAgainstBaseDir) {
  TempDir dir;
  dir.write("extra.ini", "[pgbouncer]\nlisten_port = 7777\n");
  std::vector<Warning> warnings;
  const Config c =
      pgw::config::load_string("%include extra.ini\n", "inline.ini", warnings, dir.path().string());
  EXPECT_EQ(c.listen_port, 7777);
}

TEST(ConfigIncludeTest, WarningInIncludedFileNamesThatFileAndLine) {
  TempDir dir;
  dir.write("extra.ini", "\n\nbogus_key = 1\n");
  const auto main = dir.write("main.ini", "[pgbouncer]\n%include extra.ini\n");
  std::vector<Warning> warnings;
  pgw::config::load_file(main, warnings);
  ASSERT_EQ(warnings.size(), 1U);
  EXPECT_TRUE(contains(warnings[0].text, "extra.ini:3")) << warnings[0].text;
  EXPECT_TRUE(contains(warnings[0].text, "bogus_key")) << warnings[0].text;
}

TEST(ConfigIncludeTest, ErrorInIncludedFileNamesThatFileAndLine) {
  TempDir dir;
  dir.write("extra.ini", "[pgbouncer]\npool_mode = nope\n");
  const auto main = dir.write("main.ini", "[pgbouncer]\nlisten_port = 7000\n%include extra.ini\n");
  std::vector<Warning> warnings;
  try {
    pgw::config::load_file(main, warnings);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "extra.ini:2")) << e.what();
    EXPECT_TRUE(contains(e.what(), "pool_mode")) << e.what();
  }
}

TEST(ConfigIncludeTest, MissingIncludedFile) {
  TempDir dir;
  const auto main = dir.write("main.ini", "[pgbouncer]\n%include missing.ini\n");
  std::vector<Warning> warnings;
  try {
    pgw::config::load_file(main, warnings);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "main.ini:2")) << e.what();
    EXPECT_TRUE(contains(e.what(), "cannot open included file")) << e.what();
    EXPECT_TRUE(contains(e.what(), "missing.ini")) << e.what();
  }
}

TEST(ConfigIncludeTest, IncludeWithoutFileName) {
  expect_error("[pgbouncer]\n%include   \n", {"pgbouncer.ini:2", "%include needs a file name"});
}

TEST(ConfigIncludeTest, RecursiveIncludeIsStopped) {
  TempDir dir;
  const auto main = dir.write("loop.ini", "[pgbouncer]\n%include loop.ini\n");
  std::vector<Warning> warnings;
  try {
    pgw::config::load_file(main, warnings);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "nested too deeply")) << e.what();
  }
}

TEST(ConfigIncludeTest, LoadFileMissing) {
  TempDir dir;
  const auto path = (dir.path() / "absent.ini").string();
  std::vector<Warning> warnings;
  try {
    pgw::config::load_file(path, warnings);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "absent.ini")) << e.what();
  }
}

TEST(ConfigIncludeTest, RelativeAuthFileIsResolvedAgainstTheConfigDirectory) {
  TempDir dir;
  const auto rel = dir.write("rel/pgbouncer.ini", "[pgbouncer]\nauth_file = userlist.txt\n");
  const auto abs =
      dir.write("abs/pgbouncer.ini", "[pgbouncer]\nauth_file = /etc/pgbouncer/u.txt\n");
  std::vector<Warning> warnings;
  EXPECT_EQ(fs::path(pgw::config::load_file(rel, warnings).auth_file),
            dir.path() / "rel" / "userlist.txt");
  EXPECT_EQ(pgw::config::load_file(abs, warnings).auth_file, "/etc/pgbouncer/u.txt");
}

// --- userlist.txt -------------------------------------------------------------------------

constexpr const char* kScramSecret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

TEST(AuthFileTest, PlainMd5AndScramSecrets) {
  const std::string text = std::string("\"alice\" \"plain password\"\n") +
                           "\"postgres\" \"md53175bce1d3201d16594cebf9d7eb3f9d\"\n" +
                           "\"user\" \"" + kScramSecret + "\"\n";
  const auto users = pgw::config::parse_auth_file(text, "userlist.txt");
  EXPECT_EQ(users, (std::map<std::string, std::string>{
                       {"alice", "plain password"},
                       {"postgres", "md53175bce1d3201d16594cebf9d7eb3f9d"},
                       {"user", kScramSecret},
                   }));
}

TEST(AuthFileTest, CommentsBlankLinesAndWhitespace) {
  const auto users = pgw::config::parse_auth_file(
      "; generated by mkauth.py\n"
      "# another comment\n"
      "\n"
      "   \t\n"
      "  \"bob\"\t  \"pw\"  \r\n"
      "\"carol\" \"pw2\" \n",
      "userlist.txt");
  EXPECT_EQ(users, (std::map<std::string, std::string>{{"bob", "pw"}, {"carol", "pw2"}}));
}

TEST(AuthFileTest, AdjacentFieldsWithoutSpaceAreOneDoubledQuoteField) {
  // "carol""pw2" is a single field: the doubled quote escapes a quote character.
  const auto message = [] {
    try {
      pgw::config::parse_auth_file("\"carol\"\"pw2\"\n", "userlist.txt");
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_TRUE(contains(message, "userlist.txt:1")) << message;
}

TEST(AuthFileTest, DoubledQuotesEscapeAQuote) {
  const auto users = pgw::config::parse_auth_file("\"we\"\"ird\" \"pa\"\"ss\"\"\"\n\"\"\"\" \"\"\n",
                                                  "userlist.txt");
  EXPECT_EQ(users, (std::map<std::string, std::string>{{"we\"ird", "pa\"ss\""}, {"\"", ""}}));
}

TEST(AuthFileTest, ExtraFieldsAfterThePasswordAreIgnored) {
  const auto users =
      pgw::config::parse_auth_file("\"dave\" \"pw\" \"ignored\" trailing\n", "userlist.txt");
  EXPECT_EQ(users, (std::map<std::string, std::string>{{"dave", "pw"}}));
}

TEST(AuthFileTest, DuplicateUserLastWins) {
  const auto users = pgw::config::parse_auth_file("\"eve\" \"one\"\n\"eve\" \"two\"\n", "u.txt");
  EXPECT_EQ(users.at("eve"), "two");
  EXPECT_EQ(users.size(), 1U);
}

TEST(AuthFileTest, EmptyFile) {
  EXPECT_TRUE(pgw::config::parse_auth_file("", "u.txt").empty());
  EXPECT_TRUE(pgw::config::parse_auth_file("; only a comment\n", "u.txt").empty());
}

std::string auth_file_error(const std::string& text) {
  try {
    pgw::config::parse_auth_file(text, "userlist.txt");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for: " << text;
  return {};
}

TEST(AuthFileTest, MalformedLinesNameFileAndLine) {
  const std::string good = "\"ok\" \"pw\"\n; comment\n";
  struct Case {
    std::string line;
    std::string_view expected;
  };
  const Case cases[] = {
      {"alice \"pw\"", "expected \"user\" \"password\""},  // unquoted user
      {"\"alice\" pw", "expected \"user\" \"password\""},  // unquoted password
      {"\"alice\"", "expected \"user\" \"password\""},     // no password
      {"\"alice\" \"pw", "unterminated quote"},            // unterminated password
      {"\"alice pw", "unterminated quote"},                // unterminated user
  };
  for (const auto& c : cases) {
    const auto message = auth_file_error(good + c.line + "\n");
    EXPECT_TRUE(contains(message, "userlist.txt:3")) << c.line << " -> " << message;
    EXPECT_TRUE(contains(message, c.expected)) << c.line << " -> " << message;
  }
}

TEST(AuthFileTest, LoadAuthFileFromDisk) {
  TempDir dir;
  const auto path = dir.write("userlist.txt", "\"frank\" \"md5" + std::string(32, 'a') + "\"\n");
  const auto users = pgw::config::load_auth_file(path);
  EXPECT_EQ(users.at("frank"), "md5" + std::string(32, 'a'));

  const auto bad = dir.write("bad.txt", "\n\nfrank pw\n");
  try {
    pgw::config::load_auth_file(bad);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), bad + ":3")) << e.what();
  }
  EXPECT_THROW(pgw::config::load_auth_file((dir.path() / "absent.txt").string()), ConfigError);
}

// --- SHOW CONFIG --------------------------------------------------------------------------

TEST(ConfigShowTest, DefaultRowsHaveKeysWithValues) {
  const auto rows = pgw::config::show_config_rows(load(""));
  std::set<std::string> keys;
  for (const auto& [key, value] : rows) {
    EXPECT_FALSE(key.empty());
    EXPECT_TRUE(keys.insert(key).second) << "duplicate key " << key;
  }
  const auto m = rows_map(load(""));
  EXPECT_EQ(m.at("listen_port"), "6432");
  EXPECT_EQ(m.at("pool_mode"), "session");
  EXPECT_EQ(m.at("auth_type"), "md5");
  EXPECT_EQ(m.at("default_pool_size"), "20");
  EXPECT_EQ(m.at("max_client_conn"), "100");
  EXPECT_EQ(m.at("server_reset_query"), "DISCARD ALL");
  EXPECT_EQ(m.at("server_lifetime"), "3600");
  EXPECT_EQ(m.at("server_idle_timeout"), "600");
  EXPECT_EQ(m.at("server_connect_timeout"), "15");
  EXPECT_EQ(m.at("server_login_retry"), "15");
  EXPECT_EQ(m.at("query_wait_timeout"), "120");
  EXPECT_EQ(m.at("reserve_pool_timeout"), "5");
  EXPECT_EQ(m.at("log_connections"), "1");
  EXPECT_EQ(m.at("verbose"), "0");
  EXPECT_EQ(m.at("listen_addr"), "");
  EXPECT_EQ(m.at("workers"), "0");
}

TEST(ConfigShowTest, EveryTypedPgbouncerKeyIsListed) {
  const auto m = rows_map(load(""));
  for (const char* key : {"listen_addr",
                          "listen_port",
                          "unix_socket_dir",
                          "listen_backlog",
                          "so_reuseport",
                          "tcp_defer_accept",
                          "pkt_buf",
                          "auth_type",
                          "auth_file",
                          "admin_users",
                          "stats_users",
                          "pool_mode",
                          "default_pool_size",
                          "min_pool_size",
                          "reserve_pool_size",
                          "reserve_pool_timeout",
                          "max_client_conn",
                          "max_db_connections",
                          "max_user_connections",
                          "server_reset_query",
                          "server_reset_query_always",
                          "server_check_query",
                          "server_check_delay",
                          "server_lifetime",
                          "server_idle_timeout",
                          "server_connect_timeout",
                          "server_login_retry",
                          "query_timeout",
                          "query_wait_timeout",
                          "client_idle_timeout",
                          "client_login_timeout",
                          "idle_transaction_timeout",
                          "stats_period",
                          "leak_warn_after",
                          "idle_pinned_timeout",
                          "leak_growth_window",
                          "leak_growth_interval",
                          "ignore_startup_parameters",
                          "logfile",
                          "pidfile",
                          "log_connections",
                          "log_disconnections",
                          "log_pooler_errors",
                          "verbose",
                          "tcp_keepalive",
                          "tcp_keepcnt",
                          "tcp_keepidle",
                          "tcp_keepintvl",
                          "tcp_user_timeout",
                          "workers"}) {
    EXPECT_EQ(m.count(key), 1U) << key;
  }
}

TEST(ConfigShowTest, ReflectsLoadedValues) {
  const auto m = rows_map(load(kRealisticIni));
  EXPECT_EQ(m.at("listen_addr"), "*");
  EXPECT_EQ(m.at("listen_port"), "6543");
  EXPECT_EQ(m.at("auth_type"), "scram-sha-256");
  EXPECT_EQ(m.at("pool_mode"), "transaction");
  EXPECT_EQ(m.at("admin_users"), "postgres,admin");
  EXPECT_EQ(m.at("ignore_startup_parameters"), "extra_float_digits,options");
  EXPECT_EQ(m.at("server_lifetime"), "1800");
  EXPECT_EQ(m.at("log_connections"), "0");
  EXPECT_EQ(m.at("so_reuseport"), "1");
  EXPECT_EQ(m.at("verbose"), "1");
  EXPECT_EQ(m.at("workers"), "4");
  EXPECT_EQ(m.at("max_prepared_statements"), "100");  // accepted-only key, appended
}

TEST(ConfigShowTest, FractionalDurationsInSeconds) {
  const auto m = rows_map(load_pgbouncer("reserve_pool_timeout = 0.5\nquery_timeout = 1250ms"));
  EXPECT_EQ(m.at("reserve_pool_timeout"), "0.5");
  EXPECT_EQ(m.at("query_timeout"), "1.25");
}

}  // namespace

// Resilience keys (docs/operations.md): defaults, parsing, and SHOW CONFIG.
TEST(ConfigResilienceTest, DefaultsAndValues) {
  using namespace std::chrono_literals;
  const Config defaults = load("");
  EXPECT_EQ(defaults.breaker_failures, 5);
  EXPECT_EQ(defaults.breaker_open_min, 5s);
  EXPECT_EQ(defaults.breaker_open_max, 60s);
  EXPECT_EQ(defaults.max_waiting, 0);
  EXPECT_EQ(defaults.query_wait_notify, 5s);
  EXPECT_EQ(defaults.shutdown_drain_timeout, 30s);
  const Config c = load_pgbouncer(
      "breaker_failures = 0\nbreaker_open_min = 500ms\nbreaker_open_max = 2min\n"
      "max_waiting = 100\nquery_wait_notify = 0\nshutdown_drain_timeout = 1.5");
  EXPECT_EQ(c.breaker_failures, 0);
  EXPECT_EQ(c.breaker_open_min, 500ms);
  EXPECT_EQ(c.breaker_open_max, 120s);
  EXPECT_EQ(c.max_waiting, 100);
  EXPECT_EQ(c.query_wait_notify, 0s);
  EXPECT_EQ(c.shutdown_drain_timeout, 1500ms);
  const auto m = rows_map(c);
  EXPECT_EQ(m.at("breaker_open_min"), "0.5");
  EXPECT_EQ(m.at("max_waiting"), "100");
  EXPECT_EQ(m.at("shutdown_drain_timeout"), "1.5");
  // query_wait_notify is acted on now, so it is a typed key, not an accepted-only one.
  EXPECT_EQ(rows_map(defaults).at("query_wait_notify"), "5");
  EXPECT_THROW(load_pgbouncer("max_waiting = -1"), ConfigError);
  EXPECT_THROW(load_pgbouncer("breaker_open_min = soon"), ConfigError);
  Config changed = defaults;
  set_key(changed, "breaker_failures", "3");
  EXPECT_EQ(changed.breaker_failures, 3);
  EXPECT_TRUE(pgw::config::is_runtime_changeable("max_waiting"));
}

TEST(ConfigPgbouncerTest, TcpDeferAcceptIsSecondsAndNeedsARestart) {
  // Acted on now (TCP_DEFER_ACCEPT on the TCP listeners), so typed, not accepted-only.
  const Config c = load_pgbouncer("tcp_defer_accept = 10");
  EXPECT_EQ(c.tcp_defer_accept, 10);
  EXPECT_TRUE(c.other.empty());
  EXPECT_EQ(rows_map(c).at("tcp_defer_accept"), "10");
  EXPECT_THROW(load_pgbouncer("tcp_defer_accept = -1"), ConfigError);
  EXPECT_THROW(load_pgbouncer("tcp_defer_accept = soon"), ConfigError);
  // The listeners are opened once, like listen_addr.
  EXPECT_FALSE(pgw::config::is_runtime_changeable("tcp_defer_accept"));
}
