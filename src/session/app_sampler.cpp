// The janitor's side of the per-application accounting (session/apps.hpp): sample this
// worker's sessions, and log what a completed round says. Runs on the worker's thread.
#include <spdlog/spdlog.h>

#include "session/apps.hpp"
#include "session/client_session.hpp"
#include "session/services.hpp"

namespace pgw::session {
namespace {

void log_growth(LeakBook& leaks, const AppMonitor::GrowthChange& growth, config::Millis window) {
  const std::string text = format_growth_change(growth.application_name, growth.change, window);
  if (!growth.change.started) {
    spdlog::info("{}", text);
    return;
  }
  spdlog::warn("{}", text);
  leaks.events.push(LeakEvent{
      std::chrono::system_clock::now(), 0, growth.application_name, "growth_alarm", text, 0, {}});
}

void log_pool_health(pool::PoolManager& pools, const AppMonitor::Round& round) {
  pools.for_each([&](pool::Pool& pool) {
    const auto it = round.pools.find(&pool);
    const PoolLive clients = it == round.pools.end() ? PoolLive{} : it->second;
    spdlog::info("pool health: {}",
                 format_pool_health(pool.database(), pool.user(), clients, pool.stats(), round.at));
  });
}

}  // namespace

void sample_apps(SessionServices& services, unsigned worker, Clock::time_point now,
                 const config::Config& config) {
  auto& apps = services.apps;
  if (!apps.begin_sample(worker, now, config.leak_growth_interval)) return;
  WorkerSample sample;
  for (auto* session : services.sessions.sessions(worker)) {
    session->add_to_sample(now, config, sample);
  }
  auto round =
      apps.report(worker, now, std::move(sample), config.leak_growth_window, config.stats_period);
  if (!round) return;
  for (const auto& growth : round->changes) {
    log_growth(services.leaks, growth, config.leak_growth_window);
  }
  if (round->health_due) log_pool_health(services.pools, *round);
}

}  // namespace pgw::session
