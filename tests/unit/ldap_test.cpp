// Unit tests for src/auth/ldap: the user name check and filter escaping, the URIs, and the
// exchange's refusals and time limits against sockets that behave like broken LDAP servers (a
// real slapd is in tests/integration/test_ldap.py).
#include "auth/ldap.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using pgw::auth::ldap_authenticate;
using pgw::auth::LdapAuthenticator;
using pgw::auth::LdapLimits;
using pgw::auth::LdapOutcome;
using pgw::auth::LdapRequest;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

TEST(Ldap, UserNamesPostgresqlRefusesForSearch) {
  EXPECT_TRUE(pgw::auth::ldap_user_name_allowed("alice"));
  EXPECT_TRUE(pgw::auth::ldap_user_name_allowed("a.b-c_d@example.net"));
  EXPECT_TRUE(pgw::auth::ldap_user_name_allowed(""));
  for (const char* name : {"a*", "(a", "a)", "a\\b", "a/b", "*)(uid=*"}) {
    EXPECT_FALSE(pgw::auth::ldap_user_name_allowed(name)) << name;
  }
}

TEST(Ldap, FilterEscapingFollowsRfc4515) {
  EXPECT_EQ(pgw::auth::ldap_filter_escape("alice"), "alice");
  EXPECT_EQ(pgw::auth::ldap_filter_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
  EXPECT_EQ(pgw::auth::ldap_filter_escape("a\\b"), "a\\5cb");
  EXPECT_EQ(pgw::auth::ldap_filter_escape(std::string("a\0b", 3)), "a\\00b");
  // UTF-8 goes as it is (RFC 4515 allows it in an assertion value).
  EXPECT_EQ(pgw::auth::ldap_filter_escape("j\xc3\xb6rg"), "j\xc3\xb6rg");
}

TEST(Ldap, SearchFilterReplacesEveryUsername) {
  EXPECT_EQ(pgw::auth::ldap_search_filter("(uid=$username)", "alice"), "(uid=alice)");
  EXPECT_EQ(pgw::auth::ldap_search_filter("(|(uid=$username)(mail=$username@x))", "bob"),
            "(|(uid=bob)(mail=bob@x))");
  EXPECT_EQ(pgw::auth::ldap_search_filter("(cn=$user)", "bob"), "(cn=$user)");
  EXPECT_EQ(pgw::auth::ldap_search_filter("(uid=$username)", "a*"), "(uid=a\\2a)");
  EXPECT_EQ(pgw::auth::ldap_search_filter("(uid=$username$username)", "x"), "(uid=xx)");
}

TEST(Ldap, UrisNameEveryServerWithItsPort) {
  LdapRequest r;
  r.servers = "ldap1 10.0.0.2";
  EXPECT_EQ(pgw::auth::ldap_uris(r), "ldap://ldap1:389 ldap://10.0.0.2:389");
  r.scheme = "ldaps";
  r.servers = " a\t b ";
  EXPECT_EQ(pgw::auth::ldap_uris(r), "ldaps://a:636 ldaps://b:636");
  r.port = 1636;
  r.servers = "::1";
  EXPECT_EQ(pgw::auth::ldap_uris(r), "ldaps://[::1]:1636");
  r.servers = "  ";
  EXPECT_EQ(pgw::auth::ldap_uris(r), "");
}

// A TCP socket on a free loopback port that never answers: listening (the kernel completes
// connections, nobody reads), or closed again (connections are refused).
class FakeServer {
 public:
  explicit FakeServer(bool listening) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length), 0);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
    if (listening) {
      EXPECT_EQ(::listen(fd_, 16), 0);
    } else {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FakeServer() {
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }
  // Whether a connection is waiting to be accepted (the exchange got as far as connecting).
  bool contacted() const {
    const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return false;
    ::close(client);
    return true;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

LdapRequest request_for(const FakeServer& server, bool search) {
  LdapRequest r;
  r.servers = "127.0.0.1";
  r.port = server.port();
  r.search = search;
  r.prefix = "uid=";
  r.suffix = ",dc=example,dc=net";
  r.basedn = "dc=example,dc=net";
  r.user = "alice";
  r.password = "secret";
  return r;
}

TEST(Ldap, EmptyPasswordIsRefusedWithoutAskingTheServer) {
  FakeServer server(true);
  auto r = request_for(server, false);
  r.password.clear();
  const auto outcome = ldap_authenticate(r, LdapLimits{}, Clock::now() + 10s);
  EXPECT_FALSE(outcome.ok);
  EXPECT_EQ(outcome.detail, "empty password returned by client");
  EXPECT_FALSE(server.contacted());
}

TEST(Ldap, FilterCharactersInTheUserNameAreRefusedWithoutAskingTheServer) {
  FakeServer server(true);
  auto r = request_for(server, true);
  r.user = "*)(uid=*";
  const auto outcome = ldap_authenticate(r, LdapLimits{}, Clock::now() + 10s);
  EXPECT_FALSE(outcome.ok);
  EXPECT_EQ(outcome.detail, "invalid character in user name for LDAP authentication");
  EXPECT_FALSE(server.contacted());
}

TEST(Ldap, ARefusedConnectionIsReported) {
  FakeServer server(false);
  const auto outcome =
      ldap_authenticate(request_for(server, false), LdapLimits{}, Clock::now() + 10s);
  EXPECT_FALSE(outcome.ok);
  EXPECT_NE(outcome.detail.find("LDAP login failed for user \"uid=alice,dc=example,dc=net\""),
            std::string::npos)
      << outcome.detail;
  EXPECT_NE(outcome.detail.find("Can't contact LDAP server"), std::string::npos) << outcome.detail;
  EXPECT_EQ(outcome.detail.find("secret"), std::string::npos) << outcome.detail;
}

TEST(Ldap, ASilentServerTimesOut) {
  // Connected, but no answer to the bind: the operation limit ends it.
  FakeServer server(true);
  LdapLimits limits;
  limits.connect = 300ms;
  limits.operation = 400ms;
  for (bool search : {false, true}) {
    SCOPED_TRACE(search ? "search+bind" : "simple bind");
    const auto start = Clock::now();
    const auto outcome = ldap_authenticate(request_for(server, search), limits, start + 10s);
    const auto took = Clock::now() - start;
    EXPECT_FALSE(outcome.ok);
    EXPECT_NE(outcome.detail.find("Timed out"), std::string::npos) << outcome.detail;
    EXPECT_NE(
        outcome.detail.find(search ? "could not perform initial LDAP bind" : "LDAP login failed"),
        std::string::npos)
        << outcome.detail;
    EXPECT_GE(took, 350ms);
    EXPECT_LT(took, 3s);
  }
  // The deadline wins over a longer operation limit.
  limits.operation = 10s;
  const auto start = Clock::now();
  const auto outcome = ldap_authenticate(request_for(server, false), limits, start + 500ms);
  EXPECT_FALSE(outcome.ok);
  EXPECT_LT(Clock::now() - start, 3s);
  // And StartTLS, which waits for its answer through the library's own timeout.
  limits.operation = 400ms;
  auto tls = request_for(server, false);
  tls.start_tls = true;
  const auto tls_start = Clock::now();
  const auto tls_outcome = ldap_authenticate(tls, limits, tls_start + 10s);
  EXPECT_FALSE(tls_outcome.ok);
  EXPECT_NE(tls_outcome.detail.find("could not start LDAP TLS session"), std::string::npos)
      << tls_outcome.detail;
  EXPECT_LT(Clock::now() - tls_start, 3s);
}

// Collects outcomes from the authenticator's threads.
struct Outcomes {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<LdapOutcome> got;
  std::vector<std::thread::id> threads;
  auto callback() {
    return [this](LdapOutcome outcome) {
      std::lock_guard lock(mutex);
      got.push_back(std::move(outcome));
      threads.push_back(std::this_thread::get_id());
      changed.notify_all();
    };
  }
  bool wait_for(std::size_t count, std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, limit, [&] { return got.size() >= count; });
  }
};

TEST(LdapAuthenticator, ChecksRunOnItsOwnThreads) {
  FakeServer server(false);  // refused at once
  LdapAuthenticator authenticator(LdapLimits{}, 2);
  Outcomes outcomes;
  for (int i = 0; i < 5; ++i) authenticator.submit(request_for(server, false), outcomes.callback());
  ASSERT_TRUE(outcomes.wait_for(5, 10s));
  std::lock_guard lock(outcomes.mutex);
  for (std::size_t i = 0; i < outcomes.got.size(); ++i) {
    EXPECT_FALSE(outcomes.got[i].ok);
    EXPECT_NE(outcomes.threads[i], std::this_thread::get_id());
  }
}

TEST(LdapAuthenticator, AQueuedCheckPastItsTimeIsRefusedWithoutAskingTheServer) {
  // One thread, kept busy for 500 ms by the first check (its outcome's callback takes that
  // long); the check queued behind it has 300 ms.
  FakeServer refused(false);
  FakeServer spare(true);
  LdapLimits limits;
  limits.total = 300ms;
  LdapAuthenticator authenticator(limits, 1);
  Outcomes outcomes;
  auto record = outcomes.callback();
  authenticator.submit(request_for(refused, false), [&record](LdapOutcome outcome) {
    std::this_thread::sleep_for(500ms);
    record(std::move(outcome));
  });
  authenticator.submit(request_for(spare, false), outcomes.callback());
  ASSERT_TRUE(outcomes.wait_for(2, 10s));
  std::lock_guard lock(outcomes.mutex);
  EXPECT_NE(outcomes.got[1].detail.find("no LDAP thread was free within 0.3 s"), std::string::npos)
      << outcomes.got[1].detail;
  EXPECT_FALSE(spare.contacted());
}

TEST(LdapAuthenticator, AfterStopChecksAreRefusedAtOnce) {
  LdapAuthenticator authenticator;
  authenticator.stop();
  Outcomes outcomes;
  FakeServer server(true);
  authenticator.submit(request_for(server, false), outcomes.callback());
  ASSERT_TRUE(outcomes.wait_for(1, 0ms));
  EXPECT_FALSE(outcomes.got[0].ok);
  EXPECT_EQ(outcomes.threads[0], std::this_thread::get_id());
  EXPECT_FALSE(server.contacted());
}

}  // namespace
