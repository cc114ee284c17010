#include "net/error_writer.hpp"

#include "net/socket.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <string>

namespace pgw::net {

using asio::experimental::awaitable_operators::operator||;

namespace {

// Reads whatever the client already sent (its startup packet, pipelined queries), so that the
// close sends FIN rather than a reset that could make the client lose the error.
void discard_pending_input(int fd) {
  std::array<char, 1024> sink{};
  for (int i = 0; i < 16; ++i) {
    if (::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT) <= 0) return;
  }
}

}  // namespace

asio::awaitable<void> end_with_error(Connection& connection, const ErrorReport* report,
                                     AfterError after) {
  if (!connection.is_open()) co_return;
  Reactor* reactor = connection.reactor();
  if (report) {
    std::string bytes;
    append_error_response(bytes, *report);
    co_await connection.async_write_all(bytes);
  }
  connection.shutdown_send();
  if (after == AfterError::close || reactor == nullptr) {
    if (connection.is_open()) discard_pending_input(connection.fd());
    connection.close();
    co_return;
  }
  Timer linger(*reactor);
  if (after == AfterError::wait) {
    co_await linger.async_wait_for(kErrorLinger, use_nothrow);
  } else {
    auto drain = [&connection]() -> asio::awaitable<void> {
      std::array<std::byte, 512> sink{};
      for (;;) {
        auto got = co_await connection.async_read_some(sink.data(), sink.size());
        if (got.error || got.bytes == 0) co_return;
      }
    };
    co_await (drain() || linger.async_wait_for(kErrorLinger, use_nothrow));
  }
  connection.close();
}

void end_with_error_now(int fd, const ErrorReport& report) {
  std::string bytes;
  append_error_response(bytes, report);
  [[maybe_unused]] const auto sent =
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  discard_pending_input(fd);
  ::close(fd);
}

}  // namespace pgw::net
