#include "session/apps.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "pool/pool.hpp"

namespace pgw::session {
namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

AppLive& AppLive::operator+=(const AppLive& other) {
  clients += other.clients;
  waiting += other.waiting;
  active += other.active;
  idle_in_transaction += other.idle_in_transaction;
  idle_pinned += other.idle_pinned;
  leaks += other.leaks;
  return *this;
}

PoolLive& PoolLive::operator+=(const PoolLive& other) {
  clients_active += other.clients_active;
  clients_waiting += other.clients_waiting;
  leaks += other.leaks;
  if (other.oldest_xact != std::chrono::steady_clock::time_point{} &&
      (oldest_xact == std::chrono::steady_clock::time_point{} || other.oldest_xact < oldest_xact)) {
    oldest_xact = other.oldest_xact;
  }
  return *this;
}

bool AppMonitor::begin_sample(unsigned worker, Clock::time_point now, config::Millis interval) {
  // Below 100 ms a sample would cost more than it tells.
  const auto step = std::max(interval, config::Millis{100});
  // Rounds are counted from the clock's epoch, so every worker's round of a given moment is the
  // same; "different from the last" (not "greater") survives a reload that changes the step.
  const auto round = static_cast<std::uint64_t>(now.time_since_epoch() / step);
  std::lock_guard lock(mutex_);
  if (worker >= last_round_.size() || last_round_[worker] == round) return false;
  last_round_[worker] = round;
  return true;
}

std::optional<AppMonitor::Round> AppMonitor::report(unsigned worker, Clock::time_point now,
                                                    WorkerSample sample, config::Millis window,
                                                    config::Millis health_period) {
  std::lock_guard lock(mutex_);
  if (worker >= reported_.size()) return std::nullopt;
  for (const auto& [name, counts] : sample.counted) apps_[name].totals += counts;
  sample.counted.clear();
  latest_[worker] = std::move(sample);
  reported_[worker] = true;
  if (std::find(reported_.begin(), reported_.end(), false) != reported_.end()) return std::nullopt;
  std::fill(reported_.begin(), reported_.end(), false);

  Round round;
  round.at = now;
  for (const auto& part : latest_) {
    for (const auto& [name, live] : part.apps) round.apps[name] += live;
    for (const auto& [pool, live] : part.pools) round.pools[pool] += live;
  }
  observe_locked(round, window);
  if (health_period.count() > 0 &&
      (last_health_ == Clock::time_point{} || now - last_health_ >= health_period)) {
    round.health_due = true;
    last_health_ = now;
  }
  return round;
}

void AppMonitor::observe_locked(Round& round, config::Millis window) {
  for (const auto& [name, live] : round.apps) {
    if (live.clients > 0) apps_[name].last_seen = round.at;
  }
  for (auto it = apps_.begin(); it != apps_.end();) {
    auto& [name, app] = *it;
    const auto live_it = round.apps.find(name);
    const AppLive live = live_it == round.apps.end() ? AppLive{} : live_it->second;
    if (live.clients == 0 && app.last_seen != Clock::time_point{} &&
        round.at - app.last_seen > kForgetAfter) {
      it = apps_.erase(it);
      continue;
    }
    if (app.last_seen == Clock::time_point{}) app.last_seen = round.at;  // counted, never seen
    if (window.count() <= 0) {
      app.growth = GrowthDetector{};
      app.growth_on = false;
    } else {
      app.growth_on = true;
      auto change =
          app.growth.add({round.at, live.clients, live.leases(), app.totals.transactions}, window);
      if (change) round.changes.push_back({name, *change});
    }
    ++it;
  }
}

void AppMonitor::retire(const std::string& application_name, const SessionTally& counts) {
  std::lock_guard lock(mutex_);
  apps_[application_name].totals += counts;
}

std::map<std::string, AppView> AppMonitor::view() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, AppView> out;
  for (const auto& [name, app] : apps_) {
    AppView& v = out[name];
    v.totals = app.totals;
    if (app.growth_on) {
      v.client_growth_per_min = app.growth.per_minute(GrowthDetector::Series::clients);
      v.lease_growth_per_min = app.growth.per_minute(GrowthDetector::Series::leases);
      if (app.growth.alarmed()) v.alarm = app.growth.alarmed_series();
    }
  }
  return out;
}

std::string format_pool_health(const std::string& database, const std::string& user,
                               const PoolLive& clients, const pool::PoolStats& servers,
                               std::chrono::steady_clock::time_point now) {
  const std::string oldest = clients.oldest_xact == std::chrono::steady_clock::time_point{}
                                 ? std::string("-")
                                 : fmt::format("{:.1f}s", seconds(now - clients.oldest_xact));
  // Server states as SHOW POOLS counts them: sv_idle excludes the idle servers due for a check.
  return fmt::format(
      "{}/{}: clients active={} waiting={}, servers active={} idle={} used={}, "
      "suspected leaks={}, oldest transaction={}",
      database, user, clients.clients_active, clients.clients_waiting, servers.active,
      servers.idle - servers.used, servers.used, clients.leaks, oldest);
}

std::string format_growth_change(const std::string& application_name,
                                 const GrowthDetector::Change& change, config::Millis window) {
  const auto& a = change.alarm;
  const char* what = a.series == GrowthDetector::Series::clients ? "client connections"
                                                                 : "server connections held";
  if (!change.started) {
    return fmt::format("connections of {} no longer growing (growth alarm on {} ended)",
                       printable(application_name), what);
  }
  return fmt::format(
      "connections of {} growing by {:.1f}/min; suspected leak: {} {} -> {} in {:.0f}s while "
      "transactions went {:.1f}/s -> {:.1f}/s (leak_growth_window={:g}s)",
      printable(application_name), a.per_minute, what, a.from, a.to, seconds(a.over),
      a.transactions_per_s_before, a.transactions_per_s_after,
      static_cast<double>(window.count()) / 1000.0);
}

}  // namespace pgw::session
