// The codec on the data path: what serve() and relay() do per message.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol/codec.hpp"
#include "protocol/stream_buffer.hpp"
#include "protocol/transaction_tracker.hpp"

namespace {

using namespace pgw::proto;

std::string query_message(std::string_view sql) {
  std::string out;
  MessageWriter(out).query(sql);
  return out;
}

// A select-only transaction's reply as PostgreSQL sends it: RowDescription, DataRow,
// CommandComplete, ReadyForQuery.
std::string select_reply() {
  std::string out;
  MessageWriter writer(out);
  const std::string_view columns[] = {"abalance"};
  writer.row_description(columns);
  const std::optional<std::string_view> values[] = {std::string_view("-4242")};
  writer.data_row(values);
  writer.command_complete("SELECT 1");
  writer.ready_for_query(TransactionStatus::idle);
  return out;
}

// serve()'s scan of one client read: headers only, bodies skipped.
void BM_ScanClientQuery(benchmark::State& state) {
  const std::string bytes =
      query_message("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;");
  const auto input = as_bytes(bytes);
  for (auto _ : state) {
    std::size_t pos = 0;
    while (pos < input.size()) {
      auto parsed = parse_header(input.subspan(pos), Direction::frontend);
      const auto* header = std::get_if<Header>(&parsed);
      if (!header) break;
      pos += header->total_size();
    }
    benchmark::DoNotOptimize(pos);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes.size()));
}
BENCHMARK(BM_ScanClientQuery);

// relay()'s scan of one server reply: ReadyForQuery parsed, the rest skipped.
void BM_ScanServerReply(benchmark::State& state) {
  const std::string bytes = select_reply();
  const auto input = as_bytes(bytes);
  for (auto _ : state) {
    std::size_t pos = 0;
    TransactionStatus status = TransactionStatus::failed;
    while (pos < input.size()) {
      auto parsed = parse_header(input.subspan(pos), Direction::backend);
      const auto* header = std::get_if<Header>(&parsed);
      if (!header) break;
      if (header->type == 'Z') {
        status = parse_ready_for_query(input.subspan(pos + kHeaderSize, header->body_size()))
                     .value_or(TransactionStatus::failed);
      }
      pos += header->total_size();
    }
    benchmark::DoNotOptimize(status);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes.size()));
}
BENCHMARK(BM_ScanServerReply);

// A large result: many DataRows in one read buffer.
void BM_ScanManyDataRows(benchmark::State& state) {
  std::string bytes;
  MessageWriter writer(bytes);
  const std::optional<std::string_view> values[] = {
      std::string_view("12345"), std::string_view("some text value"), std::nullopt};
  while (bytes.size() < static_cast<std::size_t>(state.range(0))) writer.data_row(values);
  const auto input = as_bytes(bytes);
  for (auto _ : state) {
    std::size_t pos = 0;
    std::size_t messages = 0;
    while (pos < input.size()) {
      auto parsed = parse_header(input.subspan(pos), Direction::backend);
      const auto* header = std::get_if<Header>(&parsed);
      if (!header) break;
      pos += header->total_size();
      ++messages;
    }
    benchmark::DoNotOptimize(messages);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes.size()));
}
BENCHMARK(BM_ScanManyDataRows)->Arg(4096)->Arg(65536);

// What the relay's tracker does for one pgbench -S transaction: the client's Query into a
// StreamBuffer, scanned and passed on; the server's reply the same way, its ReadyForQuery read
// whole. Events as the relay consumes them, reduced to counters.
struct CountingEvents {
  std::uint64_t requests = 0, statements = 0, readies = 0;
  void on_request() { ++requests; }
  void on_statement(char, Bytes body, bool) { statements += body.size(); }
  void on_ready(TransactionStatus) { ++readies; }
};

void BM_TrackerSelectTransaction(benchmark::State& state) {
  const std::string query =
      query_message("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;");
  const std::string reply = select_reply();
  TransactionTracker tracker;
  CountingEvents events;
  StreamBuffer from_client, from_server;
  from_client.reserve(4096);
  from_server.reserve(4096);
  auto pass = [&](StreamBuffer& buffer, const std::string& bytes, bool client) {
    auto space = buffer.free_space();
    std::memcpy(space.data(), bytes.data(), bytes.size());
    buffer.added(bytes.size());
    const auto scan = client ? tracker.scan_client(buffer.unscanned(), events)
                             : tracker.scan_server(buffer.unscanned(), events);
    buffer.mark_scanned(scan.scanned);
    buffer.mark_sent(buffer.unsent().size());
  };
  for (auto _ : state) {
    pass(from_client, query, true);
    pass(from_server, reply, false);
    benchmark::DoNotOptimize(tracker.at_transaction_boundary());
  }
  benchmark::DoNotOptimize(events.readies);
}
BENCHMARK(BM_TrackerSelectTransaction);

void BM_ParseStartup(benchmark::State& state) {
  std::string bytes;
  const std::pair<std::string, std::string> parameters[] = {{"user", "app_user"},
                                                            {"database", "appdb"},
                                                            {"application_name", "checkout-svc"},
                                                            {"client_encoding", "UTF8"},
                                                            {"DateStyle", "ISO, MDY"}};
  MessageWriter(bytes).startup_message(parameters);
  for (auto _ : state) {
    std::size_t consumed = 0;
    auto parsed = parse_first_packet(as_bytes(bytes), &consumed);
    benchmark::DoNotOptimize(parsed);
  }
}
BENCHMARK(BM_ParseStartup);

void BM_WriteErrorResponse(benchmark::State& state) {
  std::string out;
  out.reserve(256);
  for (auto _ : state) {
    out.clear();
    MessageWriter(out).error_response("FATAL", "53300",
                                      "no more connections allowed (max_client_conn)");
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_WriteErrorResponse);

}  // namespace
