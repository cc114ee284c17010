// The pool's per-transaction work: a client takes an idle server and gives it back, and a
// released server goes straight to a waiting client of the same worker. No PostgreSQL: the
// servers are socketpair ends, registered with a reactor that is never run.
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "net/reactor.hpp"
#include "pool/pool.hpp"

namespace {

using namespace pgw;

struct Fixture {
  Fixture() : manager({&reactor}), pool(manager, "db", "user", settings()) {}
  static pool::PoolSettings settings() {
    pool::PoolSettings s;
    s.mode = config::PoolMode::transaction;
    // The servers below are not logins of the pool's own; a size of 0 keeps it from trying
    // to open more for queued waiters (nothing runs the reactor here).
    s.pool_size = 0;
    return s;
  }
  // A server that counts as part of the pool (as after a login).
  pool::ServerPtr server() {
    int fds[2];
    ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds);
    peers.push_back(fds[1]);
    auto s = std::make_unique<pool::ServerConn>(0);
    s->conn.open(reactor, fds[0]);
    s->created = s->last_used = pool::Clock::now();
    s->pool = &pool;
    return s;
  }
  ~Fixture() {
    for (int fd : peers) ::close(fd);
  }
  asio::io_context io{1};
  net::Reactor reactor{io};
  pool::PoolManager manager;
  pool::Pool pool;
  std::vector<int> peers;
};

struct BenchWaiter final : pool::Waiter, std::enable_shared_from_this<BenchWaiter> {
  BenchWaiter() : pool::Waiter(0) {}
  void deliver(pool::AcquireResult result) override { got = std::move(result.server); }
  std::shared_ptr<void> keep_alive() override { return shared_from_this(); }
  pool::ServerPtr got;
};

// Uncontended: an idle server is there (LIFO pick on the same worker), then given back.
void BM_PoolAcquireRelease(benchmark::State& state) {
  Fixture f;
  f.pool.release(f.server(), true);
  auto waiter = std::make_shared<BenchWaiter>();
  for (auto _ : state) {
    auto got = f.pool.acquire_now(*waiter, nullptr);
    benchmark::DoNotOptimize(got.server.get());
    f.pool.release(std::move(got.server), true);
  }
}
BENCHMARK(BM_PoolAcquireRelease);

// Saturated (more clients than servers): the client queues, and the release hands the server
// to it directly (same worker: a function call, no wake-up).
void BM_PoolQueuedHandoff(benchmark::State& state) {
  Fixture f;
  auto first = std::make_shared<BenchWaiter>();
  auto second = std::make_shared<BenchWaiter>();
  f.pool.release(f.server(), true);
  auto held = f.pool.acquire_now(*first, nullptr).server;
  for (auto _ : state) {
    auto queued = f.pool.acquire_now(*second, nullptr);  // none idle: queued
    benchmark::DoNotOptimize(queued.queued);
    f.pool.release(std::move(held), true);  // goes to `second` at once
    held = std::move(second->got);
  }
  f.pool.release(std::move(held), true);
}
BENCHMARK(BM_PoolQueuedHandoff);

}  // namespace
