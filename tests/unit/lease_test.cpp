// Leak guard: the pure parts of lease tracking (src/session/lease.hpp): statement
// classification, UTF-8-safe truncation, sqlcommenter tags, states, thresholds, the event ring,
// and the lease record's data-path hooks.
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "admin/command.hpp"
#include "admin/tables.hpp"
#include "config/config.hpp"
#include "session/lease.hpp"
#include "session/session_info.hpp"

namespace {

using namespace pgw::session;
using namespace std::chrono_literals;

std::string q_body(std::string_view sql) {
  return std::string(sql) + '\0';
}
std::string p_body(std::string_view name, std::string_view sql) {
  return std::string(name) + '\0' + std::string(sql) + '\0' + std::string("\0\0", 2);
}

// --- classification ---------------------------------------------------------------------------

TEST(LeaseClassifyTest, TransactionControlVariants) {
  for (const char* sql :
       {"BEGIN", "begin", "Begin;", "BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN TRANSACTION",
        "START TRANSACTION", "start transaction read only", "COMMIT", "commit;", "END", "end work",
        "ROLLBACK", "rollback to savepoint s1", "ABORT", "SAVEPOINT s1",
        "SAVEPOINT \"_pg3_1\"",  // psycopg 3's nested transaction()
        "RELEASE SAVEPOINT s1", "release s1", "PREPARE TRANSACTION 'x'"}) {
    EXPECT_EQ(classify_statement(sql), Housekeeping::transaction_control) << sql;
  }
}

TEST(LeaseClassifyTest, SessionSettings) {
  for (const char* sql :
       {"SET application_name = 'x'", "set local x = 1", "SET LOCAL statement_timeout = '5s'",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET extra_float_digits = 3",                       // JDBC at connect
        "SET application_name = 'PostgreSQL JDBC Driver'",  // JDBC
        "RESET ALL", "reset search_path",
        "show standard_conforming_strings",  // SQLAlchemy at connect
        "show transaction isolation level",  // SQLAlchemy at connect
        "SHOW search_path", "DISCARD ALL", "DEALLOCATE ALL", "CLOSE ALL", "UNLISTEN *"}) {
    EXPECT_EQ(classify_statement(sql), Housekeeping::session_setting) << sql;
  }
}

TEST(LeaseClassifyTest, ProbesOfServerFacts) {
  for (const char* sql : {"SELECT 1", "select 1;", "SELECT 1 AS ping",
                          "select pg_catalog.version()",  // SQLAlchemy at connect
                          "SELECT version()",
                          "select current_schema()",  // SQLAlchemy at connect
                          "SELECT current_schema", "SELECT current_setting('search_path')",
                          "SELECT pg_catalog.current_setting('server_version_num')::int",
                          "select current_database(), current_user, session_user",
                          "SELECT current_schemas(false)", "SELECT pg_advisory_unlock_all()"}) {
    EXPECT_EQ(classify_statement(sql), Housekeeping::probe) << sql;
  }
}

TEST(LeaseClassifyTest, TypeIntrospection) {
  // asyncpg's TYPE_BY_NAME (set_type_codec, SQLAlchemy's asyncpg dialect at connect).
  EXPECT_EQ(classify_statement("SELECT\n    t.oid,\n    t.typelem     AS elemtype,\n"
                               "    t.typtype     AS kind\nFROM\n    pg_catalog.pg_type AS t\n"
                               "    INNER JOIN pg_catalog.pg_namespace ns ON (ns.oid = "
                               "t.typnamespace)\nWHERE\n    t.typname = $1 AND ns.nspname = $2\n"),
            Housekeeping::type_introspection);
  // asyncpg's type lookup: a recursive CTE that names pg_type in its subquery.
  EXPECT_EQ(classify_statement("WITH RECURSIVE typeinfo_tree(\n    oid, ns, name)\nAS (\n"
                               "    SELECT ti.oid FROM (SELECT t.oid FROM (WITH RECURSIVE "
                               "typebases(oid, depth) AS (SELECT t2.typbasetype AS oid FROM "
                               "pg_type t2 WHERE t2.oid = t.oid)) ...) AS ti)"),
            Housekeeping::type_introspection);
  // psycopg2's hstore lookup (SQLAlchemy's use_native_hstore), JDBC's type cache.
  EXPECT_EQ(classify_statement("SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns ON "
                               "typnamespace = ns.oid WHERE typname = 'hstore'"),
            Housekeeping::type_introspection);
  EXPECT_EQ(classify_statement("SELECT n.nspname = ANY(current_schemas(true)), n.nspname, "
                               "t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace "
                               "n ON t.typnamespace = n.oid WHERE t.oid = $1"),
            Housekeeping::type_introspection);
}

TEST(LeaseClassifyTest, ApplicationStatementsAreNotHousekeeping) {
  for (const char* sql : {"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                          "select begin from t",
                          "INSERT INTO t VALUES (1)",
                          "UPDATE t SET x = 1",
                          "WITH x AS (SELECT 1) SELECT * FROM x",
                          "BEGINNING",
                          "settings",
                          "ENDPOINT",
                          "START_X",
                          "PREPARE stmt AS SELECT 1",
                          "DO $$BEGIN END$$",
                          "COMMITTED",
                          "RESETx",
                          "",
                          "   ",
                          "/* only a comment */",
                          "RELEASED",
                          "SELECT 1 FROM t",
                          "SELECT version() FROM t",
                          "SELECT now()",
                          "SELECT pg_sleep(1)",
                          "SELECT current_setting(name) FROM settings",
                          "SELECT pg_typeof(1)",
                          "SELECT * FROM my_pg_types",
                          "SELECT x AS pg_typex FROM t",
                          "CLOSED",
                          "showcase",
                          "DELETE FROM t",
                          "SELECT 42",
                          "SELECT 'x'",
                          "SELECT 1, 2"}) {
    EXPECT_EQ(classify_statement(sql), Housekeeping::none) << sql;
  }
}

TEST(LeaseClassifyTest, WhitespaceAndCommentsAreSkipped) {
  EXPECT_TRUE(is_driver_housekeeping("  \n\t BEGIN"));
  EXPECT_TRUE(is_driver_housekeeping("-- driver\nBEGIN"));
  EXPECT_TRUE(is_driver_housekeeping("/* a */ /* b */ begin"));
  EXPECT_TRUE(is_driver_housekeeping("/* outer /* nested */ still comment */ COMMIT"));
  EXPECT_TRUE(is_driver_housekeeping("SELECT /* ping */ 1"));
  EXPECT_FALSE(is_driver_housekeeping("/* BEGIN */ SELECT 2 FROM t"));
  EXPECT_FALSE(is_driver_housekeeping("-- BEGIN\nSELECT x FROM t"));
  EXPECT_EQ(skip_blanks_and_comments(" -- x\n /* y */ SELECT"), "SELECT");
  EXPECT_EQ(skip_blanks_and_comments("/* unterminated"), "");
  EXPECT_EQ(skip_blanks_and_comments("-- no newline"), "");
}

TEST(LeaseClassifyTest, HousekeepingHasNames) {
  EXPECT_EQ(to_string(Housekeeping::type_introspection), "type_introspection");
  EXPECT_EQ(to_string(Housekeeping::probe), "probe");
  EXPECT_EQ(to_string(Housekeeping::none), "none");
}

TEST(LeaseClassifyTest, FirstSignificantStatementSkipsLeadingHousekeeping) {
  EXPECT_EQ(first_significant_statement("SELECT x FROM t"), "SELECT x FROM t");
  EXPECT_EQ(first_significant_statement("  SELECT x FROM t"), "SELECT x FROM t");
  EXPECT_EQ(first_significant_statement("BEGIN; SELECT 2 FROM t"), "SELECT 2 FROM t");
  EXPECT_EQ(first_significant_statement("BEGIN;SET x = 'a;b'; /* t */ UPDATE t SET y = 1"),
            "/* t */ UPDATE t SET y = 1");
  EXPECT_EQ(first_significant_statement("SELECT 1; show x; -- ; no\n DELETE FROM t; COMMIT"),
            "-- ; no\n DELETE FROM t; COMMIT");
  EXPECT_EQ(first_significant_statement("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\n"
                                        "UNLISTEN *;\nRESET ALL;"),
            "");
  EXPECT_EQ(first_significant_statement("SELECT 1; DELETE FROM t"), "DELETE FROM t");
  // pg_type in a later statement does not make the first one introspection.
  EXPECT_EQ(first_significant_statement("SELECT a FROM t; SELECT oid FROM pg_type"),
            "SELECT a FROM t; SELECT oid FROM pg_type");
  EXPECT_EQ(first_significant_statement("SELECT oid FROM pg_type; SELECT a FROM t"),
            "SELECT a FROM t");
  EXPECT_EQ(first_significant_statement("BEGIN"), "");
  EXPECT_EQ(first_significant_statement("BEGIN; COMMIT;"), "");
  EXPECT_EQ(first_significant_statement(""), "");
}

// --- sqlcommenter comments of a statement, and their union ---------------------------------------

TEST(LeaseTagsTest, LeadingAndTrailingCommentsAreFound) {
  auto found = find_tag_comments("/* route='a' */ SELECT 1 /* file='b.py' */;", true);
  EXPECT_EQ(found.leading, "/* route='a' */");
  EXPECT_EQ(found.trailing, "/* file='b.py' */");
  // Only the leading one of a partial text; prose comments are not tags.
  found = find_tag_comments("/* route='a' */ SELECT 1 /* file='b.py' */", false);
  EXPECT_EQ(found.leading, "/* route='a' */");
  EXPECT_EQ(found.trailing, "");
  found = find_tag_comments("/* just prose */ SELECT 1 -- x", true);
  EXPECT_EQ(found.leading, "");
  EXPECT_EQ(found.trailing, "");
  // A text that is only one comment counts once.
  found = find_tag_comments("/* a='b' */", true);
  EXPECT_EQ(found.leading, "/* a='b' */");
  EXPECT_EQ(found.trailing, "");
  EXPECT_EQ(find_tag_comments("", true).leading, "");
}

TEST(LeaseTagsTest, CommentSetKeepsEachCommentOnceAndIsBounded) {
  CommentSet set;
  EXPECT_TRUE(set.empty());
  set.add("/* route='a' */");
  set.add("/* route='a' */");
  set.add("/* route='b',file='x.py' */");
  set.add("");
  ASSERT_EQ(set.comments().size(), 2U);
  EXPECT_EQ(format_tags(set.tags()), "route=a,route=b,file=x.py");
  // Bounded: comments that no longer fit are dropped, and the set says so.
  for (int i = 0; i < 100; ++i) set.add("/* n='" + std::to_string(i) + "' */");
  EXPECT_TRUE(set.full());
  std::size_t kept = 0;
  for (const auto comment : set.comments()) kept += comment.size() + 1;
  EXPECT_LE(kept, kTagCapture + 1);
  set.clear();
  EXPECT_TRUE(set.empty());
  EXPECT_FALSE(set.full());
  EXPECT_TRUE(set.comments().empty());
}

TEST(LeaseTagsTest, MergeIsAUnionInOrderOfAppearance) {
  Tags tags = {{"route", "/a"}};
  merge_tags(tags, {{"route", "/a"}, {"traceparent", "00-1"}});
  merge_tags(tags, {{"route", "/b"}});
  EXPECT_EQ(format_tags(tags), "route=/a,traceparent=00-1,route=/b");
}

// --- truncation ---------------------------------------------------------------------------------

TEST(LeaseTruncateTest, AsciiCutAt200Bytes) {
  const std::string sql(300, 'x');
  EXPECT_EQ(utf8_prefix(sql, 200), 200U);
  StatementText text;
  text.assign(sql);
  EXPECT_EQ(text.view(), std::string(200, 'x'));
  text.assign("short");
  EXPECT_EQ(text.view(), "short");
  text.assign(std::string(200, 'y'));
  EXPECT_EQ(text.view().size(), 200U);
  text.clear();
  EXPECT_TRUE(text.empty());
}

TEST(LeaseTruncateTest, NeverCutsInsideAMultibyteCharacter) {
  // 199 ASCII bytes then "é" (2 bytes): the cut at 200 would split it.
  std::string sql = std::string(199, 'a') + "\xC3\xA9" + "zzz";
  EXPECT_EQ(utf8_prefix(sql, 200), 199U);
  // 198 + a 3-byte char (€) at 198..200: cut before it.
  sql = std::string(198, 'a') + "\xE2\x82\xAC" + "zzz";
  EXPECT_EQ(utf8_prefix(sql, 200), 198U);
  // 197 + a 4-byte char (😀) at 197..200: cut before it.
  sql = std::string(197, 'a') + "\xF0\x9F\x98\x80" + "zzz";
  EXPECT_EQ(utf8_prefix(sql, 200), 197U);
  // A character that ends exactly at 200 is kept.
  sql = std::string(198, 'a') + "\xC3\xA9" + "zzz";
  EXPECT_EQ(utf8_prefix(sql, 200), 200U);
  StatementText text;
  text.assign(std::string(199, 'a') + "\xC3\xA9");
  EXPECT_EQ(text.view().size(), 199U);
}

// --- sqlcommenter tags --------------------------------------------------------------------------

TEST(LeaseTagsTest, TrailingComment) {
  auto tags = parse_sqlcomment_tags("SELECT 1 /* route='checkout',controller='cart' */");
  ASSERT_EQ(tags.size(), 2U);
  EXPECT_EQ(tags[0], (std::pair<std::string, std::string>{"route", "checkout"}));
  EXPECT_EQ(tags[1], (std::pair<std::string, std::string>{"controller", "cart"}));
  EXPECT_EQ(format_tags(tags), "route=checkout,controller=cart");
  // A trailing ';' and whitespace after the comment are fine.
  EXPECT_EQ(format_tags(parse_sqlcomment_tags("SELECT 1 /*a='b'*/ ;\n")), "a=b");
}

TEST(LeaseTagsTest, LeadingComment) {
  EXPECT_EQ(format_tags(parse_sqlcomment_tags("  /* file='app.py:42', route='/x' */ SELECT 1")),
            "file=app.py:42,route=/x");
  // A leading comment that is not tags: the trailing one is used.
  EXPECT_EQ(format_tags(parse_sqlcomment_tags("/* hello */ SELECT 1 /* a='1' */")), "a=1");
}

TEST(LeaseTagsTest, UrlDecodingAndEscapes) {
  EXPECT_EQ(format_tags(parse_sqlcomment_tags(
                "SELECT 1 "
                "/*route='%2Fcart%2Fcheckout',traceparent='00-ab-cd-01',db%20driver='psycopg2'*/")),
            "route=/cart/checkout,traceparent=00-ab-cd-01,db driver=psycopg2");
  auto tags = parse_sqlcomment_tags("SELECT 1 /* msg='it\\'s',x='%e2%82%ac' */");
  ASSERT_EQ(tags.size(), 2U);
  EXPECT_EQ(tags[0].second, "it's");
  EXPECT_EQ(tags[1].second, "\xE2\x82\xAC");
}

TEST(LeaseTagsTest, MalformedCommentsAreIgnored) {
  for (const char* sql : {
           "SELECT 1",
           "SELECT 1 /* just a note */",
           "SELECT 1 /* route=checkout */",            // value not quoted
           "SELECT 1 /* route='checkout */",           // unterminated quote
           "SELECT 1 /* route='a' controller='b' */",  // no comma
           "SELECT 1 /* ='a' */",                      // no key
           "SELECT 1 /* route='%zz' */",               // bad escape
           "SELECT 1 /* route='%2' */",                // truncated escape
           "SELECT 1 /* route='a',, b='c' */",
           "SELECT 1 /* route='a', */",
           "SELECT 1 /* */",
           "SELECT 1 /* route='a'",  // unterminated comment
           "/* route='a' SELECT 1",
           "SELECT '*/' ",
       }) {
    EXPECT_TRUE(parse_sqlcomment_tags(sql).empty()) << sql;
  }
}

// --- states -------------------------------------------------------------------------------------

TEST(LeaseStateTest, Names) {
  EXPECT_EQ(to_string(lease_state(true, false)), "active");
  EXPECT_EQ(to_string(lease_state(true, true)), "active");
  EXPECT_EQ(to_string(lease_state(false, true)), "idle_in_transaction");
  EXPECT_EQ(to_string(lease_state(false, false)), "idle_pinned");
}

// --- the lease record ---------------------------------------------------------------------------

TEST(LeaseRecordTest, FirstStatementSkipsDriverBegin) {
  Lease lease;
  lease.on_message('Q', q_body("BEGIN"), true);
  EXPECT_FALSE(lease.have_first);
  EXPECT_EQ(lease.last.view(), "BEGIN");
  lease.begin(Lease::Clock::now(), 1234);
  lease.on_message('Q', q_body("SELECT id FROM carts /* route='checkout',controller='cart' */"),
                   true);
  lease.on_message('Q', q_body("UPDATE t SET x = 2"), true);
  EXPECT_TRUE(lease.held);
  EXPECT_EQ(lease.backend_pid, 1234);
  EXPECT_EQ(lease.statements, 3U);
  EXPECT_EQ(lease.first.view(), "SELECT id FROM carts /* route='checkout',controller='cart' */");
  EXPECT_EQ(lease.last.view(), "UPDATE t SET x = 2");
  EXPECT_NE(lease.xact_start, Lease::Clock::time_point{});
  lease.reset();
  EXPECT_FALSE(lease.held);
  EXPECT_EQ(lease.statements, 0U);
  EXPECT_TRUE(lease.first.empty());
  EXPECT_TRUE(lease.last.empty());
  EXPECT_EQ(lease.xact_start, Lease::Clock::time_point{});
}

TEST(LeaseRecordTest, ParseCarriesTextExecuteCounts) {
  Lease lease;
  lease.on_message('P', p_body("s1", "SELECT * FROM t WHERE id = $1"), true);
  lease.on_message('E', std::string("\0\0\0\0\0", 5), true);
  EXPECT_EQ(lease.statements, 1U);
  EXPECT_EQ(lease.first.view(), "SELECT * FROM t WHERE id = $1");
  // A Parse whose statement name is cut off by the buffer end gives no text.
  lease.on_message('P', "s2", false);
  EXPECT_EQ(lease.last.view(), "SELECT * FROM t WHERE id = $1");
}

TEST(LeaseRecordTest, LastStatementOfALongQueryIsItsPrefix) {
  Lease lease;
  lease.on_message('Q', q_body("SELECT a FROM t"), true);
  const std::string sql = "INSERT INTO t VALUES " + std::string(5000, 'v');
  lease.on_message('Q', q_body(sql), true);
  EXPECT_EQ(lease.last.view(), sql.substr(0, 200));
  lease.on_message('P', p_body("stmt_1", sql), true);
  EXPECT_EQ(lease.last.view(), sql.substr(0, 200));
  lease.on_message('Q', q_body("SELECT 2"), true);
  EXPECT_EQ(lease.last.view(), "SELECT 2");
  EXPECT_EQ(lease.first.view(), "SELECT a FROM t");
}

TEST(LeaseRecordTest, PartialBodyCapturesThePrefix) {
  Lease lease;
  const std::string sql = "SELECT " + std::string(500, 'x');
  lease.on_message('Q', std::string_view(sql).substr(0, 60), false);
  EXPECT_EQ(lease.first.view(), sql.substr(0, 60));
  EXPECT_EQ(statement_text('Q', sql.substr(0, 60)), sql.substr(0, 60));
}

TEST(LeaseRecordTest, LongFirstStatementKeepsItsTrailingTags) {
  Lease lease;
  const std::string sql = "SELECT " + std::string(400, 'x') + " /* route='long',file='a.py:7' */";
  lease.on_message('Q', q_body(sql), true);
  EXPECT_EQ(lease.first.view().size(), 200U);
  EXPECT_EQ(format_tags(lease.tag_comments.tags()), "route=long,file=a.py:7");
}

TEST(LeaseRecordTest, FirstStatementIsTheApplicationsNotTheDriversHousekeeping) {
  // asyncpg in a transaction: BEGIN, its type lookup, then the application's statement.
  Lease lease;
  lease.on_message('Q', q_body("BEGIN;"), true);
  lease.on_message('P',
                   p_body("",
                          "SELECT t.oid, t.typelem AS elemtype FROM pg_catalog.pg_type "
                          "AS t WHERE t.oid = $1"),
                   true);
  lease.on_message('E', std::string("\0\0\0\0\0", 5), true);
  EXPECT_FALSE(lease.have_first);
  EXPECT_EQ(lease.first.view(), "BEGIN;");  // all housekeeping so far: the first one
  lease.on_message('P', p_body("", "SELECT * FROM orders WHERE id = $1 /* route='/api/status' */"),
                   true);
  lease.on_message('E', std::string("\0\0\0\0\0", 5), true);
  lease.on_message('Q', q_body("SELECT 1 /* route='/api/status',controller='health' */"), true);
  EXPECT_TRUE(lease.have_first);
  EXPECT_EQ(lease.first.view(), "SELECT * FROM orders WHERE id = $1 /* route='/api/status' */");
  EXPECT_EQ(lease.last.view(), "SELECT 1 /* route='/api/status',controller='health' */");
  EXPECT_EQ(lease.statements, 4U);  // BEGIN, two Executes, the ping
  // The union of all statements' tags, each pair once.
  EXPECT_EQ(format_tags(lease.tag_comments.tags()), "route=/api/status,controller=health");
  lease.reset();
  EXPECT_TRUE(lease.tag_comments.empty());
  EXPECT_FALSE(lease.have_first);
}

TEST(LeaseRecordTest, TagsOfAStatementAfterLeadingHousekeepingInOneText) {
  Lease lease;
  lease.on_message('Q', q_body("BEGIN; /* route='x' */ UPDATE t SET y = 1"), true);
  EXPECT_EQ(lease.first.view(), "/* route='x' */ UPDATE t SET y = 1");
  EXPECT_EQ(format_tags(lease.tag_comments.tags()), "route=x");
}

TEST(LeaseRecordTest, ReadyForQueryTracksIdleAndTransaction) {
  Lease lease;
  const auto t0 = Lease::Clock::now();
  lease.on_message('Q', q_body("BEGIN"), true);
  lease.begin(t0, 1);
  const auto xact = lease.xact_start;
  lease.on_ready(true, 0, t0 + 1s);  // 'T', nothing owed
  EXPECT_EQ(lease.idle_since, t0 + 1s);
  EXPECT_EQ(lease.xact_start, xact);
  lease.on_ready(false, 1, t0 + 2s);  // 'I' with a pipelined query behind it
  EXPECT_EQ(lease.idle_since, t0 + 1s);
  EXPECT_EQ(lease.xact_start, t0 + 2s);
  lease.on_ready(false, 0, t0 + 3s);  // 'I', nothing owed: no transaction
  EXPECT_EQ(lease.idle_since, t0 + 3s);
  EXPECT_EQ(lease.xact_start, Lease::Clock::time_point{});
}

// --- thresholds and config ----------------------------------------------------------------------

pgw::config::Config load(const std::string& text) {
  std::vector<pgw::config::Warning> warnings;
  return pgw::config::load_string(text, "pgbouncer.ini", warnings);
}

TEST(LeaseConfigTest, LeakWarnAfterDefaultsAndParses) {
  EXPECT_EQ(load("").leak_warn_after, 60s);
  EXPECT_EQ(load("[pgbouncer]\nleak_warn_after = 2\n").leak_warn_after, 2s);
  EXPECT_EQ(load("[pgbouncer]\nleak_warn_after = 0\n").leak_warn_after, 0s);
  EXPECT_THROW(load("[pgbouncer]\nleak_warn_after = soon\n"), pgw::config::ConfigError);
  auto c = load("");
  pgw::config::set_key(c, "leak_warn_after", "5");
  EXPECT_EQ(c.leak_warn_after, 5s);
  EXPECT_TRUE(pgw::config::is_runtime_changeable("leak_warn_after"));
  bool listed = false;
  for (const auto& [key, value] : pgw::config::show_config_rows(c)) {
    if (key == "leak_warn_after") listed = value == "5";
  }
  EXPECT_TRUE(listed);
}

TEST(LeaseConfigTest, PerAppThresholdFirstMatchWins) {
  const auto c = load(
      "[pgbouncer]\nleak_warn_after = 60\n"
      "[apps]\n"
      "checkout-* = leak_warn_after=5\n"
      "checkout-batch = leak_warn_after=600\n"
      "report* = max_client_conn=50\n"
      "legacy = leak_warn_after=0\n");
  ASSERT_EQ(c.apps.size(), 4U);
  auto threshold = [&](std::string_view app) { return resolve_policy(c, app).leak_warn_after; };
  EXPECT_EQ(threshold("checkout-svc"), 5s);
  EXPECT_EQ(threshold("checkout-batch"), 5s);  // the first matching line decides
  EXPECT_EQ(threshold("reports"), 60s);        // matches, but sets no leak_warn_after
  EXPECT_EQ(threshold("legacy"), 0s);
  EXPECT_EQ(threshold("other"), 60s);
  EXPECT_EQ(threshold(""), 60s);
  EXPECT_THROW(load("[apps]\nx = leak_warn_after=abc\n"), pgw::config::ConfigError);
}

TEST(LeaseConfigTest, PolicyTakesEachKeyFromTheLineOrTheGlobalValue) {
  const auto c = load(
      "[pgbouncer]\nleak_warn_after = 60\nidle_transaction_timeout = 30\n"
      "idle_pinned_timeout = 600\nquery_timeout = 10\n"
      "[apps]\n"
      "billing = idle_transaction_timeout=300 query_timeout=0\n"
      "admin-* = idle_pinned_timeout=2.5 leak_warn_after=1min\n");
  const auto billing = resolve_policy(c, "billing");
  EXPECT_EQ(billing.idle_transaction_timeout, 300s);
  EXPECT_EQ(billing.query_timeout, 0s);  // off for this application only
  EXPECT_EQ(billing.idle_pinned_timeout, 600s);
  EXPECT_EQ(billing.leak_warn_after, 60s);
  const auto admin = resolve_policy(c, "admin-ui");
  EXPECT_EQ(admin.idle_pinned_timeout, 2500ms);
  EXPECT_EQ(admin.leak_warn_after, 60s);
  EXPECT_EQ(admin.idle_transaction_timeout, 30s);
  const auto other = resolve_policy(c, "web");
  EXPECT_EQ(other.idle_transaction_timeout, 30s);
  EXPECT_EQ(other.idle_pinned_timeout, 600s);
  EXPECT_EQ(other.query_timeout, 10s);
}

TEST(LeaseConfigTest, UsersTimeoutsOverTheGlobalKeysAppsOverBoth) {
  const auto c = load(
      "[users]\n"
      "report_user = query_timeout=120 idle_transaction_timeout=30\n"
      "[pgbouncer]\nquery_timeout = 10\nidle_transaction_timeout = 5\n"
      "[apps]\n"
      "etl = query_timeout=600\n");
  EXPECT_EQ(resolve_policy(c, "web", "db", "alice").query_timeout, 10s);
  EXPECT_EQ(resolve_policy(c, "web", "db", "report_user").query_timeout, 120s);
  EXPECT_EQ(resolve_policy(c, "web", "db", "report_user").idle_transaction_timeout, 30s);
  EXPECT_EQ(resolve_policy(c, "etl", "db", "report_user").query_timeout, 600s);
  EXPECT_EQ(resolve_policy(c, "etl", "db", "report_user").idle_transaction_timeout, 30s);
}

TEST(LeaseConfigTest, TransactionTimeoutOfTheUsersEntryOverTheGlobalKey) {
  const auto c = load(
      "[users]\n"
      "report_user = transaction_timeout=600\n"
      "web_user = transaction_timeout=0\n"
      "[pgbouncer]\ntransaction_timeout = 30\n");
  EXPECT_EQ(resolve_policy(c, "web", "db", "alice").transaction_timeout, 30s);
  EXPECT_EQ(resolve_policy(c, "web", "db", "report_user").transaction_timeout, 600s);
  EXPECT_EQ(resolve_policy(c, "web", "db", "web_user").transaction_timeout, 0s);  // off for it
}

TEST(LeaseConfigTest, ReclaimUnderPressureAppOverDatabaseOverGlobalNeverBeforeTheWarning) {
  const auto c = load(
      "[databases]\n"
      "shop = host=db reclaim_under_pressure_after=4\n"
      "* = host=db\n"
      "[pgbouncer]\nleak_warn_after = 3\nreclaim_under_pressure_after = 5\n"
      "[apps]\n"
      "batch = reclaim_under_pressure_after=0\n"
      "web = reclaim_under_pressure_after=10\n"
      "eager = reclaim_under_pressure_after=1\n");
  EXPECT_EQ(load("").reclaim_under_pressure_after, 0s);  // off by default
  EXPECT_EQ(resolve_policy(c, "api", "other").reclaim_under_pressure_after, 5s);
  EXPECT_EQ(resolve_policy(c, "api", "shop").reclaim_under_pressure_after, 4s);
  EXPECT_EQ(resolve_policy(c, "web", "shop").reclaim_under_pressure_after, 10s);
  EXPECT_EQ(resolve_policy(c, "batch", "shop").reclaim_under_pressure_after, 0s);
  // Below leak_warn_after it acts as leak_warn_after: a reclaimed lease is a suspected leak.
  EXPECT_EQ(resolve_policy(c, "eager", "shop").reclaim_under_pressure_after, 3s);
  EXPECT_THROW(load("[apps]\nx = reclaim_under_pressure_after=soon\n"), pgw::config::ConfigError);
  auto changed = load("");
  pgw::config::set_key(changed, "reclaim_under_pressure_after", "2");
  EXPECT_EQ(resolve_policy(changed, "x").reclaim_under_pressure_after, 60s);  // leak_warn_after
  pgw::config::set_key(changed, "leak_warn_after", "1");
  EXPECT_EQ(resolve_policy(changed, "x").reclaim_under_pressure_after, 2s);
}

TEST(LeaseConfigTest, PolicyCacheFollowsSnapshotAndApplicationName) {
  auto first =
      load("[pgbouncer]\nidle_pinned_timeout = 5\n[apps]\nslow = idle_pinned_timeout=50\n");
  PolicyCache cache;
  EXPECT_EQ(cache.get(first, "web").idle_pinned_timeout, 5s);
  EXPECT_EQ(cache.get(first, "slow").idle_pinned_timeout, 50s);  // SET application_name
  // SET on the console: a copy with one key changed is a new snapshot.
  auto changed = first;
  pgw::config::set_key(changed, "idle_pinned_timeout", "7");
  EXPECT_NE(changed.version, first.version);
  EXPECT_EQ(cache.get(changed, "web").idle_pinned_timeout, 7s);
  // A reload: a new snapshot, even if it ends up at the old one's address.
  first = load("[pgbouncer]\nidle_pinned_timeout = 9\n");
  EXPECT_EQ(cache.get(first, "web").idle_pinned_timeout, 9s);
}

// --- events -------------------------------------------------------------------------------------

TEST(LeaseEventsTest, RingKeepsTheNewestAndListsThemFirst) {
  EventRing ring(1000);
  for (std::uint64_t i = 1; i <= 1005; ++i) {
    LeakEvent e;
    e.client_id = i;
    e.action = "leak_warning";
    ring.push(e);
  }
  const auto events = ring.newest_first();
  ASSERT_EQ(events.size(), 1000U);
  EXPECT_EQ(events.front().client_id, 1005U);
  EXPECT_EQ(events.back().client_id, 6U);
}

TEST(LeaseEventsTest, PerAppCounters) {
  LeakBook book;
  EXPECT_EQ(book.note_suspected("a"), 1U);
  EXPECT_EQ(book.note_suspected("a"), 2U);
  EXPECT_EQ(book.note_suspected("b"), 1U);
  book.note_resolved("a");
  const auto counters = book.counters();
  EXPECT_EQ(counters.at("a").suspected, 2U);
  EXPECT_EQ(counters.at("a").resolved, 1U);
  EXPECT_EQ(counters.at("b").resolved, 0U);
}

TEST(LeaseEventsTest, PrintableReplacesControlCharacters) {
  EXPECT_EQ(printable("SELECT\n1\t\x1b[31m"), "SELECT 1  [31m");
}

// --- the policy ladder: one evaluator for the janitor and the console -------------------------

LeasePolicy policy(std::chrono::seconds warn, std::chrono::seconds idle_tx,
                   std::chrono::seconds pinned, std::chrono::seconds query) {
  return LeasePolicy{warn, idle_tx, pinned, query};
}

TEST(LeaseLadderTest, IdleInTransactionWarnsThenDisconnectsInTimeOrder) {
  const auto t0 = std::chrono::steady_clock::now();
  LeaseFacts lease;
  lease.state = LeaseState::idle_in_transaction;
  lease.idle_since = t0;
  auto steps = ladder_steps(lease, policy(5s, 30s, 0s, 0s));
  ASSERT_EQ(steps.count, 2U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::warn);
  EXPECT_EQ(steps.steps[0].at, t0 + 5s);
  EXPECT_EQ(steps.steps[1].action, LadderAction::disconnect_idle_transaction);
  EXPECT_EQ(steps.steps[1].at, t0 + 30s);
  // A timeout shorter than the warning comes first; once warned, only the timeout is left.
  steps = ladder_steps(lease, policy(60s, 30s, 0s, 0s));
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_idle_transaction);
  lease.warned = true;
  steps = ladder_steps(lease, policy(5s, 30s, 0s, 0s));
  ASSERT_EQ(steps.count, 1U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_idle_transaction);
  // Equal times: the timeout is named first, as SHOW LEASES always did.
  lease.warned = false;
  steps = ladder_steps(lease, policy(30s, 30s, 0s, 0s));
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_idle_transaction);
  // Everything off: nothing planned.
  EXPECT_TRUE(ladder_steps(lease, policy(0s, 0s, 0s, 0s)).empty());
}

TEST(LeaseLadderTest, IdlePinnedTimeoutOnlyInSessionMode) {
  LeaseFacts lease;
  lease.state = LeaseState::idle_pinned;
  lease.idle_since = std::chrono::steady_clock::now();
  EXPECT_TRUE(ladder_steps(lease, policy(0s, 0s, 30s, 0s)).empty());
  lease.session_mode = true;
  const auto steps = ladder_steps(lease, policy(0s, 0s, 30s, 0s));
  ASSERT_EQ(steps.count, 1U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_idle_pinned);
  EXPECT_EQ(describe(steps.steps[0].action), "disconnect (idle_pinned_timeout)");
}

TEST(LeaseLadderTest, AQueryIsCancelledThenGivenUpOnAndNeverALeak) {
  const auto t0 = std::chrono::steady_clock::now();
  LeaseFacts lease;
  lease.state = LeaseState::active;
  lease.idle_since = t0 - 100s;
  // No query running (an open batch without Sync): no query_timeout, no warning.
  EXPECT_TRUE(ladder_steps(lease, policy(5s, 30s, 30s, 10s)).empty());
  lease.query_start = t0;
  auto steps = ladder_steps(lease, policy(5s, 30s, 30s, 10s));
  ASSERT_EQ(steps.count, 1U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::cancel_query);
  EXPECT_EQ(steps.steps[0].at, t0 + 10s);
  lease.query_cancel_sent = t0 + 11s;
  steps = ladder_steps(lease, policy(5s, 30s, 30s, 10s));
  ASSERT_EQ(steps.count, 1U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_ignored_cancel);
  EXPECT_EQ(steps.steps[0].at, t0 + 11s + kCancelGrace);
  EXPECT_FALSE(is_suspected_leak(lease, policy(5s, 0s, 0s, 0s), t0 + 1h));
}

TEST(LeaseLadderTest, TransactionTimeoutCountsFromTheFirstStatementWhateverRuns) {
  const auto t0 = std::chrono::steady_clock::now();
  auto with_transaction_timeout = [](LeasePolicy p, std::chrono::seconds limit) {
    p.transaction_timeout = limit;
    return p;
  };
  LeaseFacts lease;
  lease.xact_start = t0;
  // A query running: query_timeout's cancel and the transaction's end, in time order.
  lease.state = LeaseState::active;
  lease.query_start = t0 + 20s;
  auto steps = ladder_steps(lease, with_transaction_timeout(policy(5s, 0s, 0s, 10s), 25s));
  ASSERT_EQ(steps.count, 2U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_transaction);
  EXPECT_EQ(steps.steps[0].at, t0 + 25s);
  EXPECT_EQ(steps.steps[1].action, LadderAction::cancel_query);
  EXPECT_EQ(describe(steps.steps[0].action), "disconnect (transaction_timeout)");
  // Idle in the transaction: idle_transaction_timeout, transaction_timeout and the warning.
  lease.state = LeaseState::idle_in_transaction;
  lease.idle_since = t0 + 10s;
  steps = ladder_steps(lease, with_transaction_timeout(policy(5s, 30s, 0s, 0s), 12s));
  ASSERT_EQ(steps.count, 3U);
  EXPECT_EQ(steps.steps[0].action, LadderAction::disconnect_transaction);
  EXPECT_EQ(steps.steps[0].at, t0 + 12s);
  EXPECT_EQ(steps.steps[1].action, LadderAction::warn);
  EXPECT_EQ(steps.steps[1].at, t0 + 15s);
  EXPECT_EQ(steps.steps[2].action, LadderAction::disconnect_idle_transaction);
  EXPECT_EQ(steps.steps[2].at, t0 + 40s);
  // No transaction open (the server is idle between them, or none started): nothing; off: 0.
  lease.xact_start = {};
  EXPECT_TRUE(ladder_steps(lease, with_transaction_timeout(policy(0s, 0s, 0s, 0s), 12s)).empty());
  lease.xact_start = t0;
  lease.state = LeaseState::idle_pinned;
  EXPECT_TRUE(ladder_steps(lease, with_transaction_timeout(policy(0s, 0s, 0s, 0s), 12s)).empty());
  lease.state = LeaseState::active;
  EXPECT_TRUE(ladder_steps(lease, with_transaction_timeout(policy(0s, 0s, 0s, 0s), 0s)).empty());
}

TEST(LeaseLadderTest, ASuspectedLeakIsIdleLongerThanTheThreshold) {
  const auto t0 = std::chrono::steady_clock::now();
  LeaseFacts lease;
  lease.state = LeaseState::idle_pinned;
  lease.idle_since = t0;
  EXPECT_FALSE(is_suspected_leak(lease, policy(5s, 0s, 0s, 0s), t0 + 5s));  // not past it
  EXPECT_TRUE(is_suspected_leak(lease, policy(5s, 0s, 0s, 0s), t0 + 5s + 1ms));
  EXPECT_FALSE(is_suspected_leak(lease, policy(0s, 0s, 0s, 0s), t0 + 1h));  // off
  // Warned or not, it stays a leak until it is active again or ends.
  lease.warned = true;
  EXPECT_TRUE(is_suspected_leak(lease, policy(5s, 0s, 0s, 0s), t0 + 6s));
}

TEST(LeaseLadderTest, TheConsoleShowsWhatTheJanitorWillDo) {
  // SHOW LEASES' next_action is the first step of the same evaluator: after query_timeout's
  // cancel it announces the disconnect that follows an ignored cancel.
  pgw::admin::Snapshot s;
  auto config = pgw::config::Config{};
  config.query_timeout = 10s;
  s.config = std::make_shared<const pgw::config::Config>(config);
  s.now = std::chrono::steady_clock::now();
  SessionInfo info;
  info.id = 1;
  LeaseInfo l;
  l.client_id = 1;
  l.state = LeaseState::active;
  l.start = l.idle_since = s.now - 20s;
  l.query_start = s.now - 12s;
  info.lease = l;
  s.sessions.push_back(info);
  auto rows = pgw::admin::build_show("leases", s).rows;
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0][16], "cancel (query_timeout)");
  EXPECT_EQ(rows[0][17], "0");  // due
  s.sessions[0].lease->query_cancel_sent = s.now - 2s;
  rows = pgw::admin::build_show("leases", s).rows;
  EXPECT_EQ(rows[0][16], "disconnect (query_timeout)");
  EXPECT_EQ(rows[0][17], "3");
}

// --- client states: one name table --------------------------------------------------------------

TEST(ClientStateTest, OneRowPerStateInEnumOrderWithPgbouncersNames) {
  for (std::size_t i = 0; i < kClientStates.size(); ++i) {
    EXPECT_EQ(static_cast<std::size_t>(kClientStates[i].state), i) << kClientStates[i].name;
    EXPECT_TRUE(kClientStates[i].shown_as == "login" || kClientStates[i].shown_as == "idle" ||
                kClientStates[i].shown_as == "active" || kClientStates[i].shown_as == "waiting")
        << kClientStates[i].name;
  }
  EXPECT_EQ(static_cast<std::size_t>(ClientState::closing) + 1, kClientStates.size());
  EXPECT_EQ(to_string(ClientState::linking), "linking");
  // Waiting for a server, in every form, is PgBouncer's "waiting" (SHOW POOLS cl_waiting).
  for (auto state : {ClientState::waiting_login, ClientState::waiting, ClientState::linking}) {
    EXPECT_EQ(names_of(state).shown_as, "waiting");
    EXPECT_EQ(names_of(state).list, ClientList::waiting);
  }
  EXPECT_EQ(names_of(ClientState::closing).list, ClientList::none);
  EXPECT_EQ(names_of(ClientState::login).list, ClientList::none);
}

// --- console ------------------------------------------------------------------------------------

TEST(LeaseConsoleTest, ShowSubjectsAndColumns) {
  using pgw::admin::column_names;
  EXPECT_TRUE(pgw::admin::is_show_subject("leases"));
  EXPECT_TRUE(pgw::admin::is_show_subject("leaks"));
  EXPECT_TRUE(pgw::admin::is_show_subject("events"));
  const std::vector<std::string> lease_columns{"client_id",
                                               "application_name",
                                               "user",
                                               "database",
                                               "client_addr",
                                               "client_port",
                                               "backend_pid",
                                               "state",
                                               "lease_age_s",
                                               "xact_age_s",
                                               "idle_s",
                                               "statements",
                                               "first_query",
                                               "last_query",
                                               "tags",
                                               "action_taken",
                                               "next_action",
                                               "next_action_in_s",
                                               "session_state",
                                               "session_state_since",
                                               "session_state_query",
                                               "pinned"};
  EXPECT_EQ(column_names("leaks"), lease_columns);
  EXPECT_EQ(column_names("leases"), lease_columns);
  EXPECT_EQ(column_names("events"),
            (std::vector<std::string>{"time", "client_id", "application_name", "action", "reason",
                                      "lease_age_s", "first_query"}));
}

TEST(LeaseConsoleTest, LeaksListsOnlyIdleLeasesPastTheThreshold) {
  pgw::admin::Snapshot s;
  auto config = load("[pgbouncer]\nleak_warn_after = 2\nidle_transaction_timeout = 10\n");
  s.config = std::make_shared<const pgw::config::Config>(config);
  s.now = std::chrono::steady_clock::now();
  auto add = [&](std::uint64_t id, LeaseState state, std::chrono::seconds age,
                 std::chrono::seconds idle, bool warned) {
    SessionInfo info;
    info.id = id;
    LeaseInfo l;
    l.client_id = id;
    l.state = state;
    l.start = s.now - age;
    l.idle_since = s.now - idle;
    l.xact_start = l.start;
    l.first_query = "SELECT " + std::to_string(id);
    l.warned = warned;
    info.lease = l;
    s.sessions.push_back(info);
  };
  add(1, LeaseState::idle_in_transaction, 5s, 3s, true);  // leak, warned
  add(2, LeaseState::active, 50s, 50s, false);            // active: never a leak
  add(3, LeaseState::idle_pinned, 1s, 1s, false);         // not yet
  add(4, LeaseState::idle_pinned, 9s, 9s, false);         // leak, older
  const auto leaks = pgw::admin::build_show("leaks", s);
  ASSERT_EQ(leaks.rows.size(), 2U);
  EXPECT_EQ(leaks.rows[0][0], "4");  // oldest first
  EXPECT_EQ(leaks.rows[1][0], "1");
  EXPECT_EQ(leaks.rows[1][7], "idle_in_transaction");
  EXPECT_EQ(leaks.rows[1][15], "warned");
  EXPECT_EQ(leaks.rows[1][16], "disconnect (idle_transaction_timeout)");
  EXPECT_EQ(leaks.rows[1][17], "7");
  const auto leases = pgw::admin::build_show("leases", s);
  ASSERT_EQ(leases.rows.size(), 4U);
  EXPECT_EQ(leases.rows[3][0], "3");
  EXPECT_EQ(leases.rows[3][16], "warn (leak_warn_after)");
  EXPECT_EQ(leases.rows[3][17], "1");
  EXPECT_EQ(leases.rows[0][0], "2");
  EXPECT_FALSE(leases.rows[0][10].has_value());  // active: idle_s NULL
  EXPECT_EQ(leases.rows[0][16], "");             // no query_timeout: nothing planned
  EXPECT_FALSE(leases.rows[0][17].has_value());
}

TEST(LeaseConsoleTest, CancelClientParses) {
  auto parsed = pgw::admin::parse_command("cancel_client 42;");
  auto* command = std::get_if<pgw::admin::Command>(&parsed);
  ASSERT_NE(command, nullptr);
  EXPECT_EQ(command->verb, pgw::admin::Verb::cancel_client);
  EXPECT_EQ(command->arg, "42");
  EXPECT_TRUE(
      std::holds_alternative<pgw::admin::ParseError>(pgw::admin::parse_command("CANCEL_CLIENT x")));
}

TEST(LeaseConsoleTest, LeaseTallySurvivesTheEndOfALease) {
  Lease lease;
  const auto now = std::chrono::steady_clock::now();
  lease.begin(now, 42);
  lease.on_ready(true, 0, now);   // BEGIN: a query, no transaction ended
  lease.on_ready(false, 0, now);  // COMMIT: a query that ends a transaction
  lease.reset();                  // the server went back to the pool
  lease.on_ready(false, 0, now);  // the next transaction, on another lease
  EXPECT_EQ(lease.tally.queries, 3U);
  EXPECT_EQ(lease.tally.transactions, 2U);
  const SessionTally reported{1, 1};
  EXPECT_EQ((lease.tally - reported).queries, 2U);
  EXPECT_FALSE((lease.tally - reported).empty());
  EXPECT_TRUE((lease.tally - lease.tally).empty());
}

TEST(LeaseConsoleTest, IdlePinnedTimeoutIsTheNextActionInSessionModeOnly) {
  pgw::admin::Snapshot s;
  auto config = load(
      "[pgbouncer]\nleak_warn_after = 0\nidle_pinned_timeout = 30\n"
      "[apps]\nbilling = idle_transaction_timeout=300\n");
  s.config = std::make_shared<const pgw::config::Config>(config);
  s.now = std::chrono::steady_clock::now();
  auto add = [&](std::uint64_t id, LeaseState state, bool session_mode, std::string app) {
    SessionInfo info;
    info.id = id;
    info.state = ClientState::active;
    info.application_name = app;
    LeaseInfo l;
    l.client_id = id;
    l.application_name = app;
    l.state = state;
    l.session_mode = session_mode;
    l.start = l.idle_since = s.now - 10s;
    info.lease = l;
    s.sessions.push_back(info);
  };
  add(1, LeaseState::idle_pinned, true, "web");
  add(2, LeaseState::idle_pinned, false, "web");
  add(3, LeaseState::idle_in_transaction, false, "billing");  // its own timeout: 300 s
  const auto leases = pgw::admin::build_show("leases", s);
  ASSERT_EQ(leases.rows.size(), 3U);
  EXPECT_EQ(leases.rows[0][16], "disconnect (idle_pinned_timeout)");
  EXPECT_EQ(leases.rows[0][17], "20");
  EXPECT_EQ(leases.rows[1][16], "");
  EXPECT_EQ(leases.rows[2][16], "disconnect (idle_transaction_timeout)");
  EXPECT_EQ(leases.rows[2][17], "290");
}

TEST(LeaseConsoleTest, ShowAppsColumns) {
  EXPECT_TRUE(pgw::admin::is_show_subject("apps"));
  EXPECT_EQ(pgw::admin::column_names("apps"),
            (std::vector<std::string>{
                "application_name", "clients", "waiting", "active", "idle_in_transaction",
                "idle_pinned", "total_xact_count", "total_query_count", "leaks", "total_leaks",
                "total_actions", "client_growth_per_min", "lease_growth_per_min", "growth_alarm",
                "max_client_conn", "max_server_conn", "apps_pattern"}));
}

TEST(LeaseConsoleTest, ShowAppsRows) {
  pgw::admin::Snapshot s;
  auto config = load(
      "[pgbouncer]\nleak_warn_after = 5\n"
      "[apps]\ncheckout-* = max_client_conn=200 max_server_conn=8\n");
  s.config = std::make_shared<const pgw::config::Config>(config);
  s.now = std::chrono::steady_clock::now();
  auto add = [&](std::string app, ClientState state, std::optional<LeaseState> lease,
                 std::chrono::seconds idle, SessionTally unreported, bool admin = false) {
    SessionInfo info;
    info.application_name = app;
    info.state = state;
    info.admin = admin;
    info.unreported = unreported;
    if (lease) {
      LeaseInfo l;
      l.application_name = app;
      l.state = *lease;
      l.start = l.idle_since = s.now - idle;
      info.lease = l;
    }
    s.sessions.push_back(info);
  };
  add("checkout-svc", ClientState::active, LeaseState::idle_in_transaction, 9s, {3, 1});  // a leak
  add("checkout-svc", ClientState::active, LeaseState::active, 9s, {});
  add("checkout-svc", ClientState::waiting, std::nullopt, 0s, {});
  add("checkout-svc", ClientState::login, std::nullopt, 0s, {});  // not a client yet
  add("report", ClientState::idle, std::nullopt, 0s, {2, 2});
  add("psql", ClientState::active, std::nullopt, 0s, {}, true);  // the console: not listed
  s.apps["checkout-svc"].totals = {100, 40};
  s.apps["checkout-svc"].client_growth_per_min = 1.26;
  s.apps["checkout-svc"].lease_growth_per_min = 0;
  s.apps["checkout-svc"].alarm = GrowthDetector::Series::clients;
  s.apps["gone"].totals = {7, 7};
  s.leak_counters["checkout-svc"] = {4, 3, 2};
  const auto apps = pgw::admin::build_show("apps", s);
  ASSERT_EQ(apps.rows.size(), 3U);
  using Row = pgw::admin::Row;
  auto cell = [](const char* text) { return pgw::admin::Cell{text}; };
  const pgw::admin::Cell null;
  EXPECT_EQ(apps.rows[0],
            (Row{cell("checkout-svc"), cell("3"), cell("1"), cell("1"), cell("1"), cell("0"),
                 cell("41"), cell("103"), cell("1"), cell("4"), cell("2"), cell("1.3"), cell("0.0"),
                 cell("clients"), cell("200"), cell("8"), cell("checkout-*")}));
  // Disconnected long ago: totals only, no growth data, no [apps] line.
  EXPECT_EQ(apps.rows[1], (Row{cell("gone"), cell("0"), cell("0"), cell("0"), cell("0"), cell("0"),
                               cell("7"), cell("7"), cell("0"), cell("0"), cell("0"), null, null,
                               cell(""), null, null, null}));
  EXPECT_EQ(apps.rows[2][0], "report");
  EXPECT_EQ(apps.rows[2][1], "1");
  EXPECT_EQ(apps.rows[2][6], "2");
}

TEST(LeaseConsoleTest, GrowthEventsHaveNoClient) {
  pgw::admin::Snapshot s;
  s.config = std::make_shared<const pgw::config::Config>();
  LeakEvent event;
  event.application_name = "leaky";
  event.action = "growth_alarm";
  s.events.push_back(event);
  const auto rows = pgw::admin::build_show("events", s).rows;
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_FALSE(rows[0][1].has_value());
  EXPECT_EQ(rows[0][3], "growth_alarm");
}

TEST(LeaseConsoleTest, KillAppParses) {
  using pgw::admin::Command;
  using pgw::admin::ParseError;
  using pgw::admin::Verb;
  for (const auto& [sql, name] : std::vector<std::pair<std::string, std::string>>{
           {"KILL_APP checkout-svc", "checkout-svc"},
           {"kill_app Checkout.Svc;", "Checkout.Svc"},  // the name keeps its case
           {"KILL_APP \"my app\"", "my app"},
           {"KILL_APP 'my app'", "my app"},
           {"KILL_APP ''", ""}}) {
    auto parsed = pgw::admin::parse_command(sql);
    auto* command = std::get_if<Command>(&parsed);
    ASSERT_NE(command, nullptr) << sql;
    EXPECT_EQ(command->verb, Verb::kill_app) << sql;
    EXPECT_EQ(command->arg, name) << sql;
    EXPECT_TRUE(pgw::admin::needs_admin(*command));
    EXPECT_EQ(pgw::admin::verb_name(command->verb), "KILL_APP");
  }
  for (const char* sql : {"KILL_APP", "KILL_APP a b", "KILL_APP ="}) {
    auto parsed = pgw::admin::parse_command(sql);
    ASSERT_TRUE(std::holds_alternative<ParseError>(parsed)) << sql;
    EXPECT_EQ(std::get<ParseError>(parsed).code, pgw::Err::admin_syntax_error) << sql;
  }
}

}  // namespace
