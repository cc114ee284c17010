// Per-transaction work of a session outside the codec: the read-buffer pool, the leak guard's
// statement capture, and the parameter comparison done when a client gets a server.
#include <benchmark/benchmark.h>

#include <string>

#include "net/buffer_pool.hpp"
#include "pool/params.hpp"
#include "protocol/codec.hpp"
#include "protocol/session_state.hpp"
#include "session/lease.hpp"

namespace {

void BM_BufferPoolTakeGive(benchmark::State& state) {
  for (auto _ : state) {
    auto buffer = pgw::net::BufferPool::take(4096);
    benchmark::DoNotOptimize(buffer.data());
    pgw::net::BufferPool::give(std::move(buffer), 4096);
  }
}
BENCHMARK(BM_BufferPoolTakeGive);

// One lease of a driver that wraps each statement in BEGIN ... COMMIT.
void BM_LeaseCaptureTransaction(benchmark::State& state) {
  const std::string begin = "BEGIN";
  const std::string select =
      "SELECT abalance FROM pgbench_accounts WHERE aid = $1 /* route='checkout',controller='cart' "
      "*/";
  const std::string commit = "COMMIT";
  pgw::session::Lease lease;
  for (auto _ : state) {
    const auto now = pgw::session::Lease::Clock::now();
    lease.on_message('Q', begin, true);
    lease.begin(now, 4242);
    lease.on_message('Q', select, true);
    lease.on_ready(true, 0, now);
    lease.on_message('Q', commit, true);
    lease.on_ready(false, 0, now);
    benchmark::DoNotOptimize(lease.statements);
    lease.reset();
  }
}
BENCHMARK(BM_LeaseCaptureTransaction);

// One lease of pgbench -S in transaction pooling: a single statement, no comment, no BEGIN.
void BM_LeaseSelectOnly(benchmark::State& state) {
  const std::string select =
      std::string("SELECT abalance FROM pgbench_accounts WHERE aid = 42;") + '\0';
  pgw::session::Lease lease;
  for (auto _ : state) {
    const auto now = pgw::session::Lease::Clock::now();
    lease.on_message('Q', select, true);
    lease.begin(now, 4242);
    lease.on_ready(false, 0, now);
    benchmark::DoNotOptimize(lease.statements);
    lease.reset();
  }
}
BENCHMARK(BM_LeaseSelectOnly);

// The session-state guard's look at a statement (session_state = track, transaction pooling):
// pgbench -S's SELECT, TPC-B's UPDATE (whose SET is not a SET statement), and the SET of the
// bench row S-set-c100, scanned and settled by the client's SessionState as the relay does.
void BM_SessionStateScan(benchmark::State& state) {
  const char* texts[] = {"SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                         "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 42;"};
  const std::string_view sql = texts[state.range(0)];
  for (auto _ : state) {
    // As the relay does: the shortcut, and the scan only where it cannot rule effects out.
    bool effects = pgw::proto::may_change_session_state(sql);
    if (effects) effects = pgw::proto::scan_session_state(sql, true).count > 0;
    benchmark::DoNotOptimize(effects);
  }
}
BENCHMARK(BM_SessionStateScan)->Arg(0)->Arg(1);

// The scan alone, for the statements the shortcut lets through.
void BM_SessionStateScanOnly(benchmark::State& state) {
  const std::string_view sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
  for (auto _ : state) benchmark::DoNotOptimize(pgw::proto::scan_session_state(sql, true).count);
}
BENCHMARK(BM_SessionStateScanOnly);

void BM_SessionStateSetPerTransaction(benchmark::State& state) {
  const std::string_view sql =
      "SET search_path TO public, pg_catalog ; SELECT abalance FROM pgbench_accounts WHERE aid = 7";
  pgw::proto::SessionState session(pgw::proto::SessionStateMode::track);
  const auto now = pgw::proto::SessionState::Clock::now();
  for (auto _ : state) {
    session.on_statement(pgw::proto::scan_session_state(sql, true), 0, now);
    benchmark::DoNotOptimize(session.on_ready('I', now));
  }
}
BENCHMARK(BM_SessionStateSetPerTransaction);

// What a lease costs now: one comparison of two fingerprints, taken when the client's
// parameters change (login, SET), not per lease.
void BM_ParamSetFingerprint(benchmark::State& state) {
  pgw::ParamSet client;
  client.set("application_name", "pgbench");
  client.set("client_encoding", "UTF8");
  client.set("DateStyle", "ISO, MDY");
  for (auto _ : state) benchmark::DoNotOptimize(client.fingerprint());
}
BENCHMARK(BM_ParamSetFingerprint);

// The full comparison sync_parameters() makes when a server's fingerprint differs (before the
// fingerprint, every lease paid this).
void BM_ParamSetCompare(benchmark::State& state) {
  pgw::ParamSet client, server;
  for (auto* set : {&client, &server}) {
    set->set("application_name", "pgbench");
    set->set("client_encoding", "UTF8");
    set->set("DateStyle", "ISO, MDY");
    set->set("TimeZone", "Etc/UTC");
    set->set("IntervalStyle", "postgres");
    set->set("standard_conforming_strings", "on");
  }
  for (auto _ : state) {
    bool differs = false;
    for (const auto& [name, value] : client) {
      const std::string* current = server.find(name);
      differs |= !current || *current != value;
    }
    benchmark::DoNotOptimize(differs);
  }
}
BENCHMARK(BM_ParamSetCompare);

}  // namespace
