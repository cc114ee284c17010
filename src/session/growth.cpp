#include "session/growth.hpp"

#include <array>

namespace pgw::session {
namespace {

int value_of(const GrowthDetector::Sample& sample, GrowthDetector::Series series) {
  return series == GrowthDetector::Series::clients ? sample.clients : sample.leases;
}

double seconds_between(const GrowthDetector::Sample& a, const GrowthDetector::Sample& b) {
  return std::chrono::duration<double>(b.at - a.at).count();
}

}  // namespace

std::string_view to_string(GrowthDetector::Series series) {
  return series == GrowthDetector::Series::clients ? "clients" : "leases";
}

std::optional<GrowthDetector::Change> GrowthDetector::add(const Sample& sample,
                                                          Clock::duration window) {
  samples_.push_back(sample);
  // Keep one sample at or before the window's start, so that the window is covered.
  while (samples_.size() >= 2 && samples_[1].at <= sample.at - window) samples_.pop_front();

  auto alarm = evaluate(Series::clients, window);
  if (!alarm) alarm = evaluate(Series::leases, window);
  if (alarm) {
    last_growing_ = sample.at;
    if (!alarmed_) {
      alarmed_ = true;
      alarm_ = *alarm;
      return Change{true, alarm_};
    }
    return std::nullopt;
  }
  if (alarmed_ && sample.at - last_growing_ >= window) {
    // A whole window without growth: the episode is over (a short pause does not end it, so
    // one leak that pauses for a moment is still one warning).
    alarmed_ = false;
    return Change{false, alarm_};
  }
  return std::nullopt;
}

double GrowthDetector::per_minute(Series series) const {
  if (samples_.size() < 2) return 0;
  const double minutes = seconds_between(samples_.front(), samples_.back()) / 60.0;
  if (minutes <= 0) return 0;
  return (value_of(samples_.back(), series) - value_of(samples_.front(), series)) / minutes;
}

std::optional<GrowthDetector::Alarm> GrowthDetector::evaluate(Series series,
                                                              Clock::duration window) const {
  if (samples_.size() < 5 || window <= Clock::duration::zero()) return std::nullopt;
  const auto end = samples_.back().at;
  const auto start = end - window;
  if (samples_.front().at > start) return std::nullopt;  // not a whole window yet

  // Never fell: a leak only adds connections. A count that drops was given back.
  for (std::size_t i = 1; i < samples_.size(); ++i) {
    if (value_of(samples_[i], series) < value_of(samples_[i - 1], series)) return std::nullopt;
  }
  // Rose in each quarter: steady growth, not one step (a burst of new clients, then flat).
  // point[q] is the last sample at or before start + q/4 of the window.
  std::array<std::size_t, 5> point{};
  std::size_t i = 0;
  for (std::size_t q = 0; q < point.size(); ++q) {
    const auto at = start + window * static_cast<long>(q) / 4;
    while (i + 1 < samples_.size() && samples_[i + 1].at <= at) ++i;
    point[q] = i;  // the last point (at == end) is the newest sample
  }
  std::array<double, 5> v{};
  for (std::size_t q = 0; q < point.size(); ++q) v[q] = value_of(samples_[point[q]], series);
  for (std::size_t q = 1; q < v.size(); ++q) {
    if (v[q] <= v[q - 1]) return std::nullopt;
  }

  // Did the work keep up? Compare the transaction rate of the window's second half with its
  // first half. If the connections are there to carry more work, the rate grows about as
  // much as the count does (in proportion); a leak adds connections that do nothing, so the
  // rate stays flat. The rate must grow by at least half as much as the count, relatively:
  //   (after - before) / before >= (mean_second - mean_first) / mean_first / 2,
  // multiplied out so that zeros (no transactions at all, or no connections at the start)
  // need no special case. No transactions in either half means no work: a leak.
  const auto& s0 = samples_[point[0]];
  const auto& s2 = samples_[point[2]];
  const auto& s4 = samples_[point[4]];
  auto rate = [](const Sample& from, const Sample& to) {
    const double done =
        static_cast<double>(to.transactions) - static_cast<double>(from.transactions);
    return done / seconds_between(from, to);
  };
  const double before = rate(s0, s2);
  const double after = rate(s2, s4);
  const double mean_first = (v[0] + v[1] + v[2]) / 3;
  const double mean_second = (v[2] + v[3] + v[4]) / 3;
  const bool work_kept_up = 2 * (after - before) * mean_first > before * (mean_second - mean_first);
  if (work_kept_up) return std::nullopt;

  Alarm alarm;
  alarm.series = series;
  alarm.from = static_cast<int>(v[0]);
  alarm.to = static_cast<int>(v[4]);
  alarm.over = s4.at - s0.at;
  alarm.per_minute = (v[4] - v[0]) / (seconds_between(s0, s4) / 60.0);
  alarm.transactions_per_s_before = before;
  alarm.transactions_per_s_after = after;
  return alarm;
}

}  // namespace pgw::session
