// The event-loop watchdog: every worker's loop records when it last came round
// (Reactor::last_turn) and what it is doing (Reactor::activity). A loop that has not come round
// for over a second is stuck in one piece of work (a blocking call, a long computation) while
// every client on that worker waits; the watchdog logs it once per stall, with the worker and
// the activity, logs again when the loop runs again, and counts stalls for SHOW STATE.
//
// check() takes the time as a parameter and only reads the loops, so the rule is unit-tested
// without sleeping; the Runtime calls it from a timer on the main thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "net/reactor.hpp"

namespace pgw::net {

class Watchdog {
 public:
  static constexpr std::chrono::milliseconds kStallThreshold{1000};

  // A loop that is stalled now (reported the first time it is seen) or has just recovered.
  struct Finding {
    unsigned worker = 0;
    bool recovered = false;  // false: stalled now
    Clock::duration stalled_for{};
    std::string activity;  // what the loop was doing
  };

  explicit Watchdog(std::vector<const Reactor*> loops,
                    std::chrono::milliseconds threshold = kStallThreshold);

  // Looks at every loop at `now`; returns what is new since the last call (and logs it when
  // `log` is set).
  std::vector<Finding> check(Clock::time_point now, bool log = true);

  std::uint64_t stalls() const { return stalls_.load(std::memory_order_relaxed); }
  // The longest stall seen so far (including one still going on).
  Clock::duration longest() const {
    return Clock::duration(longest_.load(std::memory_order_relaxed));
  }

 private:
  struct LoopState {
    Clock::time_point stalled_turn{};  // the last_turn() of the stall being reported
    bool stalled = false;
    std::string activity;
  };
  std::vector<const Reactor*> loops_;
  std::vector<LoopState> states_;
  std::chrono::milliseconds threshold_;
  std::atomic<std::uint64_t> stalls_{0};
  std::atomic<Clock::rep> longest_{0};
};

}  // namespace pgw::net
