#include "auth/ldap.hpp"

#include <fmt/format.h>
#include <ldap.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>

namespace pgw::auth {

using Clock = std::chrono::steady_clock;

bool ldap_user_name_allowed(std::string_view user) {
  return user.find_first_of("*()\\/") == std::string_view::npos;
}

std::string ldap_filter_escape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '*' || c == '(' || c == ')' || c == '\\' || c == '\0') {
      out += fmt::format("\\{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  return out;
}

std::string ldap_search_filter(std::string_view pattern, std::string_view user) {
  static constexpr std::string_view kPlaceholder = "$username";
  const std::string escaped = ldap_filter_escape(user);
  std::string out;
  for (std::size_t pos = 0; pos < pattern.size();) {
    if (pattern.substr(pos, kPlaceholder.size()) == kPlaceholder) {
      out += escaped;
      pos += kPlaceholder.size();
    } else {
      out += pattern[pos++];
    }
  }
  return out;
}

std::string ldap_uris(const LdapRequest& request) {
  const std::string scheme = request.scheme.empty() ? "ldap" : request.scheme;
  const int port = request.port != 0 ? request.port : scheme == "ldaps" ? LDAPS_PORT : LDAP_PORT;
  std::string out;
  std::string_view servers = request.servers;
  while (!servers.empty()) {
    const auto start = servers.find_first_not_of(" \t");
    if (start == std::string_view::npos) break;
    servers.remove_prefix(start);
    const auto end = servers.find_first_of(" \t");
    const std::string_view host = servers.substr(0, end);
    servers.remove_prefix(end == std::string_view::npos ? servers.size() : end);
    if (!out.empty()) out += ' ';
    const bool ipv6 = host.find(':') != std::string_view::npos && host.front() != '[';
    out += fmt::format("{}://{}{}{}:{}", scheme, ipv6 ? "[" : "", host, ipv6 ? "]" : "", port);
  }
  return out;
}

namespace {

struct LdapHandle {
  LDAP* ld = nullptr;
  LdapHandle() = default;
  LdapHandle(const LdapHandle&) = delete;
  LdapHandle& operator=(const LdapHandle&) = delete;
  ~LdapHandle() {
    if (ld != nullptr) ldap_unbind_ext_s(ld, nullptr, nullptr);
  }
};

struct MessageFree {
  void operator()(LDAPMessage* message) const { ldap_msgfree(message); }
};
using Message = std::unique_ptr<LDAPMessage, MessageFree>;

timeval as_timeval(Clock::duration duration) {
  const auto micros = std::max<std::int64_t>(
      1000, std::chrono::duration_cast<std::chrono::microseconds>(duration).count());
  return timeval{static_cast<time_t>(micros / 1000000), static_cast<suseconds_t>(micros % 1000000)};
}

// ldap_err2string() of `code`, with the server's diagnostic message when it sent one.
std::string describe(LDAP* ld, int code) {
  std::string out = ldap_err2string(code);
  char* diagnostic = nullptr;
  if (ld != nullptr &&
      ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diagnostic) == LDAP_SUCCESS &&
      diagnostic != nullptr) {
    if (*diagnostic != '\0') out += fmt::format(" (LDAP diagnostics: {})", diagnostic);
    ldap_memfree(diagnostic);
  }
  return out;
}

class Exchange {
 public:
  Exchange(const LdapRequest& request, const LdapLimits& limits, Clock::time_point deadline)
      : request_(request), limits_(limits), deadline_(deadline) {}

  LdapOutcome run() {
    const auto& r = request_;
    if (r.password.empty()) return refused("empty password returned by client");
    std::string filter;
    if (r.search) {
      if (!ldap_user_name_allowed(r.user))
        return refused("invalid character in user name for LDAP authentication");
      filter = ldap_search_filter(r.search_filter, r.user);
    }
    if (auto why = connect(); !why.empty()) return refused(why);
    std::string dn;
    if (r.search) {
      int code = bind(r.binddn, r.bindpasswd);
      if (code != LDAP_SUCCESS) {
        return refused(fmt::format(
            "could not perform initial LDAP bind for ldapbinddn \"{}\" on server \"{}\": {}",
            r.binddn, r.servers, describe(handle_.ld, code)));
      }
      code = search(filter, dn);
      if (code != LDAP_SUCCESS) {
        return refused(fmt::format("could not search LDAP for filter \"{}\" on server \"{}\": {}",
                                   filter, r.servers, describe(handle_.ld, code)));
      }
      if (!dn_problem_.empty()) return refused(dn_problem_);
    } else {
      dn = r.prefix + r.user + r.suffix;
    }
    const int code = bind(dn, r.password);
    if (code != LDAP_SUCCESS) {
      return refused(fmt::format("LDAP login failed for user \"{}\" on server \"{}\": {}", dn,
                                 r.servers, describe(handle_.ld, code)));
    }
    return {true, fmt::format("bound as \"{}\" on server \"{}\"", dn, r.servers)};
  }

 private:
  static LdapOutcome refused(std::string why) { return {false, std::move(why)}; }

  // The time a step may take: its limit, or what is left before the deadline (0: none left).
  Clock::duration budget(Clock::duration limit) const {
    return std::max(Clock::duration::zero(), std::min(limit, deadline_ - Clock::now()));
  }
  std::string out_of_time() const {
    return fmt::format("LDAP server \"{}\" did not answer within {} s", request_.servers,
                       limits_.total.count() / 1000.0);
  }

  std::string connect() {
    const auto uris = ldap_uris(request_);
    if (uris.empty()) return "no LDAP server to connect to";
    int code = ldap_initialize(&handle_.ld, uris.c_str());
    if (code != LDAP_SUCCESS) {
      return fmt::format("could not initialize LDAP for \"{}\": {}", uris, ldap_err2string(code));
    }
    LDAP* ld = handle_.ld;
    const int version = LDAP_VERSION3;
    const timeval network = as_timeval(budget(limits_.connect));
    // The synchronous calls (StartTLS) wait at most this for their answer.
    const timeval answer = as_timeval(budget(limits_.operation));
    if ((code = ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version)) != LDAP_SUCCESS ||
        (code = ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &network)) != LDAP_SUCCESS ||
        (code = ldap_set_option(ld, LDAP_OPT_TIMEOUT, &answer)) != LDAP_SUCCESS) {
      return fmt::format("could not set LDAP options: {}", ldap_err2string(code));
    }
    if (request_.start_tls) {
      if (budget(limits_.operation) == Clock::duration::zero()) return out_of_time();
      code = ldap_start_tls_s(ld, nullptr, nullptr);
      if (code != LDAP_SUCCESS) {
        return fmt::format("could not start LDAP TLS session on server \"{}\": {}",
                           request_.servers, describe(ld, code));
      }
    }
    return {};
  }

  // A simple bind, waiting for the answer at most the operation's budget. The connection is
  // opened by the first request (within the connect limit).
  int bind(const std::string& dn, const std::string& password) {
    const auto wait = budget(limits_.operation);
    if (wait == Clock::duration::zero()) return LDAP_TIMEOUT;
    // berval's bv_val is not const; libldap only reads it.
    berval credentials{static_cast<ber_len_t>(password.size()), const_cast<char*>(password.data())};
    int id = 0;
    // The mechanism nullptr is LDAP_SASL_SIMPLE (a C cast in the header).
    const int code =
        ldap_sasl_bind(handle_.ld, dn.c_str(), nullptr, &credentials, nullptr, nullptr, &id);
    if (code != LDAP_SUCCESS) return code;
    return result(id, wait);
  }

  // Waits for the answer to request `id`; its result code.
  int result(int id, Clock::duration wait) {
    timeval limit = as_timeval(wait);
    LDAPMessage* raw = nullptr;
    const int got = ldap_result(handle_.ld, id, LDAP_MSG_ALL, &limit, &raw);
    Message answer(raw);
    if (got == 0) {
      ldap_abandon_ext(handle_.ld, id, nullptr, nullptr);
      return LDAP_TIMEOUT;
    }
    if (got < 0) {
      int code = LDAP_OTHER;
      ldap_get_option(handle_.ld, LDAP_OPT_RESULT_CODE, &code);
      return code;
    }
    int code = LDAP_OTHER;
    const int parsed =
        ldap_parse_result(handle_.ld, answer.get(), &code, nullptr, nullptr, nullptr, nullptr, 0);
    return parsed != LDAP_SUCCESS ? parsed : code;
  }

  // Searches for the user's entry: its DN in `dn`, or dn_problem_ says why there is none.
  int search(const std::string& filter, std::string& dn) {
    const auto wait = budget(limits_.operation);
    if (wait == Clock::duration::zero()) return LDAP_TIMEOUT;
    const int scope = request_.scope == LdapScope::base  ? LDAP_SCOPE_BASE
                      : request_.scope == LdapScope::one ? LDAP_SCOPE_ONELEVEL
                                                         : LDAP_SCOPE_SUBTREE;
    std::string no_attributes = LDAP_NO_ATTRS;  // only the DNs: "1.1"
    char* attributes[] = {no_attributes.data(), nullptr};
    timeval limit = as_timeval(wait);
    LDAPMessage* raw = nullptr;
    const int code =
        ldap_search_ext_s(handle_.ld, request_.basedn.c_str(), scope, filter.c_str(), attributes, 0,
                          nullptr, nullptr, &limit, LDAP_NO_LIMIT, &raw);
    Message found(raw);
    if (code != LDAP_SUCCESS) return code;
    const int count = ldap_count_entries(handle_.ld, found.get());
    if (count != 1) {
      dn_problem_ = count == 0
                        ? fmt::format(
                              "LDAP user \"{}\" does not exist: LDAP search for filter \"{}\" on "
                              "server \"{}\" returned no entries",
                              request_.user, filter, request_.servers)
                        : fmt::format(
                              "LDAP user \"{}\" is not unique: LDAP search for filter \"{}\" on "
                              "server \"{}\" returned {} entries",
                              request_.user, filter, request_.servers, count);
      return LDAP_SUCCESS;
    }
    char* name = ldap_get_dn(handle_.ld, ldap_first_entry(handle_.ld, found.get()));
    if (name == nullptr) {
      int error = LDAP_OTHER;
      ldap_get_option(handle_.ld, LDAP_OPT_RESULT_CODE, &error);
      dn_problem_ =
          fmt::format("could not get dn for the first entry matching \"{}\" on server \"{}\": {}",
                      filter, request_.servers, ldap_err2string(error));
      return LDAP_SUCCESS;
    }
    dn = name;
    ldap_memfree(name);
    return LDAP_SUCCESS;
  }

  const LdapRequest& request_;
  const LdapLimits& limits_;
  const Clock::time_point deadline_;
  LdapHandle handle_;
  std::string dn_problem_;
};

}  // namespace

LdapOutcome ldap_authenticate(const LdapRequest& request, const LdapLimits& limits,
                              Clock::time_point deadline) {
  return Exchange(request, limits, deadline).run();
}

// ---------------------------------------------------------------------------------------------
// LdapAuthenticator

LdapAuthenticator::LdapAuthenticator(LdapLimits limits, unsigned max_threads)
    : limits_(limits), max_threads_(std::max(1u, max_threads)) {
  // libldap reads its global settings (ldap.conf, LDAPTLS_* variables) on first use: here, on
  // one thread, rather than in two of ours at once.
  int version = 0;
  ldap_get_option(nullptr, LDAP_OPT_PROTOCOL_VERSION, &version);
}

LdapAuthenticator::~LdapAuthenticator() {
  stop();
}

void LdapAuthenticator::submit(LdapRequest request, std::function<void(LdapOutcome)> done) {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      queue_.push_back({std::move(request), std::move(done), Clock::now() + limits_.total});
      if (idle_ == 0 && threads_.size() < max_threads_) {
        threads_.emplace_back([this] { run(); });
      } else {
        wake_.notify_one();
      }
      return;
    }
  }
  done({false, "pgwarden is shutting down"});
}

void LdapAuthenticator::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
    threads.swap(threads_);
  }
  wake_.notify_all();
  for (auto& thread : threads) thread.join();
}

void LdapAuthenticator::run() {
  // libldap writes to its sockets with write(): a server that has gone would raise SIGPIPE and
  // end the process. Blocked on this thread, the write fails with EPIPE instead, and the
  // signal left pending is taken back after each check.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  const timespec no_wait{0, 0};
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      ++idle_;
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      --idle_;
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    LdapOutcome outcome;
    try {
      if (Clock::now() >= job.deadline) {
        outcome = {false, fmt::format("no LDAP thread was free within {} s",
                                      limits_.total.count() / 1000.0)};
      } else {
        outcome = ldap_authenticate(job.request, limits_, job.deadline);
      }
    } catch (const std::exception& e) {
      outcome = {false, fmt::format("LDAP authentication failed: {}", e.what())};
    }
    try {
      job.done(std::move(outcome));
    } catch (const std::exception& e) {
      spdlog::error("LDAP: reporting an outcome failed: {}", e.what());
    }
    while (sigtimedwait(&pipe, nullptr, &no_wait) > 0) {
    }
  }
}

}  // namespace pgw::auth
