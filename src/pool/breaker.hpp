// The circuit breaker of one backend (host, port), as a pure state machine: it is fed the
// outcome of every connection attempt toward the backend with an explicit timestamp and never
// reads a clock or sleeps itself, so its rules are unit-tested exactly (tests/unit/breaker_test).
//
//   closed     logins are attempted. It opens after `failures` consecutive failed attempts, or
//              when at least half of at least 5 attempts in the last 30 s failed.
//   open       no login is attempted; clients are told 57P03 at once. After the open wait
//              (open_min, doubled after each failed probe up to open_max) it lets one probe
//              through and becomes
//   half_open  the probe (connect, login, server_check_query) decides: success closes it,
//              failure opens it again for twice as long.
//
// Only connection-class failures are fed to it (docs/operations.md lists them); a client's
// SQL error never is.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace pgw::pool {

enum class BreakerState : std::uint8_t { closed, open, half_open };
std::string_view to_string(BreakerState state);

struct BreakerSettings {
  int failures = 5;  // consecutive failures that open it; 0 turns the breaker off
  std::chrono::milliseconds open_min{5000};
  std::chrono::milliseconds open_max{60000};
  bool operator==(const BreakerSettings&) const = default;
};

// The failure-rate rule: half of at least kMinAttempts attempts within kWindow.
inline constexpr std::chrono::seconds kBreakerWindow{30};
inline constexpr int kBreakerMinAttempts = 5;

class Breaker {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;
  // What an outcome changed, so the caller can act (fail waiters, log) outside its locks.
  enum class Change : std::uint8_t { none, opened, closed };

  explicit Breaker(BreakerSettings settings = {}) { configure(settings); }
  void configure(BreakerSettings settings);
  // Closed, with no failures counted: the login target was changed by the operator (a new
  // password, TLS setting, host), so the failures seen with the old one say nothing.
  void reset();

  BreakerState state() const { return state_; }
  bool allows_logins() const { return state_ == BreakerState::closed; }
  // Open and its wait is over: becomes half_open and returns true once; the caller then runs
  // the probe and reports it with probe = true.
  bool begin_probe(TimePoint now);
  // The probe could not be started (no pool can log in now): stay open, try again shortly.
  void probe_not_started(TimePoint now);

  Change succeeded(TimePoint now);
  // `error` is what the attempt ran into, for SHOW DATABASES and the clients' DETAIL.
  Change failed(TimePoint now, std::string error, bool probe);

  // Time until the next probe while open; zero when closed, half_open or due.
  Clock::duration until_probe(TimePoint now) const;
  const std::string& last_error() const { return last_error_; }
  int consecutive_failures() const { return consecutive_failures_; }
  std::chrono::milliseconds open_wait() const { return open_wait_; }
  std::uint64_t times_opened() const { return times_opened_; }
  const BreakerSettings& settings() const { return settings_; }

 private:
  // One second of the 30 s window: attempts and failures that happened in it.
  struct Bucket {
    std::int64_t second = -1;
    int attempts = 0;
    int failures = 0;
  };
  void count(TimePoint now, bool failure);
  bool rate_exceeded(TimePoint now) const;
  void open(TimePoint now, std::chrono::milliseconds wait);

  BreakerSettings settings_;
  BreakerState state_ = BreakerState::closed;
  int consecutive_failures_ = 0;
  std::chrono::milliseconds open_wait_{0};
  TimePoint next_probe_{};
  std::array<Bucket, kBreakerWindow.count()> window_{};
  std::string last_error_;
  std::uint64_t times_opened_ = 0;
};

// Delay before the next connection attempt after `failures_in_row` failed ones: exponential
// backoff with full jitter (uniformly in [0, min(cap, base * 2^(failures_in_row - 1))]), so
// pools that failed together do not retry in lockstep. `uniform01` is a random number in [0, 1).
std::chrono::milliseconds reconnect_delay(int failures_in_row, double uniform01,
                                          std::chrono::milliseconds base,
                                          std::chrono::milliseconds cap);
inline constexpr std::chrono::milliseconds kReconnectBase{250};
inline constexpr std::chrono::milliseconds kReconnectCap{10000};

}  // namespace pgw::pool
