// Unit tests for pool::PoolCore, the pooling policy (src/pool/pool_core.hpp), with explicit
// timestamps and plain servers: which server a client gets, who waits and in what order, when
// logins start, when servers close, the limits, shares, lifetimes, PAUSE, new login targets,
// and what failed logins mean for the waiting clients. The last test runs random sequences of
// operations against the invariants of the counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <vector>

#include "pool/pool_core.hpp"

namespace {

using namespace std::chrono_literals;
using pgw::Err;
using pgw::pool::Acquired;
using pgw::pool::AppShare;
using pgw::pool::Clock;
using pgw::pool::Conditions;
using pgw::pool::Handoff;
using pgw::pool::LoginFailure;
using pgw::pool::PoolActions;
using pgw::pool::PoolCore;
using pgw::pool::PooledPtr;
using pgw::pool::PooledServer;
using pgw::pool::PoolLimits;
using pgw::pool::PoolWaiter;

struct TestWaiter final : PoolWaiter {
  explicit TestWaiter(unsigned worker) : PoolWaiter(worker) {}
};

const Clock::time_point kStart = Clock::time_point{} + 24h;

Clock::time_point at_ms(long ms) {
  return kStart + std::chrono::milliseconds(ms);
}

Conditions when(long ms, bool breaker_closed = true, bool draining = false) {
  return Conditions{at_ms(ms), breaker_closed, draining};
}

std::vector<Handoff*> handoffs(PoolActions& actions) {
  std::vector<Handoff*> out;
  actions.for_each_handoff([&](Handoff& h) { out.push_back(&h); });
  return out;
}

class PoolCoreTest : public ::testing::Test {
 protected:
  PoolCoreTest() { make_core(limits_); }

  void make_core(const PoolLimits& limits, unsigned workers = 2) {
    limits_ = limits;
    core_ = std::make_unique<PoolCore>(workers, limits, db_count_, user_count_);
  }
  static PoolLimits limits(int pool_size) {
    PoolLimits l;
    l.pool_size = pool_size;
    return l;
  }
  // A server that finished its login at `ms` on `worker`, made for the current target.
  PooledPtr server(unsigned worker, long ms = 0) {
    auto s = std::make_unique<PooledServer>(worker);
    s->created = at_ms(ms);
    s->last_used = at_ms(ms);
    s->generation = core_->generation();
    return s;
  }
  // One login that succeeds at `ms` on `worker`, with nobody waiting: an idle server. (A probe
  // is the one launch that does not need a waiter.)
  void add_idle(unsigned worker, long ms = 0) {
    PoolActions launch;
    ASSERT_TRUE(core_->launch_probe(when(ms), launch));
    PoolActions placed;
    core_->login_succeeded(server(worker, ms), when(ms), placed);
    ASSERT_EQ(handoffs(placed).size(), 0u);
  }

  std::shared_ptr<std::atomic<int>> db_count_ = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<int>> user_count_ = std::make_shared<std::atomic<int>>(0);
  PoolLimits limits_ = limits(3);
  std::unique_ptr<PoolCore> core_;
};

// --- leasing

TEST_F(PoolCoreTest, AnIdleServerOfTheWaitersWorkerIsLeasedAtOnceTheWarmestFirst) {
  add_idle(0, 10);
  add_idle(1, 20);
  add_idle(0, 30);
  ASSERT_EQ(core_->counts(at_ms(40)).idle, 3);
  TestWaiter w(0);
  PoolActions out;
  Acquired got = core_->acquire(w, nullptr, when(40), out);
  ASSERT_TRUE(got.server);
  EXPECT_FALSE(got.queued);
  EXPECT_EQ(got.server->worker, 0u);
  EXPECT_EQ(got.server->created, at_ms(30));  // LIFO: the most recently used
  EXPECT_TRUE(out.launches.empty());
  EXPECT_EQ(handoffs(out).size(), 0u);
  const auto counts = core_->counts(at_ms(40));
  EXPECT_EQ(counts.idle, 2);
  EXPECT_EQ(counts.active, 1);
  EXPECT_EQ(counts.total, 3);
}

TEST_F(PoolCoreTest, AnIdleServerOfAnotherWorkerMovesOverByHandoff) {
  add_idle(1, 10);
  TestWaiter w(0);
  PoolActions out;
  Acquired got = core_->acquire(w, nullptr, when(20), out);
  EXPECT_FALSE(got.server);
  EXPECT_TRUE(got.queued);
  auto hs = handoffs(out);
  ASSERT_EQ(hs.size(), 1u);
  EXPECT_EQ(hs[0]->waiter, &w);
  ASSERT_TRUE(hs[0]->server);
  EXPECT_EQ(hs[0]->server->worker, 1u);
  EXPECT_FALSE(w.is_linked());  // not queued: it is being served
  EXPECT_EQ(core_->counts(at_ms(20)).waiting, 0);
}

TEST_F(PoolCoreTest, WaitersQueueWithOneLoginEachUpToThePoolSize) {
  std::vector<std::unique_ptr<TestWaiter>> waiters;
  std::vector<unsigned> launched;
  for (int i = 0; i < 5; ++i) {
    waiters.push_back(std::make_unique<TestWaiter>(i % 2));
    PoolActions out;
    auto got = core_->acquire(*waiters.back(), nullptr, when(i), out);
    EXPECT_TRUE(got.queued);
    launched.insert(launched.end(), out.launches.begin(), out.launches.end());
  }
  EXPECT_EQ(launched, (std::vector<unsigned>{0, 1, 0}));  // on the waiters' workers
  const auto counts = core_->counts(at_ms(10));
  EXPECT_EQ(counts.total, 3);
  EXPECT_EQ(counts.connecting, 3);
  EXPECT_EQ(counts.waiting, 5);
  EXPECT_EQ(counts.max_wait, 10ms);
  EXPECT_EQ(db_count_->load(), 3);
  EXPECT_EQ(user_count_->load(), 3);
  for (auto& w : waiters) core_->cancel_wait(*w);
}

TEST_F(PoolCoreTest, ANewServerGoesToTheOldestWaiterOfItsWorkerUnlessAnotherWaitedMuchLonger) {
  TestWaiter w0_early(0), w1(1), w0_late(0);
  PoolActions ignored;
  core_->acquire(w0_early, nullptr, when(0), ignored);
  core_->acquire(w1, nullptr, when(3), ignored);
  core_->acquire(w0_late, nullptr, when(4), ignored);
  // A server of worker 1: worker 1's waiter (3 ms) rather than worker 0's (0 ms): within 5 ms.
  PoolActions out;
  core_->login_succeeded(server(1, 10), when(10), out);
  ASSERT_EQ(handoffs(out).size(), 1u);
  EXPECT_EQ(handoffs(out)[0]->waiter, &w1);
  // A server of worker 0: its oldest, FIFO.
  PoolActions next;
  core_->login_succeeded(server(0, 11), when(11), next);
  ASSERT_EQ(handoffs(next).size(), 1u);
  EXPECT_EQ(handoffs(next)[0]->waiter, &w0_early);
  core_->cancel_wait(w0_late);

  // Another worker's waiter that has waited more than 5 ms longer goes first.
  TestWaiter old0(0), young1(1);
  core_->acquire(old0, nullptr, when(100), ignored);
  core_->acquire(young1, nullptr, when(106), ignored);
  PoolActions fair;
  core_->release(server(1, 50), true, nullptr, when(110), fair);
  ASSERT_EQ(handoffs(fair).size(), 1u);
  EXPECT_EQ(handoffs(fair)[0]->waiter, &old0);
  core_->cancel_wait(young1);
}

TEST_F(PoolCoreTest, ACancelledWaiterLeavesTheQueueOnce) {
  TestWaiter w(0);
  PoolActions out;
  core_->acquire(w, nullptr, when(0), out);
  EXPECT_EQ(core_->waiting(), 1);
  EXPECT_TRUE(core_->cancel_wait(w));
  EXPECT_FALSE(core_->cancel_wait(w));
  EXPECT_EQ(core_->waiting(), 0);
  // The login it caused still arrives and parks idle.
  PoolActions placed;
  core_->login_succeeded(server(0, 5), when(5), placed);
  EXPECT_EQ(handoffs(placed).size(), 0u);
  EXPECT_EQ(core_->counts(at_ms(5)).idle, 1);
}

TEST_F(PoolCoreTest, MaxWaitingRefusesOneMoreWaiter) {
  auto l = limits(1);
  l.max_waiting = 2;
  make_core(l);
  TestWaiter a(0), b(0), c(0);
  PoolActions out;
  EXPECT_TRUE(core_->acquire(a, nullptr, when(0), out).queued);
  EXPECT_TRUE(core_->acquire(b, nullptr, when(0), out).queued);
  auto refused = core_->acquire(c, nullptr, when(0), out);
  EXPECT_FALSE(refused.queued);
  EXPECT_EQ(refused.error, Err::max_waiting);
  EXPECT_FALSE(c.is_linked());
  core_->cancel_wait(a);
  core_->cancel_wait(b);
}

TEST_F(PoolCoreTest, ADrainAndAnOpenBreakerRefuseAtOnce) {
  TestWaiter w(0);
  PoolActions out;
  EXPECT_EQ(core_->acquire(w, nullptr, when(0, true, /*draining=*/true), out).error,
            Err::shutting_down);
  EXPECT_EQ(core_->acquire(w, nullptr, when(0, /*breaker_closed=*/false), out).error,
            Err::backend_unavailable);
  EXPECT_FALSE(w.is_linked());
  EXPECT_TRUE(out.launches.empty());
  // An idle server is still leased while the breaker is open (the server is up to it).
  add_idle(0, 1);
  auto got = core_->acquire(w, nullptr, when(2, false), out);
  EXPECT_TRUE(got.server);
}

// --- release and lifetimes

TEST_F(PoolCoreTest, ReleasedServersParkIdleOrGoToAWaiter) {
  TestWaiter w(0);
  PoolActions out;
  core_->acquire(w, nullptr, when(0), out);  // launches a login
  PoolActions parked;
  core_->release(server(0, 0), true, nullptr, when(50), parked);
  // The released server went to the waiter; the login still on its way will park.
  ASSERT_EQ(handoffs(parked).size(), 1u);
  EXPECT_EQ(handoffs(parked)[0]->waiter, &w);
  EXPECT_EQ(handoffs(parked)[0]->server->last_used, at_ms(50));
  PoolActions idle;
  core_->release(server(0, 0), true, nullptr, when(60), idle);
  EXPECT_EQ(handoffs(idle).size(), 0u);
  EXPECT_TRUE(idle.to_close.empty());
  ASSERT_EQ(core_->idle().size(), 1u);
  EXPECT_EQ(core_->idle()[0]->last_used, at_ms(60));
}

TEST_F(PoolCoreTest, ADirtyServerIsClosedAndTheOldestWaiterGetsALogin) {
  add_idle(0, 0);
  TestWaiter holder(0), waiter(1);
  PoolActions out;
  auto leased = core_->acquire(holder, nullptr, when(1), out).server;
  ASSERT_TRUE(leased);
  auto l = limits(1);
  PoolActions shrink;
  core_->set_limits(l, when(2), shrink);
  core_->acquire(waiter, nullptr, when(3), out);  // pool full: no login
  EXPECT_TRUE(out.launches.empty());
  PoolActions released;
  core_->release(std::move(leased), /*reusable=*/false, nullptr, when(4), released);
  EXPECT_EQ(released.to_close.size(), 1u);
  EXPECT_TRUE(released.capacity_freed);
  EXPECT_EQ(released.launches, (std::vector<unsigned>{1}));
  EXPECT_EQ(core_->total(), 1);  // the new login
  core_->cancel_wait(waiter);
}

TEST_F(PoolCoreTest, ServerLifetimeClosesOldServersOnReleaseAndWhileIdle) {
  auto l = limits(3);
  l.server_lifetime = 1000ms;
  make_core(l);
  PoolActions out;
  core_->release(server(0, 0), true, nullptr, when(500), out);  // a fresh one parks
  EXPECT_TRUE(out.to_close.empty());
  PoolActions old;
  core_->release(server(0, 0), true, nullptr, when(1001), old);
  EXPECT_EQ(old.to_close.size(), 1u);
  PoolActions upkeep;
  core_->maintain(when(1001), upkeep);  // the parked one is now too old
  EXPECT_EQ(upkeep.to_close.size(), 1u);
  EXPECT_TRUE(core_->idle().empty());
}

TEST_F(PoolCoreTest, ServerLifetimeZeroUsesEachServerOnce) {
  auto l = limits(3);
  l.server_lifetime = 0ms;
  make_core(l);
  PoolActions out;
  core_->release(server(0, 100), true, nullptr, when(100), out);  // same instant
  EXPECT_EQ(out.to_close.size(), 1u);
}

TEST_F(PoolCoreTest, IdleTimeoutClosesUnusedServersButKeepsMinPoolSize) {
  auto l = limits(3);
  l.server_idle_timeout = 600ms;
  l.min_pool_size = 1;
  make_core(l);
  add_idle(0, 0);
  add_idle(1, 0);
  PoolActions early;
  core_->maintain(when(600), early);
  EXPECT_TRUE(early.to_close.empty());
  PoolActions late;
  core_->maintain(when(601), late);
  EXPECT_EQ(late.to_close.size(), 1u);  // min_pool_size keeps the other
  EXPECT_EQ(core_->total(), 1);
  EXPECT_EQ(db_count_->load(), 1);
}

TEST_F(PoolCoreTest, MinPoolSizeOpensOneConnectionPerRoundOverTheWorkers) {
  auto l = limits(5);
  l.min_pool_size = 2;
  make_core(l);
  PoolActions first;
  core_->maintain(when(0), first);
  EXPECT_EQ(first.launches, (std::vector<unsigned>{0}));
  PoolActions waiting_for_it;
  core_->maintain(when(1), waiting_for_it);  // one is still connecting
  EXPECT_TRUE(waiting_for_it.launches.empty());
  PoolActions placed;
  core_->login_succeeded(server(0, 2), when(2), placed);
  PoolActions second;
  core_->maintain(when(3), second);
  EXPECT_EQ(second.launches.size(), 1u);
  core_->login_succeeded(server(0, 4), when(4), placed);
  PoolActions enough;
  core_->maintain(when(5), enough);
  EXPECT_TRUE(enough.launches.empty());
  EXPECT_EQ(core_->total(), 2);
}

TEST_F(PoolCoreTest, AShrunkPoolClosesItsSurplus) {
  add_idle(0, 0);
  add_idle(0, 0);
  add_idle(1, 0);
  PoolActions shrink;
  core_->set_limits(limits(1), when(1), shrink);
  PoolActions upkeep;
  core_->maintain(when(2), upkeep);
  EXPECT_EQ(upkeep.to_close.size(), 2u);
  EXPECT_EQ(core_->total(), 1);
}

TEST_F(PoolCoreTest, TheReserveOpensForAClientThatWaitedReservePoolTimeout) {
  auto l = limits(1);
  l.reserve_pool_size = 1;
  l.reserve_pool_timeout = 5000ms;
  make_core(l);
  add_idle(0, 0);
  TestWaiter holder(0), waiter(0);
  PoolActions out;
  auto leased = core_->acquire(holder, nullptr, when(0), out).server;
  core_->acquire(waiter, nullptr, when(10), out);
  EXPECT_TRUE(out.launches.empty());  // full
  PoolActions early;
  core_->maintain(when(5009), early);
  EXPECT_TRUE(early.launches.empty());
  PoolActions due;
  core_->maintain(when(5010), due);
  EXPECT_EQ(due.launches, (std::vector<unsigned>{0}));
  EXPECT_TRUE(due.took_reserve);
  PoolActions more;
  core_->maintain(when(5011), more);  // one reserve login at a time, and the reserve is 1
  EXPECT_TRUE(more.launches.empty());
  PoolActions arrived;
  core_->login_succeeded(server(0, 5020), when(5020), arrived);
  ASSERT_EQ(handoffs(arrived).size(), 1u);
  // Servers beyond pool_size go back idle, and the next upkeep round closes the surplus.
  PoolActions back;
  core_->release(std::move(leased), true, nullptr, when(5030), back);
  EXPECT_TRUE(back.to_close.empty());
  PoolActions upkeep;
  core_->maintain(when(5040), upkeep);
  EXPECT_EQ(upkeep.to_close.size(), 1u);
  EXPECT_EQ(core_->total(), 1);
}

// --- limits shared between pools

TEST_F(PoolCoreTest, MaxDbConnectionsIsSharedAndAFreedSlotWakesTheOtherPool) {
  auto l = limits(5);
  l.max_db_connections = 1;
  make_core(l);
  PoolCore other(2, l, db_count_, std::make_shared<std::atomic<int>>(0));
  TestWaiter here(0), there(1);
  PoolActions a, b;
  core_->acquire(here, nullptr, when(0), a);
  EXPECT_EQ(a.launches.size(), 1u);
  other.acquire(there, nullptr, when(1), b);
  EXPECT_TRUE(b.launches.empty());  // the database's one connection is taken
  EXPECT_EQ(db_count_->load(), 1);
  // The login fails: the slot is free and the executor tells the database's other pools.
  PoolActions failed;
  core_->cancel_wait(here);
  core_->login_failed(LoginFailure::connection, false, Err::server_login_failed, "refused", when(2),
                      failed);
  EXPECT_TRUE(failed.capacity_freed);
  EXPECT_EQ(db_count_->load(), 0);
  PoolActions woken;
  other.capacity_freed(when(3), woken);
  EXPECT_EQ(woken.launches, (std::vector<unsigned>{1}));
  other.cancel_wait(there);
  PoolActions done;
  other.login_succeeded(server(1, 4), when(4), done);
}

TEST_F(PoolCoreTest, AWaiterShutOutByTheDatabaseLimitAsksForAnIdleSlotOfAnotherPool) {
  auto l = limits(5);
  l.max_db_connections = 1;
  make_core(l);
  add_idle(0, 0);  // this pool holds the database's one connection, idle
  EXPECT_EQ(db_count_->load(), 1);
  PoolCore other(2, l, db_count_, std::make_shared<std::atomic<int>>(0));
  TestWaiter there(1);
  PoolActions b;
  other.acquire(there, nullptr, when(1), b);
  EXPECT_TRUE(b.launches.empty());
  EXPECT_TRUE(b.shared_limit_reached);  // the executor asks the other pools for room
  // The executor's answer: this pool closes its least recently used idle server...
  PoolActions evicted;
  EXPECT_TRUE(core_->close_one_idle(evicted));
  EXPECT_EQ(evicted.to_close.size(), 1u);
  EXPECT_TRUE(evicted.capacity_freed);
  EXPECT_EQ(db_count_->load(), 0);
  EXPECT_FALSE(core_->close_one_idle(evicted));  // nothing idle left
  // ...and the freed slot wakes the waiting pool.
  PoolActions woken;
  other.capacity_freed(when(2), woken);
  EXPECT_EQ(woken.launches, (std::vector<unsigned>{1}));
  // Had the slot gone idle with no one telling, the upkeep round asks again.
  other.cancel_wait(there);
  PoolActions done;
  other.login_succeeded(server(1, 3), when(3), done);
  TestWaiter again(0);
  PoolActions c;
  core_->acquire(again, nullptr, when(4), c);  // the database is full (other's idle server)
  EXPECT_TRUE(c.shared_limit_reached);
  PoolActions upkeep;
  core_->maintain(when(5), upkeep);
  EXPECT_TRUE(upkeep.shared_limit_reached);
  core_->cancel_wait(again);
}

// --- [apps] shares

TEST_F(PoolCoreTest, AnApplicationAtItsCapWaitsWhileOthersTakeIdleServers) {
  add_idle(0, 0);
  add_idle(0, 0);
  AppShare capped;
  core_->set_share_cap(capped, 1);
  TestWaiter first(0), second(0), other_app(0);
  PoolActions out;
  auto leased = core_->acquire(first, &capped, when(1), out).server;
  ASSERT_TRUE(leased);
  EXPECT_EQ(capped.leased, 1);
  auto held = core_->acquire(second, &capped, when(2), out);
  EXPECT_TRUE(held.queued);
  EXPECT_FALSE(held.server);
  EXPECT_TRUE(out.launches.empty());  // a capped waiter does not open a server either
  // Another application takes the idle server the capped one may not.
  auto got = core_->acquire(other_app, nullptr, when(3), out).server;
  EXPECT_TRUE(got);
  // The capped application's server comes back: its waiter gets it.
  PoolActions back;
  core_->release(std::move(leased), true, &capped, when(4), back);
  ASSERT_EQ(handoffs(back).size(), 1u);
  EXPECT_EQ(handoffs(back)[0]->waiter, &second);
  EXPECT_EQ(capped.leased, 1);
}

TEST_F(PoolCoreTest, ASharesWaiterHeldBackGetsAnIdleServerWhenTheShareDropsBelowItsCap) {
  add_idle(0, 0);
  AppShare capped;
  core_->set_share_cap(capped, 1);
  TestWaiter first(0), second(0);
  PoolActions out;
  auto leased = core_->acquire(first, &capped, when(1), out).server;
  add_idle(1, 2);  // an idle server it may not take
  EXPECT_TRUE(core_->acquire(second, &capped, when(3), out).queued);
  EXPECT_EQ(core_->idle().size(), 1u);
  // The held server is released dirty (closed): the idle one goes to the waiter.
  PoolActions back;
  core_->release(std::move(leased), false, &capped, when(4), back);
  ASSERT_EQ(handoffs(back).size(), 1u);
  EXPECT_EQ(handoffs(back)[0]->waiter, &second);
  EXPECT_EQ(back.to_close.size(), 1u);
  EXPECT_TRUE(core_->idle().empty());
}

// --- PAUSE, RESUME, new targets

TEST_F(PoolCoreTest, APausedPoolClosesIdleAndReturningServersAndOpensNothing) {
  add_idle(0, 0);
  TestWaiter holder(0), waiter(1);
  PoolActions out;
  auto leased = core_->acquire(holder, nullptr, when(1), out).server;
  add_idle(0, 2);
  PoolActions paused;
  core_->pause(paused);
  EXPECT_TRUE(core_->paused());
  EXPECT_EQ(paused.to_close.size(), 1u);
  EXPECT_TRUE(core_->acquire(waiter, nullptr, when(3), out).queued);
  EXPECT_TRUE(out.launches.empty());
  PoolActions back;
  core_->release(std::move(leased), true, nullptr, when(4), back);
  EXPECT_EQ(back.to_close.size(), 1u);
  EXPECT_EQ(handoffs(back).size(), 0u);
  EXPECT_EQ(core_->total(), 0);
  PoolActions resumed;
  core_->resume(when(5), resumed);
  EXPECT_EQ(resumed.launches, (std::vector<unsigned>{1}));
  core_->cancel_wait(waiter);
}

TEST_F(PoolCoreTest, ANewTargetClosesIdleServersAndLeasedOnesWhenTheyComeBack) {
  add_idle(0, 0);
  TestWaiter holder(0);
  PoolActions out;
  auto leased = core_->acquire(holder, nullptr, when(1), out).server;
  add_idle(1, 2);
  const auto before = core_->generation();
  PoolActions retarget;
  core_->retarget(/*forget_failures=*/true, retarget);
  EXPECT_NE(core_->generation(), before);
  EXPECT_EQ(retarget.to_close.size(), 1u);
  PoolActions back;
  core_->release(std::move(leased), true, nullptr, when(3), back);
  EXPECT_EQ(back.to_close.size(), 1u);
  EXPECT_EQ(core_->total(), 0);
  EXPECT_EQ(db_count_->load(), 0);
}

// --- failed logins

TEST_F(PoolCoreTest, ASettingsFailureFailsTheWaitersAndNewClientsForServerLoginRetry) {
  auto l = limits(2);
  l.server_login_retry = 15000ms;
  make_core(l);
  TestWaiter a(0), b(1);
  PoolActions out;
  core_->acquire(a, nullptr, when(0), out);
  core_->acquire(b, nullptr, when(0), out);
  ASSERT_EQ(out.launches.size(), 2u);
  PoolActions first;
  core_->login_failed(LoginFailure::settings, false, Err::server_login_failed,
                      "database \"x\" does not exist", when(10), first);
  EXPECT_EQ(handoffs(first).size(), 0u);  // another login is still on its way
  PoolActions second;
  core_->login_failed(LoginFailure::settings, false, Err::server_login_failed,
                      "database \"x\" does not exist", when(11), second);
  auto failed = handoffs(second);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(failed[0]->waiter, &a);
  EXPECT_EQ(failed[0]->error, Err::server_login_failed);
  EXPECT_EQ(failed[0]->detail, "database \"x\" does not exist");
  TestWaiter c(0);
  PoolActions soon;
  auto refused = core_->acquire(c, nullptr, when(15010), soon);
  EXPECT_EQ(refused.error, Err::server_login_failed);
  EXPECT_EQ(refused.detail, "database \"x\" does not exist");
  PoolActions later;
  EXPECT_TRUE(core_->acquire(c, nullptr, when(15012), later).queued);
  EXPECT_EQ(later.launches.size(), 1u);
  core_->cancel_wait(c);
}

TEST_F(PoolCoreTest, AfterReconnectASettingsFailureFailsTheWaitersThoughOldServersAreLeased) {
  // The server's password changed; RECONNECT marked the one leased server to close; a client
  // waits, the new login is refused: nothing can serve the waiter, it gets the error now
  // (PgBouncer's kill_pool_logins), and new clients too, without another login.
  make_core(limits(2));
  add_idle(0, 0);
  TestWaiter holder(0), waiter(0);
  PoolActions out;
  ASSERT_TRUE(core_->acquire(holder, nullptr, when(1), out).server);
  PoolActions retargeted;
  core_->retarget(/*forget_failures=*/false, retargeted);
  core_->acquire(waiter, nullptr, when(2), out);
  ASSERT_EQ(out.launches.size(), 1u);
  PoolActions failed;
  core_->login_failed(LoginFailure::settings, false, Err::server_login_failed,
                      "password authentication failed for user \"u\"", when(3), failed);
  auto told = handoffs(failed);
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0]->waiter, &waiter);
  EXPECT_EQ(told[0]->error, Err::server_login_failed);
  TestWaiter late(1);
  PoolActions more;
  EXPECT_EQ(core_->acquire(late, nullptr, when(4), more).error, Err::server_login_failed);
  EXPECT_TRUE(more.launches.empty());
}

TEST_F(PoolCoreTest, ASettingsFailureStartsNoLoginUntilServerLoginRetryIsOver) {
  // One server of the current target is leased, so the waiter keeps waiting for it; but no
  // other login starts for server_login_retry, however often capacity frees or upkeep runs:
  // a refused password is not retried against the server in a loop.
  auto l = limits(2);
  l.server_login_retry = 15000ms;
  make_core(l);
  add_idle(0, 0);
  TestWaiter holder(0), waiter(1);
  PoolActions out;
  auto held = core_->acquire(holder, nullptr, when(1), out);
  ASSERT_TRUE(held.server);
  core_->acquire(waiter, nullptr, when(2), out);
  ASSERT_EQ(out.launches.size(), 1u);
  PoolActions failed;
  core_->login_failed(LoginFailure::settings, false, Err::server_login_failed, "refused", when(3),
                      failed);
  EXPECT_EQ(handoffs(failed).size(), 0u);
  for (long ms : {4L, 100L, 5000L, 14000L}) {
    PoolActions again;
    core_->capacity_freed(when(ms), again);
    core_->maintain(when(ms), again);
    EXPECT_TRUE(again.launches.empty()) << ms;
  }
  // The leased server comes back: the waiter gets it.
  PoolActions released;
  core_->release(std::move(held.server), true, nullptr, when(14500), released);
  auto given = handoffs(released);
  ASSERT_EQ(given.size(), 1u);
  EXPECT_EQ(given[0]->waiter, &waiter);
  EXPECT_TRUE(given[0]->server);
  // After the window a waiter gets a new login again.
  TestWaiter next(0);
  PoolActions after;
  EXPECT_TRUE(core_->acquire(next, nullptr, when(15004), after).queued);
  EXPECT_EQ(after.launches.size(), 1u);
  core_->cancel_wait(next);
}

TEST_F(PoolCoreTest, AConnectionFailureKeepsWaitersWaitingWhileTheBreakerIsClosed) {
  TestWaiter w(0);
  PoolActions out;
  core_->acquire(w, nullptr, when(0), out);
  EXPECT_EQ(core_->wait_timeout_error(true), Err::query_wait_unreachable);  // none finished
  PoolActions failed;
  core_->login_failed(LoginFailure::connection, false, Err::server_login_failed, "refused",
                      when(10), failed);
  EXPECT_EQ(handoffs(failed).size(), 0u);
  EXPECT_EQ(failed.launches, (std::vector<unsigned>{0}));  // the next attempt
  EXPECT_EQ(core_->failures_in_row(), 1);
  EXPECT_EQ(core_->counts(at_ms(10)).logins_failed, 1u);
  EXPECT_EQ(core_->wait_timeout_error(true), Err::query_wait_unreachable);
  PoolActions ok;
  core_->login_succeeded(server(0, 20), when(20), ok);
  EXPECT_EQ(core_->failures_in_row(), 0);
  EXPECT_EQ(core_->last_success(), at_ms(20));
  EXPECT_EQ(handoffs(ok).size(), 1u);
  EXPECT_EQ(core_->wait_timeout_error(true), Err::query_wait_timeout);  // a full pool now
  EXPECT_EQ(core_->wait_timeout_error(false), Err::query_wait_unreachable);
}

TEST_F(PoolCoreTest, AFailureUnderAnOpenBreakerFailsTheWaitersUnlessItJustOpenedIt) {
  TestWaiter w(0);
  PoolActions out;
  core_->acquire(w, nullptr, when(0), out);
  PoolActions opened;
  core_->login_failed(LoginFailure::connection, /*breaker_just_opened=*/true,
                      Err::server_login_failed, "refused", when(1, false), opened);
  EXPECT_EQ(handoffs(opened).size(), 0u);  // the executor fails every pool of the backend
  EXPECT_TRUE(opened.launches.empty());
  // A login that started before the breaker opened fails later: nothing will serve them.
  PoolActions relaunch;
  core_->set_limits(limits(3), when(2), relaunch);
  ASSERT_EQ(relaunch.launches.size(), 1u);
  PoolActions late;
  core_->login_failed(LoginFailure::connection, false, Err::server_login_failed, "refused",
                      when(3, false), late);
  auto failed = handoffs(late);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]->error, Err::backend_unavailable);
}

TEST_F(PoolCoreTest, ASkippedLoginFailsTheWaitersWhenNoServerIsLeft) {
  TestWaiter w(0);
  PoolActions out;
  core_->acquire(w, nullptr, when(0), out);
  PoolActions skipped;
  core_->login_failed(LoginFailure::skipped, false, Err::internal, "", when(1, false), skipped);
  auto failed = handoffs(skipped);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]->error, Err::backend_unavailable);
  EXPECT_EQ(core_->counts(at_ms(1)).logins_failed, 0u);  // nothing was attempted
}

TEST_F(PoolCoreTest, AProbeIgnoresTheBreakerButNotTheLimitsPauseOrDrain) {
  PoolActions probe;
  EXPECT_TRUE(core_->launch_probe(when(0, false), probe));
  EXPECT_EQ(probe.launches, (std::vector<unsigned>{0}));
  PoolActions draining;
  EXPECT_FALSE(core_->launch_probe(when(1, false, true), draining));
  PoolActions paused;
  core_->pause(paused);
  EXPECT_FALSE(core_->launch_probe(when(2, false), paused));
  core_->resume(when(3), paused);
  make_core(limits(0));
  PoolActions full;
  EXPECT_FALSE(core_->launch_probe(when(4, false), full));
}

// --- idle servers that speak, counts

TEST_F(PoolCoreTest, AnEvictedIdleServerIsUncountedAndWaitersGetALogin) {
  make_core(limits(2));
  AppShare capped;
  core_->set_share_cap(capped, 1);
  add_idle(1, 0);
  const PooledServer* moving = core_->idle()[0].get();
  TestWaiter taker(0), held_back(0);
  PoolActions out;
  EXPECT_TRUE(core_->acquire(taker, &capped, when(1), out).queued);  // moves from worker 1
  ASSERT_EQ(handoffs(out).size(), 1u);
  EXPECT_EQ(core_->take_idle(*moving), nullptr);  // on its way to a client: not the pool's
  add_idle(0, 2);                                 // the pool is full: 2 servers
  PoolActions waiting;
  EXPECT_TRUE(core_->acquire(held_back, &capped, when(3), waiting).queued);
  EXPECT_TRUE(waiting.launches.empty());
  // The idle server spoke: out of the pool, uncounted, and the waiter gets a login.
  auto victim = core_->take_idle(*core_->idle()[0]);
  ASSERT_TRUE(victim);
  EXPECT_EQ(core_->total(), 2);  // counted until it is closed
  PoolActions closed;
  core_->closed(std::move(victim), when(4), closed);
  EXPECT_EQ(closed.to_close.size(), 1u);
  EXPECT_TRUE(closed.capacity_freed);
  EXPECT_EQ(closed.launches, (std::vector<unsigned>{0}));
  EXPECT_EQ(core_->total(), 2);  // one leased, one connecting
  EXPECT_EQ(db_count_->load(), 2);
  core_->cancel_wait(held_back);
}

TEST_F(PoolCoreTest, TheIdleServersOfOneHostCloseAndTheOthersStay) {
  // A pool with several hosts: the one that went away takes only its own idle servers along
  // (here told apart by their worker).
  add_idle(0, 1);
  add_idle(1, 2);
  add_idle(0, 3);
  EXPECT_EQ(db_count_->load(), 3);
  PoolActions out;
  core_->close_idle_if([](const PooledServer& s) { return s.worker == 0; }, out);
  ASSERT_EQ(out.to_close.size(), 2u);
  EXPECT_EQ(out.to_close[0]->created, at_ms(1));
  EXPECT_EQ(out.to_close[1]->created, at_ms(3));
  ASSERT_EQ(core_->idle().size(), 1u);
  EXPECT_EQ(core_->idle()[0]->worker, 1u);
  EXPECT_EQ(core_->total(), 1);
  EXPECT_EQ(db_count_->load(), 1);
  PoolActions none;
  core_->close_idle_if([](const PooledServer&) { return false; }, none);
  EXPECT_TRUE(none.to_close.empty());
  EXPECT_EQ(core_->total(), 1);
}

TEST_F(PoolCoreTest, CountsShowServersDueForTheirCheck) {
  auto l = limits(3);
  l.server_check_delay = 30000ms;
  make_core(l);
  add_idle(0, 0);
  add_idle(1, 20000);
  EXPECT_EQ(core_->counts(at_ms(30000)).used, 0);
  EXPECT_EQ(core_->counts(at_ms(30001)).used, 1);
  EXPECT_TRUE(core_->check_due(*core_->idle()[0], at_ms(30001)));
  l.server_check_delay = -1ms;  // server_check_query = ""
  PoolActions ignored;
  core_->set_limits(l, when(0), ignored);
  EXPECT_EQ(core_->counts(at_ms(90000)).used, 0);
}

TEST_F(PoolCoreTest, FailWaitersTellsEveryQueuedWaiterOldestWorkerFirst) {
  TestWaiter a(0), b(1), c(0);
  PoolActions out;
  core_->acquire(a, nullptr, when(0), out);
  core_->acquire(b, nullptr, when(1), out);
  core_->acquire(c, nullptr, when(2), out);
  PoolActions failed;
  core_->fail_waiters(Err::shutting_down, {}, failed);
  auto hs = handoffs(failed);
  ASSERT_EQ(hs.size(), 3u);
  EXPECT_EQ(hs[0]->waiter, &a);
  EXPECT_EQ(hs[1]->waiter, &c);
  EXPECT_EQ(hs[2]->waiter, &b);
  for (auto* h : hs) EXPECT_EQ(h->error, Err::shutting_down);
  EXPECT_EQ(core_->waiting(), 0);
}

// --- reclaim under pressure

TEST_F(PoolCoreTest, ReclaimsAreGrantedOnePerWaitingClientUntilTheirServersComeBack) {
  make_core(limits(2));
  add_idle(0, 0);
  add_idle(0, 0);
  TestWaiter leased_a(0), leased_b(0);
  PoolActions out;
  auto a = core_->acquire(leased_a, nullptr, when(10), out);
  auto b = core_->acquire(leased_b, nullptr, when(10), out);
  ASSERT_TRUE(a.server && b.server);
  // Nobody waits: nothing to reclaim for.
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(20)), 0);
  TestWaiter w1(0), w2(0), w3(0);
  for (auto* w : {&w1, &w2, &w3}) ASSERT_TRUE(core_->acquire(*w, nullptr, when(30), out).queued);
  ASSERT_EQ(core_->waiting(), 3);
  // Three wait, two leases are candidates: both; never more than asked for.
  EXPECT_EQ(core_->grant_reclaims(0, at_ms(40)), 0);
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(40)), 2);
  // The next round, before the servers are back: only the third waiter is left to serve.
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(240)), 1);
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(440)), 0);
  // The reclaimed servers come back and go to the waiters; one still waits, none pending.
  PoolActions back;
  core_->release(std::move(a.server), true, nullptr, when(450), back);
  core_->release(std::move(b.server), true, nullptr, when(450), back);
  EXPECT_EQ(handoffs(back).size(), 2u);
  EXPECT_EQ(core_->waiting(), 1);
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(460)), 0);  // the third grant is still pending
  // A grant whose server never came back (closed instead) stops counting after the settle time.
  EXPECT_EQ(core_->grant_reclaims(2, at_ms(240) + PoolCore::kReclaimSettle + 1ms), 1);
}

// --- invariants under random operations

TEST_F(PoolCoreTest, RandomOperationsKeepTheCountsTrue) {
  auto l = limits(4);
  l.reserve_pool_size = 2;
  l.reserve_pool_timeout = 50ms;
  l.min_pool_size = 1;
  l.server_lifetime = 400ms;
  l.server_idle_timeout = 200ms;
  l.max_waiting = 12;
  make_core(l);
  AppShare share;
  core_->set_share_cap(share, 2);
  std::mt19937 random(1234);
  struct Client {
    std::unique_ptr<TestWaiter> waiter;
    PooledPtr server;
    bool shared = false;
  };
  std::vector<Client> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(Client{std::make_unique<TestWaiter>(i % 2), nullptr, i % 3 == 0});
  }
  int connecting = 0;
  long now = 0;
  int handed = 0, closed = 0, reserve = 0, refused = 0;  // the run reached these paths
  auto take_actions = [&](PoolActions& out) {
    closed += static_cast<int>(out.to_close.size());
    reserve += out.took_reserve ? 1 : 0;
    out.for_each_handoff([&](Handoff& h) {
      ++handed;
      auto it = std::find_if(clients.begin(), clients.end(),
                             [&](const Client& c) { return c.waiter.get() == h.waiter; });
      ASSERT_NE(it, clients.end());
      ASSERT_FALSE(it->server) << "a client was handed a second server";
      if (h.server) it->server = std::move(h.server);
    });
    connecting += static_cast<int>(out.launches.size());
  };
  for (int step = 0; step < 20000; ++step) {
    now += static_cast<long>(random() % 20);
    const bool breaker = random() % 10 != 0;
    auto& c = clients[random() % clients.size()];
    PoolActions out;
    switch (random() % 6) {
      case 0:
      case 1:
        if (!c.server && !c.waiter->is_linked()) {
          auto got =
              core_->acquire(*c.waiter, c.shared ? &share : nullptr, when(now, breaker), out);
          if (got.server) c.server = std::move(got.server);
          if (!got.server && !got.queued) ++refused;
        }
        break;
      case 2:
        if (c.server) {
          core_->release(std::move(c.server), random() % 8 != 0, c.shared ? &share : nullptr,
                         when(now, breaker), out);
        } else if (c.waiter->is_linked() && random() % 4 == 0) {
          core_->cancel_wait(*c.waiter);
        }
        break;
      case 3:
        if (connecting > 0) {
          --connecting;
          if (random() % 4 == 0) {
            core_->login_failed(LoginFailure::connection, false, Err::server_login_failed, "x",
                                when(now, breaker), out);
          } else {
            core_->login_succeeded(server(random() % 2, now), when(now, breaker), out);
          }
        }
        break;
      case 4:
        core_->maintain(when(now, breaker), out);
        break;
      case 5:
        if (random() % 50 == 0) {
          core_->pause(out);
        } else if (core_->paused()) {
          core_->resume(when(now, breaker), out);
        } else if (random() % 100 == 0) {
          core_->retarget(random() % 2 == 0, out);
        }
        break;
    }
    take_actions(out);
    // The invariants.
    int leased = 0, queued = 0, shared_leased = 0;
    for (const auto& client : clients) {
      if (client.server) {
        ++leased;
        if (client.shared) ++shared_leased;
      }
      if (client.waiter->is_linked()) ++queued;
      ASSERT_FALSE(client.server && client.waiter->is_linked());
    }
    const auto counts = core_->counts(at_ms(now));
    ASSERT_EQ(counts.connecting, connecting) << "step " << step;
    ASSERT_EQ(counts.total, counts.idle + leased + connecting) << "step " << step;
    ASSERT_EQ(counts.waiting, queued) << "step " << step;
    ASSERT_EQ(db_count_->load(), counts.total);
    ASSERT_EQ(user_count_->load(), counts.total);
    ASSERT_LE(counts.total, l.pool_size + l.reserve_pool_size) << "step " << step;
    ASSERT_EQ(share.leased, shared_leased) << "step " << step;
    ASSERT_LE(share.leased, share.cap) << "step " << step;
    ASSERT_LE(counts.waiting, l.max_waiting);
    if (counts.paused) {
      ASSERT_EQ(counts.idle, 0);
    }
  }
  for (auto& client : clients) core_->cancel_wait(*client.waiter);  // before they go
  EXPECT_GT(handed, 1000);
  EXPECT_GT(closed, 100);
  EXPECT_GT(reserve, 10);
  EXPECT_GT(refused, 100);
}

}  // namespace
