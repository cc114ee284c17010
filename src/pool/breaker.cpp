#include "pool/breaker.hpp"

#include <algorithm>
#include <cmath>

namespace pgw::pool {

using std::chrono::milliseconds;

std::string_view to_string(BreakerState state) {
  switch (state) {
    case BreakerState::closed:
      return "closed";
    case BreakerState::open:
      return "open";
    case BreakerState::half_open:
      return "half_open";
  }
  return "?";
}

void Breaker::reset() {
  state_ = BreakerState::closed;
  consecutive_failures_ = 0;
  open_wait_ = std::chrono::milliseconds(0);
  window_ = {};
}

void Breaker::configure(BreakerSettings settings) {
  settings.open_min = std::max(settings.open_min, milliseconds(1));
  settings.open_max = std::max(settings.open_max, settings.open_min);
  settings_ = settings;
  if (settings_.failures <= 0 && state_ != BreakerState::closed) {
    // Turned off while open: let logins through again.
    state_ = BreakerState::closed;
    consecutive_failures_ = 0;
    window_ = {};
  }
}

bool Breaker::begin_probe(TimePoint now) {
  if (state_ != BreakerState::open || now < next_probe_) return false;
  state_ = BreakerState::half_open;
  return true;
}

void Breaker::probe_not_started(TimePoint now) {
  if (state_ != BreakerState::half_open) return;
  state_ = BreakerState::open;
  next_probe_ = now + std::min(open_wait_, milliseconds(1000));
}

Breaker::Change Breaker::succeeded(TimePoint now) {
  if (state_ == BreakerState::closed) {
    consecutive_failures_ = 0;
    count(now, false);
    return Change::none;
  }
  // The probe worked, or a login that started before the breaker opened did: the backend
  // answers again. The old failures must not count against the fresh start.
  state_ = BreakerState::closed;
  consecutive_failures_ = 0;
  open_wait_ = milliseconds(0);
  window_ = {};
  return Change::closed;
}

Breaker::Change Breaker::failed(TimePoint now, std::string error, bool probe) {
  last_error_ = std::move(error);
  switch (state_) {
    case BreakerState::closed:
      ++consecutive_failures_;
      count(now, true);
      if (settings_.failures > 0 &&
          (consecutive_failures_ >= settings_.failures || rate_exceeded(now))) {
        open(now, settings_.open_min);
        return Change::opened;
      }
      return Change::none;
    case BreakerState::half_open:
      if (!probe) return Change::none;  // an attempt from before it opened: the probe decides
      ++consecutive_failures_;
      open(now, std::min(open_wait_ * 2, settings_.open_max));
      return Change::opened;
    case BreakerState::open:
      // Attempts that were under way when it opened: already accounted for.
      return Change::none;
  }
  return Change::none;
}

Breaker::Clock::duration Breaker::until_probe(TimePoint now) const {
  if (state_ != BreakerState::open || now >= next_probe_) return Clock::duration::zero();
  return next_probe_ - now;
}

void Breaker::count(TimePoint now, bool failure) {
  const auto second =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  auto& bucket = window_[static_cast<std::size_t>(second % kBreakerWindow.count())];
  if (bucket.second != second) bucket = Bucket{second, 0, 0};
  ++bucket.attempts;
  if (failure) ++bucket.failures;
}

bool Breaker::rate_exceeded(TimePoint now) const {
  const auto second =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  int attempts = 0;
  int failures = 0;
  for (const auto& bucket : window_) {
    if (bucket.second > second - kBreakerWindow.count() && bucket.second <= second) {
      attempts += bucket.attempts;
      failures += bucket.failures;
    }
  }
  return attempts >= kBreakerMinAttempts && failures * 2 >= attempts;
}

void Breaker::open(TimePoint now, milliseconds wait) {
  state_ = BreakerState::open;
  open_wait_ = std::clamp(wait, settings_.open_min, settings_.open_max);
  next_probe_ = now + open_wait_;
  ++times_opened_;
}

milliseconds reconnect_delay(int failures_in_row, double uniform01, milliseconds base,
                             milliseconds cap) {
  if (failures_in_row <= 0 || cap.count() <= 0) return milliseconds(0);
  // base * 2^(n-1), computed in double so a long outage cannot overflow the shift.
  const double ceiling = std::min(
      static_cast<double>(cap.count()),
      static_cast<double>(base.count()) * std::exp2(static_cast<double>(failures_in_row - 1)));
  const double fraction = std::clamp(uniform01, 0.0, 1.0);
  return milliseconds(static_cast<milliseconds::rep>(ceiling * fraction));
}

}  // namespace pgw::pool
