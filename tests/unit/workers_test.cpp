// How client sessions are spread over workers (session/shared.hpp): a few clients stay on
// worker 0, and each further worker joins per kClientsPerWorker sessions.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "net/reactor.hpp"
#include "session/shared.hpp"

namespace {

using pgw::session::Shared;

struct ThreeWorkers {
  asio::io_context io0{1}, io1{1}, io2{1};
  pgw::net::Reactor r0{io0}, r1{io1}, r2{io2};
  Shared shared{{&r0, &r1, &r2}};
};

constexpr int kStep = Shared::kClientsPerWorker;

TEST(WorkerSpreadTest, WorkersJoinPerStepOfSessions) {
  ThreeWorkers w;
  EXPECT_EQ(w.shared.workers_for(0), 1u);
  EXPECT_EQ(w.shared.workers_for(kStep - 1), 1u);
  EXPECT_EQ(w.shared.workers_for(kStep), 2u);
  EXPECT_EQ(w.shared.workers_for(2 * kStep), 3u);
  EXPECT_EQ(w.shared.workers_for(100 * kStep), 3u);  // never more than there are
  EXPECT_EQ(w.shared.workers_for(-5), 1u);
}

TEST(WorkerSpreadTest, WithOneWorkerInUseEveryClientGoesToWorkerZero) {
  ThreeWorkers w;
  for (unsigned accepted_on : {0u, 1u, 2u, 1u}) {
    EXPECT_EQ(w.shared.assign_worker(accepted_on, 1), 0u) << accepted_on;
  }
  EXPECT_EQ(w.shared.session_count(), 4);
}

TEST(WorkerSpreadTest, AmongWorkersInUseTheAcceptingOneKeepsItUnlessAnotherHasFewer) {
  ThreeWorkers w;
  for (int i = 0; i < 3; ++i) w.shared.assign_worker(0, 1);  // worker 0: 3 clients
  // Worker 1 joins: it takes clients until it has as many as worker 0, whoever accepted.
  EXPECT_EQ(w.shared.assign_worker(0, 2), 1u);
  EXPECT_EQ(w.shared.assign_worker(1, 2), 1u);
  EXPECT_EQ(w.shared.assign_worker(0, 2), 1u);
  // 3 and 3: the accepting worker keeps its connection (no hand-off).
  EXPECT_EQ(w.shared.assign_worker(0, 2), 0u);
  EXPECT_EQ(w.shared.assign_worker(1, 2), 1u);
  // Worker 2 is not in use: a connection it accepted goes to one that is.
  EXPECT_EQ(w.shared.assign_worker(2, 2), 0u);
  EXPECT_EQ(w.shared.session_count(), 9);
  // Clients leaving are given back.
  w.shared.client_left(1);
  w.shared.client_left(1);
  EXPECT_EQ(w.shared.session_count(), 7);
  EXPECT_EQ(w.shared.assign_worker(0, 2), 1u);  // worker 1 has 3 now, worker 0 has 5
}

}  // namespace
