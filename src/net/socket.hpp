// Endpoint types and small socket helpers shared by the listener, client sessions and server
// logins. Client and server connections may be TCP or Unix-domain; both are plain descriptors
// in a net::Connection (reactor.hpp), and addresses are Asio's generic endpoints: one code path
// for both transports.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <string>
#include <system_error>

#include "net/reactor.hpp"

namespace pgw::net {

using Endpoint = asio::generic::stream_protocol::endpoint;
using Clock = std::chrono::steady_clock;

// Completion token for coroutines that handle errors as values instead of exceptions.
inline constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// The endpoint of a PostgreSQL server: a Unix socket "<dir>/.s.PGSQL.<port>" when host is empty
// or starts with '/', else a TCP address. Host names are resolved (blocking getaddrinfo, done
// when a server connection is opened, not per message).
Endpoint server_endpoint(const std::string& host, int port, std::error_code& ec);
std::string describe(const Endpoint& endpoint);

// The endpoint of an address the kernel filled in (accept4, getsockname).
Endpoint endpoint_of(const sockaddr_storage& storage, socklen_t size);
// An IPv4 or IPv6 endpoint (not a Unix socket). Callers ask the endpoint they already have
// (accept4's peer address, a server's configured endpoint) rather than the kernel again.
bool is_tcp(const Endpoint& endpoint);
// Whether the process at the other end of a Unix socket runs as this process's effective user
// (SO_PEERCRED); false for any other socket or when the kernel does not say.
bool peer_is_same_user(int fd);
// The OS user name of the process at the other end of a Unix socket (SO_PEERCRED), or "" when
// it cannot be told (HBA's peer method).
std::string peer_user_name(int fd);
// Disables Nagle on a TCP socket: every response must leave at once.
void set_nodelay(int fd);
struct Keepalive {
  bool enabled = true;
  int idle_s = 0, interval_s = 0, count = 0, user_timeout_ms = 0;
};
// TCP keepalive on a TCP socket, as configured (nothing when not enabled).
void set_keepalive(int fd, const Keepalive& keepalive);
// Address and port of an endpoint for logs and SHOW CLIENTS / SERVERS ("unix" and 0 for Unix
// sockets), and the same for the local end of a socket.
std::pair<std::string, int> address_of(const Endpoint& endpoint);
std::pair<std::string, int> local_of(int fd);

// Opens a non-blocking socket registered with `reactor` in `connection` and connects it,
// with a deadline. Returns the error (timed_out on expiry).
asio::awaitable<std::error_code> connect(Connection& connection, Reactor& reactor,
                                         const Endpoint& endpoint,
                                         std::chrono::milliseconds timeout);

}  // namespace pgw::net
