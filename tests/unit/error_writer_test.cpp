// The one error writer (src/net/error_writer.hpp) and what it writes (util/errors.hpp): the
// client reads the whole ErrorResponse and then the end of the stream, never a reset; the
// writer waits for a client that keeps sending no longer than it must. Real sockets, a real
// loop.
#include "net/error_writer.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "protocol/codec.hpp"
#include "protocol/message_types.hpp"
#include "test_loop.hpp"

namespace {

using namespace std::chrono_literals;
using pgw::Err;
using pgw::net::AfterError;
using pgw::net::Clock;
using pgw::net::Connection;

using pgw::test::Loop;

// Everything the peer receives until the end of the stream (blocking reads).
std::string read_to_end(int fd) {
  std::string out;
  char buffer[4096];
  for (;;) {
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return out;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

// Runs end_with_error on one end of a socket pair; returns what the other end read, and how
// long the writer took.
struct Ended {
  std::string received;
  Clock::duration took{};
};

Ended end_connection(const pgw::ErrorReport* report, AfterError after, bool peer_closes) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  const int ours = fds[0];
  const int peer = fds[1];
  ::fcntl(ours, F_SETFL, O_NONBLOCK);
  // The client already sent something (its next query): a close with it unread would reset.
  const std::string pipelined(100, 'Q');
  EXPECT_EQ(::send(peer, pipelined.data(), pipelined.size(), 0),
            static_cast<ssize_t>(pipelined.size()));
  Loop loop;
  Connection connection;
  connection.open(loop.reactor, ours);
  std::atomic<bool> done{false};
  Clock::duration took{};
  asio::co_spawn(
      loop.io,
      [&]() -> asio::awaitable<void> {
        const auto start = Clock::now();
        co_await pgw::net::end_with_error(connection, report, after);
        took = Clock::now() - start;
        EXPECT_FALSE(connection.is_open());
        done = true;
      },
      asio::detached);
  std::string received;
  std::thread client([&] {
    received = read_to_end(peer);  // the error, then the end of the stream
    if (peer_closes) ::close(peer);
  });
  EXPECT_TRUE(loop.run_until(done, 3000ms));
  client.join();
  if (!peer_closes) ::close(peer);
  return {received, took};
}

TEST(ErrorWriterTest, TheClientReadsTheWholeErrorThenTheEndOfTheStream) {
  const auto report = pgw::report(Err::overloaded, 900, 1000);
  const auto ended = end_connection(&report, AfterError::drain, true);
  const auto parsed = pgw::proto::parse_message(pgw::proto::as_bytes(ended.received),
                                                pgw::proto::Direction::backend);
  ASSERT_TRUE(std::holds_alternative<pgw::proto::Message>(parsed));
  const auto& message = std::get<pgw::proto::Message>(parsed);
  EXPECT_EQ(message.header.type, pgw::proto::from_server::kErrorResponse);
  EXPECT_EQ(message.header.total_size(), ended.received.size());  // the error and nothing else
  const auto fields = pgw::proto::parse_error_fields(message.body);
  ASSERT_TRUE(fields);
  EXPECT_EQ(fields->sqlstate, "53300");
  EXPECT_TRUE(fields->is_fatal());
  EXPECT_EQ(fields->message, "sorry, too many clients already");
  EXPECT_EQ(fields->detail,
            "pgwarden has 900 of its 1000 file descriptors open (RLIMIT_NOFILE) and takes no new "
            "connections until it is under 80 %.");
  EXPECT_FALSE(fields->hint.empty());
  // The client closed as soon as it had read it: the writer did not wait out its linger.
  EXPECT_LT(ended.took, pgw::net::kErrorLinger);
}

TEST(ErrorWriterTest, AClientThatStaysIsCutOffAfterTheLinger) {
  const auto report = pgw::report(Err::shutting_down);
  const auto ended = end_connection(&report, AfterError::drain, false);
  EXPECT_FALSE(ended.received.empty());
  EXPECT_GE(ended.took, pgw::net::kErrorLinger);
  EXPECT_LT(ended.took, pgw::net::kErrorLinger + 1s);
}

TEST(ErrorWriterTest, WaitLingersWithoutReadingAndNoReportOnlyCloses) {
  const auto report = pgw::report(Err::client_idle_timeout);
  auto ended = end_connection(&report, AfterError::wait, true);
  EXPECT_GE(ended.took, pgw::net::kErrorLinger);  // another coroutine would read meanwhile
  EXPECT_EQ(ended.received[0], pgw::proto::from_server::kErrorResponse);
  ended = end_connection(nullptr, AfterError::close, true);
  EXPECT_TRUE(ended.received.empty());  // the client already had its error
  EXPECT_LT(ended.took, pgw::net::kErrorLinger);
}

TEST(ErrorWriterTest, AtTheDescriptorLimitItAnswersAndClosesAtOnce) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  ::send(fds[1], "startup", 7, 0);
  pgw::net::end_with_error_now(fds[0], pgw::report(Err::overloaded, 1000, 1000));
  const auto received = read_to_end(fds[1]);
  ::close(fds[1]);
  const auto parsed =
      pgw::proto::parse_message(pgw::proto::as_bytes(received), pgw::proto::Direction::backend);
  ASSERT_TRUE(std::holds_alternative<pgw::proto::Message>(parsed));
  EXPECT_EQ(std::get<pgw::proto::Message>(parsed).header.type,
            pgw::proto::from_server::kErrorResponse);
}

}  // namespace
