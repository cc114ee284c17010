// A std::mutex with a place in the process's lock order. Every mutex that can be held while
// another is taken has a rank, and a thread may only take a mutex of a higher rank than the
// ones it holds: then no two threads can wait for each other. Debug builds check the order on
// every lock() (a violation aborts with both ranks named); release builds compile to a plain
// std::mutex, so the pool's per-transaction lock costs what it did.
//
// The order, outermost first (docs/ARCHITECTURE.md, "Threads and locks"):
//   config_change  a RELOAD or SET, which applies the new settings to the pools under it
//   pool_manager   the map of pools and the paused databases
//   backends       the map of backends (a pool is created under pool_manager and finds its
//                  backend here)
//   pool           one pool's policy: nothing else is taken under it (a leaf on the data path)
//   leaf           the small ones, never held while taking another: a backend's breaker, a
//                  pool's [apps] shares and statistics period, the SCRAM key store, the cancel
//                  registry, the leak book, the app monitor, the open-files guard
#pragma once

#include <cstdint>
#include <mutex>

namespace pgw::util {

enum class LockRank : std::uint8_t {
  config_change = 10,
  pool_manager = 20,
  backends = 30,
  pool = 40,
  leaf = 90,
};
const char* to_string(LockRank rank);

namespace detail {
#ifndef NDEBUG
// The ranks this thread holds, in the order taken (the checks of debug builds).
void lock_order_acquire(LockRank rank);
void lock_order_release(LockRank rank);
#endif
}  // namespace detail

#ifndef NDEBUG
// How many ranked mutexes the calling thread holds (debug builds; for tests).
int ranked_locks_held();
#endif

template <LockRank Rank>
class RankedMutex {
 public:
  static constexpr LockRank rank = Rank;

  RankedMutex() = default;
  RankedMutex(const RankedMutex&) = delete;
  RankedMutex& operator=(const RankedMutex&) = delete;

  void lock() {
#ifndef NDEBUG
    detail::lock_order_acquire(Rank);
#endif
    mutex_.lock();
  }
  void unlock() {
#ifndef NDEBUG
    detail::lock_order_release(Rank);
#endif
    mutex_.unlock();
  }

 private:
  std::mutex mutex_;
};

using ConfigChangeMutex = RankedMutex<LockRank::config_change>;
using PoolManagerMutex = RankedMutex<LockRank::pool_manager>;
using BackendsMutex = RankedMutex<LockRank::backends>;
using PoolMutex = RankedMutex<LockRank::pool>;
using LeafMutex = RankedMutex<LockRank::leaf>;

}  // namespace pgw::util
