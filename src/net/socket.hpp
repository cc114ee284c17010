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

// Disables Nagle on TCP sockets (no-op for Unix sockets): every response must leave at once.
void set_nodelay(int fd);
struct Keepalive {
  bool enabled = true;
  int idle_s = 0, interval_s = 0, count = 0, user_timeout_ms = 0;
};
void set_keepalive(int fd, const Keepalive& keepalive);
// Peer address and port for logs and SHOW CLIENTS ("unix" and 0 for Unix sockets).
std::pair<std::string, int> peer_of(int fd);
// The same for the local end of a socket, and for any endpoint (SHOW CLIENTS / SERVERS).
std::pair<std::string, int> local_of(int fd);
std::pair<std::string, int> address_of(const Endpoint& endpoint);
bool is_tcp(int fd);

// Opens a non-blocking socket registered with `reactor` in `connection` and connects it,
// with a deadline. Returns the error (timed_out on expiry).
asio::awaitable<std::error_code> connect(Connection& connection, Reactor& reactor,
                                         const Endpoint& endpoint,
                                         std::chrono::milliseconds timeout);

}  // namespace pgw::net
