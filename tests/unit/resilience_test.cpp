// The process-level guards of resilience, each fed explicit values: the event-loop watchdog
// (src/net/watchdog.hpp) over a real but idle Reactor, the open-files rule
// (src/net/overload.hpp), and the shutdown drain's bookkeeping (src/net/drain.hpp).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "net/drain.hpp"
#include "net/overload.hpp"
#include "net/reactor.hpp"
#include "net/watchdog.hpp"
#include "util/activity.hpp"

namespace {

using namespace std::chrono_literals;
using pgw::net::Clock;
using pgw::net::Reactor;
using pgw::net::Watchdog;

struct Loop {
  asio::io_context io{1};
  Reactor reactor{io};
  // Runs the loop until `fn`, posted to it, has run (one turn or a few).
  template <typename Fn>
  void run_once(Fn fn) {
    reactor.post([this, fn] {
      fn();
      reactor.stop();
    });
    reactor.run();
  }
};

TEST(Watchdog, ReportsALoopBehindByMoreThanASecondOnceAndItsRecovery) {
  Loop loop;
  Watchdog watchdog({&loop.reactor});
  const auto born = loop.reactor.last_turn();  // never ran: its last turn is its creation
  EXPECT_TRUE(watchdog.check(born + 900ms, false).empty());
  auto findings = watchdog.check(born + 1500ms, false);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].worker, 0u);
  EXPECT_FALSE(findings[0].recovered);
  EXPECT_EQ(findings[0].stalled_for, 1500ms);
  EXPECT_EQ(findings[0].activity, "starting");
  EXPECT_EQ(watchdog.stalls(), 1u);
  // Still stuck: not reported again, but the longest stall grows.
  EXPECT_TRUE(watchdog.check(born + 3s, false).empty());
  EXPECT_EQ(watchdog.stalls(), 1u);
  EXPECT_EQ(watchdog.longest(), 3s);
  // The loop comes round: one recovery, then quiet.
  loop.run_once([] {});
  const auto turn = loop.reactor.last_turn();
  findings = watchdog.check(turn + 10ms, false);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_TRUE(findings[0].recovered);
  EXPECT_EQ(findings[0].stalled_for, turn - born);
  EXPECT_TRUE(watchdog.check(turn + 20ms, false).empty());
  // A new stall later is a new one.
  ASSERT_EQ(watchdog.check(turn + 1100ms, false).size(), 1u);
  EXPECT_EQ(watchdog.stalls(), 2u);
}

TEST(Watchdog, TheActivityMarkerNamesThePhaseAndScopes) {
  Loop loop;
  std::string in_handler, in_scope, after_scope;
  loop.run_once([&] {
    in_handler = loop.reactor.activity();
    {
      pgw::activity::Scope scope("computing something long");
      in_scope = loop.reactor.activity();
    }
    after_scope = loop.reactor.activity();
  });
  EXPECT_EQ(in_handler, "running posted handlers and coroutines");
  EXPECT_EQ(in_scope, "computing something long");
  EXPECT_EQ(after_scope, in_handler);
  // Off the loop's thread a Scope changes nothing (no marker is bound here).
  EXPECT_EQ(pgw::activity::this_thread(), nullptr);
  pgw::activity::Scope harmless("not on a loop");
}

// A backend that is terminated sends its FATAL and closes at once: both can arrive before the
// loop dispatches the one edge they cause. The short read of the FATAL must not hide the end
// of stream behind it, or the session waits forever for a server that is gone.
TEST(PeerClose, DataFollowedByEndOfStreamInOneEdgeIsBothRead) {
  Loop loop;
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  pgw::net::Connection connection;
  connection.open(loop.reactor, fds[0]);
  ASSERT_EQ(::write(fds[1], "FATAL", 5), 5);
  ::close(fds[1]);  // EOF right behind the data, before the loop runs
  struct Reader final : pgw::net::ReadyHandler {
    std::string data;
    bool eof = false;
    void on_ready(pgw::net::Connection& c) override {
      // What the relay does: read while the flag says there is something to read.
      char buffer[64];
      while (c.readable() && !eof) {
        const auto r = c.read_some(buffer, sizeof buffer);
        if (r.would_block() || r.error) break;
        if (r.bytes == 0) eof = true;
        data.append(buffer, r.bytes);
      }
    }
  } reader;
  connection.set_handler(&reader);
  std::atomic<bool> done{false};
  std::thread stopper([&] {
    for (int i = 0; i < 2000 && !reader.eof; ++i) std::this_thread::sleep_for(1ms);
    done = true;
    loop.reactor.stop();
  });
  loop.reactor.run();
  stopper.join();
  EXPECT_EQ(reader.data, "FATAL");
  EXPECT_TRUE(reader.eof);
  connection.close();
}

TEST(FileBudget, RefusesFrom90PercentAndAcceptsAgainUnder80) {
  pgw::net::FileBudget budget;
  EXPECT_FALSE(budget.update(89, 100));
  EXPECT_FALSE(budget.refusing());
  EXPECT_TRUE(budget.update(90, 100));  // changed
  EXPECT_TRUE(budget.refusing());
  EXPECT_FALSE(budget.update(85, 100));  // between the thresholds: stays refusing
  EXPECT_TRUE(budget.refusing());
  EXPECT_TRUE(budget.update(79, 100));
  EXPECT_FALSE(budget.refusing());
  EXPECT_FALSE(budget.update(85, 100));  // and stays accepting until 90 % again
  EXPECT_FALSE(budget.refusing());
  EXPECT_FALSE(budget.update(50, 0));  // no limit: never refuses
}

TEST(FileBudget, CountsMoreOftenNearTheLimit) {
  using pgw::net::FileBudget;
  EXPECT_EQ(FileBudget::recheck_after(100, 1000), 1000ms);
  EXPECT_EQ(FileBudget::recheck_after(600, 1000), 250ms);
  EXPECT_EQ(FileBudget::recheck_after(800, 1000), 100ms);
}

TEST(FileBudget, CountsThisProcessesDescriptors) {
  const int before = pgw::net::count_open_files();
  ASSERT_GT(before, 2);
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pgw::net::count_open_files(), before + 1);
  ::close(fd);
  EXPECT_GT(pgw::net::open_file_limit(), before);
}

TEST(OverloadGuard, AtTheDescriptorLimitTheSpareAnswersAWaitingClientWith53300) {
  // What a worker does when accept4() fails with EMFILE: give up the spare descriptor, accept
  // the waiting client, tell it 53300, close it, take the spare again. The test process runs
  // out of descriptors for real (its own RLIMIT_NOFILE, restored at the end).
  const int listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listen_fd, 8), 0);
  socklen_t size = sizeof address;
  ASSERT_EQ(::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &size), 0);
  int clients[2];
  for (int& client : clients) {
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  }
  auto received_by = [](int client) {
    std::string received;
    char buffer[512];
    for (ssize_t n; (n = ::recv(client, buffer, sizeof buffer, 0)) > 0;)
      received.append(buffer, static_cast<std::size_t>(n));
    return received;
  };

  asio::io_context io;
  pgw::ProcessHealth health;
  pgw::net::OverloadGuard guard(io, health);
  guard.start();  // takes the spare
  // The first client with descriptors to spare. (This also runs the refusal's formatting once
  // before the table is full: UBSan's type check of a first call needs a pipe, which it could
  // not get at the limit, and would then report a false "invalid vptr".)
  EXPECT_TRUE(guard.refuse_one_at_limit(listen_fd));

  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(pgw::net::count_open_files() + 4);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  std::vector<int> fillers;
  for (int fd; (fd = ::dup(listen_fd)) >= 0;) fillers.push_back(fd);
  const int full_errno = errno;
  const int direct = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  const int accept_errno = errno;
  const bool refused = guard.refuse_one_at_limit(listen_fd);        // through the spare
  const bool refused_again = guard.refuse_one_at_limit(listen_fd);  // nobody is waiting now
  for (int fd : fillers) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);

  EXPECT_EQ(full_errno, EMFILE);
  EXPECT_EQ(direct, -1);
  EXPECT_EQ(accept_errno, EMFILE);
  EXPECT_TRUE(refused);
  EXPECT_FALSE(refused_again);
  EXPECT_TRUE(health.refusing_connections.load());
  EXPECT_EQ(health.connections_refused.load(), 2u);
  // Each client got an ErrorResponse with SQLSTATE 53300 and why, then the end of the stream.
  for (int client : clients) {
    const std::string received = received_by(client);
    ASSERT_FALSE(received.empty());
    EXPECT_EQ(received[0], 'E');
    EXPECT_NE(received.find("C53300"), std::string::npos);
    EXPECT_NE(received.find("file descriptors"), std::string::npos);
    ::close(client);
  }
  ::close(listen_fd);
}

TEST(Drain, KnowsWhenEveryWorkerIsDone) {
  pgw::net::Drain drain(2);
  EXPECT_FALSE(drain.active());
  const auto t0 = Clock::now();
  drain.begin(pgw::net::ShutdownMode::drain, t0, 30s);
  EXPECT_TRUE(drain.active());
  EXPECT_EQ(drain.deadline(), t0 + 30s);
  EXPECT_FALSE(drain.final_phase());
  EXPECT_FALSE(drain.all_sessions_gone());  // nobody reported yet
  drain.report(0, 0, 0);
  EXPECT_FALSE(drain.all_sessions_gone());  // worker 1 has not
  drain.report(1, 3, 1);
  EXPECT_FALSE(drain.all_sessions_gone());
  EXPECT_FALSE(drain.no_server_leased());
  drain.report(1, 1, 0);
  EXPECT_TRUE(drain.no_server_leased());
  drain.report(1, 0, 0);
  EXPECT_TRUE(drain.all_sessions_gone());
  drain.end_window();
  EXPECT_TRUE(drain.final_phase());
  // An immediate shutdown is final from the start.
  pgw::net::Drain now(1);
  now.begin(pgw::net::ShutdownMode::immediate, t0, 0s);
  EXPECT_TRUE(now.final_phase());
  EXPECT_STREQ(pgw::net::describe(pgw::net::ShutdownMode::none), "no");
}

}  // namespace
