// The one way pgwarden ends a client connection with an error. The ErrorResponse (SQLSTATE,
// message, DETAIL and HINT from the error table, util/errors.hpp) is written, the sending side
// is half-closed so the client reads the error and then the end of the stream, what the client
// still sends is read and dropped for a moment, and only then is the socket closed: a close
// with unread input would make the kernel send a reset, and the driver would report "connection
// reset" instead of the error. The session, the console, the shutdown drain and the open-files
// guard all end connections through here.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>

#include "net/reactor.hpp"
#include "util/errors.hpp"

namespace pgw::net {

// How long a client gets to read the error and close its end.
inline constexpr std::chrono::milliseconds kErrorLinger{250};

// What happens after the half-close.
enum class AfterError : std::uint8_t {
  // Read and drop what the client sends until it closes, for at most kErrorLinger.
  drain,
  // Another coroutine reads the socket (a login or the console waiting for the client's next
  // message) and sees the close itself: only wait kErrorLinger.
  wait,
  // No time to linger (a flood of refused connections): drop what has already arrived and
  // close at once.
  close,
};

// Writes `report` (nothing if null: the client already has an error, or the stream is in the
// middle of a message that an error would corrupt), half-closes, lingers as `after` says and
// closes `connection`, which must be registered with a reactor (its thread runs this).
asio::awaitable<void> end_with_error(Connection& connection, const ErrorReport* report,
                                     AfterError after);

// The same at the descriptor limit, where nothing may linger and no reactor is involved: for a
// connection accepted with the last descriptor. Writes without blocking, half-closes, drops
// what arrived, closes `fd`.
void end_with_error_now(int fd, const ErrorReport& report);

}  // namespace pgw::net
