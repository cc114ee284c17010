// Socket types and small helpers shared by the listener, client sessions and server logins.
// Client and server connections may be TCP or Unix-domain, so both are held as Asio's generic
// stream socket: one code path for both, no templates over the transport.
#pragma once

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <string>
#include <system_error>

namespace pgw::net {

using Socket = asio::generic::stream_protocol::socket;
using Endpoint = asio::generic::stream_protocol::endpoint;
using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;
using Clock = std::chrono::steady_clock;

// Completion token for coroutines that handle errors as values instead of exceptions.
inline constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// The endpoint of a PostgreSQL server: a Unix socket "<dir>/.s.PGSQL.<port>" when host is empty
// or starts with '/', else a TCP address. Host names are resolved (blocking getaddrinfo, done
// when a server connection is opened, not per message).
Endpoint server_endpoint(const std::string& host, int port, std::error_code& ec);
std::string describe(const Endpoint& endpoint);

// Disables Nagle on TCP sockets (no-op for Unix sockets): every response must leave at once.
void set_nodelay(Socket& socket);
struct Keepalive {
  bool enabled = true;
  int idle_s = 0, interval_s = 0, count = 0, user_timeout_ms = 0;
};
void set_keepalive(Socket& socket, const Keepalive& keepalive);
// Peer address and port for logs and SHOW CLIENTS ("unix" and 0 for Unix sockets).
std::pair<std::string, int> peer_of(const Socket& socket);
// The same for the local end of a socket, and for any endpoint (SHOW CLIENTS / SERVERS).
std::pair<std::string, int> local_of(const Socket& socket);
std::pair<std::string, int> address_of(const Endpoint& endpoint);

// Connects with a deadline. Returns the error (timed_out on expiry).
asio::awaitable<std::error_code> connect_with_timeout(Socket& socket, const Endpoint& endpoint,
                                                      std::chrono::milliseconds timeout);

}  // namespace pgw::net
