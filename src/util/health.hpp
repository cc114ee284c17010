// Process-wide health figures for SHOW STATE, written by the Runtime's monitors (the event-loop
// watchdog, the open-files guard, the shutdown drain) and read by the console. Each is an
// independent gauge or counter: relaxed atomics, no lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace pgw {

// A copy of the figures, taken for one console command.
struct HealthFigures {
  std::uint64_t loop_stalls = 0;
  std::int64_t longest_stall_ms = 0;
  int open_files = 0;
  int open_files_limit = 0;
  bool refusing_connections = false;
  std::uint64_t connections_refused = 0;
  std::string shutdown = "no";
};

struct ProcessHealth {
  // Event-loop watchdog (net/watchdog.hpp).
  std::atomic<std::uint64_t> loop_stalls{0};
  std::atomic<std::int64_t> longest_stall_ms{0};
  // Open files against RLIMIT_NOFILE (net/overload.hpp).
  std::atomic<int> open_files{0};
  std::atomic<int> open_files_limit{0};
  std::atomic<bool> refusing_connections{false};
  std::atomic<std::uint64_t> connections_refused{0};
  // Shutdown (net/drain.hpp): "no", or what the process is doing about it. A static string.
  std::atomic<const char*> shutdown{"no"};

  HealthFigures read() const {
    constexpr auto relaxed = std::memory_order_relaxed;
    return {loop_stalls.load(relaxed),
            longest_stall_ms.load(relaxed),
            open_files.load(relaxed),
            open_files_limit.load(relaxed),
            refusing_connections.load(relaxed),
            connections_refused.load(relaxed),
            shutdown.load(relaxed)};
  }
};

}  // namespace pgw
