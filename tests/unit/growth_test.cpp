// The growth alarm (src/session/growth.cpp) and the per-application rounds that feed it
// (src/session/apps.cpp), driven with explicit timestamps: nothing here sleeps.
#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pool/pool.hpp"
#include "session/apps.hpp"
#include "session/growth.hpp"

namespace pgw::session {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Series = GrowthDetector::Series;

const Clock::time_point kStart = Clock::time_point{} + 1000h;

// Feeds `count` samples `step` apart; `shape(i)` gives sample i. Returns every change with the
// index of the sample that caused it.
struct Fed {
  std::vector<std::pair<int, GrowthDetector::Change>> changes;
};
Fed feed(GrowthDetector& detector, int count, Clock::duration step, Clock::duration window,
         const std::function<GrowthDetector::Sample(int)>& shape, int first = 0) {
  Fed fed;
  for (int i = first; i < first + count; ++i) {
    auto sample = shape(i);
    sample.at = kStart + step * i;
    if (auto change = detector.add(sample, window)) fed.changes.emplace_back(i, *change);
  }
  return fed;
}

TEST(GrowthDetector, SteadyIdleGrowthRaisesOneAlarmPerEpisode) {
  GrowthDetector d;
  // One more idle client every 5 s, no transactions: the shape of a connection leak.
  const auto fed = feed(d, 100, 5s, 60s, [](int i) {
    return GrowthDetector::Sample{{}, 10 + i, 0, 7};
  });
  ASSERT_EQ(fed.changes.size(), 1U);
  const auto& [index, change] = fed.changes[0];
  EXPECT_EQ(index, 12);  // the first sample with a whole window (60 s) behind it
  EXPECT_TRUE(change.started);
  EXPECT_EQ(change.alarm.series, Series::clients);
  EXPECT_EQ(change.alarm.from, 10);
  EXPECT_EQ(change.alarm.to, 22);
  EXPECT_EQ(change.alarm.over, 60s);
  EXPECT_DOUBLE_EQ(change.alarm.per_minute, 12.0);
  EXPECT_DOUBLE_EQ(change.alarm.transactions_per_s_before, 0.0);
  EXPECT_DOUBLE_EQ(change.alarm.transactions_per_s_after, 0.0);
  EXPECT_TRUE(d.alarmed());
  EXPECT_EQ(d.alarmed_series(), Series::clients);
  EXPECT_DOUBLE_EQ(d.per_minute(Series::clients), 12.0);
  EXPECT_DOUBLE_EQ(d.per_minute(Series::leases), 0.0);
}

TEST(GrowthDetector, NothingBeforeAWholeWindow) {
  GrowthDetector d;
  const auto fed = feed(d, 12, 5s, 60s, [](int i) { return GrowthDetector::Sample{{}, i, i, 0}; });
  EXPECT_TRUE(fed.changes.empty());
  EXPECT_FALSE(d.alarmed());
  EXPECT_FALSE(d.evaluate(Series::clients, 60s).has_value());
}

TEST(GrowthDetector, SteadyBusyPopulationIsQuiet) {
  GrowthDetector d;
  // 20 clients, 5 of them holding a server at any moment, 100 transactions per sample.
  const auto fed = feed(d, 200, 5s, 60s, [](int i) {
    return GrowthDetector::Sample{{}, 20, 5, 100 * static_cast<std::uint64_t>(i)};
  });
  EXPECT_TRUE(fed.changes.empty());
  EXPECT_DOUBLE_EQ(d.per_minute(Series::clients), 0.0);
}

TEST(GrowthDetector, GrowthCarriedByMoreWorkIsQuiet) {
  GrowthDetector d;
  // A service scaling out: each new client does as much work as the others.
  std::uint64_t transactions = 0;
  const auto fed = feed(d, 100, 5s, 60s, [&](int i) {
    const int clients = 10 + i;
    transactions += static_cast<std::uint64_t>(clients) * 50;
    return GrowthDetector::Sample{{}, clients, clients / 2, transactions};
  });
  EXPECT_TRUE(fed.changes.empty());
}

TEST(GrowthDetector, GrowthWithFlatWorkAlarmsEvenWithTraffic) {
  GrowthDetector d;
  // 100 busy clients plus a slow leak of one client every 15 s; the traffic stays the same.
  const auto fed = feed(d, 40, 5s, 60s, [](int i) {
    return GrowthDetector::Sample{{}, 100 + i / 3, 10, 1000 * static_cast<std::uint64_t>(i)};
  });
  ASSERT_EQ(fed.changes.size(), 1U);
  EXPECT_EQ(fed.changes[0].second.alarm.series, Series::clients);
  EXPECT_NEAR(fed.changes[0].second.alarm.per_minute, 4.0, 0.01);
  EXPECT_NEAR(fed.changes[0].second.alarm.transactions_per_s_before, 200.0, 0.01);
  EXPECT_NEAR(fed.changes[0].second.alarm.transactions_per_s_after, 200.0, 0.01);
}

TEST(GrowthDetector, AFallOrAOneOffStepIsNotALeak) {
  {
    GrowthDetector d;
    // Grows, but one sample in the window is lower: connections were given back.
    const auto fed = feed(d, 13, 5s, 60s, [](int i) {
      return GrowthDetector::Sample{{}, i == 8 ? 3 : 10 + i, 0, 0};
    });
    EXPECT_TRUE(fed.changes.empty());
  }
  {
    GrowthDetector d;
    // A burst of new clients, then flat: no growth in the last quarters.
    const auto fed = feed(d, 30, 5s, 60s, [](int i) {
      return GrowthDetector::Sample{{}, i < 20 ? 5 : 40, 0, 0};
    });
    EXPECT_TRUE(fed.changes.empty());
  }
}

TEST(GrowthDetector, HeldLeasesAreWatchedToo) {
  GrowthDetector d;
  // Session mode: the same 50 clients, but more and more of them sit on a server.
  const auto fed = feed(d, 20, 5s, 60s, [](int i) {
    return GrowthDetector::Sample{{}, 50, 2 + i, 3};
  });
  ASSERT_EQ(fed.changes.size(), 1U);
  EXPECT_EQ(fed.changes[0].second.alarm.series, Series::leases);
  EXPECT_EQ(fed.changes[0].second.alarm.from, 2);
  EXPECT_EQ(fed.changes[0].second.alarm.to, 14);
}

TEST(GrowthDetector, EpisodeEndsAfterAWindowWithoutGrowthAndANewOneCanBegin) {
  GrowthDetector d;
  auto shape = [](int i) {
    // Growth for 20 samples, a plateau for 30, then growth again.
    const int clients = i < 20 ? i : (i < 50 ? 19 : 19 + (i - 49));
    return GrowthDetector::Sample{{}, clients, 0, 0};
  };
  const auto fed = feed(d, 90, 5s, 60s, shape);
  ASSERT_EQ(fed.changes.size(), 3U);
  EXPECT_TRUE(fed.changes[0].second.started);
  EXPECT_EQ(fed.changes[0].first, 12);
  // The last sample whose window still rose in each quarter is 21 (its last quarter went from
  // 18 to 19); the episode ends one window (12 samples) after it.
  EXPECT_FALSE(fed.changes[1].second.started);
  EXPECT_EQ(fed.changes[1].first, 33);
  // Growth again from sample 50: a new episode once every quarter of a window has risen.
  EXPECT_TRUE(fed.changes[2].second.started);
  EXPECT_EQ(fed.changes[2].first, 59);
}

TEST(GrowthDetector, ShortPauseKeepsTheEpisode) {
  GrowthDetector d;
  // Growth, a pause shorter than a quarter of the window, growth again: still one episode,
  // one warning.
  const auto fed = feed(d, 60, 5s, 60s, [](int i) {
    const int clients = i < 20 ? i : (i < 22 ? 19 : i - 2);
    return GrowthDetector::Sample{{}, clients, 0, 0};
  });
  ASSERT_EQ(fed.changes.size(), 1U);
  EXPECT_TRUE(fed.changes[0].second.started);
}

// --- AppMonitor -------------------------------------------------------------------------------

WorkerSample sample_of(const std::string& app, int clients, std::uint64_t transactions = 0) {
  WorkerSample s;
  s.apps[app].clients = clients;
  if (transactions) s.counted[app].transactions = transactions;
  return s;
}

TEST(AppMonitor, EachWorkerSamplesOncePerInterval) {
  AppMonitor m(2);
  const auto t = kStart;
  EXPECT_TRUE(m.begin_sample(0, t, 5000ms));
  EXPECT_FALSE(m.begin_sample(0, t + 200ms, 5000ms));
  EXPECT_TRUE(m.begin_sample(1, t + 200ms, 5000ms));
  EXPECT_TRUE(m.begin_sample(0, t + 5s, 5000ms));
  // Below 100 ms the interval is 100 ms.
  EXPECT_TRUE(m.begin_sample(1, t + 5s, 0ms));
  EXPECT_FALSE(m.begin_sample(1, t + 5s + 50ms, 0ms));
  EXPECT_TRUE(m.begin_sample(1, t + 5s + 100ms, 0ms));
  EXPECT_FALSE(m.begin_sample(7, t, 5000ms));  // no such worker
}

TEST(AppMonitor, ARoundCompletesWhenEveryWorkerHasReported) {
  AppMonitor m(2);
  EXPECT_FALSE(m.report(0, kStart, sample_of("web", 3, 10), 60s, 60s));
  auto round = m.report(1, kStart, sample_of("web", 2, 5), 60s, 60s);
  ASSERT_TRUE(round);
  EXPECT_EQ(round->at, kStart);
  EXPECT_EQ(round->apps.at("web").clients, 5);
  EXPECT_TRUE(round->health_due);  // the first round logs pool health at once
  // A worker reporting twice before the other replaces its own sample.
  EXPECT_FALSE(m.report(0, kStart + 5s, sample_of("web", 4), 60s, 60s));
  EXPECT_FALSE(m.report(0, kStart + 10s, sample_of("web", 6), 60s, 60s));
  round = m.report(1, kStart + 10s, sample_of("batch", 1), 60s, 60s);
  ASSERT_TRUE(round);
  EXPECT_EQ(round->apps.at("web").clients, 6);
  EXPECT_EQ(round->apps.at("batch").clients, 1);
  EXPECT_FALSE(round->health_due);  // stats_period (60 s) has not passed
  // Counts reach the totals at once, rounds or not; a leaving client adds its last ones.
  m.retire("web", SessionTally{4, 2});
  const auto view = m.view();
  EXPECT_EQ(view.at("web").totals.transactions, 17U);
  EXPECT_EQ(view.at("web").totals.queries, 4U);
  EXPECT_DOUBLE_EQ(*view.at("web").client_growth_per_min, 6.0);  // 5 -> 6 clients in 10 s
  EXPECT_FALSE(view.at("web").alarm.has_value());
}

TEST(AppMonitor, FeedsTheDetectorsAndReportsAnAlarmOnce) {
  AppMonitor m(1);
  std::vector<AppMonitor::GrowthChange> changes;
  for (int i = 0; i <= 20; ++i) {
    auto round = m.report(0, kStart + 1s * i, sample_of("leaky", 1 + i), 8s, 0ms);
    ASSERT_TRUE(round);
    EXPECT_FALSE(round->health_due);  // stats_period 0: no health lines
    for (auto& change : round->changes) changes.push_back(change);
  }
  ASSERT_EQ(changes.size(), 1U);
  EXPECT_EQ(changes[0].application_name, "leaky");
  EXPECT_TRUE(changes[0].change.started);
  const auto view = m.view();
  EXPECT_EQ(view.at("leaky").alarm, std::optional<Series>(Series::clients));
  EXPECT_EQ(format_growth_change("leaky", changes[0].change, 8s),
            "connections of leaky growing by 60.0/min; suspected leak: client connections 1 -> 9 "
            "in 8s while transactions went 0.0/s -> 0.0/s (leak_growth_window=8s)");
  // The application goes away: zeros are a fall, and a window later the episode ends.
  std::vector<AppMonitor::GrowthChange> ended;
  for (int i = 21; i <= 40; ++i) {
    auto round = m.report(0, kStart + 1s * i, WorkerSample{}, 8s, 0ms);
    for (auto& change : round->changes) ended.push_back(change);
  }
  ASSERT_EQ(ended.size(), 1U);
  EXPECT_FALSE(ended[0].change.started);
  EXPECT_EQ(format_growth_change("leaky", ended[0].change, 8s),
            "connections of leaky no longer growing (growth alarm on client connections ended)");
}

TEST(AppMonitor, WindowZeroTurnsTheAlarmOff) {
  AppMonitor m(1);
  for (int i = 0; i <= 20; ++i) {
    auto round = m.report(0, kStart + 1s * i, sample_of("leaky", 1 + i), 0ms, 0ms);
    ASSERT_TRUE(round);
    EXPECT_TRUE(round->changes.empty());
  }
  const auto view = m.view();
  EXPECT_FALSE(view.at("leaky").client_growth_per_min.has_value());
  EXPECT_FALSE(view.at("leaky").alarm.has_value());
}

TEST(AppMonitor, ForgetsApplicationsWithoutClientsAfterAnHour) {
  AppMonitor m(1);
  m.report(0, kStart, sample_of("once", 1, 3), 0ms, 0ms);
  m.report(0, kStart + 30min, WorkerSample{}, 0ms, 0ms);
  EXPECT_EQ(m.view().count("once"), 1U);
  m.report(0, kStart + 61min, WorkerSample{}, 0ms, 0ms);
  EXPECT_EQ(m.view().count("once"), 0U);
}

TEST(AppMonitor, PoolHealthLine) {
  PoolLive clients;
  clients.clients_active = 3;
  clients.clients_waiting = 1;
  clients.leaks = 2;
  clients.oldest_xact = kStart - 12300ms;
  pool::PoolStats servers;
  servers.active = 4;
  servers.idle = 5;
  servers.used = 2;
  EXPECT_EQ(format_pool_health("appdb", "app_user", clients, servers, kStart),
            "appdb/app_user: clients active=3 waiting=1, servers active=4 idle=3 used=2, "
            "suspected leaks=2, oldest transaction=12.3s");
  EXPECT_EQ(format_pool_health("appdb", "app_user", PoolLive{}, pool::PoolStats{}, kStart),
            "appdb/app_user: clients active=0 waiting=0, servers active=0 idle=0 used=0, "
            "suspected leaks=0, oldest transaction=-");
}

TEST(AppMonitor, PoolLiveKeepsTheOldestTransaction) {
  PoolLive a, b, none;
  a.oldest_xact = kStart - 5s;
  b.oldest_xact = kStart - 9s;
  a += none;
  EXPECT_EQ(a.oldest_xact, kStart - 5s);
  a += b;
  EXPECT_EQ(a.oldest_xact, kStart - 9s);
  none += a;
  EXPECT_EQ(none.oldest_xact, kStart - 9s);
}

}  // namespace
}  // namespace pgw::session
