// The process's ownership rules made checkable: the lock order of util::RankedMutex, the thread
// ownership of a worker loop's objects (net::Reactor::owned_here, PGW_ASSERT_OWNED), and
// Reactor::settle(), which ends what is left on a loop at shutdown so the process can be torn
// down with nothing suspended. The checks themselves exist in debug builds only (the sanitized
// build of scripts/test runs these tests); release builds skip those tests.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "net/reactor.hpp"
#include "test_loop.hpp"
#include "util/ranked_mutex.hpp"

namespace {

using namespace std::chrono_literals;
using pgw::net::Connection;
using pgw::net::Timer;
using pgw::test::Loop;
constexpr auto nothrow = asio::experimental::as_tuple(asio::use_awaitable);

std::pair<int, int> socket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {fds[0], fds[1]};
}

// --- lock order ------------------------------------------------------------------------------

#ifndef NDEBUG

TEST(RankedMutexTest, OuterToInnerIsAllowedAndReleaseOrderIsFree) {
  pgw::util::ConfigChangeMutex change;
  pgw::util::PoolManagerMutex manager;
  pgw::util::PoolMutex pool;
  pgw::util::LeafMutex leaf;
  {
    std::lock_guard a(change);
    std::unique_lock b(manager);
    std::lock_guard c(pool);
    std::lock_guard d(leaf);
    EXPECT_EQ(pgw::util::ranked_locks_held(), 4);
    b.unlock();  // out of order: allowed
    EXPECT_EQ(pgw::util::ranked_locks_held(), 3);
  }
  EXPECT_EQ(pgw::util::ranked_locks_held(), 0);
  // Nothing held: an inner lock alone, then an outer one again.
  { std::lock_guard c(pool); }
  {
    std::lock_guard a(manager);
    EXPECT_EQ(pgw::util::ranked_locks_held(), 1);
  }
}

TEST(RankedMutexDeathTest, AnOuterLockTakenUnderAnInnerOneAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        pgw::util::PoolMutex pool;
        pgw::util::PoolManagerMutex manager;
        std::lock_guard a(pool);
        std::lock_guard b(manager);
      },
      "lock order violated.*holding pool, taking pool_manager");
}

TEST(RankedMutexDeathTest, TwoLocksOfOneRankAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Two pools' mutexes (or two leaves) are never held together: with no order between them,
  // two threads could take them in opposite orders.
  EXPECT_DEATH(
      {
        pgw::util::PoolMutex first;
        pgw::util::PoolMutex second;
        std::lock_guard a(first);
        std::lock_guard b(second);
      },
      "holding pool, taking pool");
}

// --- thread ownership ------------------------------------------------------------------------

// A thread other than the loop's shuts down the sending side of one of the loop's connections
// while the loop runs.
void touch_a_connection_from_another_thread() {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<bool> done{false};
  asio::post(loop.io, [&] {
    std::thread intruder([&] { conn.shutdown_send(); });
    intruder.join();
    done = true;
  });
  loop.run_until(done);
  conn.close();
  ::close(b);
}

TEST(OwnershipDeathTest, AnotherThreadTouchingALoopsConnectionAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(touch_a_connection_from_another_thread(),
               "thread ownership violated in shutdown_send");
}

#endif  // NDEBUG

TEST(OwnershipTest, OwnedOnTheLoopsThreadOrWhileNoLoopRuns) {
  Loop loop;
  EXPECT_TRUE(loop.reactor.owned_here());  // set-up, before run()
  std::atomic<bool> done{false};
  bool on_loop = false;
  bool from_other_thread = true;
  asio::post(loop.io, [&] {
    on_loop = loop.reactor.owned_here();
    std::thread other([&] { from_other_thread = loop.reactor.owned_here(); });
    other.join();
    done = true;
  });
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_TRUE(on_loop);
  EXPECT_FALSE(from_other_thread);
  EXPECT_TRUE(loop.reactor.owned_here());  // teardown, after run()
}

// --- settle ----------------------------------------------------------------------------------

TEST(SettleTest, EndsTheWaitsLeftWhenTheLoopStopped) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<int> armed{0};
  std::atomic<bool> both_armed{false};
  int finished = 0;
  std::error_code read_result = asio::error::would_block;
  std::error_code timer_result = asio::error::would_block;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        if (++armed == 2) both_armed = true;
        auto [ec] = co_await conn.async_wait_readable(nothrow);
        read_result = ec;
        ++finished;
      },
      asio::detached);
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        Timer timer(loop.reactor);
        if (++armed == 2) both_armed = true;
        auto [ec] = co_await timer.async_wait_for(1h, nothrow);
        timer_result = ec;
        ++finished;
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(both_armed));
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(finished, 0);  // the loop stopped under both waits

  int rounds = 0;
  EXPECT_TRUE(loop.reactor.settle([&] { ++rounds; }));
  EXPECT_EQ(finished, 2);
  EXPECT_EQ(read_result, asio::error::operation_aborted);
  EXPECT_EQ(timer_result, asio::error::operation_aborted);
  EXPECT_GE(rounds, 2);  // the round that ended them, and one that found nothing more to run
  conn.close();
  ::close(b);
}

TEST(SettleTest, AWaitArmedAgainIsEndedInTheNextRound) {
  Loop loop;
  std::atomic<bool> armed{false};
  int aborted = 0;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        Timer timer(loop.reactor);
        armed = true;
        // Shutdown code that waits once more after being cut off (a goodbye, a drain).
        for (int i = 0; i < 3; ++i) {
          auto [ec] = co_await timer.async_wait_for(1h, nothrow);
          if (ec == asio::error::operation_aborted) ++aborted;
        }
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(armed));
  EXPECT_TRUE(loop.reactor.settle(nullptr));
  EXPECT_EQ(aborted, 3);
}

TEST(SettleTest, GivesUpOnWorkThatNeverEnds) {
  Loop loop;
  std::atomic<bool> armed{false};
  bool stop = false;
  int waits = 0;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        Timer timer(loop.reactor);
        armed = true;
        while (!stop) {
          ++waits;
          co_await timer.async_wait_for(1h, nothrow);  // ignores being cut off
        }
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(armed));
  EXPECT_FALSE(loop.reactor.settle(nullptr, /*max_rounds=*/5));
  EXPECT_EQ(waits, 6);  // the first wait, and one more per round
  // Let it end, so that the test itself tears down cleanly.
  stop = true;
  EXPECT_TRUE(loop.reactor.settle(nullptr));
}

}  // namespace
