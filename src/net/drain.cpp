#include "net/drain.hpp"

namespace pgw::net {

const char* describe(ShutdownMode mode) {
  switch (mode) {
    case ShutdownMode::none:
      return "no";
    case ShutdownMode::drain:
      return "draining (SIGTERM): transactions may finish";
    case ShutdownMode::wait_for_servers:
      return "waiting for servers (SIGINT): pools paused";
    case ShutdownMode::immediate:
      return "closing every connection now";
  }
  return "?";
}

Drain::Drain(unsigned workers) : workers_(workers), reports_(new Report[workers]) {}

void Drain::begin(ShutdownMode mode, Clock::time_point now, std::chrono::milliseconds window) {
  for (unsigned i = 0; i < workers_; ++i) {
    reports_[i].sessions.store(-1, std::memory_order_relaxed);
    reports_[i].leased.store(-1, std::memory_order_relaxed);
  }
  deadline_.store((now + window).time_since_epoch().count(), std::memory_order_relaxed);
  if (mode == ShutdownMode::immediate) final_.store(true, std::memory_order_relaxed);
  mode_.store(mode, std::memory_order_release);
}

Drain::Clock::time_point Drain::deadline() const {
  return Clock::time_point(Clock::duration(deadline_.load(std::memory_order_relaxed)));
}

void Drain::report(unsigned worker, int sessions, int leased) {
  auto& r = reports_[worker];
  r.sessions.store(sessions, std::memory_order_relaxed);
  r.leased.store(leased, std::memory_order_relaxed);
}

bool Drain::all_sessions_gone() const {
  for (unsigned i = 0; i < workers_; ++i) {
    if (reports_[i].sessions.load(std::memory_order_relaxed) != 0) return false;
  }
  return true;
}

bool Drain::no_server_leased() const {
  for (unsigned i = 0; i < workers_; ++i) {
    if (reports_[i].leased.load(std::memory_order_relaxed) != 0) return false;
  }
  return true;
}

}  // namespace pgw::net
