// The circuit breaker (src/pool/breaker.hpp) and the reconnect backoff: fed outcomes with
// explicit timestamps, so every rule is checked to the millisecond without sleeping.
#include "pool/breaker.hpp"

#include <gtest/gtest.h>

#include "pool/backend.hpp"

namespace pgw::pool {
namespace {

using namespace std::chrono_literals;
using Change = Breaker::Change;
using TimePoint = Breaker::TimePoint;

// A fixed origin far from the clock's epoch, so the 30 one-second buckets start anywhere.
const TimePoint t0 = TimePoint(std::chrono::hours(1000));

BreakerSettings settings(int failures = 5, std::chrono::milliseconds open_min = 5s,
                         std::chrono::milliseconds open_max = 60s) {
  return {failures, open_min, open_max};
}

// Opens a fresh breaker with `failures` consecutive failures 100 ms apart.
Breaker opened(BreakerSettings s = settings()) {
  Breaker b(s);
  for (int i = 0; i < s.failures; ++i) b.failed(t0 + i * 100ms, "refused", false);
  return b;
}

TEST(Breaker, StartsClosedAndAllowsLogins) {
  Breaker b;
  EXPECT_EQ(b.state(), BreakerState::closed);
  EXPECT_TRUE(b.allows_logins());
  EXPECT_EQ(b.until_probe(t0), 0s);
  EXPECT_EQ(to_string(BreakerState::half_open), "half_open");
}

TEST(Breaker, OpensAfterTheConfiguredConsecutiveFailures) {
  Breaker b(settings(3));
  EXPECT_EQ(b.failed(t0, "e1", false), Change::none);
  EXPECT_EQ(b.failed(t0 + 1ms, "e2", false), Change::none);
  EXPECT_TRUE(b.allows_logins());
  EXPECT_EQ(b.failed(t0 + 2ms, "e3", false), Change::opened);
  EXPECT_EQ(b.state(), BreakerState::open);
  EXPECT_FALSE(b.allows_logins());
  EXPECT_EQ(b.last_error(), "e3");
  EXPECT_EQ(b.consecutive_failures(), 3);
  EXPECT_EQ(b.times_opened(), 1u);
}

TEST(Breaker, ASuccessResetsTheConsecutiveCount) {
  // Failures spread over more than 30 s so only the consecutive rule can apply.
  Breaker b(settings(3));
  b.failed(t0, "e", false);
  b.failed(t0 + 20s, "e", false);
  EXPECT_EQ(b.succeeded(t0 + 40s), Change::none);
  EXPECT_EQ(b.consecutive_failures(), 0);
  b.failed(t0 + 60s, "e", false);
  EXPECT_EQ(b.failed(t0 + 80s, "e", false), Change::none);
  EXPECT_EQ(b.state(), BreakerState::closed);
  EXPECT_EQ(b.failed(t0 + 100s, "e", false), Change::opened);
}

TEST(Breaker, OpensWhenHalfOfAtLeastFiveAttemptsIn30SecondsFailed) {
  // Never 5 in a row: failure, success, alternating, all within 30 s.
  Breaker b(settings(5));
  b.failed(t0, "e", false);
  b.succeeded(t0 + 1s);
  b.failed(t0 + 2s, "e", false);
  b.succeeded(t0 + 3s);
  // 4 attempts, 2 failed: not enough attempts yet.
  EXPECT_EQ(b.state(), BreakerState::closed);
  // The 5th attempt fails: 3 of 5 failed.
  EXPECT_EQ(b.failed(t0 + 4s, "e", false), Change::opened);
}

TEST(Breaker, LessThanHalfFailedKeepsItClosed) {
  Breaker b(settings(5));
  b.succeeded(t0);
  b.succeeded(t0 + 1s);
  b.succeeded(t0 + 2s);
  b.failed(t0 + 3s, "e", false);
  b.failed(t0 + 4s, "e", false);  // 2 of 5
  EXPECT_EQ(b.state(), BreakerState::closed);
}

TEST(Breaker, AttemptsOlderThanTheWindowDoNotCount) {
  Breaker b(settings(5));
  b.failed(t0, "e", false);
  b.failed(t0 + 1s, "e", false);
  b.succeeded(t0 + 2s);
  // 31 s later the two failures have left the window: 1 failure of 3 attempts.
  b.succeeded(t0 + 33s);
  b.succeeded(t0 + 33s);
  EXPECT_EQ(b.failed(t0 + 34s, "e", false), Change::none);
  EXPECT_EQ(b.state(), BreakerState::closed);
}

TEST(Breaker, StaysOpenForOpenMinThenLetsOneProbeThrough) {
  Breaker b = opened();
  const auto at = t0 + 400ms;  // the 5th failure
  EXPECT_EQ(b.until_probe(at + 1s), 4s);
  EXPECT_FALSE(b.begin_probe(at + 4999ms));
  EXPECT_TRUE(b.begin_probe(at + 5s));
  EXPECT_EQ(b.state(), BreakerState::half_open);
  EXPECT_FALSE(b.allows_logins());
  EXPECT_FALSE(b.begin_probe(at + 5s));  // one probe only
}

TEST(Breaker, ASuccessfulProbeClosesItAndForgetsTheOldFailures) {
  Breaker b = opened();
  ASSERT_TRUE(b.begin_probe(t0 + 10s));
  EXPECT_EQ(b.succeeded(t0 + 10s), Change::closed);
  EXPECT_TRUE(b.allows_logins());
  EXPECT_EQ(b.consecutive_failures(), 0);
  // The five failures of the window are gone: one new failure does not reopen it.
  EXPECT_EQ(b.failed(t0 + 11s, "e", false), Change::none);
  EXPECT_EQ(b.state(), BreakerState::closed);
}

TEST(Breaker, EachFailedProbeDoublesTheWaitUpToOpenMax) {
  Breaker b = opened(settings(5, 5s, 30s));
  auto now = t0 + 400ms;
  for (auto expected : {10s, 20s, 30s, 30s}) {
    now += b.open_wait();
    ASSERT_TRUE(b.begin_probe(now));
    EXPECT_EQ(b.failed(now, "still down", true), Change::opened);
    EXPECT_EQ(b.open_wait(), expected);
    EXPECT_EQ(b.until_probe(now), expected);
  }
  // A success after all that starts again from open_min.
  now += b.open_wait();
  ASSERT_TRUE(b.begin_probe(now));
  b.succeeded(now);
  for (int i = 0; i < 5; ++i) b.failed(now + 1min + i * 1ms, "e", false);
  EXPECT_EQ(b.open_wait(), 5s);
}

TEST(Breaker, OnlyTheProbeDecidesWhileHalfOpen) {
  Breaker b = opened();
  ASSERT_TRUE(b.begin_probe(t0 + 6s));
  // A login that started before the breaker opened fails late: ignored.
  EXPECT_EQ(b.failed(t0 + 6s, "late", false), Change::none);
  EXPECT_EQ(b.state(), BreakerState::half_open);
  EXPECT_EQ(b.failed(t0 + 7s, "probe failed", true), Change::opened);
  EXPECT_EQ(b.last_error(), "probe failed");
}

TEST(Breaker, FailuresWhileOpenDoNotExtendIt) {
  Breaker b = opened();
  const auto wait = b.until_probe(t0 + 400ms);
  EXPECT_EQ(b.failed(t0 + 1s, "in flight", false), Change::none);
  EXPECT_EQ(b.until_probe(t0 + 400ms), wait);
  EXPECT_EQ(b.times_opened(), 1u);
}

TEST(Breaker, ALateSuccessWhileOpenClosesIt) {
  // A login that was under way when it opened got through: the server answers.
  Breaker b = opened();
  EXPECT_EQ(b.succeeded(t0 + 1s), Change::closed);
  EXPECT_TRUE(b.allows_logins());
}

TEST(Breaker, AProbeThatCannotStartIsRetriedSoon) {
  Breaker b = opened();
  ASSERT_TRUE(b.begin_probe(t0 + 6s));
  b.probe_not_started(t0 + 6s);
  EXPECT_EQ(b.state(), BreakerState::open);
  EXPECT_EQ(b.until_probe(t0 + 6s), 1s);
  EXPECT_TRUE(b.begin_probe(t0 + 7s));
}

TEST(Breaker, ZeroFailuresTurnsItOff) {
  Breaker b(settings(0));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(b.failed(t0 + i * 1ms, "e", false), Change::none);
  EXPECT_TRUE(b.allows_logins());
  // Turning it off while open closes it.
  Breaker open_one = opened();
  open_one.configure(settings(0));
  EXPECT_TRUE(open_one.allows_logins());
}

TEST(Breaker, OpenMaxBelowOpenMinIsRaisedToIt) {
  Breaker b = opened(settings(5, 10s, 2s));
  EXPECT_EQ(b.open_wait(), 10s);
  ASSERT_TRUE(b.begin_probe(t0 + 11s));
  b.failed(t0 + 11s, "e", true);
  EXPECT_EQ(b.open_wait(), 10s);
}

TEST(ReconnectDelay, FullJitterBetweenZeroAndTheExponentialCeiling) {
  EXPECT_EQ(reconnect_delay(0, 0.99, 250ms, 10s), 0ms);  // no failure: no wait
  EXPECT_EQ(reconnect_delay(1, 0.0, 250ms, 10s), 0ms);
  EXPECT_EQ(reconnect_delay(1, 0.5, 250ms, 10s), 125ms);
  EXPECT_EQ(reconnect_delay(2, 0.5, 250ms, 10s), 250ms);
  EXPECT_EQ(reconnect_delay(3, 0.5, 250ms, 10s), 500ms);
  EXPECT_EQ(reconnect_delay(6, 0.999, 250ms, 10s), 7992ms);   // 8 s ceiling
  EXPECT_EQ(reconnect_delay(7, 0.5, 250ms, 10s), 5000ms);     // capped at 10 s
  EXPECT_EQ(reconnect_delay(1000, 0.5, 250ms, 10s), 5000ms);  // no overflow
  EXPECT_EQ(reconnect_delay(3, 0.5, 250ms, 300ms), 150ms);    // server_login_retry as cap
  EXPECT_EQ(reconnect_delay(3, 0.5, 250ms, 0ms), 0ms);
}

TEST(Backend, NamesAndAcceptance) {
  EXPECT_EQ(backend_name("10.0.0.5", 5432), "10.0.0.5:5432");
  EXPECT_EQ(backend_name("", 6000), "/var/run/postgresql:6000");
  Backend backend("db:5432", settings(2));
  EXPECT_TRUE(backend.accepts_logins());
  backend.login_failed(t0, "e", false);
  EXPECT_EQ(backend.login_failed(t0, "could not connect", false), Change::opened);
  EXPECT_FALSE(backend.accepts_logins());
  const auto status = backend.status(t0);
  EXPECT_EQ(status.name, "db:5432");
  EXPECT_EQ(status.state, BreakerState::open);
  EXPECT_EQ(status.last_error, "could not connect");
  EXPECT_EQ(status.until_probe, 5s);
}

TEST(Backend, CrashCodesOrTwoLossesInASecondMeanTheWholeBackendWentAway) {
  Backend backend("db:5432", settings());
  // pg_terminate_backend of one connection: only that one.
  EXPECT_FALSE(backend.connection_lost(t0, "57P01"));
  // Another one 2 s later: still unrelated.
  EXPECT_FALSE(backend.connection_lost(t0 + 2s, ""));
  // A second one within a second: a restart.
  EXPECT_TRUE(backend.connection_lost(t0 + 2500ms, "57P01"));
  // A crash (57P02) or shutdown / startup (57P03) on its own.
  EXPECT_TRUE(backend.connection_lost(t0 + 10s, "57P02"));
  EXPECT_TRUE(backend.connection_lost(t0 + 20s, "57P03"));
  EXPECT_EQ(backend.status(t0 + 20s).backend_losses, 3u);
}

}  // namespace
}  // namespace pgw::pool
