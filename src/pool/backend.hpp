// A PostgreSQL server as pgwarden's pools see it: one per (host, port), shared by every pool
// that connects there (PoolManager owns them; they live as long as the process). It carries the
// circuit breaker (pool/breaker.hpp) and notices a backend that went away as a whole (a crash
// or restart: several of its connections lost at once).
//
// Thread-safe: pools on any worker report to it under its own small mutex, taken per login and
// per lost connection, never per message; whether it accepts logins is also kept in an atomic,
// so a client asking for a server reads one relaxed load.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "pool/breaker.hpp"
#include "util/ranked_mutex.hpp"

namespace pgw::pool {

// What the console and the clients' DETAIL/HINT show of a backend.
struct BackendStatus {
  std::string name;  // "host:port"
  BreakerState state = BreakerState::closed;
  std::string last_error;
  int consecutive_failures = 0;
  std::chrono::steady_clock::duration until_probe{};
  std::uint64_t times_opened = 0;
  std::uint64_t backend_losses = 0;  // crashes / restarts noticed
};

class Backend {
 public:
  using Clock = std::chrono::steady_clock;

  Backend(std::string name, BreakerSettings settings)
      : name_(std::move(name)), breaker_(settings) {}
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  const std::string& name() const { return name_; }
  void configure(const BreakerSettings& settings);
  // A pool's login target changed (Breaker::reset): logins may be tried again at once.
  void reset_breaker();

  // Closed breaker: logins may be attempted (one relaxed load).
  bool accepts_logins() const {
    return state_.load(std::memory_order_relaxed) == BreakerState::closed;
  }
  BreakerState state() const { return state_.load(std::memory_order_relaxed); }

  Breaker::Change login_succeeded(Clock::time_point now);
  // Some pool logged in to this backend within the breaker's window (30 s).
  bool served_recently(Clock::time_point now) const;
  Breaker::Change login_failed(Clock::time_point now, std::string error, bool probe);
  bool begin_probe(Clock::time_point now);
  void probe_not_started(Clock::time_point now);

  // A server connection of this backend ended unasked (EOF or a FATAL). True when this looks
  // like the whole backend going away: a crash or shutdown code (57P02, 57P03), or the second
  // loss within a second. The caller then evicts every idle connection to it.
  bool connection_lost(Clock::time_point now, std::string_view sqlstate);

  BackendStatus status(Clock::time_point now) const;

 private:
  void publish_state();

  const std::string name_;
  mutable util::LeafMutex mutex_;
  Breaker breaker_;
  std::atomic<BreakerState> state_{BreakerState::closed};
  Clock::time_point last_loss_{};
  Clock::time_point last_success_{};
  std::uint64_t losses_ = 0;
};

// The key of a backend: where its pools connect ("" host means the default Unix socket dir).
std::string backend_name(const std::string& host, int port);

}  // namespace pgw::pool
