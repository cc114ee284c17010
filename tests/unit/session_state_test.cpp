// Session state in transaction pooling (src/protocol/session_state.hpp): what the scanner finds
// in statement texts, and how SessionState settles the effects with the server's replies.
#include "protocol/session_state.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace pgw::proto {
namespace {

using Kind = SessionStateKind;
using Op = SessionStateOp;
using Clock = SessionState::Clock;

std::string_view op_name(Op op) {
  switch (op) {
    case Op::create:
      return "create";
    case Op::release:
      return "release";
    case Op::release_all:
      return "release_all";
    case Op::discard_all:
      return "discard_all";
    case Op::rollback:
      return "rollback";
  }
  return "?";
}

// The effects as text: "kind.op[+] [name][ = value]" joined with "; " ('+': replayable).
std::string effects(const SessionStateScan& scan) {
  std::string out;
  for (const auto& e : scan.list()) {
    if (!out.empty()) out += "; ";
    out += to_string(e.kind);
    out += '.';
    out += op_name(e.op);
    if (e.replayable) out += '+';
    if (!e.name.empty()) {
      out += ' ';
      out += e.name;
    }
    if (!e.value.empty()) {
      out += " = ";
      out += e.value;
    }
  }
  if (scan.overflow) out += "; ...";
  return out;
}
std::string effects(std::string_view sql, bool complete = true) {
  return effects(scan_session_state(sql, complete));
}

struct Case {
  std::string_view sql;
  std::string_view expected;
};

void check_table(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    EXPECT_EQ(effects(c.sql), c.expected) << "statement: " << c.sql;
  }
}

// ---------------------------------------------------------------------------------------------
// The scanner.

TEST(SessionStateScan, Set) {
  check_table({
      {"SET search_path TO a, b", "parameter.create+ search_path"},
      {"set Search_Path = a", "parameter.create+ Search_Path"},
      {"SeT work_mem='64MB'", "parameter.create+ work_mem"},
      {"SET SESSION work_mem = '64MB'", "parameter.create+ work_mem"},
      {"SET myapp.tenant = 'x'", "parameter.create+ myapp.tenant"},
      {"SET \"MyApp\".tenant TO 1", "parameter.create+ \"MyApp\".tenant"},
      {"SET \"Search_Path\" TO x", "parameter.create+ \"Search_Path\""},
      {"SET LOCAL work_mem = 1", ""},
      {"set local role admin", ""},
      {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ""},
      {"SET CONSTRAINTS ALL DEFERRED", ""},
      {"SET work_mem TO DEFAULT", "parameter.release work_mem"},
      {"SET SESSION work_mem = default", "parameter.release work_mem"},
      {"SET work_mem = 'default'", "parameter.create+ work_mem"},
      {"SET search_path FROM CURRENT", "parameter.create search_path"},
      {"SET TIME ZONE 'UTC'", "parameter.create+ timezone"},
      {"set time zone interval '+02:00' hour to minute", "parameter.create+ timezone"},
      {"SET TIME ZONE DEFAULT", "parameter.release timezone"},
      {"SET TIME ZONE LOCAL", "parameter.release timezone"},
      {"SET timezone = 'UTC'", "parameter.create+ timezone"},
      {"SET NAMES 'UTF8'", "parameter.create+ client_encoding"},
      {"SET NAMES DEFAULT", "parameter.release client_encoding"},
      {"SET SCHEMA 'app'", "parameter.create+ search_path"},
      {"SET XML OPTION DOCUMENT", "parameter.create+ xmloption"},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
       "parameter.create+ transaction_characteristics"},
      {"SET ROLE admin", "role.create+ role"},
      {"SET SESSION ROLE 'admin'", "role.create+ role"},
      {"SET ROLE NONE", "role.release role"},
      {"set role none", "role.release role"},
      {"SET role TO admin", "role.create+ role"},
      {"SET role = DEFAULT", "role.release role"},
      {"SET SESSION AUTHORIZATION alice", "role.create+ session_authorization"},
      {"SET SESSION SESSION AUTHORIZATION 'alice'", "role.create+ session_authorization"},
      {"SET SESSION AUTHORIZATION DEFAULT", "role.release session_authorization"},
      {"SET", ""},
      {"SET x", "parameter.create x"},
      {"SET x =", ""},
  });
}

TEST(SessionStateScan, Reset) {
  check_table({
      {"RESET search_path", "parameter.release search_path"},
      {"reset Myapp.Tenant", "parameter.release Myapp.Tenant"},
      {"RESET \"Work_Mem\"", "parameter.release \"Work_Mem\""},
      {"RESET ALL", "parameter.release_all"},
      {"RESET TIME ZONE", "parameter.release timezone"},
      {"RESET ROLE", "role.release role"},
      {"reset role", "role.release role"},
      {"RESET SESSION AUTHORIZATION", "role.release session_authorization"},
      {"RESET session_authorization", "role.release session_authorization"},
      {"RESET TRANSACTION ISOLATION LEVEL", ""},
      {"RESET", ""},
  });
}

TEST(SessionStateScan, AdvisoryLocks) {
  check_table({
      {"SELECT pg_advisory_lock(1)", "advisory_lock.create"},
      {"select PG_ADVISORY_LOCK_SHARED(1), pg_try_advisory_lock(2)",
       "advisory_lock.create; advisory_lock.create"},
      {"SELECT pg_try_advisory_lock_shared(1, 2)", "advisory_lock.create"},
      {"SELECT pg_catalog.pg_advisory_lock(1)", "advisory_lock.create"},
      {"SELECT \"pg_catalog\".\"pg_advisory_lock\"(1)", "advisory_lock.create"},
      {"SELECT pg_advisory_lock (1)", "advisory_lock.create"},
      {"SELECT pg_advisory_lock/* c */(1)", "advisory_lock.create"},
      {"SELECT myschema.pg_advisory_lock(1)", ""},
      {"SELECT \"PG_ADVISORY_LOCK\"(1)", ""},
      {"SELECT pg_advisory_xact_lock(1)", ""},
      {"SELECT pg_advisory_xact_lock_shared(1)", ""},
      {"SELECT pg_try_advisory_xact_lock(1)", ""},
      {"SELECT pg_advisory_lock", ""},
      {"SELECT t.pg_advisory_lock FROM t", ""},
      {"SELECT pg_advisory_unlock(1)", "advisory_lock.release"},
      {"SELECT pg_advisory_unlock_shared(1)", "advisory_lock.release"},
      {"SELECT pg_advisory_unlock_all()", "advisory_lock.release_all"},
      {"WITH x AS (SELECT pg_advisory_lock(1)) SELECT * FROM x", "advisory_lock.create"},
      {"INSERT INTO t VALUES (1) RETURNING pg_advisory_lock(id)", "advisory_lock.create"},
      {"CALL p(pg_advisory_lock(1))", "advisory_lock.create"},
      {"SELECT \"pg_advisory_lock\"(1)", "advisory_lock.create"},
      {"SELECT 1 FROM t WHERE pg_try_advisory_lock(t.id) AND pg_advisory_unlock(t.id)",
       "advisory_lock.create; advisory_lock.release"},
  });
}

TEST(SessionStateScan, SetConfig) {
  check_table({
      {"SELECT set_config('search_path', 'a, b', false)",
       "parameter.create+ 'search_path' = 'a, b'"},
      {"SELECT pg_catalog.set_config('App.Tenant', '42', 'off')",
       "parameter.create+ 'App.Tenant' = '42'"},
      {"select SET_CONFIG('x', 'y', FALSE)", "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', 'y', 'f')", "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', 'y', 'No')", "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', 'y', '0')", "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', 'y', 0)", "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', $$it's$$, false)", "parameter.create+ 'x' = $$it's$$"},
      {"SELECT set_config('x', 'y', true)", ""},
      {"SELECT set_config('x', 'y', 'on')", ""},
      {"SELECT set_config('x', 'y', 't')", ""},
      {"SELECT set_config('x', 'y', 1)", ""},
      {"SELECT set_config('x', $1, false)", "parameter.create 'x'"},
      {"SELECT set_config($1, $2, $3)", "parameter.create"},
      {"SELECT set_config('x', 'y', is_local) FROM t", "parameter.create 'x' = 'y'"},
      {"SELECT set_config('x', 'y', 'maybe')", "parameter.create 'x' = 'y'"},
      {"SELECT set_config('x', 'y' || 'z', false)", "parameter.create 'x'"},
      {"SELECT set_config('x', lower('Y'), false)", "parameter.create 'x'"},
      {"SELECT set_config('x', 'y', false::boolean)", "parameter.create 'x' = 'y'"},
      {"SELECT set_config('x', 'y')", "parameter.create 'x'"},
      {"SELECT set_config('x', 'y', false", "parameter.create 'x'"},
      {"SELECT set_config('role', 'admin', false)", "role.create+ 'role' = 'admin'"},
      {"SELECT set_config('x', 'y', false), set_config('z', 'w', true)",
       "parameter.create+ 'x' = 'y'"},
      {"SELECT set_config('x', pg_advisory_lock(1)::text, false)",
       "parameter.create 'x'; advisory_lock.create"},
      {"SELECT other.set_config('x', 'y', false)", ""},
      {"SELECT set_config", ""},
  });
}

TEST(SessionStateScan, ListenPrepareCursorsLoadDiscard) {
  check_table({
      {"LISTEN ch", "listen.create ch"},
      {"listen \"Ch\"", "listen.create \"Ch\""},
      {"UNLISTEN ch", "listen.release ch"},
      {"UNLISTEN *", "listen.release_all"},
      {"PREPARE q (int) AS SELECT $1", "sql_prepare.create q"},
      {"prepare Q as select 1", "sql_prepare.create Q"},
      {"PREPARE TRANSACTION 'gid'", ""},
      {"DEALLOCATE q", "sql_prepare.release q"},
      {"DEALLOCATE PREPARE q", "sql_prepare.release q"},
      {"DEALLOCATE ALL", "sql_prepare.release_all"},
      {"deallocate prepare all", "sql_prepare.release_all"},
      {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "hold_cursor.create c"},
      {"DECLARE c BINARY NO SCROLL CURSOR with hold FOR SELECT 1", "hold_cursor.create c"},
      {"DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", ""},
      {"DECLARE c CURSOR FOR SELECT 1", ""},
      {"DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", ""},
      {"DECLARE c CURSOR FOR SELECT 'WITH HOLD'", ""},
      {"CLOSE c", "hold_cursor.release c"},
      {"CLOSE ALL", "hold_cursor.release_all"},
      {"LOAD 'auto_explain'", "load.create 'auto_explain'"},
      {"DISCARD ALL", "parameter.discard_all"},
      {"DISCARD TEMP", "temp_table.release_all"},
      {"discard temporary", "temp_table.release_all"},
      {"DISCARD PLANS", ""},
      {"DISCARD SEQUENCES", ""},
  });
}

TEST(SessionStateScan, TempTables) {
  check_table({
      {"CREATE TEMP TABLE t (a int)", "temp_table.create t"},
      {"CREATE TEMPORARY TABLE IF NOT EXISTS s.t (a int)", "temp_table.create s.t"},
      {"create global temporary table T (a int)", "temp_table.create T"},
      {"CREATE LOCAL TEMP TABLE t ()", "temp_table.create t"},
      {"CREATE TEMP UNLOGGED TABLE t ()", "temp_table.create t"},
      {"CREATE TEMP SEQUENCE s", "temp_table.create s"},
      {"CREATE TEMP VIEW v AS SELECT 1", "temp_table.create v"},
      {"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "temp_table.create v"},
      {"CREATE TEMP RECURSIVE VIEW v (a) AS SELECT 1", "temp_table.create v"},
      {"CREATE TEMP TABLE t AS SELECT 1", "temp_table.create t"},
      {"CREATE TEMP TABLE t (a int) ON COMMIT DROP", ""},
      {"CREATE TEMP TABLE t (a int) on commit drop", ""},
      {"CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", "temp_table.create t"},
      {"CREATE TEMP TABLE t (a int) ON COMMIT PRESERVE ROWS", "temp_table.create t"},
      {"CREATE TABLE pg_temp.t (a int)", "temp_table.create pg_temp.t"},
      {"CREATE TABLE \"pg_temp\".t (a int)", "temp_table.create \"pg_temp\".t"},
      {"CREATE VIEW pg_temp.v AS SELECT 1", "temp_table.create pg_temp.v"},
      {"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
       "temp_table.create pg_temp.f"},
      {"CREATE TABLE t (a int)", ""},
      {"CREATE UNLOGGED TABLE t (a int)", ""},
      {"CREATE TABLE temp (a int)", ""},
      {"CREATE INDEX ON t (a)", ""},
      {"DROP TABLE t", "temp_table.release t"},
      {"DROP TABLE a, s.b CASCADE", "temp_table.release a; temp_table.release s.b"},
      {"drop table if exists pg_temp.a", "temp_table.release pg_temp.a"},
      {"DROP SEQUENCE s", "temp_table.release s"},
      {"DROP VIEW v RESTRICT", "temp_table.release v"},
      {"DROP INDEX i", ""},
      {"SELECT 1 AS a INTO TEMP t", "temp_table.create t"},
      {"SELECT * INTO TEMPORARY TABLE t FROM x", "temp_table.create t"},
      {"select * into local temp t from x", "temp_table.create t"},
      {"SELECT * INTO t FROM x", ""},
      {"WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x", "temp_table.create t"},
      {"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", ""},
  });
}

TEST(SessionStateScan, Rollback) {
  check_table({
      {"ROLLBACK", "parameter.rollback"},
      {"rollback work", "parameter.rollback"},
      {"ABORT", "parameter.rollback"},
      {"ABORT TRANSACTION", "parameter.rollback"},
      {"ROLLBACK AND NO CHAIN", "parameter.rollback"},
      {"ROLLBACK AND CHAIN", "parameter.rollback"},
      {"ROLLBACK TO SAVEPOINT s", ""},
      {"ROLLBACK TO s", ""},
      {"ROLLBACK WORK TO SAVEPOINT s", ""},
      {"ROLLBACK PREPARED 'gid'", ""},
      {"COMMIT", ""},
      {"BEGIN", ""},
  });
}

TEST(SessionStateScan, HiddenInCommentsStringsAndOtherStatements) {
  check_table({
      {"SELECT 'SET x = 1'", ""},
      {"SELECT 'pg_advisory_lock(1)'", ""},
      {"SELECT $$ pg_advisory_lock(1) $$", ""},
      {"SELECT $tag$ $$ pg_advisory_lock(1) $$ $tag$", ""},
      {"SELECT $a$ x $b$ pg_advisory_lock(1) $a$", ""},
      {"-- LISTEN x\nSELECT 1", ""},
      {"SELECT 1 -- ; LISTEN x", ""},
      {"/* LISTEN x /* nested */ LISTEN y */ SELECT 1", ""},
      {"/* a /* b */ pg_advisory_lock(1) */ SELECT 1", ""},
      {"SELECT \"pg_advisory_lock(1)\"", ""},
      {"SELECT E'\\' pg_advisory_lock(1)'", ""},
      {"SELECT e'\\\\', pg_advisory_lock(1)", "advisory_lock.create"},
      {"SELECT 'a\\', pg_advisory_lock(1), 'b'", "advisory_lock.create"},
      {"SELECT 'it''s', pg_advisory_lock(1)", "advisory_lock.create"},
      {"SELECT $1, pg_advisory_lock($2)", "advisory_lock.create"},
      {"SELECT a$$b, pg_advisory_lock(1)", "advisory_lock.create"},
      {"SELECT U&'\\0041', U&\"x\", pg_advisory_lock(1)", "advisory_lock.create"},
      {"UPDATE t SET a = 1", ""},
      {"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 5", ""},
      {"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", ""},
      {"INSERT INTO t (listen, reset) VALUES (1, 2)", ""},
      {"ALTER ROLE r SET search_path = a", ""},
      {"ALTER DATABASE d RESET ALL", ""},
      {"EXPLAIN SELECT 1", ""},
      {"DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$", ""},
  });
}

TEST(SessionStateScan, MultipleStatements) {
  check_table({
      {"SELECT 1; SET a.b = 1; SELECT 2", "parameter.create+ a.b"},
      {"SET a = 1; SET b = 2", "parameter.create+ a; parameter.create+ b"},
      {"SELECT 'x;' ; LISTEN c", "listen.create c"},
      {";;; LISTEN c;;", "listen.create c"},
      {"SELECT (1; LISTEN c)", ""},
      {"SELECT 1); LISTEN c", "listen.create c"},
      {"BEGIN; SET x = 1; ROLLBACK", "parameter.create+ x; parameter.rollback"},
      {"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; LISTEN c; END; "
       "LISTEN d",
       "listen.create d"},
      {"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; "
       "LISTEN c; END; LISTEN d",
       "listen.create d"},
      {"CREATE TABLE begin (a int); LISTEN d", "listen.create d"},
  });
}

TEST(SessionStateScan, StatementTexts) {
  const auto scan = scan_session_state("  SET a = 1 ;\n /* x */ SET b = 2 -- c\n", true);
  ASSERT_EQ(scan.count, 2);
  EXPECT_EQ(scan.effects[0].statement, "SET a = 1");
  EXPECT_EQ(scan.effects[1].statement, "SET b = 2");
  const auto calls = scan_session_state("SELECT 1; select pg_advisory_lock(1), 2 ;", true);
  ASSERT_EQ(calls.count, 1);
  EXPECT_EQ(calls.effects[0].statement, "select pg_advisory_lock(1), 2");
  EXPECT_TRUE(calls.effects[0].name.empty());
}

TEST(SessionStateScan, TruncatedTexts) {
  EXPECT_EQ(effects("SET a = 1; SET b = 'x", false), "parameter.create+ a; parameter.create b");
  EXPECT_EQ(effects("SET a = 1", false), "parameter.create a");
  EXPECT_EQ(effects("SET a = 1;", false), "parameter.create+ a");
  EXPECT_EQ(effects("SET a = 1 ; ", false), "parameter.create+ a");
  EXPECT_EQ(effects("SET ROLE admin", false), "role.create role");
  EXPECT_EQ(effects("SELECT set_config('a', 'b', false)", false), "parameter.create 'a' = 'b'");
  EXPECT_EQ(effects("LISTEN c", false), "listen.create c");
  EXPECT_EQ(effects("SELECT pg_advisory_lock(1) FROM", false), "advisory_lock.create");
  // Unterminated constructs run to the end: nothing is replayed from them.
  EXPECT_EQ(effects("SET a = 'x"), "parameter.create a");
  EXPECT_EQ(effects("SET a = $$x"), "parameter.create a");
  EXPECT_EQ(effects("SET a = 1 /* x"), "parameter.create+ a");
  for (const std::string_view sql : {"SELECT 'abc",
                                     "SELECT /* abc",
                                     "SELECT $$abc",
                                     "SELECT \"abc",
                                     "SELECT E'\\",
                                     "'",
                                     "\"",
                                     "$",
                                     "$$",
                                     "$a",
                                     "$1",
                                     "/*",
                                     "--",
                                     "-",
                                     "/",
                                     "E'",
                                     "U&",
                                     "U&'",
                                     "SET",
                                     "$a$"}) {
    EXPECT_EQ(effects(sql), "") << sql;
  }
}

TEST(SessionStateScan, NulBytes) {
  const std::string sql("SET a = 1\0; LISTEN b", 20);
  EXPECT_EQ(effects(sql), "parameter.create a; listen.create b");
}

TEST(SessionStateScan, OverflowAndSummaries) {
  std::string sql;
  for (int i = 0; i < 9; ++i) sql += "LISTEN c" + std::to_string(i) + ";";
  const auto scan = scan_session_state(sql, true);
  EXPECT_EQ(scan.count, SessionStateScan::kMaxEffects);
  EXPECT_TRUE(scan.overflow);
  EXPECT_TRUE(scan.any_state());
  EXPECT_TRUE(scan.creates_state());

  const auto none = scan_session_state("SELECT 1", true);
  EXPECT_EQ(none.count, 0);
  EXPECT_FALSE(none.overflow);
  EXPECT_FALSE(none.any_state());
  EXPECT_FALSE(none.creates_state());

  const auto rollback = scan_session_state("ROLLBACK", true);
  EXPECT_FALSE(rollback.any_state());
  EXPECT_FALSE(rollback.creates_state());
  const auto reset = scan_session_state("RESET ALL; UNLISTEN *", true);
  EXPECT_TRUE(reset.any_state());
  EXPECT_FALSE(reset.creates_state());
  const auto discard = scan_session_state("DISCARD ALL", true);
  EXPECT_TRUE(discard.any_state());
  EXPECT_FALSE(discard.creates_state());
  EXPECT_TRUE(scan_session_state("SELECT pg_advisory_lock(1)", true).creates_state());
}

TEST(SessionStateScan, ShortcutSkipsOnlyTextsWithoutEffects) {
  // The relay's shortcut: false only where the scan finds nothing.
  const char* stateless[] = {
      "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
      "  select 1",
      "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 5;",
      "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now());",
      "DELETE FROM t WHERE id = $1",
      "WITH x AS (SELECT 1) SELECT * FROM x",
      "VALUES (1), (2)",
      "SELECT 1;   \n",
  };
  for (const char* text : stateless) {
    EXPECT_FALSE(pgw::proto::may_change_session_state(text)) << text;
    EXPECT_EQ(pgw::proto::scan_session_state(text, true).count, 0) << text;
  }
  const char* maybe[] = {
      "SET search_path TO a",
      "SELECT pg_advisory_lock(1)",
      "select PG_TRY_ADVISORY_LOCK(1)",
      "SELECT set_config('a.b', '1', false)",
      "SELECT 1 INTO TEMP t",
      "WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x",
      "SELECT 1; SET a = 1",
      "/* comment */ SET a = 1",
      "LISTEN c",
      "CREATE TEMP TABLE t (x int)",
      "",
  };
  for (const char* text : maybe) EXPECT_TRUE(pgw::proto::may_change_session_state(text)) << text;
}

TEST(SessionStateNames, Normalize) {
  EXPECT_EQ(normalize_parameter_name("Search_Path"), "search_path");
  EXPECT_EQ(normalize_parameter_name("\"Search_Path\""), "search_path");
  EXPECT_EQ(normalize_parameter_name("'App.Tenant'"), "app.tenant");
  EXPECT_EQ(normalize_parameter_name("myapp.\"Tenant\""), "myapp.tenant");
  EXPECT_EQ(normalize_parameter_name("E'a\\'b'"), "a'b");
  EXPECT_EQ(normalize_parameter_name("'it''s'"), "it's");
  EXPECT_EQ(normalize_parameter_name("$$X$$"), "x");
  EXPECT_EQ(normalize_parameter_name(""), "");
  EXPECT_EQ(normalize_identifier("\"Foo\".bar"), "Foo.bar");
  EXPECT_EQ(normalize_identifier("FOO"), "foo");
  EXPECT_EQ(normalize_identifier("\"a\"\"B\""), "a\"B");
  EXPECT_EQ(normalize_identifier("pg_temp.T"), "pg_temp.t");
  EXPECT_EQ(normalize_identifier("s . T"), "s.t");
  EXPECT_EQ(normalize_identifier("\"unterminated"), "unterminated");
}

TEST(SessionStateNames, ModesAndKinds) {
  SessionStateMode mode = SessionStateMode::allow;
  EXPECT_TRUE(parse_session_state_mode("TRACK", mode));
  EXPECT_EQ(mode, SessionStateMode::track);
  EXPECT_TRUE(parse_session_state_mode("pin", mode));
  EXPECT_EQ(mode, SessionStateMode::pin);
  EXPECT_TRUE(parse_session_state_mode("Reject", mode));
  EXPECT_EQ(mode, SessionStateMode::reject);
  EXPECT_TRUE(parse_session_state_mode("allow", mode));
  EXPECT_EQ(mode, SessionStateMode::allow);
  EXPECT_FALSE(parse_session_state_mode("tracked", mode));
  EXPECT_FALSE(parse_session_state_mode("", mode));
  EXPECT_EQ(mode, SessionStateMode::allow);
  for (auto m : {SessionStateMode::track, SessionStateMode::pin, SessionStateMode::reject,
                 SessionStateMode::allow}) {
    SessionStateMode back = SessionStateMode::track;
    EXPECT_TRUE(parse_session_state_mode(to_string(m), back));
    EXPECT_EQ(back, m);
  }
  EXPECT_EQ(to_string(Kind::parameter), "parameter");
  EXPECT_EQ(to_string(Kind::advisory_lock), "advisory_lock");
  EXPECT_EQ(to_string(Kind::load), "load");
  EXPECT_EQ(describe(Kind::parameter), "session-level SET");
  EXPECT_EQ(describe(Kind::role), "SET ROLE");
  EXPECT_EQ(describe(Kind::advisory_lock), "session advisory locks");
  for (int i = 0; i < kSessionStateKinds; ++i) {
    EXPECT_FALSE(describe(static_cast<Kind>(i)).empty());
  }
  EXPECT_EQ(to_string(SessionStateMask{0}), "");
  EXPECT_EQ(
      to_string(static_cast<SessionStateMask>(mask_of(Kind::load) | mask_of(Kind::parameter))),
      "parameter,load");
  EXPECT_EQ(to_string(static_cast<SessionStateMask>(0xff)),
            "parameter,role,advisory_lock,listen,temp_table,sql_prepare,hold_cursor,load");
}

// ---------------------------------------------------------------------------------------------
// SessionState.

constexpr SessionStateMask kParameter = mask_of(Kind::parameter);
constexpr SessionStateMask kRole = mask_of(Kind::role);
constexpr SessionStateMask kLock = mask_of(Kind::advisory_lock);
constexpr SessionStateMask kListen = mask_of(Kind::listen);
constexpr SessionStateMask kTemp = mask_of(Kind::temp_table);
constexpr SessionStateMask kPrepare = mask_of(Kind::sql_prepare);
constexpr SessionStateMask kCursor = mask_of(Kind::hold_cursor);
constexpr SessionStateMask kLoad = mask_of(Kind::load);

class Client {
 public:
  explicit Client(SessionStateMode mode = SessionStateMode::track) : state(mode) {}
  // A simple Query: its statement, its ReadyForQuery.
  SessionStateMask query(std::string_view sql, char status = 'I') {
    send(sql);
    return state.on_ready(status, now);
  }
  // A Query whose statement fails.
  SessionStateMask failing(std::string_view sql, char status = 'I') {
    send(sql);
    state.on_error();
    return state.on_ready(status, now);
  }
  void send(std::string_view sql, int owed = 0) {
    state.on_statement(scan_session_state(sql, true), owed, now);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& p : state.parameters()) out.push_back(p.name);
    return out;
  }

  SessionState state;
  Clock::time_point now = Clock::time_point{} + std::chrono::seconds(100);
};

using Names = std::vector<std::string>;

TEST(SessionState, SetThenIdleIsHeld) {
  Client c;
  EXPECT_EQ(c.query("SET search_path TO a, b"), kParameter);
  EXPECT_EQ(c.state.held(), kParameter);
  ASSERT_EQ(c.state.parameters().size(), 1u);
  EXPECT_EQ(c.state.parameters()[0].name, "search_path");
  EXPECT_EQ(c.state.parameters()[0].replay, "SET search_path TO a, b");
  EXPECT_EQ(c.state.parameters()[0].kind, Kind::parameter);
  EXPECT_FALSE(c.state.pinned());
  EXPECT_TRUE(c.state.holds_anything());
  EXPECT_EQ(c.state.since(), c.now);
  EXPECT_EQ(c.state.first_statement(), "SET search_path TO a, b");
  // Already held: not new again.
  EXPECT_EQ(c.query("SET work_mem = '8MB'"), 0);
}

TEST(SessionState, NothingBeforeReadyForQuery) {
  Client c;
  c.send("SET a.b = 1");
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_TRUE(c.state.parameters().empty());
  EXPECT_EQ(c.state.on_ready('I', c.now), kParameter);
}

TEST(SessionState, SetConfigReplay) {
  Client c;
  c.query("SELECT set_config('App.Tenant', '42', false)");
  ASSERT_EQ(c.state.parameters().size(), 1u);
  EXPECT_EQ(c.state.parameters()[0].name, "app.tenant");
  EXPECT_EQ(c.state.parameters()[0].replay,
            "SELECT pg_catalog.set_config('App.Tenant', '42', false)");
  c.query("SELECT set_config('app.tenant', '42', true)");  // transaction-local: nothing
  EXPECT_EQ(c.state.parameters().size(), 1u);
  c.query("RESET \"APP\".tenant");
  EXPECT_TRUE(c.state.parameters().empty());
}

TEST(SessionState, RolledBackTransaction) {
  Client c;
  c.query("BEGIN", 'T');
  c.query("SET a.b = 1", 'T');
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_EQ(c.query("ROLLBACK"), 0);
  EXPECT_EQ(c.state.held(), 0);

  c.query("BEGIN; SET a.b = 1; ABORT");
  EXPECT_EQ(c.state.held(), 0);
  // Effects after the ROLLBACK of the same string commit on their own.
  c.query("BEGIN; SET a.b = 1; ROLLBACK; SET a.c = 2");
  EXPECT_EQ(c.names(), Names{"a.c"});
}

TEST(SessionState, CommittedTransaction) {
  Client c;
  c.query("BEGIN", 'T');
  c.query("SET a.b = 1", 'T');
  c.query("LISTEN ch", 'T');
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_EQ(c.query("COMMIT"), kParameter | kListen);
  EXPECT_EQ(c.state.held(), kParameter | kListen);
}

TEST(SessionState, ErrorInTheSameQuery) {
  Client c;
  c.failing("SET a.b = 1; SELECT 1/0");
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_TRUE(c.state.parameters().empty());
}

TEST(SessionState, ErrorLaterInTheTransaction) {
  Client c;
  c.query("BEGIN", 'T');
  c.query("SET a.b = 1", 'T');
  c.failing("SELECT 1/0", 'E');
  EXPECT_EQ(c.query("COMMIT"), 0);  // reported as ROLLBACK
  EXPECT_EQ(c.state.held(), 0);

  // An error response while the transaction is open marks what is waiting.
  c.query("BEGIN", 'T');
  c.query("SET a.b = 1", 'T');
  c.state.on_error();
  c.query("COMMIT");
  EXPECT_EQ(c.state.held(), 0);
}

TEST(SessionState, RollbackAndChain) {
  Client c;
  c.query("BEGIN", 'T');
  c.query("SET a.b = 1", 'T');
  c.query("ROLLBACK AND CHAIN", 'T');
  c.query("SET a.c = 1", 'T');
  c.query("COMMIT");
  EXPECT_EQ(c.names(), Names{"a.c"});
}

TEST(SessionState, SameNameAgainMovesToTheEnd) {
  Client c;
  c.query("SET a.x = 1");
  c.query("SET a.y = 2");
  c.query("set A.X = 3");
  EXPECT_EQ(c.names(), (Names{"a.y", "a.x"}));
  EXPECT_EQ(c.state.parameters()[1].replay, "set A.X = 3");
  c.query("SELECT set_config('a.y', '5', false)");
  EXPECT_EQ(c.names(), (Names{"a.x", "a.y"}));
}

TEST(SessionState, RepeatedSetInOneTransaction) {
  Client c;
  c.query("BEGIN", 'T');
  for (int i = 0; i < 5; ++i) c.query("SET a.x = 1", 'T');
  c.query("SET a.x = 2", 'T');
  c.query("COMMIT");
  EXPECT_EQ(c.names(), Names{"a.x"});
  EXPECT_EQ(c.state.parameters()[0].replay, "SET a.x = 2");

  c.query("RESET a.x");
  c.query("BEGIN", 'T');
  c.query("SET a.x = 1", 'T');
  c.query("SET a.x = 1", 'T');
  c.query("ROLLBACK");
  EXPECT_TRUE(c.state.parameters().empty());
}

TEST(SessionState, ResetAndDefault) {
  Client c;
  c.query("SET a.x = 1");
  c.query("SET a.y = 1");
  c.query("RESET a.x");
  EXPECT_EQ(c.names(), Names{"a.y"});
  c.query("SET a.y TO DEFAULT");
  EXPECT_TRUE(c.names().empty());
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_EQ(c.state.since(), Clock::time_point{});
  EXPECT_EQ(c.state.first_statement(), "");
}

TEST(SessionState, ResetAllKeepsTheRole) {
  Client c;
  EXPECT_EQ(c.query("SET ROLE admin"), kRole);
  c.query("SET a.x = 1");
  c.query("SET a.z = 1 ; SET search_path FROM CURRENT");
  EXPECT_TRUE(c.state.pinned());  // FROM CURRENT cannot be replayed
  EXPECT_EQ(c.state.held(), kParameter | kRole);
  c.query("RESET ALL");
  EXPECT_EQ(c.names(), Names{"role"});
  EXPECT_EQ(c.state.held(), kRole);
  EXPECT_FALSE(c.state.pinned());
  EXPECT_EQ(c.state.parameters()[0].replay, "SET ROLE admin");
  EXPECT_EQ(c.state.parameters()[0].kind, Kind::role);
  c.query("RESET ROLE");
  EXPECT_EQ(c.state.held(), 0);
  c.query("SET SESSION AUTHORIZATION bob");
  EXPECT_EQ(c.state.held(), kRole);
  c.query("SET SESSION AUTHORIZATION DEFAULT");
  EXPECT_EQ(c.state.held(), 0);
}

TEST(SessionState, DiscardAllKeepsLoad) {
  Client c;
  c.query("LOAD 'auto_explain'");
  c.query("SET a.x = 1; LISTEN ch; SET ROLE r");
  c.query("SELECT pg_advisory_lock(1)");
  c.query("CREATE TEMP TABLE t (a int)");
  c.query("PREPARE p AS SELECT 1");
  c.query("DECLARE c CURSOR WITH HOLD FOR SELECT 1");
  c.query("SELECT set_config('a.y', current_user, false)");
  EXPECT_EQ(c.state.held(),
            kLoad | kParameter | kListen | kRole | kLock | kTemp | kPrepare | kCursor);
  c.query("DISCARD ALL");
  EXPECT_EQ(c.state.held(), kLoad);
  EXPECT_EQ(c.state.advisory_locks(), 0);
  EXPECT_TRUE(c.state.parameters().empty());
  EXPECT_EQ(c.state.parameters_fingerprint(), 0u);
  EXPECT_TRUE(c.state.pinned());  // LOAD is never undone
}

TEST(SessionState, AdvisoryLockOutlivesItsTransaction) {
  Client c;
  c.query("BEGIN", 'T');
  c.send("SELECT pg_advisory_lock(1)");
  EXPECT_EQ(c.state.advisory_locks(), 1);  // counts from its statement
  EXPECT_EQ(c.state.on_ready('T', c.now), kLock);
  c.query("ROLLBACK");
  EXPECT_EQ(c.state.advisory_locks(), 1);
  EXPECT_EQ(c.state.held(), kLock);
  EXPECT_TRUE(c.state.pinned());

  c.query("SELECT pg_advisory_unlock(1)");
  EXPECT_EQ(c.state.advisory_locks(), 0);
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_FALSE(c.state.pinned());
}

TEST(SessionState, AdvisoryUnlocks) {
  Client c;
  c.query("SELECT pg_advisory_lock(1), pg_try_advisory_lock(2)");
  EXPECT_EQ(c.state.advisory_locks(), 2);
  c.query("SELECT pg_advisory_unlock(1)");
  EXPECT_EQ(c.state.advisory_locks(), 1);
  // A failed unlock did not run.
  c.failing("SELECT pg_advisory_unlock(2), 1/0");
  EXPECT_EQ(c.state.advisory_locks(), 1);
  // Unlocking is not undone by a rollback.
  c.query("BEGIN", 'T');
  c.query("SELECT pg_advisory_unlock(2)", 'T');
  c.query("ROLLBACK");
  EXPECT_EQ(c.state.advisory_locks(), 0);
  // More unlocks than locks.
  c.query("SELECT pg_advisory_unlock(1)");
  EXPECT_EQ(c.state.advisory_locks(), 0);
  // An unlock does not release a lock taken after it.
  c.query("SELECT pg_advisory_unlock(1); SELECT pg_advisory_lock(1)");
  EXPECT_EQ(c.state.advisory_locks(), 1);
  c.query("SELECT pg_advisory_unlock_all(); SELECT pg_advisory_lock(3)");
  EXPECT_EQ(c.state.advisory_locks(), 1);
  c.query("SELECT pg_advisory_lock(4)");
  c.query("SELECT pg_advisory_unlock_all()");
  EXPECT_EQ(c.state.advisory_locks(), 0);
}

TEST(SessionState, PipelinedRequestsSettleWithTheirOwnReadyForQuery) {
  Client c;
  c.send("SET a.x = 1", 0);
  c.send("SET a.y = 2", 1);
  c.send("LISTEN ch", 2);
  EXPECT_EQ(c.state.on_ready('I', c.now), kParameter);
  EXPECT_EQ(c.names(), Names{"a.x"});
  c.state.on_error();  // the second request fails
  EXPECT_EQ(c.state.on_ready('I', c.now), 0);
  EXPECT_EQ(c.names(), Names{"a.x"});
  EXPECT_EQ(c.state.on_ready('I', c.now), kListen);
  EXPECT_EQ(c.state.held(), kParameter | kListen);
}

TEST(SessionState, PipelinedErrorOfAnEarlierRequest) {
  Client c;
  c.send("SET a.x = 1", 0);
  c.send("SET a.y = 2", 1);
  c.state.on_error();  // the first request fails; the second runs after its Sync
  c.state.on_ready('I', c.now);
  EXPECT_TRUE(c.names().empty());
  c.state.on_ready('I', c.now);
  EXPECT_EQ(c.names(), Names{"a.y"});
}

TEST(SessionState, PipelinedTransaction) {
  Client c;
  c.send("BEGIN", 0);
  c.send("SET a.x = 1", 1);
  c.send("COMMIT", 2);
  c.state.on_ready('T', c.now);
  c.state.on_ready('T', c.now);
  EXPECT_EQ(c.state.held(), 0);
  c.state.on_ready('I', c.now);
  EXPECT_EQ(c.names(), Names{"a.x"});
}

TEST(SessionState, PinnedPerMode) {
  Client track(SessionStateMode::track);
  Client pin(SessionStateMode::pin);
  Client reject(SessionStateMode::reject);
  Client allow(SessionStateMode::allow);
  for (Client* c : {&track, &pin, &reject, &allow}) c->query("SET a.x = 1; SET ROLE r");
  EXPECT_FALSE(track.state.pinned());
  EXPECT_TRUE(pin.state.pinned());
  EXPECT_FALSE(reject.state.pinned());
  EXPECT_FALSE(allow.state.pinned());
  EXPECT_EQ(allow.state.held(), 0);
  EXPECT_EQ(allow.state.mode(), SessionStateMode::allow);
  for (Client* c : {&track, &pin, &reject, &allow}) c->query("LISTEN ch");
  EXPECT_TRUE(track.state.pinned());
  EXPECT_TRUE(pin.state.pinned());
  EXPECT_FALSE(reject.state.pinned());
  EXPECT_FALSE(allow.state.pinned());

  Client unreplayable;
  unreplayable.query("SELECT set_config('a.x', $1, false)");
  EXPECT_EQ(unreplayable.state.held(), kParameter);
  EXPECT_TRUE(unreplayable.state.parameters().empty());
  EXPECT_TRUE(unreplayable.state.pinned());
  unreplayable.query("SET a.x = 2");  // replaces it
  EXPECT_FALSE(unreplayable.state.pinned());
  EXPECT_EQ(unreplayable.names(), Names{"a.x"});
}

TEST(SessionState, OriginStatementPerKind) {
  SessionState state(SessionStateMode::track);
  const auto now = SessionState::Clock::now();
  state.on_statement(pgw::proto::scan_session_state("SET search_path TO a", true), 0, now);
  state.on_ready('I', now);
  state.on_statement(pgw::proto::scan_session_state("SELECT pg_advisory_lock(9)", true), 0, now);
  state.on_ready('I', now);
  EXPECT_EQ(state.first_statement(), "SET search_path TO a");
  EXPECT_EQ(state.origin_statement(SessionStateKind::parameter), "SET search_path TO a");
  EXPECT_EQ(state.origin_statement(SessionStateKind::advisory_lock), "SELECT pg_advisory_lock(9)");
  state.on_statement(pgw::proto::scan_session_state("LISTEN jobs", true), 0, now);
  state.on_ready('I', now);
  EXPECT_EQ(state.origin_statement(SessionStateKind::listen), "LISTEN jobs");
}

TEST(SessionState, SinceAndFirstStatement) {
  Client c;
  const auto t1 = c.now;
  c.query("SET a.x = 1");
  c.now += std::chrono::seconds(5);
  c.query("LISTEN ch");
  EXPECT_EQ(c.state.since(), t1);
  EXPECT_EQ(c.state.first_statement(), "SET a.x = 1");
  c.query("RESET ALL; UNLISTEN *");
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_EQ(c.state.since(), Clock::time_point{});
  EXPECT_EQ(c.state.first_statement(), "");

  // The time of the statement, not of its ReadyForQuery; at most 200 bytes.
  const auto t2 = c.now;
  const std::string long_set = "SET a.x = '" + std::string(300, 'x') + "'";
  c.send(long_set);
  c.now += std::chrono::seconds(5);
  c.state.on_ready('I', c.now);
  EXPECT_EQ(c.state.since(), t2);
  EXPECT_EQ(c.state.first_statement(), long_set.substr(0, 200));
  EXPECT_EQ(c.state.parameters()[0].replay, long_set);  // the replay is whole
  c.query("RESET a.x");

  // A lock counts from its statement.
  const auto t3 = c.now;
  c.send("SELECT pg_advisory_lock(7)");
  EXPECT_EQ(c.state.since(), t3);
  EXPECT_EQ(c.state.first_statement(), "SELECT pg_advisory_lock(7)");
}

TEST(SessionState, FirstStatementDoesNotCutUtf8) {
  Client c;
  std::string text = "SET a.x = '" + std::string(188, 'x');  // 199 bytes
  text += "\xc3\xa9'";                                       // é across byte 200
  c.query(text);
  EXPECT_EQ(c.state.first_statement(), text.substr(0, 199));
}

TEST(SessionState, Fingerprint) {
  Client c;
  EXPECT_EQ(c.state.parameters_fingerprint(), 0u);
  c.query("SET a.x = 1");
  const auto f1 = c.state.parameters_fingerprint();
  EXPECT_NE(f1, 0u);
  c.query("SET a.y = 1");
  const auto f2 = c.state.parameters_fingerprint();
  EXPECT_NE(f2, 0u);
  EXPECT_NE(f2, f1);
  c.query("SET a.x = 2");
  const auto f3 = c.state.parameters_fingerprint();
  EXPECT_NE(f3, f2);
  c.query("LISTEN ch");  // not a parameter
  EXPECT_EQ(c.state.parameters_fingerprint(), f3);
  c.query("RESET a.y; RESET a.x");
  EXPECT_EQ(c.state.parameters_fingerprint(), 0u);
  c.query("SET a.x = 1");
  EXPECT_EQ(c.state.parameters_fingerprint(), f1);  // the same parameters
  c.query("RESET ALL");
  EXPECT_EQ(c.state.parameters_fingerprint(), 0u);
}

TEST(SessionState, TempTablesPreparedCursors) {
  Client c;
  EXPECT_EQ(c.query("CREATE TEMP TABLE t (a int)"), kTemp);
  c.query("DROP TABLE other");
  EXPECT_EQ(c.state.held(), kTemp);
  c.query("DROP TABLE IF EXISTS pg_temp.T");
  EXPECT_EQ(c.state.held(), 0);
  c.query("CREATE TEMP TABLE \"T\" (a int); CREATE TEMP TABLE u (a int)");
  c.query("DROP TABLE t");
  EXPECT_EQ(c.state.held(), kTemp);
  c.query("DISCARD TEMP");
  EXPECT_EQ(c.state.held(), 0);
  c.query("CREATE TEMP TABLE d (a int) ON COMMIT DROP");
  EXPECT_EQ(c.state.held(), 0);

  EXPECT_EQ(c.query("PREPARE p AS SELECT 1"), kPrepare);
  c.query("PREPARE q AS SELECT 1");
  c.query("DEALLOCATE P");
  EXPECT_EQ(c.state.held(), kPrepare);
  c.query("DEALLOCATE ALL");
  EXPECT_EQ(c.state.held(), 0);

  c.query("BEGIN", 'T');
  c.query("DECLARE c CURSOR WITH HOLD FOR SELECT 1", 'T');
  c.query("DECLARE d CURSOR FOR SELECT 1", 'T');
  EXPECT_EQ(c.query("COMMIT"), kCursor);
  c.query("CLOSE c");
  EXPECT_EQ(c.state.held(), 0);
  c.query("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT");
  c.query("CLOSE ALL");
  EXPECT_EQ(c.state.held(), 0);

  c.query("LISTEN a; LISTEN b; LISTEN a");
  c.query("UNLISTEN a");
  EXPECT_EQ(c.state.held(), kListen);
  c.query("UNLISTEN b");
  EXPECT_EQ(c.state.held(), 0);
  c.query("LISTEN a; LISTEN b");
  c.query("UNLISTEN *");
  EXPECT_EQ(c.state.held(), 0);
}

TEST(SessionState, ResetSql) {
  EXPECT_EQ(SessionState::reset_sql(0), "");
  EXPECT_EQ(SessionState::reset_sql(kLoad), "");
  EXPECT_EQ(SessionState::reset_sql(kParameter), "RESET ALL;");
  EXPECT_EQ(SessionState::reset_sql(kRole), "RESET ROLE; RESET SESSION AUTHORIZATION;");
  EXPECT_EQ(SessionState::reset_sql(kLock | kListen),
            "SELECT pg_catalog.pg_advisory_unlock_all(); UNLISTEN *;");
  EXPECT_EQ(SessionState::reset_sql(0xff),
            "RESET ROLE; RESET SESSION AUTHORIZATION; SELECT pg_catalog.pg_advisory_unlock_all(); "
            "UNLISTEN *; DISCARD TEMP; DEALLOCATE ALL; CLOSE ALL; RESET ALL;");
  // Each one scans as the release it is.
  EXPECT_EQ(effects(SessionState::reset_sql(0xff)),
            "role.release role; role.release session_authorization; "
            "advisory_lock.release_all; listen.release_all; temp_table.release_all; "
            "sql_prepare.release_all; hold_cursor.release_all; parameter.release_all");
}

TEST(SessionState, ServerLost) {
  Client c;
  c.query("SET a.x = 1; SET ROLE r");
  c.query("SELECT set_config('a.y', $1, false)");
  c.query("LISTEN ch; CREATE TEMP TABLE t (a int); PREPARE p AS SELECT 1; LOAD 'x'");
  c.query("SELECT pg_advisory_lock(1)");
  c.query("BEGIN", 'T');
  c.query("SET a.z = 1", 'T');
  const auto fingerprint = c.state.parameters_fingerprint();
  c.state.on_server_lost();
  EXPECT_EQ(c.state.held(), kParameter | kRole);
  EXPECT_EQ(c.names(), (Names{"a.x", "role"}));
  EXPECT_EQ(c.state.parameters_fingerprint(), fingerprint);
  EXPECT_EQ(c.state.advisory_locks(), 0);
  EXPECT_FALSE(c.state.pinned());
  EXPECT_NE(c.state.since(), Clock::time_point{});
  // What was pending is gone with its server.
  c.state.on_ready('I', c.now);
  EXPECT_EQ(c.names(), (Names{"a.x", "role"}));

  Client l;
  l.query("LISTEN ch");
  l.state.on_server_lost();
  EXPECT_EQ(l.state.held(), 0);
  EXPECT_EQ(l.state.first_statement(), "");
  // Held again later: reported again.
  EXPECT_EQ(l.query("LISTEN ch"), kListen);
}

TEST(SessionState, AllowIgnoresEverything) {
  Client c(SessionStateMode::allow);
  c.query("SET a.x = 1; LISTEN ch; SELECT pg_advisory_lock(1)");
  EXPECT_EQ(c.state.held(), 0);
  EXPECT_EQ(c.state.advisory_locks(), 0);
}

}  // namespace
}  // namespace pgw::proto
