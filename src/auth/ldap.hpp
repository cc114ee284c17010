// LDAP authentication, as PostgreSQL's "ldap" method does it (auth.c, CheckLDAPAuth): a simple
// bind as prefix + user name + suffix, or search+bind (bind as a search DN or anonymously, find
// the one entry for the user name, bind as that entry with the password). OpenLDAP's client
// library does the protocol; its calls block, so they run on threads of their own
// (LdapAuthenticator), never on a worker's event loop, and every step is bounded in time, so a
// dead or silent LDAP server gives a refusal within seconds rather than a hung login.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "util/ranked_mutex.hpp"

namespace pgw::auth {

enum class LdapScope : std::uint8_t { base, one, subtree };

// One login to check: the line's options (the session fills them in from config::HbaLdap) and
// what the client said.
struct LdapRequest {
  std::string scheme = "ldap";  // or "ldaps"
  std::string servers;          // host names or addresses separated by blanks, tried in order
  int port = 0;                 // 0: 389, or 636 for ldaps
  bool start_tls = false;       // StartTLS before the first bind
  // Search+bind when set; otherwise a simple bind as prefix + user + suffix.
  bool search = false;
  std::string prefix, suffix;
  std::string basedn;
  std::string binddn, bindpasswd;  // "" and "": an anonymous bind for the search
  // The search filter, "$username" standing for the user name: the line's ldapsearchfilter, or
  // "(attribute=$username)" for its ldapsearchattribute (uid by default).
  std::string search_filter = "(uid=$username)";
  LdapScope scope = LdapScope::subtree;
  std::string user, password;
};

struct LdapOutcome {
  bool ok = false;
  // For the log, never the password: the DN bound as and the server, or what failed, in
  // PostgreSQL's words where it has them.
  std::string detail;
};

// How long each step may take.
struct LdapLimits {
  // Connecting to a server (TCP, and the TLS handshake of ldaps or StartTLS): PgBouncer's 3 s.
  std::chrono::milliseconds connect{3000};
  // Each request's answer (StartTLS, a bind, the search).
  std::chrono::milliseconds operation{5000};
  // The whole check from submit(), the wait for a free thread included.
  std::chrono::milliseconds total{10000};
};

// PostgreSQL refuses user names with characters a search filter would need escaped (* ( ) \ and
// /) for search+bind, rather than let them shape the filter.
bool ldap_user_name_allowed(std::string_view user);
// `value` escaped for a filter's assertion value (RFC 4515: * ( ) \ and NUL as \2a \28 \29 \5c
// \00).
std::string ldap_filter_escape(std::string_view value);
// `pattern` with every "$username" replaced by the escaped user name.
std::string ldap_search_filter(std::string_view pattern, std::string_view user);
// The URIs ldap_initialize() takes: "ldap://a:389 ldap://b:389" (IPv6 addresses in brackets).
std::string ldap_uris(const LdapRequest& request);

// The whole check, blocking: connect, StartTLS, (bind, search,) bind; false with the reason
// when any step fails or `deadline` passes. The password must not be empty (an empty one would
// be an unauthenticated bind, which LDAP servers answer with success): refused before any
// server is contacted.
LdapOutcome ldap_authenticate(const LdapRequest& request, const LdapLimits& limits,
                              std::chrono::steady_clock::time_point deadline);

// Runs checks on up to `max_threads` threads of its own, started when the first checks come.
// Any thread may submit.
class LdapAuthenticator {
 public:
  explicit LdapAuthenticator(LdapLimits limits = {}, unsigned max_threads = 4);
  LdapAuthenticator(const LdapAuthenticator&) = delete;
  LdapAuthenticator& operator=(const LdapAuthenticator&) = delete;
  ~LdapAuthenticator();

  const LdapLimits& limits() const { return limits_; }
  // Checks `request` on one of the threads and calls `done` there with the outcome. A check
  // still queued when its time (limits().total) is up is refused without contacting a server;
  // after stop(), `done` is called at once with a refusal.
  void submit(LdapRequest request, std::function<void(LdapOutcome)> done);
  // Lets the running checks finish (within the limits) and ends the threads; checks still
  // queued are dropped, their `done` not called.
  void stop();

 private:
  struct Job {
    LdapRequest request;
    std::function<void(LdapOutcome)> done;
    std::chrono::steady_clock::time_point deadline;
  };
  void run();

  const LdapLimits limits_;
  const unsigned max_threads_;
  util::LeafMutex mutex_;
  std::condition_variable_any wake_;
  std::deque<Job> queue_;
  std::vector<std::thread> threads_;
  unsigned idle_ = 0;  // threads waiting for a job
  bool stopping_ = false;
};

}  // namespace pgw::auth
