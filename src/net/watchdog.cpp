#include "net/watchdog.hpp"

#include <spdlog/spdlog.h>

namespace pgw::net {

Watchdog::Watchdog(std::vector<const Reactor*> loops, std::chrono::milliseconds threshold)
    : loops_(std::move(loops)), states_(loops_.size()), threshold_(threshold) {}

std::vector<Watchdog::Finding> Watchdog::check(Clock::time_point now, bool log) {
  std::vector<Finding> findings;
  for (unsigned i = 0; i < loops_.size(); ++i) {
    const auto turn = loops_[i]->last_turn();
    auto& state = states_[i];
    const auto behind = now - turn;
    if (state.stalled && turn != state.stalled_turn) {
      // The loop came round again: the stall lasted from its last turn to this new one.
      const auto lasted = turn - state.stalled_turn;
      state.stalled = false;
      if (lasted.count() > longest_.load(std::memory_order_relaxed))
        longest_.store(lasted.count(), std::memory_order_relaxed);
      findings.push_back({i, true, lasted, state.activity});
      if (log) {
        spdlog::warn("watchdog: worker {} event loop running again after a stall of {:.1f} s ({})",
                     i, std::chrono::duration<double>(lasted).count(), state.activity);
      }
    }
    if (!state.stalled && behind > threshold_) {
      state.stalled = true;
      state.stalled_turn = turn;
      state.activity = loops_[i]->activity();
      stalls_.fetch_add(1, std::memory_order_relaxed);
      if (behind.count() > longest_.load(std::memory_order_relaxed))
        longest_.store(behind.count(), std::memory_order_relaxed);
      findings.push_back({i, false, behind, state.activity});
      if (log) {
        spdlog::warn(
            "watchdog: worker {} event loop stalled for {:.1f} s while {}; its clients wait", i,
            std::chrono::duration<double>(behind).count(), state.activity);
      }
    } else if (state.stalled && behind.count() > longest_.load(std::memory_order_relaxed)) {
      longest_.store(behind.count(), std::memory_order_relaxed);
    }
  }
  return findings;
}

}  // namespace pgw::net
