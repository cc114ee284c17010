// The growth alarm (docs/leak-guard.md#growth-alarm): one application's client connections
// or held server connections rising steadily while its work does not rise with them, which is
// what a connection leak looks like from the pooler when no single lease is old enough to be
// flagged yet (a pool that hands out connections and never gets them back).
//
// Pure: fed samples with explicit timestamps (tests/unit/growth_test.cpp needs no sleeping).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>

namespace pgw::session {

class GrowthDetector {
 public:
  using Clock = std::chrono::steady_clock;

  struct Sample {
    Clock::time_point at{};
    int clients = 0;                 // connected clients
    int leases = 0;                  // server connections held by them
    std::uint64_t transactions = 0;  // completed since the start (cumulative)
  };
  enum class Series : std::uint8_t { clients, leases };

  // What the window looked like when an episode began.
  struct Alarm {
    Series series = Series::clients;
    double per_minute = 0;  // growth of the series over the window
    int from = 0, to = 0;   // the series at the start and at the end of the window
    Clock::duration over{};
    double transactions_per_s_before = 0;  // the window's first half
    double transactions_per_s_after = 0;   // and its second half
  };
  struct Change {
    bool started = false;  // false: the episode `alarm` began with has ended
    Alarm alarm;
  };

  // Adds the next sample (timestamps must increase) and evaluates the last `window`. Returns
  // the change when an episode begins (once, however long the growth goes on) or ends (no
  // growth of either series for a whole window).
  std::optional<Change> add(const Sample& sample, Clock::duration window);

  bool alarmed() const { return alarmed_; }
  // The series of the current episode (meaningful while alarmed()).
  Series alarmed_series() const { return alarm_.series; }
  // Growth per minute of a series between the oldest and the newest sample kept (at most a
  // window apart); 0 with fewer than two samples.
  double per_minute(Series series) const;

  // The rule, for one series over the samples kept: it covers the whole window, never fell,
  // rose in each quarter of the window, and the transaction rate did not keep up (see the
  // .cpp). nullopt when any part does not hold.
  std::optional<Alarm> evaluate(Series series, Clock::duration window) const;

 private:
  std::deque<Sample> samples_;  // the oldest is at or before the newest minus the window
  bool alarmed_ = false;
  Alarm alarm_;
  Clock::time_point last_growing_{};  // the last sample at which either series met the rule
};

std::string_view to_string(GrowthDetector::Series series);

}  // namespace pgw::session
