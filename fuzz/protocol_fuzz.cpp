// Fuzz target "protocol": the input is a stream of regular protocol messages. It is framed
// twice, as frontend and as backend traffic, with parse_header / parse_message, and every
// whole message's body goes through all body parsers (see protocol_checks.hpp).
#include "protocol_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace proto = pgw::proto;
  const auto input = pgw::fuzz::as_byte_span(data, size);
  for (const auto direction : {proto::Direction::frontend, proto::Direction::backend}) {
    std::size_t pos = 0;
    while (pos < input.size()) {
      const auto rest = input.subspan(pos);
      const auto parsed = pgw::fuzz::check_message(rest, direction);
      const auto* message = std::get_if<proto::Message>(&parsed);
      if (message == nullptr) break;
      pgw::fuzz::check_bodies(message->body);
      FUZZ_CHECK(message->header.total_size() <= rest.size());
      pos += message->header.total_size();
    }
    FUZZ_CHECK(pos <= input.size());
  }
  return 0;
}
