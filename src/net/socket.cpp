#include "net/socket.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstring>

namespace pgw::net {
namespace {

void set_int_option(int fd, int level, int name, int value) {
  // Options are best effort: a failure leaves the kernel default, which is still correct.
  (void)::setsockopt(fd, level, name, &value, sizeof value);
}

}  // namespace

Endpoint endpoint_of(const sockaddr_storage& storage, socklen_t size) {
  return Endpoint(&storage, size, 0);
}

bool is_tcp(const Endpoint& endpoint) {
  const auto family = endpoint.data()->sa_family;
  return family == AF_INET || family == AF_INET6;
}

bool peer_is_same_user(int fd) {
  ucred credentials{};
  socklen_t size = sizeof credentials;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) return false;
  return size == sizeof credentials && credentials.uid == ::geteuid();
}

std::string peer_user_name(int fd) {
  ucred credentials{};
  socklen_t size = sizeof credentials;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0 ||
      size != sizeof credentials) {
    return {};
  }
  passwd entry{};
  passwd* found = nullptr;
  std::array<char, 4096> buffer{};
  if (::getpwuid_r(credentials.uid, &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return {};
  }
  return found->pw_name;
}

Endpoint server_endpoint(const std::string& host, int port, std::error_code& ec) {
  ec.clear();
  if (host.empty() || host.front() == '/') {
    const std::string dir = host.empty() ? "/var/run/postgresql" : host;
    return Endpoint(
        asio::local::stream_protocol::endpoint(dir + "/.s.PGSQL." + std::to_string(port)));
  }
  asio::error_code aec;
  auto address = asio::ip::make_address(host, aec);
  if (!aec) return Endpoint(asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port)));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &result) != 0 || result == nullptr) {
    ec = std::make_error_code(std::errc::host_unreachable);
    return {};
  }
  asio::ip::tcp::endpoint tcp;
  if (result->ai_family == AF_INET) {
    sockaddr_in addr{};
    std::memcpy(&addr, result->ai_addr, sizeof addr);
    tcp = {asio::ip::address_v4(ntohl(addr.sin_addr.s_addr)), static_cast<unsigned short>(port)};
  } else {
    sockaddr_in6 addr{};
    std::memcpy(&addr, result->ai_addr, sizeof addr);
    asio::ip::address_v6::bytes_type bytes;
    std::memcpy(bytes.data(), &addr.sin6_addr, bytes.size());
    tcp = {asio::ip::address_v6(bytes), static_cast<unsigned short>(port)};
  }
  ::freeaddrinfo(result);
  return Endpoint(tcp);
}

std::string describe(const Endpoint& endpoint) {
  const auto* sa = endpoint.data();
  if (sa->sa_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(sa);
    return std::string(un->sun_path);
  }
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, static_cast<socklen_t>(endpoint.size()), host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return std::string(host) + ":" + serv;
}

void set_nodelay(int fd) {
  if (fd >= 0) set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

void set_keepalive(int fd, const Keepalive& keepalive) {
  if (fd < 0 || !keepalive.enabled) return;
  set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
  if (keepalive.idle_s > 0) set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, keepalive.idle_s);
  if (keepalive.interval_s > 0)
    set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, keepalive.interval_s);
  if (keepalive.count > 0) set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, keepalive.count);
  if (keepalive.user_timeout_ms > 0) {
    set_int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, keepalive.user_timeout_ms);
  }
}

std::pair<std::string, int> local_of(int fd) {
  sockaddr_storage storage{};
  socklen_t size = sizeof storage;
  if (fd < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &size) != 0) {
    return {"?", 0};
  }
  return address_of(endpoint_of(storage, size));
}

std::pair<std::string, int> address_of(const Endpoint& endpoint) {
  const auto* sa = endpoint.data();
  if (sa->sa_family == AF_UNIX) return {"unix", 0};
  // Every login asks for its client's address: inet_ntop is a fraction of getnameinfo's cost,
  // which stays for what it adds (an IPv6 scope, "fe80::1%eth0"); IPv4's four numbers by fmt
  // (glibc's inet_ntop formats them through sprintf).
  char text[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    const auto* b = reinterpret_cast<const unsigned char*>(&in->sin_addr);
    const auto end = fmt::format_to_n(text, sizeof text - 1, "{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
    return {std::string(text, end.out), ntohs(in->sin_port)};
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (in6->sin6_scope_id == 0 && ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text)) {
      return {text, ntohs(in6->sin6_port)};
    }
  }
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, static_cast<socklen_t>(endpoint.size()), host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return {"?", 0};
  }
  return {host, std::atoi(serv)};
}

asio::awaitable<std::error_code> connect(Connection& connection, Reactor& reactor,
                                         const Endpoint& endpoint,
                                         std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  const int fd =
      ::socket(endpoint.data()->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return std::error_code(errno, std::system_category());
  connection.open(reactor, fd, true);
  if (::connect(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) == 0) {
    co_return std::error_code{};
  }
  if (errno != EINPROGRESS) {
    const std::error_code error(errno, std::system_category());
    connection.close();
    co_return error;
  }
  // In progress: writable (or an error event) when the handshake has finished either way.
  Timer timer(reactor);
  auto& conn = connection;
  auto result = co_await (conn.async_wait_writable(use_nothrow) ||
                          timer.async_wait_for(timeout, use_nothrow));
  if (result.index() == 1) {
    connection.close();
    co_return std::make_error_code(std::errc::timed_out);
  }
  int error = 0;
  socklen_t size = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0) error = errno;
  if (error != 0) {
    connection.close();
    co_return std::error_code(error, std::system_category());
  }
  co_return std::error_code{};
}

}  // namespace pgw::net
