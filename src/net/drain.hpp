// Shutdown, step by step (docs/operations.md, "Signals"):
//
//   SIGTERM  drain: new logins get 57P03 "the database system is shutting down"; idle and
//            waiting clients get 57P01 at once; a client inside a transaction may finish it
//            (its COMMIT goes through) and is closed with 57P01 when it is idle again; after
//            shutdown_drain_timeout the rest are cut off (query cancelled, transaction rolled
//            back, 57P01). Then servers close and the process exits 0.
//   SIGINT   PgBouncer's "safe shutdown" (PAUSE, then SHUTDOWN once every server is back):
//            new logins get 57P03, pools pause (clients that want a server queue), running
//            transactions finish; when no server connection is leased, or after
//            shutdown_drain_timeout, every client gets 57P01 and the process exits 0.
//   a second SIGTERM or SIGINT during either: immediate (everyone 57P01 now).
//
// Drain holds the state the Runtime's threads share: the mode and its deadline (set on the
// main thread, read by every worker's janitor) and what each worker reports back (how many
// sessions it still has and how many of them hold a server), so the main thread knows when
// it may exit.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

namespace pgw::net {

enum class ShutdownMode : std::uint8_t { none, drain, wait_for_servers, immediate };
const char* describe(ShutdownMode mode);

class Drain {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Drain(unsigned workers);

  // Main thread.
  void begin(ShutdownMode mode, Clock::time_point now, std::chrono::milliseconds window);
  // Every remaining session is to end now (the window is over, or SIGINT found no server
  // leased any more).
  void end_window() { final_.store(true, std::memory_order_relaxed); }
  // Every worker has reported since the shutdown began, and none has a session left / a
  // leased server.
  bool all_sessions_gone() const;
  bool no_server_leased() const;

  // Any thread.
  ShutdownMode mode() const { return mode_.load(std::memory_order_relaxed); }
  bool active() const { return mode() != ShutdownMode::none; }
  bool final_phase() const { return final_.load(std::memory_order_relaxed); }
  Clock::time_point deadline() const;

  // A worker's janitor, after its round: what is left on it.
  void report(unsigned worker, int sessions, int leased);

 private:
  struct Report {
    std::atomic<int> sessions{-1};  // -1: not reported since the shutdown began
    std::atomic<int> leased{-1};
  };
  std::atomic<ShutdownMode> mode_{ShutdownMode::none};
  std::atomic<bool> final_{false};
  std::atomic<Clock::rep> deadline_{0};
  unsigned workers_;
  std::unique_ptr<Report[]> reports_;
};

}  // namespace pgw::net
