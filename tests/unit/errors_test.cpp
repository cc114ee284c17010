// The error table (src/util/errors.cpp): every code has one well-formed row, and the rows carry
// the SQLSTATE PostgreSQL uses for the same condition (docs/errors.md promises this to drivers).
#include "util/errors.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <set>
#include <string>
#include <string_view>

namespace pgw {
namespace {

struct Expected {
  Err code;
  std::string_view name;
  std::string_view sqlstate;
  std::string_view severity;
};

// What each row should say, in enum order. SQLSTATEs are PostgreSQL's (errcodes.txt) for the
// matching server condition. Pooler errors close the connection (FATAL); admin console errors
// leave the console session open (ERROR), except being refused the console at all.
constexpr std::array kExpected{
    Expected{Err::protocol_violation, "protocol_violation", "08P01", "FATAL"},
    Expected{Err::unsupported_protocol, "unsupported_protocol", "0A000", "FATAL"},
    Expected{Err::no_user, "no_user", "28000", "FATAL"},
    Expected{Err::no_such_database, "no_such_database", "3D000", "FATAL"},
    Expected{Err::password_failed, "password_failed", "28P01", "FATAL"},
    Expected{Err::sasl_failed, "sasl_failed", "08P01", "FATAL"},
    Expected{Err::auth_unsupported, "auth_unsupported", "08P01", "FATAL"},
    Expected{Err::max_client_conn, "max_client_conn", "53300", "FATAL"},
    Expected{Err::query_wait_timeout, "query_wait_timeout", "53300", "FATAL"},
    Expected{Err::server_login_failed, "server_login_failed", "08001", "FATAL"},
    Expected{Err::server_connect_failed, "server_connect_failed", "08001", "FATAL"},
    Expected{Err::server_connection_lost, "server_connection_lost", "08006", "FATAL"},
    Expected{Err::client_login_timeout, "client_login_timeout", "08P01", "FATAL"},
    Expected{Err::client_idle_timeout, "client_idle_timeout", "57P05", "FATAL"},
    Expected{Err::idle_transaction_timeout, "idle_transaction_timeout", "25P03", "FATAL"},
    Expected{Err::query_timeout, "query_timeout", "57014", "FATAL"},
    Expected{Err::statement_mode_transaction, "statement_mode_transaction", "0A000", "FATAL"},
    Expected{Err::shutting_down, "shutting_down", "57P01", "FATAL"},
    Expected{Err::admin_shutdown, "admin_shutdown", "57P01", "FATAL"},
    Expected{Err::unsupported_startup_parameter, "unsupported_startup_parameter", "08P01", "FATAL"},
    Expected{Err::internal, "internal", "XX000", "FATAL"},
    Expected{Err::admin_not_allowed, "admin_not_allowed", "28000", "FATAL"},
    Expected{Err::admin_permission_denied, "admin_permission_denied", "42501", "ERROR"},
    Expected{Err::admin_unknown_command, "admin_unknown_command", "42601", "ERROR"},
    Expected{Err::admin_syntax_error, "admin_syntax_error", "42601", "ERROR"},
    Expected{Err::admin_no_such_database, "admin_no_such_database", "3D000", "ERROR"},
    Expected{Err::admin_no_such_client, "admin_no_such_client", "42704", "ERROR"},
    Expected{Err::admin_unknown_setting, "admin_unknown_setting", "42704", "ERROR"},
    Expected{Err::admin_setting_fixed, "admin_setting_fixed", "55P02", "ERROR"},
    Expected{Err::admin_invalid_value, "admin_invalid_value", "22023", "ERROR"},
    Expected{Err::admin_wrong_state, "admin_wrong_state", "55000", "ERROR"},
    Expected{Err::admin_reload_failed, "admin_reload_failed", "F0000", "ERROR"},
    Expected{Err::app_max_client_conn, "app_max_client_conn", "53300", "FATAL"},
    Expected{Err::idle_pinned_timeout, "idle_pinned_timeout", "57P05", "FATAL"},
    Expected{Err::admin_no_such_app, "admin_no_such_app", "42704", "ERROR"},
    Expected{Err::backend_unavailable, "backend_unavailable", "57P03", "FATAL"},
    Expected{Err::draining, "draining", "57P03", "FATAL"},
    Expected{Err::max_waiting, "max_waiting", "53300", "FATAL"},
    Expected{Err::query_wait_unreachable, "query_wait_unreachable", "08001", "FATAL"},
    Expected{Err::query_wait_notice, "query_wait_notice", "00000", "NOTICE"},
    Expected{Err::overloaded, "overloaded", "53300", "FATAL"},
    Expected{Err::reclaimed_under_pressure, "reclaimed_under_pressure", "25P03", "FATAL"},
    Expected{Err::prepared_statement_missing, "prepared_statement_missing", "26000", "ERROR"},
    Expected{Err::prepared_statement_exists, "prepared_statement_exists", "42P05", "ERROR"},
    Expected{Err::prepared_statement_too_large, "prepared_statement_too_large", "54000", "FATAL"},
    Expected{Err::session_state_rejected, "session_state_rejected", "0A000", "ERROR"},
    Expected{Err::hba_no_entry, "hba_no_entry", "28000", "FATAL"},
    Expected{Err::hba_rejected, "hba_rejected", "28000", "FATAL"},
    Expected{Err::peer_failed, "peer_failed", "28000", "FATAL"},
    Expected{Err::tls_required, "tls_required", "08P01", "FATAL"},
    Expected{Err::tls_after_data, "tls_after_data", "08P01", "FATAL"},
    Expected{Err::cert_failed, "cert_failed", "28000", "FATAL"},
    Expected{Err::max_db_client_connections, "max_db_client_connections", "53300", "FATAL"},
    Expected{Err::max_user_client_connections, "max_user_client_connections", "53300", "FATAL"},
    Expected{Err::transaction_timeout, "transaction_timeout", "25P04", "FATAL"},
    Expected{Err::auth_query_failed, "auth_query_failed", "08P01", "FATAL"},
    Expected{Err::trust_failed, "trust_failed", "28000", "FATAL"},
    Expected{Err::scram_failed, "scram_failed", "28P01", "FATAL"},
    Expected{Err::ldap_failed, "ldap_failed", "28000", "FATAL"},
    Expected{Err::database_disabled, "database_disabled", "55000", "FATAL"},
    Expected{Err::auth_database_disabled, "auth_database_disabled", "55000", "FATAL"},
};

std::size_t count_placeholders(std::string_view text) {
  std::size_t count = 0;
  for (auto pos = text.find("{}"); pos != std::string_view::npos; pos = text.find("{}", pos + 2)) {
    ++count;
  }
  return count;
}

// kExpected must list every enumerator: in order (so an insertion shows up here), and up to the
// last one (an enumerator past the list has no expectation: add it above).
TEST(ErrorTable, ExpectationListCoversTheWholeEnum) {
  for (std::size_t i = 0; i < kExpected.size(); ++i) {
    EXPECT_EQ(static_cast<std::size_t>(kExpected[i].code), i) << kExpected[i].name;
  }
}

TEST(ErrorTableDeathTest, NoEnumeratorPastTheExpectationList) {
  EXPECT_DEATH(error_spec(static_cast<Err>(kExpected.size())), "")
      << "Err has an enumerator after " << kExpected.back().name
      << " that this test does not check";
}

TEST(ErrorTable, EveryCodeHasItsOwnRow) {
  for (const auto& expected : kExpected) {
    EXPECT_EQ(error_spec(expected.code).code, expected.code) << expected.name;
  }
}

TEST(ErrorTable, SqlstatesAreFiveUppercaseAlphanumerics) {
  for (const auto& expected : kExpected) {
    const auto sqlstate = error_spec(expected.code).sqlstate;
    ASSERT_EQ(sqlstate.size(), 5u) << expected.name;
    EXPECT_TRUE(
        std::all_of(sqlstate.begin(), sqlstate.end(),
                    [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); }))
        << expected.name << ": " << sqlstate;
    // Classes 00 (success), 01 (warning) and 02 (no data) are not errors; only a NOTICE may
    // carry them.
    if (expected.severity == "NOTICE") continue;
    const auto sqlclass = sqlstate.substr(0, 2);
    EXPECT_NE(sqlclass, "00") << expected.name;
    EXPECT_NE(sqlclass, "01") << expected.name;
    EXPECT_NE(sqlclass, "02") << expected.name;
  }
}

TEST(ErrorTable, SqlstatesFollowPostgresql) {
  for (const auto& expected : kExpected) {
    EXPECT_EQ(error_spec(expected.code).sqlstate, expected.sqlstate) << expected.name;
  }
}

TEST(ErrorTable, SeveritiesAreValidAndAsDefined) {
  const std::set<std::string_view> valid{"ERROR", "FATAL", "WARNING", "NOTICE"};
  for (const auto& expected : kExpected) {
    const auto severity = error_spec(expected.code).severity;
    EXPECT_TRUE(valid.contains(severity)) << expected.name << ": " << severity;
    EXPECT_EQ(severity, expected.severity) << expected.name;
  }
}

TEST(ErrorTable, TextsAreNonEmptyTemplatesWithAtMostOneArgument) {
  for (const auto& expected : kExpected) {
    const auto text = error_spec(expected.code).text;
    EXPECT_FALSE(text.empty()) << expected.name;
    EXPECT_LE(count_placeholders(text), 1u) << expected.name << ": " << text;
    // The session always passes exactly one argument; the template must format with it.
    std::string formatted;
    EXPECT_NO_THROW(formatted = error_message(expected.code, std::string("ARG"))) << expected.name;
    EXPECT_FALSE(formatted.empty()) << expected.name;
    EXPECT_EQ(formatted.find('{'), std::string::npos) << expected.name << ": " << formatted;
    if (count_placeholders(text) == 1) {
      EXPECT_NE(formatted.find("ARG"), std::string::npos) << expected.name << ": " << formatted;
    } else {
      EXPECT_EQ(formatted, text) << expected.name;
    }
  }
}

TEST(ErrorTable, ErrorMessageSubstitutesItsArgument) {
  EXPECT_EQ(error_message(Err::no_such_database, "sales"), "database \"sales\" does not exist");
  EXPECT_EQ(error_message(Err::password_failed, "alice"),
            "password authentication failed for user \"alice\"");
  EXPECT_EQ(error_message(Err::protocol_violation, "invalid startup packet: x"),
            "invalid startup packet: x");
  EXPECT_EQ(error_message(Err::unsupported_startup_parameter, std::string("replication")),
            "unsupported startup parameter: replication");
  EXPECT_EQ(error_message(Err::query_wait_timeout, 120),
            "query_wait_timeout: no server connection became available within 120 s");
}

TEST(ErrorTable, ErrorMessageWithoutPlaceholderIsTheText) {
  EXPECT_EQ(error_message(Err::max_client_conn), "no more connections allowed (max_client_conn)");
  EXPECT_EQ(error_message(Err::max_client_conn, std::string()),
            "no more connections allowed (max_client_conn)");
}

TEST(ErrorTable, PromisedSqlstates) {
  EXPECT_EQ(error_spec(Err::password_failed).sqlstate, "28P01");
  EXPECT_EQ(error_spec(Err::no_such_database).sqlstate, "3D000");
  EXPECT_EQ(error_spec(Err::max_client_conn).sqlstate, "53300");
  EXPECT_EQ(error_spec(Err::max_client_conn).text, "no more connections allowed (max_client_conn)");
  EXPECT_EQ(error_spec(Err::protocol_violation).sqlstate, "08P01");
  EXPECT_EQ(error_spec(Err::query_timeout).sqlstate, "57014");
  EXPECT_EQ(error_spec(Err::admin_shutdown).sqlstate, "57P01");
  EXPECT_EQ(error_spec(Err::idle_transaction_timeout).sqlstate, "25P03");
}

TEST(ErrorTable, TextsMatchPostgresqlWordingWherePostgresqlHasTheCondition) {
  // Drivers and people grep for these; they are PostgreSQL's own messages.
  EXPECT_EQ(error_spec(Err::no_user).text, "no PostgreSQL user name specified in startup packet");
  EXPECT_EQ(error_spec(Err::admin_shutdown).text,
            "terminating connection due to administrator command");
  EXPECT_EQ(error_spec(Err::idle_transaction_timeout).text,
            "terminating connection due to idle-in-transaction timeout");
  EXPECT_EQ(error_spec(Err::unsupported_protocol).text.rfind("unsupported frontend protocol", 0),
            0u);
  EXPECT_EQ(error_message(Err::ldap_failed, std::string("alice")),
            "LDAP authentication failed for user \"alice\"");
}

TEST(ErrorTable, ResilienceTextsAreThoseOfPostgresql) {
  // 57P03 with PostgreSQL's postmaster texts: drivers retry these as "server not ready".
  EXPECT_EQ(error_spec(Err::backend_unavailable).text,
            "the database system is not accepting connections");
  EXPECT_EQ(error_spec(Err::draining).text, "the database system is shutting down");
  EXPECT_EQ(error_spec(Err::overloaded).text, "sorry, too many clients already");
  // The two query_wait_timeout causes are told apart by SQLSTATE and by text.
  EXPECT_NE(error_spec(Err::query_wait_timeout).sqlstate,
            error_spec(Err::query_wait_unreachable).sqlstate);
  EXPECT_NE(error_message(Err::query_wait_timeout, 5),
            error_message(Err::query_wait_unreachable, 5));
  EXPECT_EQ(error_message(Err::query_wait_unreachable, 5),
            "query_wait_timeout: could not connect to the server within 5 s");
}

// --- DETAIL and HINT: the table's templates, and the wording of pool errors (explain()).

TEST(ErrorReports, TemplatesTakeTheSameArgumentsAsTheMessage) {
  const auto app = report(Err::app_max_client_conn, std::string("checkout"), 5,
                          std::string("check*"), std::string("pgwarden.ini:12"));
  EXPECT_EQ(app.message,
            "no more connections allowed for application \"checkout\" (max_client_conn in [apps])");
  EXPECT_EQ(app.detail,
            "application \"checkout\" is limited to 5 client connections by [apps] line "
            "\"check*\" (pgwarden.ini:12)");
  EXPECT_TRUE(app.hint.empty());
  const auto files = report(Err::overloaded, 950, 1000);
  EXPECT_EQ(files.detail,
            "pgwarden has 950 of its 1000 file descriptors open (RLIMIT_NOFILE) and takes no new "
            "connections until it is under 80 %.");
  EXPECT_EQ(files.hint,
            "Retry later; raise the open files limit (ulimit -n) if this happens often.");
  // Rows without templates: no DETAIL, no HINT.
  const auto plain = report(Err::no_such_database, std::string("sales"));
  EXPECT_EQ(plain.message, "database \"sales\" does not exist");
  EXPECT_TRUE(plain.detail.empty());
  EXPECT_TRUE(plain.hint.empty());
}

TEST(ErrorReports, EveryTemplateFormatsWithTheArgumentsItsCallerPasses) {
  // Every row formats with one argument (what most callers pass); rows with DETAIL or HINT
  // templates are called with exactly the arguments their templates number.
  for (const auto& expected : kExpected) {
    const auto& spec = error_spec(expected.code);
    if (spec.detail.empty() && spec.hint.empty()) {
      EXPECT_NO_THROW(report(expected.code, std::string("ARG"))) << expected.name;
    }
  }
  EXPECT_NO_THROW(report(Err::app_max_client_conn, "a", 1, "b", "c"));
  EXPECT_NO_THROW(report(Err::overloaded, 1, 2));
}

PoolCondition condition() {
  PoolCondition pool;
  pool.database = "app";
  pool.user = "alice";
  pool.server = "10.0.0.5:5432";
  pool.servers = 10;
  pool.connecting = 2;
  pool.waiting = 7;
  pool.max_waiting = 50;
  return pool;
}

TEST(ErrorReports, ExplainSaysWhatTheBreakerIsDoing) {
  auto pool = condition();
  pool.breaker = PoolCondition::Breaker::open;
  pool.backend_error = "connection refused";
  pool.until_probe = std::chrono::milliseconds(2100);
  auto r = explain(Err::backend_unavailable, "", pool);
  EXPECT_EQ(r.message, "the database system is not accepting connections");
  EXPECT_EQ(r.detail,
            "pgwarden's circuit breaker for the server at 10.0.0.5:5432 is open; last error: "
            "connection refused");
  EXPECT_EQ(r.hint, "pgwarden tries to connect again in 3 s; retry the connection after that.");
  pool.until_probe = std::chrono::milliseconds(0);
  EXPECT_NE(explain(Err::backend_unavailable, "", pool).hint.find("again in 1 s"),
            std::string::npos);
  pool.breaker = PoolCondition::Breaker::half_open;
  r = explain(Err::backend_unavailable, "", pool);
  EXPECT_NE(r.detail.find("is testing the server"), std::string::npos);
  EXPECT_EQ(r.hint,
            "pgwarden is testing the connection to the server now; retry in a few seconds.");
  pool.breaker = PoolCondition::Breaker::closed;
  EXPECT_EQ(explain(Err::backend_unavailable, "", pool).hint, "Retry the connection now.");
}

TEST(ErrorReports, ExplainSaysWhyTheWaitFailed) {
  auto pool = condition();
  auto r = explain(Err::query_wait_timeout, "30", pool);
  EXPECT_EQ(r.message, "query_wait_timeout: no server connection became available within 30 s");
  EXPECT_EQ(r.detail, "all 8 server connections of pool app/alice were in use (7 clients waiting)");
  EXPECT_NE(r.hint.find("SHOW LEASES"), std::string::npos);
  r = explain(Err::query_wait_unreachable, "30", pool);
  EXPECT_EQ(r.detail, "connecting to the server at 10.0.0.5:5432 did not finish");
  pool.last_login_error = "could not connect to server: refused";
  EXPECT_EQ(explain(Err::query_wait_unreachable, "30", pool).detail,
            "last error: could not connect to server: refused");
  r = explain(Err::max_waiting, "", pool);
  EXPECT_EQ(r.detail, "50 clients are already waiting for a server connection of pool app/alice");
  EXPECT_EQ(r.hint, "Retry later.");
}

TEST(ErrorReports, TheWaitNoticeNamesTheCause) {
  auto pool = condition();
  EXPECT_EQ(explain(Err::query_wait_notice, "5", pool).detail,
            "all 8 server connections of pool app/alice are in use");
  pool.connecting = pool.servers;
  EXPECT_EQ(explain(Err::query_wait_notice, "5", pool).detail,
            "connecting to the server at 10.0.0.5:5432");
  pool.backend_error = "timeout";
  pool.consecutive_failures = 2;
  EXPECT_EQ(explain(Err::query_wait_notice, "5", pool).detail,
            "the server at 10.0.0.5:5432 cannot be reached: timeout");
  // Errors that are not about a pool carry the table's text and nothing else.
  const auto other = explain(Err::no_such_database, "x", pool);
  EXPECT_TRUE(other.detail.empty() && other.hint.empty());
}

TEST(ErrorReports, TheRowsSeverityDecidesTheMessageType) {
  std::string out;
  append_error_response(out, explain(Err::query_wait_notice, "5", condition()));
  EXPECT_EQ(out[0], 'N');  // a NoticeResponse: the session goes on
  out.clear();
  append_error_response(out, report(Err::admin_unknown_command, std::string("FOO")));
  EXPECT_EQ(out[0], 'E');
  EXPECT_NE(out.find("SERROR"), std::string::npos);
  EXPECT_NE(out.find("C42601"), std::string::npos);
  out.clear();
  append_error_response(out, report(Err::overloaded, 1, 2));
  EXPECT_NE(out.find("SFATAL"), std::string::npos);
  EXPECT_NE(out.find(std::string("D") + "pgwarden has 1 of its 2"), std::string::npos);
  EXPECT_NE(out.find("HRetry later"), std::string::npos);
}

TEST(ErrorTableDeathTest, UnknownCodeAborts) {
  EXPECT_DEATH(error_spec(static_cast<Err>(1000)), "");
}

}  // namespace
}  // namespace pgw
