// The worker event loop (src/net/reactor.hpp): readiness flags of edge-triggered epoll, the
// hot-path handler, coroutine waits and their cancellation, timers, events, and posting from
// other threads. Real sockets (socketpair), a real epoll instance, one loop per test.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <asio/experimental/awaitable_operators.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "net/listener.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "test_loop.hpp"

namespace {

using namespace std::chrono_literals;
using pgw::net::Clock;
using pgw::net::Connection;
using pgw::net::Reactor;
constexpr auto nothrow = asio::experimental::as_tuple(asio::use_awaitable);

using pgw::test::Loop;

std::pair<int, int> socket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {fds[0], fds[1]};
}

struct CountingHandler final : pgw::net::ReadyHandler {
  void on_ready(Connection& c) override {
    ++calls;
    if (c.readable()) {
      char buffer[64];
      for (;;) {
        auto r = c.read_some(buffer, sizeof buffer);
        if (r.would_block() || r.error) break;
        if (r.bytes == 0) {
          eof = true;
          break;
        }
        bytes += r.bytes;
        ++reads;
        if (r.bytes < sizeof buffer) break;  // short read: drained, the flag is clear
      }
    }
    if (done_after_bytes > 0 && bytes >= done_after_bytes) done->store(true);
    if (eof) done->store(true);
  }
  int calls = 0, reads = 0;
  std::size_t bytes = 0, done_after_bytes = 0;
  bool eof = false;
  std::atomic<bool>* done = nullptr;
};

TEST(ReactorTest, ShortReadClearsReadableAndNewDataSetsItAgain) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  EXPECT_FALSE(conn.readable());  // until epoll says so
  ASSERT_EQ(::write(b, "hello", 5), 5);
  char buffer[16];
  // Not dispatched yet: the flag is still clear, but a read finds the data.
  auto r = conn.read_some(buffer, sizeof buffer);
  EXPECT_EQ(r.bytes, 5u);
  EXPECT_FALSE(conn.readable());  // short read
  r = conn.read_some(buffer, sizeof buffer);
  EXPECT_TRUE(r.would_block());
  ::close(b);
}

TEST(ReactorTest, HandlerSeesEveryArrivalWithOneReadEach) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  CountingHandler handler;
  std::atomic<bool> done{false};
  handler.done = &done;
  handler.done_after_bytes = 30;
  conn.set_handler(&handler);
  std::thread writer([fd = b] {
    for (int i = 0; i < 3; ++i) {
      std::this_thread::sleep_for(20ms);
      ASSERT_EQ(::write(fd, "0123456789", 10), 10);
    }
  });
  EXPECT_TRUE(loop.run_until(done));
  writer.join();
  EXPECT_EQ(handler.bytes, 30u);
  // Three separate arrivals, one read each: no failed (EAGAIN) reads.
  EXPECT_EQ(handler.reads, 3);
  ::close(b);
}

TEST(ReactorTest, PeerCloseIsReportedAsEndOfStream) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  CountingHandler handler;
  std::atomic<bool> done{false};
  handler.done = &done;
  conn.set_handler(&handler);
  ::close(b);
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_TRUE(handler.eof);
}

TEST(ReactorTest, CoroutineReadWaitsForData) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<bool> done{false};
  std::string got;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        char buffer[32];
        auto r = co_await conn.async_read_some(buffer, sizeof buffer);
        got.assign(buffer, r.bytes);
        auto ec = co_await conn.async_write_all(std::string_view("pong"));
        EXPECT_FALSE(ec);
        done = true;
      },
      asio::detached);
  std::thread writer([fd = b] {
    std::this_thread::sleep_for(30ms);
    ASSERT_EQ(::write(fd, "ping", 4), 4);
  });
  EXPECT_TRUE(loop.run_until(done));
  writer.join();
  EXPECT_EQ(got, "ping");
  char reply[8] = {};
  EXPECT_EQ(::read(b, reply, sizeof reply), 4);
  EXPECT_EQ(std::string(reply, 4), "pong");
  ::close(b);
}

TEST(ReactorTest, WriteAllWaitsWhileThePeerIsFull) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  const std::string big(4 << 20, 'x');  // far more than a socket buffer
  std::atomic<bool> done{false};
  std::error_code result = asio::error::would_block;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        result = co_await conn.async_write_all(big);
        done = true;
      },
      asio::detached);
  std::size_t drained = 0;
  std::thread reader([&, fd = b] {
    char buffer[65536];
    while (drained < big.size()) {
      const auto n = ::read(fd, buffer, sizeof buffer);
      if (n > 0) {
        drained += static_cast<std::size_t>(n);
      } else {
        std::this_thread::sleep_for(1ms);
      }
    }
  });
  EXPECT_TRUE(loop.run_until(done, 5000ms));
  reader.join();
  EXPECT_FALSE(result);
  EXPECT_EQ(drained, big.size());
  ::close(b);
}

TEST(ReactorTest, TimerFiresAndCancelAbortsTheWait) {
  Loop loop;
  std::atomic<bool> done{false};
  std::error_code first = asio::error::would_block, second = asio::error::would_block;
  Clock::duration waited{};
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        pgw::net::Timer timer(loop.reactor);
        const auto start = Clock::now();
        auto [ec1] = co_await timer.async_wait_for(30ms, nothrow);
        first = ec1;
        waited = Clock::now() - start;
        pgw::net::Timer other(loop.reactor);
        asio::post(loop.io, [&] { other.cancel(); });  // runs once the wait below is armed
        auto [ec2] = co_await other.async_wait_for(10s, nothrow);
        second = ec2;
        done = true;
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_FALSE(first);
  EXPECT_GE(waited, 30ms);
  EXPECT_EQ(second, asio::error::operation_aborted);
}

TEST(ReactorTest, OrOperatorCancelsTheLosingWait) {
  using asio::experimental::awaitable_operators::operator||;
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<bool> done{false};
  std::size_t winner = 99;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        pgw::net::Timer timer(loop.reactor);
        // Nothing to read: the timer wins and the read wait must be abandoned cleanly.
        auto result =
            co_await (conn.async_wait_readable(nothrow) || timer.async_wait_for(20ms, nothrow));
        winner = result.index();
        done = true;
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_EQ(winner, 1u);
  ::close(b);
}

TEST(ReactorTest, CloseAbortsAPendingWait) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<bool> done{false};
  std::error_code ec;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        auto [e] = co_await conn.async_wait_readable(nothrow);
        ec = e;
        done = true;
      },
      asio::detached);
  asio::post(loop.io, [&] { conn.close(); });
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_EQ(ec, asio::error::operation_aborted);
  EXPECT_FALSE(conn.is_open());
  ::close(b);
}

TEST(ReactorTest, EventWaitCompletesOnSetAndAtOnceWhenSet) {
  Loop loop;
  std::atomic<bool> done{false};
  pgw::net::Event event;
  int woken = 0;
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        co_await event.async_wait(nothrow);
        ++woken;
        co_await event.async_wait(nothrow);  // still set: immediate
        ++woken;
        done = true;
      },
      asio::detached);
  asio::post(loop.io, [&] { event.set(); });
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_EQ(woken, 2);
}

TEST(ReactorTest, PostFromAnotherThreadWakesASleepingLoop) {
  Loop loop;
  std::atomic<bool> done{false};
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      loop.reactor.post([&] {
        if (++ran == 100) done = true;
      });
    }
  });
  // No timers: the loop sleeps in epoll_wait with no timeout between posts, so each post must
  // wake it or the test times out.
  EXPECT_TRUE(loop.run_until(done, 5000ms));
  poster.join();
  EXPECT_EQ(ran.load(), 100);
}

TEST(ReactorTest, TurnClockHoldsOneTimePerTurnAndIsTheClockOffTheLoop) {
  using pgw::net::turn_now;
  // Off a loop thread it is the clock itself.
  const auto before = Clock::now();
  const auto off_loop = turn_now();
  EXPECT_GE(off_loop, before);
  EXPECT_LE(off_loop, Clock::now());

  Loop loop;
  std::atomic<bool> done{false};
  Clock::time_point first_read, second_read, posted_at;
  loop.reactor.post([&] {
    // Within a turn the time stays put, however long the handler takes.
    first_read = turn_now();
    std::this_thread::sleep_for(5ms);
    second_read = turn_now();
    posted_at = Clock::now();
  });
  // Bytes that arrive while the loop sleeps: their handler's time is when the loop woke, not
  // when its turn began before epoll_wait.
  struct StampingHandler final : pgw::net::ReadyHandler {
    Clock::time_point stamped, handled;
    std::atomic<bool>* done = nullptr;
    void on_ready(Connection& c) override {
      // The registration's own first event comes with nothing to read: wait for the byte.
      char byte = 0;
      if (!c.readable() || c.read_some(&byte, 1).bytes != 1) return;
      stamped = turn_now();
      handled = Clock::now();
      *done = true;
    }
  } handler;
  handler.done = &done;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  conn.set_handler(&handler);
  Clock::time_point written_at;
  std::thread writer([&, fd = b] {
    std::this_thread::sleep_for(20ms);
    written_at = Clock::now();
    ASSERT_EQ(::write(fd, "x", 1), 1);
  });
  EXPECT_TRUE(loop.run_until(done));
  writer.join();
  EXPECT_EQ(first_read, second_read);
  EXPECT_LT(second_read, posted_at);
  EXPECT_GE(handler.stamped, written_at);
  EXPECT_LE(handler.stamped, handler.handled);
  conn.close();
  ::close(b);

  // After run() the thread reads the clock again.
  const auto after_run = Clock::now();
  EXPECT_GE(turn_now(), after_run);
}

TEST(ReactorTest, ConnectionMovesBetweenLoops) {
  Loop first, second;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(first.reactor, a);
  conn.detach();
  conn.attach(second.reactor);
  CountingHandler handler;
  std::atomic<bool> done{false};
  handler.done = &done;
  handler.done_after_bytes = 3;
  conn.set_handler(&handler);
  ASSERT_EQ(::write(b, "abc", 3), 3);
  EXPECT_TRUE(second.run_until(done));
  EXPECT_EQ(handler.bytes, 3u);
  ::close(b);
}

TEST(ReactorTest, WorkerLoopHasNoAsioReactor) {
  // Asio's own reactor would turn every io_context::poll() into an epoll_wait system call;
  // nothing on a worker may create it (no Asio sockets or timers there).
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  std::atomic<bool> done{false};
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        pgw::net::Timer timer(loop.reactor);
        co_await timer.async_wait_for(1ms, nothrow);
        co_await conn.async_write_all(std::string_view("x"));
        done = true;
      },
      asio::detached);
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_FALSE(asio::has_service<asio::detail::epoll_reactor>(loop.io));
  ::close(b);
}

// ---- Batched sends (net/io_batch.hpp): the writes of a turn go out in one io_uring submission.

// Fills the socket buffer of `fd` with direct sends (no loop is running) until it refuses more.
std::size_t fill_socket(int fd) {
  std::size_t total = 0;
  const std::string chunk(65536, 'f');
  for (;;) {
    const auto n = ::send(fd, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) return total;
    total += static_cast<std::size_t>(n);
  }
}

// Reads `fd` until `want` bytes have arrived (or the peer ends it, or 5 s pass).
std::string read_exactly(int fd, std::size_t want) {
  std::string got;
  const auto deadline = Clock::now() + 5s;
  char buffer[65536];
  while (got.size() < want && Clock::now() < deadline) {
    const auto n = ::recv(fd, buffer, std::min(sizeof buffer, want - got.size()), MSG_DONTWAIT);
    if (n > 0) {
      got.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else {
      std::this_thread::sleep_for(1ms);
    }
  }
  return got;
}

// `count` connections open on one reactor, each with the peer end of its socket pair; the
// peers are closed at the end of the test.
struct OpenConnections {
  OpenConnections(Reactor& reactor, int count) {
    for (int i = 0; i < count; ++i) {
      auto [mine, peer] = socket_pair();
      conns.push_back(std::make_unique<Connection>());
      conns.back()->open(reactor, mine);
      peers.push_back(peer);
    }
  }
  ~OpenConnections() {
    for (std::size_t i = 0; i < peers.size(); ++i) close_peer(i);
  }
  void close_peer(std::size_t i) {
    if (peers[i] >= 0) ::close(peers[i]);
    peers[i] = -1;
  }
  OpenConnections(const OpenConnections&) = delete;
  OpenConnections& operator=(const OpenConnections&) = delete;

  std::vector<std::unique_ptr<Connection>> conns;
  std::vector<int> peers;
};

TEST(IoBatchTest, WritesOfOneTurnGoOutInOneSubmission) {
  Loop loop;
  OpenConnections open(loop.reactor, 3);
  auto& conns = open.conns;
  std::atomic<bool> done{false};
  std::vector<pgw::net::IoResult> results;
  asio::post(loop.io, [&] {
    for (std::size_t i = 0; i < conns.size(); ++i) {
      const std::string text = "reply " + std::to_string(i);
      results.push_back(conns[i]->write_some(text.data(), text.size()));
    }
    // Written as far as the caller can tell, though nothing has reached the peers yet.
    char probe = 0;
    EXPECT_LT(::recv(open.peers[0], &probe, 1, MSG_DONTWAIT), 0);
    asio::post(loop.io, [&] { done = true; });  // the next turn: the batch has gone by then
  });
  EXPECT_TRUE(loop.run_until(done));
  if (!loop.reactor.batches_io()) GTEST_SKIP() << "io_uring is not available here";
  for (std::size_t i = 0; i < conns.size(); ++i) {
    EXPECT_EQ(results[i].bytes, 7u);
    EXPECT_FALSE(results[i].error);
    EXPECT_EQ(read_exactly(open.peers[i], 7), "reply " + std::to_string(i));
  }
  EXPECT_EQ(loop.reactor.batch_counters().batched_writes, 3u);
  EXPECT_EQ(loop.reactor.batch_counters().write_submissions, 1u);
}

TEST(IoBatchTest, BytesOfOneConnectionKeepTheirOrder) {
  Loop loop;
  OpenConnections open(loop.reactor, 2);
  Connection& first = *open.conns[0];
  Connection& second = *open.conns[1];
  const int b = open.peers[0];
  const int d = open.peers[1];
  const std::string large(pgw::net::IoBatch::kMaxWrite + 1, 'L');  // bypasses the batch
  std::atomic<bool> done{false};
  asio::post(loop.io, [&] {
    EXPECT_EQ(first.write_some("1", 1).bytes, 1u);
    EXPECT_EQ(first.write_some("2", 1).bytes, 1u);  // appended to its entry
    EXPECT_EQ(second.write_some("x", 1).bytes, 1u);
    EXPECT_EQ(first.write_some("3", 1).bytes, 1u);  // behind another connection's entry
    EXPECT_EQ(first.write_some(large.data(), large.size()).bytes, large.size());
    EXPECT_EQ(first.write_some("4", 1).bytes, 1u);
    done = true;
  });
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_EQ(read_exactly(b, 4 + large.size()), "123" + large + "4");
  EXPECT_EQ(read_exactly(d, 1), "x");
}

// Writes like the relay: on every readiness event, as many 4 KiB pieces as write_some() takes.
struct StreamingWriter final : pgw::net::ReadyHandler {
  explicit StreamingWriter(const std::string& all) : data(all) {}
  void on_ready(Connection& c) override {
    while (at < data.size() && c.writable()) {
      const auto n = std::min<std::size_t>(4096, data.size() - at);
      const auto r = c.write_some(data.data() + at, n);
      if (r.error && !r.would_block()) {
        failed = true;
        return;
      }
      at += r.bytes;
      if (r.would_block()) ++refused;
    }
  }
  const std::string& data;
  std::size_t at = 0;
  int refused = 0;
  bool failed = false;
};

TEST(IoBatchTest, AFullSocketKeepsTheRestAndHoldsBackLaterWrites) {
  Loop loop;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(loop.reactor, a);
  // 4 MiB: far more than the socket and the batch hold, so batches go out mid-turn, sends come
  // back short, and the writer is refused until epoll reports room.
  std::string expected;
  for (int i = 0; i < 1024; ++i) expected += std::string(4096, static_cast<char>('a' + i % 26));
  StreamingWriter writer(expected);
  asio::post(loop.io, [&] {
    conn.set_handler(&writer);
    writer.on_ready(conn);
  });
  std::atomic<bool> done{false};
  std::string got;
  std::thread reader([&, fd = b] {
    got = read_exactly(fd, expected.size());
    done = true;
  });
  EXPECT_TRUE(loop.run_until(done, 6000ms));
  reader.join();
  EXPECT_FALSE(writer.failed);
  EXPECT_EQ(writer.at, expected.size());
  EXPECT_GT(writer.refused, 0);  // back-pressure happened
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected);  // (not EXPECT_EQ: 4 MiB in a failure message)
  ::close(b);
}

// A turn with one queued write sends it with send(); with more, one io_uring submission.
class FailedSendTest : public ::testing::TestWithParam<int> {};

TEST_P(FailedSendTest, AFailedSendReachesTheHandlerAndTheNextWrite) {
  const int count = GetParam();
  Loop loop;
  std::vector<std::unique_ptr<Connection>> conns;
  std::vector<std::unique_ptr<CountingHandler>> handlers;
  std::vector<int> peers;
  std::atomic<bool> done{false};
  std::atomic<bool> one_ended{false};  // each CountingHandler's own flag (unused)
  std::atomic<int> ended{0};
  for (int i = 0; i < count; ++i) {
    auto [a, b] = socket_pair();
    peers.push_back(b);
    conns.push_back(std::make_unique<Connection>());
    conns.back()->open(loop.reactor, a);
    handlers.push_back(std::make_unique<CountingHandler>());
    handlers.back()->done = &one_ended;
  }
  struct EndCounter final : pgw::net::ReadyHandler {
    CountingHandler* inner;
    std::atomic<int>* ended;
    std::atomic<bool>* done;
    int count;
    bool counted = false;
    void on_ready(Connection& c) override {
      inner->on_ready(c);
      if (inner->eof && !counted) {
        counted = true;
        if (++*ended == count) *done = true;
      }
    }
  };
  std::vector<EndCounter> counters(static_cast<std::size_t>(count));
  asio::post(loop.io, [&] {
    for (int i = 0; i < count; ++i) {
      auto& counter = counters[static_cast<std::size_t>(i)];
      counter.inner = handlers[static_cast<std::size_t>(i)].get();
      counter.ended = &ended;
      counter.done = &done;
      counter.count = count;
      conns[static_cast<std::size_t>(i)]->set_handler(&counter);
      ::close(peers[static_cast<std::size_t>(i)]);  // the peer is gone before the batch is sent
      // Queued: no error yet.
      EXPECT_EQ(conns[static_cast<std::size_t>(i)]->write_some("lost", 4).bytes, 4u);
    }
  });
  EXPECT_TRUE(loop.run_until(done));  // every handler was called and read the end of stream
  if (!loop.reactor.batches_io()) GTEST_SKIP() << "io_uring is not available here";
  EXPECT_EQ(loop.reactor.batch_counters().batched_writes, static_cast<std::uint64_t>(count));
  EXPECT_EQ(loop.reactor.batch_counters().write_submissions, count > 1 ? 1u : 0u);
  for (auto& conn : conns) {
    const auto later = conn->write_some("more", 4);
    EXPECT_EQ(later.error, std::error_code(EPIPE, std::system_category()));
  }
}

INSTANTIATE_TEST_SUITE_P(OneAndMany, FailedSendTest, ::testing::Values(1, 2));

TEST(IoBatchTest, ShutdownAndCloseSendWhatWasQueuedFirst) {
  Loop loop;
  OpenConnections open(loop.reactor, 2);
  Connection& half = *open.conns[0];
  Connection& closed = *open.conns[1];
  const int b = open.peers[0];
  const int d = open.peers[1];
  std::atomic<bool> done{false};
  asio::post(loop.io, [&] {
    half.write_some("FATAL", 5);
    half.shutdown_send();
    closed.write_some("bye", 3);
    closed.close();
    done = true;
  });
  EXPECT_TRUE(loop.run_until(done));
  EXPECT_EQ(read_exactly(b, 6), "FATAL");  // then the end of stream
  EXPECT_EQ(read_exactly(d, 4), "bye");
}

TEST(IoBatchTest, UnsentBytesMoveWithTheConnection) {
  Loop first, second;
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(first.reactor, a);
  const std::size_t filler = fill_socket(a);  // no loop runs: a direct send
  ASSERT_GT(filler, 0u);
  std::atomic<bool> done{false};
  asio::post(first.io, [&] {
    EXPECT_EQ(conn.write_some("tail", 4).bytes, 4u);  // queued: the socket is full
    done = true;
  });
  EXPECT_TRUE(first.run_until(done));
  if (!first.reactor.batches_io()) GTEST_SKIP() << "io_uring is not available here";
  EXPECT_FALSE(conn.writable());  // "tail" waits in the connection
  EXPECT_TRUE(conn.write_some("x", 1).would_block());
  conn.detach();
  conn.attach(second.reactor);
  std::string got;
  std::thread reader([&, fd = b] { got = read_exactly(fd, filler + 4); });
  std::atomic<bool> never{false};
  second.run_until(never, 500ms);  // EPOLLOUT on the new loop sends the tail
  reader.join();
  ASSERT_EQ(got.size(), filler + 4);
  EXPECT_EQ(got.substr(filler), "tail");
  EXPECT_TRUE(conn.writable());
  ::close(b);
}

// ---- Reads ahead: the reads of a batch of events in one submission.

// Reads at most `budget` bytes per readiness event, one byte at a time: a reader under
// back-pressure, which leaves bytes behind.
struct ThriftyReader final : pgw::net::ReadyHandler {
  void on_ready(Connection& c) override {
    for (std::size_t i = 0; i < budget && c.readable(); ++i) {
      char byte = 0;
      const auto r = c.read_some(&byte, 1);
      if (r.would_block()) break;
      if (r.error || r.bytes == 0) {
        eof = true;
        break;
      }
      got += byte;
    }
    if (done && got.size() >= want) *done = true;
  }
  std::size_t budget = 1000;
  std::size_t want = 0;
  std::string got;
  bool eof = false;
  std::atomic<bool>* done = nullptr;
};

TEST(IoBatchTest, ReadsOfOneBatchOfEventsAreOneSubmission) {
  Loop loop;
  constexpr int kConnections = 3;
  OpenConnections open(loop.reactor, kConnections);
  auto& conns = open.conns;
  std::vector<ThriftyReader> readers(kConnections);
  std::atomic<bool> done{false};
  std::atomic<bool> ignored{false};
  for (int i = 0; i < kConnections; ++i) {
    readers[i].want = 6;
    readers[i].done = i == kConnections - 1 ? &done : &ignored;
    conns[i]->set_handler(&readers[i]);
    // Before the loop runs: the first epoll_wait reports all three at once.
    const std::string text = "data " + std::to_string(i);
    ASSERT_EQ(::write(open.peers[i], text.data(), text.size()), 6);
  }
  EXPECT_TRUE(loop.run_until(done));
  if (!loop.reactor.batches_io()) GTEST_SKIP() << "io_uring is not available here";
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(readers[i].got, "data " + std::to_string(i));
    EXPECT_FALSE(conns[i]->readable());  // the read found the queue empty, as a short recv()
  }
  EXPECT_EQ(loop.reactor.batch_counters().reads_ahead, 3u);
  EXPECT_EQ(loop.reactor.batch_counters().read_submissions, 1u);
}

TEST(IoBatchTest, BytesTheReaderLeavesComeFirstAndInOrder) {
  Loop loop;
  OpenConnections open(loop.reactor, 2);
  Connection& slow = *open.conns[0];
  Connection& other = *open.conns[1];
  const int b = open.peers[0];
  const int d = open.peers[1];
  ThriftyReader reader, other_reader;
  reader.budget = 3;  // takes 3 bytes per event: the rest of a read slot is kept
  std::atomic<bool> done{false};
  std::atomic<bool> ignored{false};
  reader.done = &done;
  other_reader.done = &ignored;
  const std::string first = "abcdefgh";
  const std::string later = "ijklmnopqrst";
  reader.want = first.size() + later.size();
  slow.set_handler(&reader);
  other.set_handler(&other_reader);
  ASSERT_EQ(::write(b, first.data(), first.size()), static_cast<ssize_t>(first.size()));
  ASSERT_EQ(::write(d, "x", 1), 1);  // a second readable socket: the reads go as one batch
  std::thread writer([&, fd = b] {
    // One byte per event: each event lets the reader take 3 more bytes, first the kept ones.
    for (char byte : later) {
      std::this_thread::sleep_for(10ms);
      ASSERT_EQ(::write(fd, &byte, 1), 1);
    }
  });
  EXPECT_TRUE(loop.run_until(done, 3000ms));
  writer.join();
  EXPECT_EQ(reader.got, first + later);
  EXPECT_EQ(other_reader.got, "x");
  if (loop.reactor.batches_io()) {
    EXPECT_GE(loop.reactor.batch_counters().reads_ahead, 2u);
  }
}

TEST(IoBatchTest, EndOfStreamReadAheadReachesTheReader) {
  Loop loop;
  OpenConnections open(loop.reactor, 2);
  Connection& first = *open.conns[0];
  Connection& second = *open.conns[1];
  const int b = open.peers[0];
  ThriftyReader first_reader, second_reader;
  std::atomic<bool> done{false};
  std::atomic<bool> ignored{false};
  first_reader.done = &ignored;
  second_reader.done = &ignored;
  first.set_handler(&first_reader);
  second.set_handler(&second_reader);
  ASSERT_EQ(::write(b, "bye", 3), 3);
  open.close_peer(0);
  open.close_peer(1);  // nothing, then the end of stream
  std::thread watcher([&] {
    const auto deadline = Clock::now() + 2s;
    while (Clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
      if (first_reader.eof && second_reader.eof) break;
    }
    done = true;
  });
  loop.run_until(done);
  watcher.join();
  EXPECT_EQ(first_reader.got, "bye");
  EXPECT_TRUE(first_reader.eof);
  EXPECT_TRUE(second_reader.eof);
  if (loop.reactor.batches_io()) {
    EXPECT_EQ(loop.reactor.batch_counters().reads_ahead, 2u);
  }
}

TEST(IoBatchTest, UnreadBytesMoveWithTheConnection) {
  Loop first, second;
  OpenConnections open(first.reactor, 2);
  Connection& conn = *open.conns[0];
  Connection& other = *open.conns[1];
  const int b = open.peers[0];
  const int d = open.peers[1];
  ThriftyReader reader, other_reader;
  reader.budget = 2;
  std::atomic<bool> done{false};
  std::atomic<bool> ignored{false};
  reader.want = 2;
  reader.done = &done;
  other_reader.done = &ignored;
  conn.set_handler(&reader);
  other.set_handler(&other_reader);
  ASSERT_EQ(::write(b, "0123456789", 10), 10);
  ASSERT_EQ(::write(d, "y", 1), 1);
  EXPECT_TRUE(first.run_until(done));
  if (!first.reactor.batches_io()) GTEST_SKIP() << "io_uring is not available here";
  EXPECT_EQ(first.reactor.batch_counters().reads_ahead, 2u);
  EXPECT_EQ(reader.got, "01");
  EXPECT_TRUE(conn.readable());  // 8 bytes kept
  conn.detach();
  conn.attach(second.reactor);
  EXPECT_TRUE(conn.readable());  // still: the kept bytes are not in the socket
  char rest[16] = {};
  const auto r = conn.read_some(rest, sizeof rest);
  EXPECT_EQ(std::string(rest, r.bytes), "23456789");
  EXPECT_TRUE(conn.read_some(rest, sizeof rest).would_block());  // then the socket, empty
}

TEST(IoBatchTest, WithoutBatchingEveryWriteIsASend) {
  asio::io_context io{1};
  Reactor reactor{io, /*batch_io=*/false};
  auto [a, b] = socket_pair();
  Connection conn;
  conn.open(reactor, a);
  asio::post(io, [&] {
    EXPECT_EQ(conn.write_some("now", 3).bytes, 3u);
    char got[4] = {};
    EXPECT_EQ(::recv(b, got, sizeof got, MSG_DONTWAIT), 3);  // already there
    reactor.stop();
  });
  reactor.run();
  EXPECT_FALSE(reactor.batches_io());
  EXPECT_EQ(reactor.batch_counters().batched_writes, 0u);
  ::close(b);
}

// A listening socket watched by two loops, the way every worker watches the listeners.
struct AcceptRecorder final : pgw::net::AcceptHandler {
  AcceptRecorder(pgw::net::Listener& l, Reactor& r, std::mutex& m, std::vector<int>& out)
      : listener(l), reactor(r), mutex(m), accepted(out) {}
  void on_acceptable() override {
    if (listener.closed()) {
      reactor.unwatch_listener(listener.fd());
      saw_close = true;
      return;
    }
    for (;;) {
      const int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN: the other loop took it, or none is left
      ++taken;
      std::lock_guard lock(mutex);
      accepted.push_back(fd);
    }
  }
  pgw::net::Listener& listener;
  Reactor& reactor;
  std::mutex& mutex;
  std::vector<int>& accepted;
  int taken = 0;
  std::atomic<bool> saw_close{false};
};

class SharedListenerTest : public ::testing::TestWithParam<bool> {};

TEST_P(SharedListenerTest, EveryConnectionIsAcceptedOnceAndStopRefusesNewOnes) {
  const bool unix_socket = GetParam();
  std::unique_ptr<pgw::net::Listener> listener;
  std::string path;
  if (unix_socket) {
    path = (std::filesystem::temp_directory_path() / ("pgw-listener-" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove(path);
    listener = pgw::net::Listener::open(
        pgw::net::Endpoint(asio::local::stream_protocol::endpoint(path)), 128, false);
  } else {
    listener = pgw::net::Listener::open(
        pgw::net::Endpoint(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)), 128,
        false);
  }
  sockaddr_storage address{};
  socklen_t address_size = sizeof address;
  ASSERT_EQ(::getsockname(listener->fd(), reinterpret_cast<sockaddr*>(&address), &address_size), 0);
  auto dial = [&] {
    const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&address), address_size);
    const int error = rc == 0 ? 0 : errno;
    if (rc != 0) ::close(fd);
    return std::pair{rc == 0 ? fd : -1, error};
  };

  Loop first, second;
  std::mutex mutex;
  std::vector<int> accepted;
  AcceptRecorder on_first(*listener, first.reactor, mutex, accepted);
  AcceptRecorder on_second(*listener, second.reactor, mutex, accepted);
  first.reactor.watch_listener(listener->fd(), on_first);
  second.reactor.watch_listener(listener->fd(), on_second);

  constexpr int kClients = 200;
  std::atomic<bool> done{false};
  std::vector<int> clients;
  int refused_error = 0;
  std::thread dialer([&] {
    for (int i = 0; i < kClients; ++i) clients.push_back(dial().first);
    const auto deadline = Clock::now() + 3s;
    while (Clock::now() < deadline) {
      {
        std::lock_guard lock(mutex);
        if (accepted.size() == kClients) break;
      }
      std::this_thread::sleep_for(1ms);
    }
    listener->stop_listening();
    refused_error = dial().second;  // after stop_listening(): refused
    while (!(on_first.saw_close && on_second.saw_close) && Clock::now() < deadline + 2s)
      std::this_thread::sleep_for(1ms);
    done = true;
  });
  std::thread second_loop([&] { second.run_until(done, 6000ms); });
  first.run_until(done, 6000ms);
  second_loop.join();
  dialer.join();

  EXPECT_EQ(std::count(clients.begin(), clients.end(), -1), 0);
  EXPECT_EQ(accepted.size(), static_cast<std::size_t>(kClients));
  EXPECT_EQ(std::set<int>(accepted.begin(), accepted.end()).size(), accepted.size());
  EXPECT_EQ(on_first.taken + on_second.taken, kClients);
  // Both loops were woken by the hang-up and dropped the listener.
  EXPECT_TRUE(on_first.saw_close);
  EXPECT_TRUE(on_second.saw_close);
  EXPECT_EQ(refused_error, ECONNREFUSED);
  for (int fd : accepted) ::close(fd);
  for (int fd : clients) ::close(fd);
  if (!path.empty()) std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(TcpAndUnix, SharedListenerTest, ::testing::Values(false, true),
                         [](const auto& param_info) { return param_info.param ? "Unix" : "Tcp"; });

// tcp_defer_accept: the kernel keeps a connection that has sent nothing, and hands it over
// with its first bytes.
TEST(ListenerTest, DeferredAcceptWaitsForTheFirstBytes) {
  auto listener = pgw::net::Listener::open(
      pgw::net::Endpoint(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)), 128, false,
      5);
  EXPECT_TRUE(listener->defers_accept());
  int seconds = 0;
  socklen_t size = sizeof seconds;
  ASSERT_EQ(::getsockopt(listener->fd(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, &size), 0);
  EXPECT_GT(seconds, 0);

  sockaddr_storage address{};
  socklen_t address_size = sizeof address;
  ASSERT_EQ(::getsockname(listener->fd(), reinterpret_cast<sockaddr*>(&address), &address_size), 0);
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), address_size), 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_LT(::accept4(listener->fd(), nullptr, nullptr, SOCK_CLOEXEC), 0);  // silent: not yet
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(::send(client, "x", 1, 0), 1);
  int accepted = -1;
  for (int i = 0; i < 200 && accepted < 0; ++i) {
    accepted = ::accept4(listener->fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (accepted < 0) std::this_thread::sleep_for(5ms);
  }
  ASSERT_GE(accepted, 0);
  char byte = 0;
  EXPECT_EQ(::recv(accepted, &byte, 1, MSG_DONTWAIT), 1);  // the first bytes came with it
  EXPECT_EQ(byte, 'x');
  ::close(accepted);
  ::close(client);
}

TEST(ListenerTest, DeferredAcceptIsOffAtZeroAndForUnixSockets) {
  auto tcp = pgw::net::Listener::open(
      pgw::net::Endpoint(asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)), 128, false,
      0);
  EXPECT_FALSE(tcp->defers_accept());
  const auto path =
      (std::filesystem::temp_directory_path() / ("pgw-defer-" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove(path);
  auto unix_listener = pgw::net::Listener::open(
      pgw::net::Endpoint(asio::local::stream_protocol::endpoint(path)), 128, false, 5);
  EXPECT_FALSE(unix_listener->defers_accept());
  std::filesystem::remove(path);
}

}  // namespace

namespace {

// A numeric host ("fe80::1%1" with its scope) as pgwarden resolves a server's address.
pgw::net::Endpoint endpoint_from(const std::string& host, int port) {
  std::error_code ec;
  auto endpoint = pgw::net::server_endpoint(host, port, ec);
  EXPECT_FALSE(ec) << host;
  return endpoint;
}

}  // namespace

TEST(SocketAddressTest, AddressOfGivesNumericHostAndPortForEachFamily) {
  EXPECT_EQ(pgw::net::address_of(endpoint_from("10.0.1.2", 6432)),
            std::make_pair(std::string("10.0.1.2"), 6432));
  EXPECT_EQ(pgw::net::address_of(endpoint_from("2001:db8::7", 5432)),
            std::make_pair(std::string("2001:db8::7"), 5432));
  // A link-local address keeps its scope (getnameinfo's "%interface" or "%index").
  const auto [host, port] = pgw::net::address_of(endpoint_from("fe80::1%1", 1));
  EXPECT_EQ(host.rfind("fe80::1%", 0), 0u) << host;
  EXPECT_EQ(port, 1);
}
