#include "util/ranked_mutex.hpp"

#include <cstdio>
#include <cstdlib>

namespace pgw::util {

const char* to_string(LockRank rank) {
  switch (rank) {
    case LockRank::config_change:
      return "config_change";
    case LockRank::pool_manager:
      return "pool_manager";
    case LockRank::backends:
      return "backends";
    case LockRank::pool:
      return "pool";
    case LockRank::leaf:
      return "leaf";
  }
  return "?";
}

#ifndef NDEBUG
namespace detail {
namespace {

// No thread holds more than a few locks at once; more is a bug of its own.
constexpr int kMaxHeld = 8;

struct Held {
  LockRank ranks[kMaxHeld];
  int count = 0;
};
thread_local Held held;

[[noreturn]] void violation(const char* what, LockRank holding, LockRank taking) {
  std::fprintf(stderr, "pgwarden: lock order violated: %s (holding %s, taking %s)\n", what,
               to_string(holding), to_string(taking));
  std::abort();
}

}  // namespace

void lock_order_acquire(LockRank rank) {
  for (int i = 0; i < held.count; ++i) {
    if (held.ranks[i] >= rank)
      violation("a lock taken under one of the same or a later rank", held.ranks[i], rank);
  }
  if (held.count == kMaxHeld) violation("too many locks held at once", held.ranks[0], rank);
  held.ranks[held.count++] = rank;
}

void lock_order_release(LockRank rank) {
  // Locks may be released in any order (a unique_lock can outlive a later lock_guard).
  for (int i = held.count - 1; i >= 0; --i) {
    if (held.ranks[i] != rank) continue;
    for (int j = i; j + 1 < held.count; ++j) held.ranks[j] = held.ranks[j + 1];
    --held.count;
    return;
  }
  violation("a lock released that this thread does not hold", rank, rank);
}

}  // namespace detail

int ranked_locks_held() {
  return detail::held.count;
}
#endif

}  // namespace pgw::util
