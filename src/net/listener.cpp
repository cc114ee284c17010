#include "net/listener.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace pgw::net {

namespace {

[[noreturn]] void fail(int fd, const std::string& what) {
  const std::error_code error(errno, std::system_category());
  if (fd >= 0) ::close(fd);
  throw std::system_error(error, what);
}

}  // namespace

std::unique_ptr<Listener> Listener::open(const Endpoint& endpoint, int backlog, bool reuse_port,
                                         int defer_accept_seconds) {
  const int family = endpoint.protocol().family();
  const std::string name = describe(endpoint);
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(fd, "socket for " + name);
  if (family != AF_UNIX) {
    const int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
      fail(fd, "SO_REUSEADDR on " + name);
    if (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
      fail(fd, "SO_REUSEPORT on " + name);
    // An IPv6 listener takes IPv6 only, so "*" (0.0.0.0 and ::) can bind both on one port.
    if (family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
      fail(fd, "IPV6_V6ONLY on " + name);
    if (defer_accept_seconds > 0 &&
        ::setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept_seconds,
                     sizeof defer_accept_seconds) != 0) {
      fail(fd, "TCP_DEFER_ACCEPT on " + name);
    }
  }
  const bool defers_accept = family != AF_UNIX && defer_accept_seconds > 0;
  if (::bind(fd, static_cast<const sockaddr*>(endpoint.data()),
             static_cast<socklen_t>(endpoint.size())) != 0) {
    fail(fd, "bind " + name);
  }
  if (::listen(fd, backlog) != 0) fail(fd, "listen on " + name);
  return std::unique_ptr<Listener>(new Listener(fd, name, defers_accept));
}

Listener::~Listener() {
  ::close(fd_);
}

void Listener::stop_listening() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  // On a listening socket this ends the listen state: queued and new connections are refused,
  // and epoll reports a hang-up to every worker that watches it.
  ::shutdown(fd_, SHUT_RDWR);
}

}  // namespace pgw::net
