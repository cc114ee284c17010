// pool::Pool's queue of waiters (the intrusive FIFO per worker): queuing, cancelling, the
// max_waiting bound and failing every waiter. The pool is paused, so no server login is ever
// started and no PostgreSQL is needed; deliveries posted to a worker run with io.poll().
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "pool/pool.hpp"

namespace {

using pgw::Err;
using pgw::pool::AcquireResult;
using pgw::pool::Pool;
using pgw::pool::PoolManager;
using pgw::pool::PoolSettings;

struct Delivery {
  int id;
  Err error;
  bool had_server;
};

class RecordingWaiter final : public pgw::pool::Waiter {
 public:
  RecordingWaiter(unsigned worker, int id, std::vector<Delivery>& log)
      : Waiter(worker), id_(id), log_(log) {}
  ~RecordingWaiter() override = default;
  void deliver(AcquireResult result) override {
    log_.push_back(Delivery{id_, result.error, result.server != nullptr});
  }
  std::shared_ptr<void> keep_alive() override { return std::make_shared<int>(id_); }

 private:
  int id_;
  std::vector<Delivery>& log_;
};

class PoolWaitTest : public ::testing::Test {
 protected:
  Pool& paused_pool(int max_waiting = 0) {
    auto& pool = manager_.get("db", "user", [max_waiting] {
      PoolSettings settings;
      settings.mode = pgw::config::PoolMode::transaction;
      settings.servers = {{"127.0.0.1", 1}};  // never dialled: the pool stays paused
      settings.max_waiting = max_waiting;
      return settings;
    });
    pool.pause();
    return pool;
  }
  std::vector<int> delivered_ids() const {
    std::vector<int> ids;
    for (const auto& d : log_) ids.push_back(d.id);
    return ids;
  }

  asio::io_context io0_, io1_;
  pgw::net::Reactor worker0_{io0_}, worker1_{io1_};
  PoolManager manager_{{&worker0_, &worker1_}};
  std::vector<Delivery> log_;
};

TEST_F(PoolWaitTest, WaitersQueueAndAreFailedOldestFirstExceptTheCancelled) {
  Pool& pool = paused_pool();
  std::vector<std::unique_ptr<RecordingWaiter>> waiters;
  for (int id = 1; id <= 4; ++id) {
    waiters.push_back(std::make_unique<RecordingWaiter>(0u, id, log_));
    const auto result = pool.acquire_now(*waiters.back(), nullptr);
    EXPECT_TRUE(result.queued);
    EXPECT_EQ(result.server, nullptr);
  }
  EXPECT_EQ(pool.stats().waiting, 4);

  EXPECT_TRUE(pool.cancel_wait(*waiters[1]));   // id 2 gives up
  EXPECT_FALSE(pool.cancel_wait(*waiters[1]));  // it is no longer queued
  EXPECT_EQ(pool.stats().waiting, 3);

  pool.fail_waiters(Err::shutting_down);
  EXPECT_EQ(pool.stats().waiting, 0);
  EXPECT_TRUE(log_.empty());  // posted to worker 0, which has not run yet
  io0_.poll();
  EXPECT_EQ(delivered_ids(), (std::vector<int>{1, 3, 4}));
  for (const auto& d : log_) {
    EXPECT_EQ(d.error, Err::shutting_down);
    EXPECT_FALSE(d.had_server);
  }
  for (auto& waiter : waiters) EXPECT_FALSE(pool.cancel_wait(*waiter));
}

TEST_F(PoolWaitTest, ACancelledWaiterCanQueueAgainAtTheEnd) {
  Pool& pool = paused_pool();
  RecordingWaiter a(0, 1, log_), b(0, 2, log_);
  EXPECT_TRUE(pool.acquire_now(a, nullptr).queued);
  EXPECT_TRUE(pool.acquire_now(b, nullptr).queued);
  EXPECT_TRUE(pool.cancel_wait(a));
  EXPECT_TRUE(pool.acquire_now(a, nullptr).queued);
  EXPECT_EQ(pool.stats().waiting, 2);
  pool.fail_waiters(Err::shutting_down);
  io0_.poll();
  EXPECT_EQ(delivered_ids(), (std::vector<int>{2, 1}));
}

TEST_F(PoolWaitTest, MaxWaitingRefusesTheNextWaiterUntilOneLeaves) {
  Pool& pool = paused_pool(/*max_waiting=*/2);
  RecordingWaiter a(0, 1, log_), b(0, 2, log_), c(0, 3, log_);
  EXPECT_TRUE(pool.acquire_now(a, nullptr).queued);
  EXPECT_TRUE(pool.acquire_now(b, nullptr).queued);
  const auto refused = pool.acquire_now(c, nullptr);
  EXPECT_FALSE(refused.queued);
  EXPECT_EQ(refused.error, Err::max_waiting);
  EXPECT_FALSE(pool.cancel_wait(c));  // never queued

  EXPECT_TRUE(pool.cancel_wait(a));
  EXPECT_TRUE(pool.acquire_now(c, nullptr).queued);  // room again
  EXPECT_EQ(pool.stats().waiting, 2);
  pool.fail_waiters(Err::shutting_down);
  io0_.poll();
  EXPECT_EQ(delivered_ids(), (std::vector<int>{2, 3}));
}

TEST_F(PoolWaitTest, EachWorkerHasItsOwnQueueAndAllAreFailed) {
  Pool& pool = paused_pool();
  RecordingWaiter on0a(0, 1, log_), on1a(1, 2, log_), on0b(0, 3, log_), on1b(1, 4, log_);
  for (auto* w : {&on0a, &on1a, &on0b, &on1b}) EXPECT_TRUE(pool.acquire_now(*w, nullptr).queued);
  EXPECT_TRUE(pool.cancel_wait(on1a));
  EXPECT_EQ(pool.stats().waiting, 3);

  pool.fail_waiters(Err::shutting_down);
  io1_.poll();  // worker 1's deliveries run on worker 1
  EXPECT_EQ(delivered_ids(), (std::vector<int>{4}));
  io0_.poll();
  EXPECT_EQ(delivered_ids(), (std::vector<int>{4, 1, 3}));
  EXPECT_EQ(pool.stats().waiting, 0);
}

}  // namespace

TEST(PoolStats, TimesAddUpInMicrosecondsAndANegativeOneCountsAsZero) {
  using namespace std::chrono_literals;
  pgw::pool::StatSlot slot;
  slot.add_time(pgw::pool::Stat::query_time_us, 1500us);
  slot.add_time(pgw::pool::Stat::query_time_us, 2ms);
  // Two workers' turn times can be read in either order: a duration across them may be < 0.
  slot.add_time(pgw::pool::Stat::query_time_us, -3us);
  pgw::pool::StatValues values;
  slot.read_into(values);
  EXPECT_EQ(values[pgw::pool::Stat::query_time_us], 3500u);
}
