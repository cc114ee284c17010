// Traffic counters for SHOW STATS / SHOW POOLS, fed on the data path without locks.
//
// Every pool has one StatSlot per worker thread. A slot is written only by sessions running on
// its worker (one thread), so an increment is a relaxed load and a relaxed store of the same
// atomic: no lock prefix, no contention, and each slot sits on its own cache lines so workers
// never share a line. Readers (the console, the stats roller) sum the slots with relaxed loads;
// a sum may be a few increments behind, never torn.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace pgw::pool {

enum class Stat : std::size_t {
  server_assignment,  // a server was leased to a client
  xact,               // transactions ended (ReadyForQuery back to 'I')
  query,              // ReadyForQuery messages relayed (one per query / Sync)
  received,           // bytes read from clients
  sent,               // bytes written to clients
  xact_time_us,       // time inside transactions
  query_time_us,      // time queries ran on a server
  wait_time_us,       // time clients waited for a server
  client_parse,       // Parse messages from clients
  server_parse,       // Parse messages sent to servers (all of them: no statement cache)
  bind,               // Bind messages
  client_login,       // successful client logins
  count_
};
inline constexpr std::size_t kStatCount = static_cast<std::size_t>(Stat::count_);

struct StatValues {
  std::array<std::uint64_t, kStatCount> v{};
  std::uint64_t operator[](Stat s) const { return v[static_cast<std::size_t>(s)]; }
  StatValues& operator+=(const StatValues& other) {
    for (std::size_t i = 0; i < kStatCount; ++i) v[i] += other.v[i];
    return *this;
  }
  StatValues operator-(const StatValues& other) const {
    StatValues out;
    for (std::size_t i = 0; i < kStatCount; ++i)
      out.v[i] = v[i] >= other.v[i] ? v[i] - other.v[i] : 0;
    return out;
  }
};

struct alignas(64) StatSlot {
  std::array<std::atomic<std::uint64_t>, kStatCount> v{};

  // Single writer (the slot's worker thread): not a read-modify-write instruction.
  void add(Stat s, std::uint64_t n) {
    auto& cell = v[static_cast<std::size_t>(s)];
    cell.store(cell.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Durations come from the loop's turn times (net/turn_clock.hpp), which two workers read at
  // different moments: one measured across workers could come out negative, and is counted
  // as 0 rather than as 2^64 minus a few microseconds.
  void add_time(Stat s, std::chrono::steady_clock::duration d) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
    add(s, us > 0 ? static_cast<std::uint64_t>(us) : 0);
  }
  void read_into(StatValues& out) const {
    for (std::size_t i = 0; i < kStatCount; ++i) out.v[i] += v[i].load(std::memory_order_relaxed);
  }
};

}  // namespace pgw::pool
