// Reads whole protocol messages from a socket, for the phases that are not on the hot path:
// client startup and authentication, server login, internal queries. The relay loops in
// session/ stream bytes instead.
#pragma once

#include <asio.hpp>

#include <cstddef>
#include <variant>
#include <vector>

#include "net/reactor.hpp"
#include "protocol/codec.hpp"

namespace pgw::net {

class MessageReader {
 public:
  explicit MessageReader(std::size_t initial_capacity = 1024) { buffer_.resize(initial_capacity); }

  // Next whole message. On a codec error returns it; on EOF / socket error returns the
  // error_code. `direction` selects the validation rules.
  using Result = std::variant<proto::Message, proto::CodecError, std::error_code>;
  asio::awaitable<Result> next(Connection& connection, proto::Direction direction);

  // The first packet of a client connection (no type byte).
  using FirstResult = std::variant<proto::FirstPacket, proto::CodecError, std::error_code>;
  asio::awaitable<FirstResult> first_packet(Connection& connection);

  // For a login that waits for something else (an LDAP server's answer): waits for the peer's
  // next bytes and keeps them, unconsumed, for next() and remaining(). An error (eof) when the
  // peer has gone or the connection was closed under the wait; none when bytes came (call
  // again to go on watching).
  asio::awaitable<std::error_code> read_ahead(Connection& connection) {
    return fill(connection, 0);
  }

  // Bytes received but not consumed yet (a client may pipeline its first query right after
  // the password message; they must be passed on, not dropped).
  std::span<const std::byte> remaining() const {
    return {buffer_.data() + begin_ + pending_consume_, end_ - begin_ - pending_consume_};
  }

 private:
  std::span<const std::byte> unread() const { return {buffer_.data() + begin_, end_ - begin_}; }
  asio::awaitable<std::error_code> fill(Connection& connection, std::size_t want);
  void compact();
  std::vector<std::byte> buffer_;
  std::size_t begin_ = 0;            // first unconsumed byte
  std::size_t end_ = 0;              // end of received bytes
  std::size_t pending_consume_ = 0;  // size of the message handed out last (consumed lazily)
};

}  // namespace pgw::net
