#include "net/message_reader.hpp"

namespace pgw::net {

void MessageReader::compact() {
  if (begin_ == 0) return;
  const std::size_t live = end_ - begin_;
  if (live > 0) std::memmove(buffer_.data(), buffer_.data() + begin_, live);
  begin_ = 0;
  end_ = live;
}

asio::awaitable<std::error_code> MessageReader::fill(Connection& connection, std::size_t want) {
  // Make room for `want` bytes counted from begin_; messages are bounded by the codec's limits
  // before this is called, so the buffer cannot grow without bound.
  compact();
  if (buffer_.size() < want) buffer_.resize(want);
  if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
  auto result = co_await connection.async_read_some(buffer_.data() + end_, buffer_.size() - end_);
  if (result.error) co_return result.error;
  if (result.bytes == 0) co_return asio::error::eof;
  end_ += result.bytes;
  co_return std::error_code{};
}

asio::awaitable<MessageReader::Result> MessageReader::next(Connection& connection,
                                                           proto::Direction direction) {
  begin_ += pending_consume_;
  pending_consume_ = 0;
  for (;;) {
    auto parsed = proto::parse_message(unread(), direction);
    if (auto* message = std::get_if<proto::Message>(&parsed)) {
      pending_consume_ = message->header.total_size();
      co_return *message;
    }
    if (auto* error = std::get_if<proto::CodecError>(&parsed)) co_return *error;
    const auto need = std::get<proto::NeedMore>(parsed).at_least;
    if (auto ec = co_await fill(connection, need)) co_return ec;
  }
}

asio::awaitable<MessageReader::FirstResult> MessageReader::first_packet(Connection& connection) {
  begin_ += pending_consume_;
  pending_consume_ = 0;
  for (;;) {
    std::size_t consumed = 0;
    auto parsed = proto::parse_first_packet(unread(), &consumed);
    if (auto* packet = std::get_if<proto::FirstPacket>(&parsed)) {
      // The packet owns its strings (StartupMessage copies), so consume at once.
      begin_ += consumed;
      co_return std::move(*packet);
    }
    if (auto* error = std::get_if<proto::CodecError>(&parsed)) co_return *error;
    const auto need = std::get<proto::NeedMore>(parsed).at_least;
    if (auto ec = co_await fill(connection, need)) co_return ec;
  }
}

}  // namespace pgw::net
