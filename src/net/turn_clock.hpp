// The event loop's clock reading of the current turn, for stamps on the data path. Apart
// from the Reactor (which sets it), only <chrono>: the session's lease bookkeeping and the
// pool use it without the reactor's header.
#pragma once

#include <chrono>

namespace pgw::net {

using Clock = std::chrono::steady_clock;

namespace detail {
// Set by Reactor::run() on its thread; 0 elsewhere.
extern thread_local Clock::rep turn_time;
}  // namespace detail

// The time this thread's event loop last read the clock: as its turn began, and again when
// epoll_wait returned. The data path stamps queries, transactions and released servers with it
// instead of reading the clock for each (PgBouncer keeps one cached time per loop turn for the
// same reason): at 100 clients the vDSO clock reads were about 1 % of pgwarden's CPU. A stamp is
// early by at most the part of the turn already done. Off a loop thread it is the clock itself.
inline Clock::time_point turn_now() {
  const Clock::rep cached = detail::turn_time;
  return cached != 0 ? Clock::time_point(Clock::duration(cached)) : Clock::now();
}

}  // namespace pgw::net
