#include "net/socket.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

namespace pgw::net {
namespace {

bool is_tcp(const Socket& socket) {
  const int family = socket.local_endpoint().protocol().family();
  return family == AF_INET || family == AF_INET6;
}

void set_int_option(Socket& socket, int level, int name, int value) {
  // Options are best effort: a failure leaves the kernel default, which is still correct.
  (void)::setsockopt(socket.native_handle(), level, name, &value, sizeof value);
}

}  // namespace

Endpoint server_endpoint(const std::string& host, int port, std::error_code& ec) {
  ec.clear();
  if (host.empty() || host.front() == '/') {
    const std::string dir = host.empty() ? "/var/run/postgresql" : host;
    return Endpoint(asio::local::stream_protocol::endpoint(dir + "/.s.PGSQL." + std::to_string(port)));
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

void set_nodelay(Socket& socket) {
  asio::error_code ec;
  if (socket.is_open() && is_tcp(socket)) set_int_option(socket, IPPROTO_TCP, TCP_NODELAY, 1);
}

void set_keepalive(Socket& socket, const Keepalive& keepalive) {
  if (!socket.is_open() || !is_tcp(socket) || !keepalive.enabled) return;
  set_int_option(socket, SOL_SOCKET, SO_KEEPALIVE, 1);
  if (keepalive.idle_s > 0) set_int_option(socket, IPPROTO_TCP, TCP_KEEPIDLE, keepalive.idle_s);
  if (keepalive.interval_s > 0) {
    set_int_option(socket, IPPROTO_TCP, TCP_KEEPINTVL, keepalive.interval_s);
  }
  if (keepalive.count > 0) set_int_option(socket, IPPROTO_TCP, TCP_KEEPCNT, keepalive.count);
  if (keepalive.user_timeout_ms > 0) {
    set_int_option(socket, IPPROTO_TCP, TCP_USER_TIMEOUT, keepalive.user_timeout_ms);
  }
}

std::pair<std::string, int> peer_of(const Socket& socket) {
  asio::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return {"?", 0};
  return address_of(endpoint);
}

std::pair<std::string, int> local_of(const Socket& socket) {
  asio::error_code ec;
  const auto endpoint = socket.local_endpoint(ec);
  if (ec) return {"?", 0};
  return address_of(endpoint);
}

std::pair<std::string, int> address_of(const Endpoint& endpoint) {
  const auto* sa = endpoint.data();
  if (sa->sa_family == AF_UNIX) return {"unix", 0};
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  if (::getnameinfo(sa, static_cast<socklen_t>(endpoint.size()), host, sizeof host, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return {"?", 0};
  }
  return {host, std::atoi(serv)};
}

asio::awaitable<std::error_code> connect_with_timeout(Socket& socket, const Endpoint& endpoint,
                                                      std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(timeout);
  auto result = co_await (socket.async_connect(endpoint, use_nothrow) ||
                          timer.async_wait(use_nothrow));
  if (result.index() == 1) co_return std::make_error_code(std::errc::timed_out);
  auto [ec] = std::get<0>(result);
  co_return ec;
}

}  // namespace pgw::net
