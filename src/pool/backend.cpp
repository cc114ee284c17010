#include "pool/backend.hpp"

namespace pgw::pool {

namespace {
// Two connections of one backend lost within this long are taken as the backend going away.
constexpr std::chrono::seconds kLossWindow{1};
}  // namespace

std::string backend_name(const std::string& host, int port) {
  return (host.empty() ? std::string("/var/run/postgresql") : host) + ":" + std::to_string(port);
}

void Backend::configure(const BreakerSettings& settings) {
  std::lock_guard lock(mutex_);
  if (breaker_.settings() == settings) return;
  breaker_.configure(settings);
  publish_state();
}

void Backend::reset_breaker() {
  std::lock_guard lock(mutex_);
  if (breaker_.state() == BreakerState::closed && breaker_.consecutive_failures() == 0) return;
  breaker_.reset();
  publish_state();
}

void Backend::publish_state() {
  state_.store(breaker_.state(), std::memory_order_relaxed);
}

Breaker::Change Backend::login_succeeded(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  last_success_ = now;
  const auto change = breaker_.succeeded(now);
  publish_state();
  return change;
}

bool Backend::served_recently(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  return last_success_ != Clock::time_point{} && now - last_success_ < kBreakerWindow;
}

Breaker::Change Backend::login_failed(Clock::time_point now, std::string error, bool probe) {
  std::lock_guard lock(mutex_);
  const auto change = breaker_.failed(now, std::move(error), probe);
  publish_state();
  return change;
}

bool Backend::begin_probe(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  const bool probe = breaker_.begin_probe(now);
  publish_state();
  return probe;
}

void Backend::probe_not_started(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  breaker_.probe_not_started(now);
  publish_state();
}

bool Backend::connection_lost(Clock::time_point now, std::string_view sqlstate) {
  std::lock_guard lock(mutex_);
  // 57P02: the server crashed (every backend is being terminated); 57P03: it is shutting down
  // or starting up. Either way no idle connection to it survives.
  const bool whole_backend = sqlstate == "57P02" || sqlstate == "57P03" ||
                             (last_loss_ != Clock::time_point{} && now - last_loss_ < kLossWindow);
  last_loss_ = now;
  if (whole_backend) ++losses_;
  return whole_backend;
}

BackendStatus Backend::status(Clock::time_point now) const {
  std::lock_guard lock(mutex_);
  BackendStatus s;
  s.name = name_;
  s.state = breaker_.state();
  s.last_error = breaker_.last_error();
  s.consecutive_failures = breaker_.consecutive_failures();
  s.until_probe = breaker_.until_probe(now);
  s.times_opened = breaker_.times_opened();
  s.backend_losses = losses_;
  return s;
}

}  // namespace pgw::pool
