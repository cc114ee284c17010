// Fuzz target "first_packet": the input is what a client sends first on a new connection
// (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest), optionally followed by
// pipelined regular frontend messages, which are framed the way the session does after login.
#include <string>

#include "protocol_checks.hpp"

namespace {

namespace proto = pgw::proto;

void check_first_packet(proto::Bytes input, const proto::FirstPacket& packet, std::size_t consumed) {
  const auto raw = proto::as_chars(input.first(consumed));
  if (std::holds_alternative<proto::SslRequest>(packet) ||
      std::holds_alternative<proto::GssEncRequest>(packet)) {
    FUZZ_CHECK(consumed == 8);
  } else if (const auto* cancel = std::get_if<proto::CancelRequest>(&packet)) {
    FUZZ_CHECK(consumed == 16);
    std::string out;
    proto::MessageWriter(out).cancel_request(cancel->process_id, cancel->secret_key);
    FUZZ_CHECK(out == raw);
  } else {
    const auto& startup = std::get<proto::StartupMessage>(packet);
    FUZZ_CHECK((startup.protocol >> 16) == 3);
    std::size_t expected = 8 + 1;
    for (const auto& [name, value] : startup.parameters) {
      FUZZ_CHECK(!name.empty());
      FUZZ_CHECK(name.find('\0') == std::string::npos && value.find('\0') == std::string::npos);
      expected += name.size() + 1 + value.size() + 1;
      // find() returns the first parameter of that name.
      const std::string* found = startup.find(name);
      FUZZ_CHECK(found != nullptr);
    }
    FUZZ_CHECK(expected == consumed);
    // Re-encoding gives the same bytes, except the minor version (the writer always says 3.0).
    std::string out;
    proto::MessageWriter(out).startup_message(startup.parameters);
    FUZZ_CHECK(out.size() == raw.size());
    FUZZ_CHECK(out.substr(0, 6) == raw.substr(0, 6));
    FUZZ_CHECK(out.substr(8) == raw.substr(8));
    FUZZ_CHECK(startup.find(std::string_view("\0", 1)) == nullptr);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = pgw::fuzz::as_byte_span(data, size);
  std::size_t consumed = 0;
  const auto parsed = proto::parse_first_packet(input, &consumed);
  if (const auto* need = std::get_if<proto::NeedMore>(&parsed)) {
    FUZZ_CHECK(need->at_least > input.size());
    FUZZ_CHECK(need->at_least >= 8 && need->at_least <= proto::kStartupPacketLimit);
    return 0;
  }
  if (std::holds_alternative<proto::CodecError>(parsed)) return 0;
  FUZZ_CHECK(consumed >= 8 && consumed <= input.size() && consumed <= proto::kStartupPacketLimit);
  check_first_packet(input, std::get<proto::FirstPacket>(parsed), consumed);

  // What a client pipelines after its startup packet is read as frontend messages.
  std::size_t pos = consumed;
  while (pos < input.size()) {
    const auto rest = input.subspan(pos);
    const auto message = pgw::fuzz::check_message(rest, proto::Direction::frontend);
    const auto* m = std::get_if<proto::Message>(&message);
    if (m == nullptr) break;
    pgw::fuzz::check_bodies(m->body);
    pos += m->header.total_size();
  }
  FUZZ_CHECK(pos <= input.size());
  return 0;
}
