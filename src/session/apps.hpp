// Per-application accounting for SHOW APPS, the growth alarm and the pool health lines
// (docs/leak-guard.md). Sessions live on their worker threads and may be read only there, so
// every worker's janitor takes a sample of its own sessions once per leak_growth_interval
// (sample_apps) and hands it to the one AppMonitor; when every worker has reported, the
// monitor combines the latest samples into one round, feeds each application's
// GrowthDetector and says whether the pool health lines are due. Samples are aligned to
// multiples of the interval, so the workers' parts of a round are taken within one janitor
// tick (200 ms) of each other.
//
// Completed transactions and queries are counted per session (Lease::tally) and added to the
// application's totals as deltas: at each sample and when the client leaves (retire()), so the
// totals only grow even when a client changes its application_name.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "session/growth.hpp"
#include "session/lease.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::pool {
class Pool;
struct PoolStats;
}  // namespace pgw::pool

namespace pgw::session {

struct SessionServices;

// One application's clients right now.
struct AppLive {
  int clients = 0;  // logged in (not authenticating, not closing)
  int waiting = 0;  // of which queued for a server connection
  int active = 0, idle_in_transaction = 0, idle_pinned = 0;  // leases by state
  int leaks = 0;  // leases that are suspected leaks (as SHOW LEAKS)
  int leases() const { return active + idle_in_transaction + idle_pinned; }
  AppLive& operator+=(const AppLive& other);
};

// One pool's clients right now (the server side comes from Pool::stats()).
struct PoolLive {
  int clients_active = 0, clients_waiting = 0;
  int leaks = 0;
  std::chrono::steady_clock::time_point oldest_xact{};  // {} = no transaction open
  PoolLive& operator+=(const PoolLive& other);
};

// What one worker's janitor saw on its own sessions.
struct WorkerSample {
  std::map<std::string, AppLive> apps;
  std::map<const pool::Pool*, PoolLive> pools;
  std::map<std::string, SessionTally> counted;  // completed since this worker's last sample
};

// One application as SHOW APPS shows it, besides what the sessions themselves say.
struct AppView {
  SessionTally totals;  // reported so far (sessions add what they have not reported yet)
  std::optional<double> client_growth_per_min, lease_growth_per_min;  // nullopt: alarm off
  std::optional<GrowthDetector::Series> alarm;  // the series of a growth episode in progress
};

class AppMonitor {
 public:
  using Clock = std::chrono::steady_clock;

  explicit AppMonitor(unsigned workers)
      : latest_(workers), reported_(workers, false), last_round_(workers, 0) {}

  // Whether `worker` is due to sample for the interval `now` falls in; if so, marks it taken.
  bool begin_sample(unsigned worker, Clock::time_point now, config::Millis interval);

  // A growth episode that began or ended for an application.
  struct GrowthChange {
    std::string application_name;
    GrowthDetector::Change change;
  };
  // All workers' latest samples, combined.
  struct Round {
    Clock::time_point at{};
    std::map<std::string, AppLive> apps;
    std::map<const pool::Pool*, PoolLive> pools;
    std::vector<GrowthChange> changes;
    bool health_due = false;  // stats_period has passed since the last pool health lines
  };
  // A worker's sample. Its counts go to the totals at once; when it completes a round (every
  // worker has reported since the last one), returns the round, after feeding the growth
  // detectors (window 0: off) and checking whether pool health lines are due (period 0: off).
  std::optional<Round> report(unsigned worker, Clock::time_point now, WorkerSample sample,
                              config::Millis window, config::Millis health_period);
  // The last counts of a client that leaves.
  void retire(const std::string& application_name, const SessionTally& counts);

  std::map<std::string, AppView> view() const;

  // An application without clients for this long is forgotten (totals and detector), so that
  // clients with ever-new application_names cannot grow the maps without bound.
  static constexpr std::chrono::hours kForgetAfter{1};

 private:
  struct App {
    SessionTally totals;
    GrowthDetector growth;
    bool growth_on = false;         // fed with samples since the window was last switched on
    Clock::time_point last_seen{};  // the last round in which it had clients
  };
  void observe_locked(Round& round, config::Millis window);

  mutable util::LeafMutex mutex_;
  std::vector<WorkerSample> latest_;       // by worker
  std::vector<bool> reported_;             // by worker, since the last round
  std::vector<std::uint64_t> last_round_;  // by worker: the interval it last sampled in
  std::map<std::string, App> apps_;
  Clock::time_point last_health_{};
};

// One "pool health" log line's text (after "pool health: ").
std::string format_pool_health(const std::string& database, const std::string& user,
                               const PoolLive& clients, const pool::PoolStats& servers,
                               std::chrono::steady_clock::time_point now);
// The growth alarm's warning, and the line when its episode ends.
std::string format_growth_change(const std::string& application_name,
                                 const GrowthDetector::Change& change, config::Millis window);

// The janitor's hook (called on `worker`'s thread, every tick): samples that worker's sessions
// once per leak_growth_interval, and logs growth alarms and pool health when a round completes.
// Defined in app_sampler.cpp.
void sample_apps(SessionServices& services, unsigned worker,
                 std::chrono::steady_clock::time_point now, const config::Config& config);

}  // namespace pgw::session
