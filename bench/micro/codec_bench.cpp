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

// The same transaction with prepared-statement tracking on (transaction pooling,
// max_prepared_statements > 0): the relay's statement events, with their edits applied to the
// buffers the way the relay applies them. First argument: 0 pgbench -S (a simple Query);
// 1 pgbench -S -M prepared after the first transaction (Bind of a statement the server has,
// Describe, Execute, Sync), which renames the statement in the Bind; 2 pgbench -S -M extended
// (unnamed Parse, Bind, Describe, Execute, Sync). Second argument: tracking on (1) or off (0,
// what session pooling and max_prepared_statements = 0 run).
struct StatementEvents : CountingEvents {
  StatementTracker statements;
  ServerStatements* server = nullptr;
  StreamBuffer* client_buffer = nullptr;
  StreamBuffer* server_buffer = nullptr;
  std::size_t offset = 0, erase = 0;
  std::string_view insert;
  bool on_client_statement_message(const Header& header, Bytes body) {
    const auto edit =
        statements.on_client_message(header.type, header.body_size(), body, *server, 200);
    if (edit.outcome != StatementTracker::ClientEdit::Outcome::edit) return false;
    offset = client_buffer->offset_of(body.data()) - kHeaderSize;
    erase = edit.erase;
    insert = edit.insert;
    return true;
  }
  bool on_server_reply(const Header& header, Bytes body) {
    const auto edit = statements.on_server_message(header.type, body, *server);
    if (!edit.edit) return false;
    const auto start = server_buffer->offset_of(body.data()) - kHeaderSize;
    offset = edit.drop ? start : start + kHeaderSize + body.size();
    erase = edit.drop ? kHeaderSize + body.size() : 0;
    insert = edit.after;
    return true;
  }
};

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string message(char type, std::string_view body) {
  return std::string(1, type) + be32(static_cast<std::uint32_t>(body.size() + 4)) +
         std::string(body);
}

void BM_TrackerStatementTracking(benchmark::State& state) {
  const bool prepared = state.range(0) == 1;
  const bool extended = state.range(0) == 2;
  const std::string sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
  using namespace std::string_literals;
  std::string request, reply;
  if (prepared) {
    // One parameter in text format, results in text format.
    request = message('B', "\0P_0\0"s + "\0\0"s + "\0\1"s + be32(4) + "4242"s + "\0\0"s) +
              message('D', "P\0"s) + message('E', "\0"s + be32(0)) + message('S', "");
    reply = message('2', "") + select_reply();
    // select_reply() is RowDescription, DataRow, CommandComplete, ReadyForQuery: a
    // Describe of the portal answers with the RowDescription.
  } else if (extended) {
    request = message('P', "\0"s + sql + "\0"s + "\0\1"s + be32(23)) +
              message('B', "\0\0"s + "\0\0"s + "\0\1"s + be32(4) + "4242"s + "\0\0"s) +
              message('D', "P\0"s) + message('E', "\0"s + be32(0)) + message('S', "");
    reply = message('1', "") + message('2', "") + select_reply();
  } else {
    request = query_message("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;");
    reply = select_reply();
  }
  TransactionTracker tracker;
  tracker.set_track_statements(state.range(1) == 1);
  StatementEvents events;
  ServerStatements server;
  StreamBuffer from_client, from_server;
  from_client.reserve(4096);
  from_server.reserve(4096);
  events.server = &server;
  events.client_buffer = &from_client;
  events.server_buffer = &from_server;
  if (prepared) {
    // The client prepared P_0 in an earlier transaction, on this server.
    const std::string parse =
        message('P', "P_0\0"s + sql + "\0"s + "\0\1"s + be32(23)) + message('S', "");
    auto space = from_client.free_space();
    std::memcpy(space.data(), parse.data(), parse.size());
    from_client.added(parse.size());
    for (;;) {
      const auto scan = tracker.scan_client(from_client.unscanned(), events);
      from_client.mark_scanned(scan.scanned);
      if (scan.stop != TransactionTracker::Stop::edit) break;
      from_client.splice(events.offset, events.erase, as_bytes(events.insert));
    }
    from_client.mark_sent(from_client.unsent().size());
    const std::string parsed = message('1', "") + message('Z', "I");
    space = from_server.free_space();
    std::memcpy(space.data(), parsed.data(), parsed.size());
    from_server.added(parsed.size());
    const auto scan = tracker.scan_server(from_server.unscanned(), events);
    from_server.mark_scanned(scan.scanned);
    from_server.mark_sent(from_server.unsent().size());
  }
  auto pass = [&](StreamBuffer& buffer, const std::string& bytes, bool client) {
    auto space = buffer.free_space();
    std::memcpy(space.data(), bytes.data(), bytes.size());
    buffer.added(bytes.size());
    for (;;) {
      const auto scan = client ? tracker.scan_client(buffer.unscanned(), events)
                               : tracker.scan_server(buffer.unscanned(), events);
      buffer.mark_scanned(scan.scanned);
      if (scan.stop != TransactionTracker::Stop::edit) break;
      buffer.splice(events.offset, events.erase, as_bytes(events.insert));
    }
    buffer.mark_sent(buffer.unsent().size());
  };
  for (auto _ : state) {
    pass(from_client, request, true);
    pass(from_server, reply, false);
    benchmark::DoNotOptimize(tracker.at_transaction_boundary());
  }
  if (!events.statements.settled()) state.SkipWithError("replies out of step");
  benchmark::DoNotOptimize(events.readies);
}
BENCHMARK(BM_TrackerStatementTracking)
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({2, 0})
    ->Args({2, 1});

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
