// Who may connect and which worker serves them (session/admission.hpp): a few clients stay on
// worker 0, each further worker joins per kClientsPerWorker sessions; one count of clients
// decides max_client_conn; [apps] caps; the drain. Pure arithmetic: no loop, no socket.
#include "session/admission.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace {

using pgw::session::ClientAdmission;

constexpr int kStep = ClientAdmission::kClientsPerWorker;

TEST(WorkerSpreadTest, WorkersJoinPerStepOfSessions) {
  ClientAdmission admission(3);
  EXPECT_EQ(admission.workers_for(0), 1u);
  EXPECT_EQ(admission.workers_for(kStep - 1), 1u);
  EXPECT_EQ(admission.workers_for(kStep), 2u);
  EXPECT_EQ(admission.workers_for(2 * kStep), 3u);
  EXPECT_EQ(admission.workers_for(100 * kStep), 3u);  // never more than there are
  EXPECT_EQ(admission.workers_for(-5), 1u);
}

TEST(WorkerSpreadTest, WithOneWorkerInUseEveryClientGoesToWorkerZero) {
  ClientAdmission admission(3);
  for (unsigned accepted_on : {0u, 1u, 2u, 1u}) {
    EXPECT_EQ(admission.place(accepted_on, 1), 0u) << accepted_on;
  }
  EXPECT_EQ(admission.count(), 4);
}

TEST(WorkerSpreadTest, AmongWorkersInUseTheAcceptingOneKeepsItUnlessAnotherHasFewer) {
  ClientAdmission admission(3);
  for (int i = 0; i < 3; ++i) admission.place(0, 1);  // worker 0: 3 clients
  // Worker 1 joins: it takes clients until it has as many as worker 0, whoever accepted.
  EXPECT_EQ(admission.place(0, 2), 1u);
  EXPECT_EQ(admission.place(1, 2), 1u);
  EXPECT_EQ(admission.place(0, 2), 1u);
  // 3 and 3: the accepting worker keeps its connection (no hand-off).
  EXPECT_EQ(admission.place(0, 2), 0u);
  EXPECT_EQ(admission.place(1, 2), 1u);
  // Worker 2 is not in use: a connection it accepted goes to one that is.
  EXPECT_EQ(admission.place(2, 2), 0u);
  EXPECT_EQ(admission.count(), 9);
  // Clients leaving are given back.
  admission.leave(1);
  admission.leave(1);
  EXPECT_EQ(admission.count(), 7);
  EXPECT_EQ(admission.place(0, 2), 1u);  // worker 1 has 3 now, worker 0 has 5
}

TEST(AdmissionTest, MaxClientConnCountsEveryClientOnEveryWorker) {
  ClientAdmission admission(2);
  admission.place(0, 2);
  admission.place(1, 2);
  admission.place(0, 2);
  EXPECT_TRUE(admission.within(3));  // the third client (counted) fits in 3
  admission.place(1, 2);
  EXPECT_FALSE(admission.within(3));  // the fourth does not
  admission.leave(0);
  EXPECT_TRUE(admission.within(3));
}

TEST(AdmissionTest, PerApplicationCapsAndTheDrain) {
  ClientAdmission admission(1);
  EXPECT_TRUE(admission.admit_app("batch", 2));
  EXPECT_TRUE(admission.admit_app("batch", 2));
  EXPECT_FALSE(admission.admit_app("batch", 2));
  EXPECT_TRUE(admission.admit_app("web", 2));  // each application on its own
  admission.release_app("batch");
  EXPECT_TRUE(admission.admit_app("batch", 2));
  EXPECT_FALSE(admission.admit_app("zero", 0));  // a cap of 0 admits nobody
  EXPECT_FALSE(admission.draining());
  admission.begin_drain();
  EXPECT_TRUE(admission.draining());
}

TEST(AdmissionTest, PerDatabaseAndPerUserClientCaps) {
  using Over = ClientAdmission::Over;
  ClientAdmission admission(1);
  // max_db_client_connections = 2 for "app", max_user_client_connections = 2 for "alice".
  EXPECT_EQ(admission.admit_client("app", 2, "alice", 2, false), Over::none);
  EXPECT_EQ(admission.admit_client("app", 2, "bob", 0, false), Over::none);
  EXPECT_EQ(admission.admit_client("app", 2, "carol", 0, false), Over::database);
  EXPECT_EQ(admission.admit_client("other", 2, "alice", 2, false), Over::none);
  EXPECT_EQ(admission.admit_client("other", 2, "alice", 2, false), Over::user);
  // Both full: the database is named, as PgBouncer checks it first.
  EXPECT_EQ(admission.admit_client("app", 2, "alice", 2, false), Over::database);
  // An exempt client (an admin on the console) is counted, never refused.
  EXPECT_EQ(admission.admit_client("app", 2, "alice", 2, true), Over::none);
  // A refused client counts nowhere; 0 means no cap.
  EXPECT_EQ(admission.clients_by_database(),
            (std::map<std::string, int>{{"app", 3}, {"other", 1}}));
  EXPECT_EQ(admission.clients_by_user(), (std::map<std::string, int>{{"alice", 3}, {"bob", 1}}));
  admission.release_client("app", "alice");
  admission.release_client("app", "alice");
  admission.release_client("app", "bob");
  EXPECT_EQ(admission.clients_by_database(), (std::map<std::string, int>{{"other", 1}}));
  EXPECT_EQ(admission.clients_by_user(), (std::map<std::string, int>{{"alice", 1}}));
  EXPECT_EQ(admission.admit_client("app", 2, "alice", 2, false), Over::none);
}

}  // namespace
