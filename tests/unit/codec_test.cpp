// The pure wire codec (src/protocol/codec.hpp): framing at every fragmentation, limits and
// errors, the first packet, the body parsers, and MessageWriter round trips.
#include "protocol/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace pgw::proto {
namespace {

// ---------------------------------------------------------------------------------------------
// Building bytes by hand (independently of MessageWriter).

std::string be16(std::uint16_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}
std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff),
          static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}
std::string i16(std::int16_t v) {
  return be16(static_cast<std::uint16_t>(v));
}
std::string i32(std::int32_t v) {
  return be32(static_cast<std::uint32_t>(v));
}
std::string cstr(std::string_view s) {
  return std::string(s) + '\0';
}

// A regular message: type byte, length counting itself, body.
std::string hand_message(char type, std::string_view body) {
  return std::string(1, type) + be32(static_cast<std::uint32_t>(body.size() + 4)) +
         std::string(body);
}
std::string header_only(char type, std::uint32_t length) {
  return std::string(1, type) + be32(length);
}

// A first packet: length counting itself, code, payload.
std::string first_packet(std::uint32_t code, std::string_view payload) {
  return be32(static_cast<std::uint32_t>(payload.size() + 8)) + be32(code) + std::string(payload);
}

template <typename Build>
std::string written(Build build) {
  std::string out;
  MessageWriter writer(out);
  build(writer);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading bytes by hand, to check what MessageWriter produced.

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  bool done() const { return pos_ == bytes_.size(); }
  std::string take(std::size_t n) {
    if (bytes_.size() - pos_ < n) {
      ADD_FAILURE() << "reading " << n << " bytes past the end";
      pos_ = bytes_.size();
      return {};
    }
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::uint32_t u32() {
    const auto s = take(4);
    if (s.size() != 4) return 0;
    std::uint32_t v = 0;
    for (char c : s) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }
  std::int32_t int32() { return static_cast<std::int32_t>(u32()); }
  std::int16_t int16() {
    const auto s = take(2);
    if (s.size() != 2) return 0;
    return static_cast<std::int16_t>((static_cast<unsigned char>(s[0]) << 8) |
                                     static_cast<unsigned char>(s[1]));
  }
  std::string cstring() {
    const auto nul = bytes_.find('\0', pos_);
    if (nul == std::string_view::npos) {
      ADD_FAILURE() << "no NUL terminator";
      pos_ = bytes_.size();
      return {};
    }
    std::string s(bytes_.substr(pos_, nul - pos_));
    pos_ = nul + 1;
    return s;
  }

 private:
  std::string_view bytes_;
  std::size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Outcomes as text: comparable, and readable when an assertion fails.

std::string error_name(CodecError error) {
  switch (error) {
    case CodecError::invalid_length:
      return "invalid_length";
    case CodecError::invalid_startup_length:
      return "invalid_startup_length";
    case CodecError::message_too_large:
      return "message_too_large";
    case CodecError::unknown_message_type:
      return "unknown_message_type";
    case CodecError::malformed_body:
      return "malformed_body";
    case CodecError::unsupported_protocol:
      return "unsupported_protocol";
  }
  return "CodecError(" + std::to_string(static_cast<int>(error)) + ")";
}
std::string error(CodecError e) {
  return "error " + error_name(e);
}
std::string need_more(std::size_t at_least) {
  return "need " + std::to_string(at_least);
}

std::string printable(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  return out;
}

std::string summarize(const Header& h) {
  return std::string("header '") + h.type + "' length " + std::to_string(h.length);
}
std::string summarize(const Message& m) {
  return summarize(m.header) + " body " + printable(as_chars(m.body));
}
std::string summarize(const FirstPacket& packet) {
  if (std::holds_alternative<SslRequest>(packet)) return "SSLRequest";
  if (std::holds_alternative<GssEncRequest>(packet)) return "GSSENCRequest";
  if (const auto* cancel = std::get_if<CancelRequest>(&packet)) {
    return "CancelRequest " + std::to_string(cancel->process_id) + "/" +
           std::to_string(cancel->secret_key);
  }
  const auto& startup = std::get<StartupMessage>(packet);
  std::string out = "StartupMessage " + std::to_string(startup.protocol >> 16) + "." +
                    std::to_string(startup.protocol & 0xffff);
  for (const auto& [name, value] : startup.parameters) {
    out += " " + printable(name) + "=" + printable(value);
  }
  return out;
}
template <typename T>
std::string outcome(const Parsed<T>& parsed) {
  if (const auto* value = std::get_if<T>(&parsed)) return summarize(*value);
  if (const auto* more = std::get_if<NeedMore>(&parsed)) return need_more(more->at_least);
  return error(std::get<CodecError>(parsed));
}

// ---------------------------------------------------------------------------------------------
// The receiver simulation.

constexpr std::size_t kWhole = std::numeric_limits<std::size_t>::max();
constexpr std::array<std::size_t, 6> kChunkSizes{kWhole, 1000, 100, 10, 2, 1};

struct Fed {
  std::string result;        // the first outcome other than NeedMore
  std::size_t received = 0;  // how many bytes the receiver held when it got it
};

// Bytes of `wire` arrive `chunk` at a time; after each arrival the receiver calls `parse` on
// everything received so far, until the answer is something other than NeedMore. On the way
// it checks the NeedMore contract: at_least lies beyond what was received, never beyond the
// end of the (single) message, and never shrinks.
template <typename Parse>
Fed feed_in_chunks(std::string_view wire, std::size_t chunk, Parse parse) {
  std::string received;
  std::size_t last_at_least = 0;
  while (received.size() < wire.size()) {
    received.append(wire.substr(received.size(), std::min(chunk, wire.size() - received.size())));
    const auto parsed = parse(as_bytes(received));
    if (const auto* more = std::get_if<NeedMore>(&parsed)) {
      EXPECT_GT(more->at_least, received.size()) << "chunk " << chunk;
      EXPECT_LE(more->at_least, wire.size()) << "chunk " << chunk;
      EXPECT_GE(more->at_least, last_at_least) << "chunk " << chunk;
      last_at_least = more->at_least;
      continue;
    }
    return {outcome(parsed), received.size()};
  }
  ADD_FAILURE() << "still NeedMore with all " << wire.size() << " bytes, chunk " << chunk;
  return {"", received.size()};
}

// A whole message as an owned copy (parse results are views into the input).
struct Owned {
  char type = 0;
  std::string body;
};
std::optional<Owned> message_of(std::string_view wire, Direction direction) {
  const auto parsed = parse_message(as_bytes(wire), direction);
  const auto* message = std::get_if<Message>(&parsed);
  if (!message) {
    ADD_FAILURE() << "not a message: " << outcome(parsed) << " for " << printable(wire);
    return std::nullopt;
  }
  EXPECT_EQ(message->header.total_size(), wire.size()) << printable(wire);
  return Owned{message->header.type, std::string(as_chars(message->body))};
}

// ---------------------------------------------------------------------------------------------
// Every message type, frontend and backend.

struct WireCase {
  std::string name;
  Direction direction;
  std::string wire;
};
std::ostream& operator<<(std::ostream& os, const WireCase& c) {
  return os << c.name;
}

std::string copy_rows(std::size_t bytes) {
  std::string rows;
  for (int i = 0; rows.size() < bytes; ++i)
    rows += std::to_string(i) + "\tvalue " + std::to_string(i) + "\n";
  return rows;
}

std::vector<WireCase> frontend_cases() {
  constexpr auto fe = Direction::frontend;
  return {
      {"Q_Query", fe, written([](MessageWriter& w) { w.query("SELECT 1"); })},
      {"Q_LongQuery", fe,
       written([](MessageWriter& w) { w.query("SELECT '" + std::string(5000, 'x') + "'"); })},
      {"Q_EmptyQuery", fe, written([](MessageWriter& w) { w.query(""); })},
      {"P_Parse", fe,
       hand_message('P', cstr("s1") + cstr("SELECT $1::int, $2") + i16(2) + i32(23) + i32(0))},
      {"B_Bind", fe,
       hand_message('B', cstr("") + cstr("s1") + i16(1) + i16(0) + i16(2) + i32(2) + "42" +
                             i32(-1) + i16(1) + i16(0))},
      {"D_Describe", fe, hand_message('D', "S" + cstr("s1"))},
      {"E_Execute", fe, hand_message('E', cstr("") + i32(0))},
      {"S_Sync", fe, written([](MessageWriter& w) { w.sync(); })},
      {"H_Flush", fe, hand_message('H', "")},
      {"C_Close", fe, hand_message('C', "P" + cstr("portal"))},
      {"F_FunctionCall", fe,
       hand_message('F', i32(1598) + i16(1) + i16(0) + i16(1) + i32(3) + "abc" + i16(0))},
      {"X_Terminate", fe, written([](MessageWriter& w) { w.terminate(); })},
      {"d_CopyData", fe, hand_message('d', copy_rows(3000))},
      {"c_CopyDone", fe, hand_message('c', "")},
      {"f_CopyFail", fe, hand_message('f', cstr("client gave up"))},
      {"p_PasswordMessage", fe, written([](MessageWriter& w) { w.password_message("secret"); })},
      {"p_SASLInitialResponse", fe,
       written([](MessageWriter& w) { w.sasl_initial_response("SCRAM-SHA-256", "n,,n=,r=abc"); })},
      {"p_SASLResponse", fe,
       written([](MessageWriter& w) { w.sasl_response("c=biws,r=abc,p=xyz"); })},
  };
}

std::vector<WireCase> backend_cases() {
  constexpr auto be = Direction::backend;
  static constexpr std::array<std::byte, 4> kSalt{std::byte{1}, std::byte{2}, std::byte{0},
                                                  std::byte{255}};
  static constexpr std::array<std::string_view, 2> kMechanisms{"SCRAM-SHA-256-PLUS",
                                                               "SCRAM-SHA-256"};
  static constexpr std::array<std::string_view, 2> kColumns{"id", "name"};
  const std::string big(2500, 'v');
  const std::array<std::optional<std::string_view>, 3> row{std::string_view("1"), std::nullopt,
                                                           std::string_view(big)};
  const std::array<std::string, 1> options{"_pq_.compression"};
  return {
      {"R_AuthenticationOk", be, written([](MessageWriter& w) { w.authentication_ok(); })},
      {"R_AuthenticationCleartext", be,
       written([](MessageWriter& w) { w.authentication_cleartext(); })},
      {"R_AuthenticationMD5", be, written([](MessageWriter& w) { w.authentication_md5(kSalt); })},
      {"R_AuthenticationSASL", be,
       written([](MessageWriter& w) { w.authentication_sasl(kMechanisms); })},
      {"R_AuthenticationSASLContinue", be, written([](MessageWriter& w) {
         w.authentication_sasl_continue("r=abc,s=c2FsdA==,i=4096");
       })},
      {"R_AuthenticationSASLFinal", be,
       written([](MessageWriter& w) { w.authentication_sasl_final("v=c2lnbmF0dXJl"); })},
      {"S_ParameterStatus", be,
       written([](MessageWriter& w) { w.parameter_status("TimeZone", "UTC"); })},
      {"K_BackendKeyData", be, written([](MessageWriter& w) { w.backend_key_data(4242, -17); })},
      {"Z_ReadyForQuery", be,
       written([](MessageWriter& w) { w.ready_for_query(TransactionStatus::in_transaction); })},
      {"T_RowDescription", be, written([](MessageWriter& w) { w.row_description(kColumns); })},
      {"D_DataRow", be, written([&row](MessageWriter& w) { w.data_row(row); })},
      {"C_CommandComplete", be, written([](MessageWriter& w) { w.command_complete("SELECT 1"); })},
      {"E_ErrorResponse", be, written([](MessageWriter& w) {
         w.error_response("ERROR", "42601", "syntax error", "d", "h");
       })},
      {"N_NoticeResponse", be,
       written([](MessageWriter& w) { w.notice_response("NOTICE", "00000", "table exists"); })},
      {"A_NotificationResponse", be,
       hand_message('A', i32(4242) + cstr("channel") + cstr("payload"))},
      {"1_ParseComplete", be, hand_message('1', "")},
      {"2_BindComplete", be, hand_message('2', "")},
      {"3_CloseComplete", be, hand_message('3', "")},
      {"n_NoData", be, hand_message('n', "")},
      {"s_PortalSuspended", be, hand_message('s', "")},
      {"t_ParameterDescription", be, hand_message('t', i16(2) + i32(23) + i32(25))},
      {"I_EmptyQueryResponse", be, written([](MessageWriter& w) { w.empty_query_response(); })},
      {"G_CopyInResponse", be, hand_message('G', std::string(1, '\0') + i16(2) + i16(0) + i16(0))},
      {"H_CopyOutResponse", be, hand_message('H', std::string(1, '\0') + i16(1) + i16(0))},
      {"W_CopyBothResponse", be, hand_message('W', std::string(1, '\0') + i16(0))},
      {"c_CopyDone", be, hand_message('c', "")},
      {"d_CopyData", be, hand_message('d', copy_rows(1500))},
      {"v_NegotiateProtocolVersion", be,
       written([&options](MessageWriter& w) { w.negotiate_protocol_version(0, options); })},
      {"V_FunctionCallResponse", be, hand_message('V', i32(3) + "abc")},
  };
}

std::vector<WireCase> first_packet_cases() {
  const auto fe = Direction::frontend;  // unused for first packets
  const std::vector<std::pair<std::string, std::string>> params{
      {"user", "alice"}, {"database", "shop"}, {"application_name", "psql"}};
  const std::vector<std::pair<std::string, std::string>> big_params{
      {"user", "alice"}, {"options", "-c search_path=" + std::string(3000, 's')}};
  return {
      {"SSLRequest", fe, first_packet(kSslRequestCode, "")},
      {"GSSENCRequest", fe, first_packet(kGssEncRequestCode, "")},
      {"CancelRequest", fe, written([](MessageWriter& w) { w.cancel_request(1234, -98765); })},
      {"Startup30", fe, written([&params](MessageWriter& w) { w.startup_message(params); })},
      {"Startup32", fe,
       first_packet(0x00030002,
                    cstr("user") + cstr("bob") + cstr("_pq_.compression") + cstr("on") + cstr(""))},
      {"StartupNoParameters", fe, first_packet(kProtocol30, cstr(""))},
      {"StartupLarge", fe,
       written([&big_params](MessageWriter& w) { w.startup_message(big_params); })},
  };
}

std::string case_name(const testing::TestParamInfo<WireCase>& info) {
  return info.param.name;
}

// ---------------------------------------------------------------------------------------------
// Framing at every fragmentation.

class CodecMessage : public testing::TestWithParam<WireCase> {};

TEST_P(CodecMessage, WholeBufferParsesToTheMessage) {
  const auto& c = GetParam();
  const auto parsed = parse_message(as_bytes(c.wire), c.direction);
  const auto* message = std::get_if<Message>(&parsed);
  ASSERT_NE(message, nullptr) << outcome(parsed);
  EXPECT_EQ(message->header.type, c.wire[0]);
  EXPECT_EQ(message->header.total_size(), c.wire.size());
  EXPECT_EQ(message->header.body_size(), c.wire.size() - kHeaderSize);
  EXPECT_EQ(as_chars(message->body), std::string_view(c.wire).substr(kHeaderSize));
  // The body is a view into the input, not a copy.
  EXPECT_EQ(message->body.data(), as_bytes(c.wire).data() + kHeaderSize);
  EXPECT_EQ(outcome(parse_header(as_bytes(c.wire), c.direction)), summarize(message->header));
}

TEST_P(CodecMessage, EveryFragmentationGivesTheWholeBufferResult) {
  const auto& c = GetParam();
  const auto whole = outcome(parse_message(as_bytes(c.wire), c.direction));
  const auto whole_header = outcome(parse_header(as_bytes(c.wire), c.direction));
  for (const auto chunk : kChunkSizes) {
    const auto fed = feed_in_chunks(
        c.wire, chunk, [&c](Bytes input) { return parse_message(input, c.direction); });
    EXPECT_EQ(fed.result, whole) << "chunk " << chunk;
    EXPECT_EQ(fed.received, c.wire.size()) << "chunk " << chunk;
    const auto header = feed_in_chunks(
        c.wire, chunk, [&c](Bytes input) { return parse_header(input, c.direction); });
    EXPECT_EQ(header.result, whole_header) << "chunk " << chunk;
    // The header is there as soon as the first 5 bytes are: the first arrival reaching 5.
    const std::size_t arrivals = chunk >= kHeaderSize ? 1 : (kHeaderSize + chunk - 1) / chunk;
    EXPECT_EQ(header.received,
              std::min(c.wire.size(), chunk >= kHeaderSize ? chunk : arrivals * chunk))
        << "chunk " << chunk;
  }
}

TEST_P(CodecMessage, EveryTruncationNeedsMoreWithTheRightSize) {
  const auto& c = GetParam();
  for (std::size_t size = 0; size < c.wire.size(); ++size) {
    const auto prefix = std::string_view(c.wire).substr(0, size);
    const std::size_t expected = size < kHeaderSize ? kHeaderSize : c.wire.size();
    ASSERT_EQ(outcome(parse_message(as_bytes(prefix), c.direction)), need_more(expected))
        << "prefix " << size;
  }
}

TEST_P(CodecMessage, TrailingBytesAreLeftForTheNextMessage) {
  const auto& c = GetParam();
  const std::string wire = c.wire + c.wire.substr(0, 3);
  const auto parsed = parse_message(as_bytes(wire), c.direction);
  const auto* message = std::get_if<Message>(&parsed);
  ASSERT_NE(message, nullptr) << outcome(parsed);
  EXPECT_EQ(message->header.total_size(), c.wire.size());
  EXPECT_EQ(as_chars(message->body), std::string_view(c.wire).substr(kHeaderSize));
}

INSTANTIATE_TEST_SUITE_P(CodecFrontend, CodecMessage, testing::ValuesIn(frontend_cases()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(CodecBackend, CodecMessage, testing::ValuesIn(backend_cases()), case_name);

TEST(CodecCatalogue, CoversEveryMessageType) {
  std::set<char> frontend;
  for (const auto& c : frontend_cases()) frontend.insert(c.wire[0]);
  EXPECT_EQ(frontend,
            (std::set<char>{'Q', 'P', 'B', 'D', 'E', 'S', 'H', 'C', 'F', 'X', 'd', 'c', 'f', 'p'}));
  std::set<char> backend;
  for (const auto& c : backend_cases()) backend.insert(c.wire[0]);
  EXPECT_EQ(backend, (std::set<char>{'R', 'S', 'K', 'Z', 'T', 'D', 'C', 'E', 'N', 'A', '1', '2',
                                     '3', 'n', 's', 't', 'I', 'G', 'H', 'W', 'c', 'd', 'v', 'V'}));
  // Something to split at 1000 bytes in both directions.
  const auto large = [](const std::vector<WireCase>& cases) {
    return std::any_of(cases.begin(), cases.end(),
                       [](const WireCase& c) { return c.wire.size() > 2000; });
  };
  EXPECT_TRUE(large(frontend_cases()));
  EXPECT_TRUE(large(backend_cases()));
}

// ---------------------------------------------------------------------------------------------
// Several messages in one buffer.

// A receiver that gets `stream` in chunks and takes every whole message off the front of its
// buffer as soon as it is complete. Returns the outcomes in order.
std::vector<std::string> receive_stream(std::string_view stream, std::size_t chunk,
                                        Direction direction) {
  std::vector<std::string> messages;
  std::string buffer;
  std::size_t sent = 0;
  while (sent < stream.size()) {
    const auto n = std::min(chunk, stream.size() - sent);
    buffer.append(stream.substr(sent, n));
    sent += n;
    for (;;) {
      const auto parsed = parse_message(as_bytes(buffer), direction);
      const auto* message = std::get_if<Message>(&parsed);
      if (!message) {
        EXPECT_TRUE(std::holds_alternative<NeedMore>(parsed)) << outcome(parsed);
        if (!std::holds_alternative<NeedMore>(parsed)) return messages;
        break;
      }
      messages.push_back(outcome(parsed));
      buffer.erase(0, message->header.total_size());
    }
  }
  EXPECT_TRUE(buffer.empty()) << buffer.size() << " bytes left over";
  return messages;
}

void expect_stream_parses(const std::vector<WireCase>& cases, Direction direction) {
  std::string stream;
  std::vector<std::string> expected;
  for (const auto& c : cases) {
    stream += c.wire;
    expected.push_back(outcome(parse_message(as_bytes(c.wire), direction)));
  }
  // One after the other from a single buffer, each with its own size.
  std::size_t offset = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto rest = as_bytes(stream).subspan(offset);
    const auto parsed = parse_message(rest, direction);
    ASSERT_EQ(outcome(parsed), expected[i]) << cases[i].name;
    ASSERT_EQ(std::get<Message>(parsed).header.total_size(), cases[i].wire.size()) << cases[i].name;
    offset += cases[i].wire.size();
  }
  EXPECT_EQ(offset, stream.size());
  EXPECT_EQ(outcome(parse_message(as_bytes(stream).subspan(offset), direction)),
            need_more(kHeaderSize));
  // The same stream at every fragmentation.
  for (const auto chunk : kChunkSizes) {
    EXPECT_EQ(receive_stream(stream, chunk, direction), expected) << "chunk " << chunk;
  }
}

TEST(CodecStream, AllFrontendMessagesBackToBack) {
  expect_stream_parses(frontend_cases(), Direction::frontend);
}
TEST(CodecStream, AllBackendMessagesBackToBack) {
  expect_stream_parses(backend_cases(), Direction::backend);
}

TEST(CodecStream, TwoMessagesInOneBuffer) {
  std::string stream;
  MessageWriter writer(stream);
  writer.query("BEGIN");
  writer.sync();
  const auto first = parse_message(as_bytes(stream), Direction::frontend);
  ASSERT_TRUE(std::holds_alternative<Message>(first)) << outcome(first);
  const auto& query = std::get<Message>(first);
  EXPECT_EQ(query.header.type, 'Q');
  EXPECT_EQ(query.header.total_size(), 1u + 4u + 6u);
  EXPECT_EQ(query_text(query.body), "BEGIN");
  const auto second =
      parse_message(as_bytes(stream).subspan(query.header.total_size()), Direction::frontend);
  EXPECT_EQ(outcome(second), "header 'S' length 4 body ");
}

TEST(CodecStream, ManyMessagesInOneBuffer) {
  std::string stream;
  MessageWriter writer(stream);
  constexpr int kCount = 1000;
  for (int i = 0; i < kCount; ++i) {
    writer.query("SELECT " + std::to_string(i));
    writer.sync();
  }
  std::size_t offset = 0;
  for (int i = 0; i < kCount; ++i) {
    const auto q = parse_message(as_bytes(stream).subspan(offset), Direction::frontend);
    ASSERT_TRUE(std::holds_alternative<Message>(q)) << outcome(q);
    EXPECT_EQ(query_text(std::get<Message>(q).body), "SELECT " + std::to_string(i));
    offset += std::get<Message>(q).header.total_size();
    const auto s = parse_message(as_bytes(stream).subspan(offset), Direction::frontend);
    ASSERT_EQ(outcome(s), "header 'S' length 4 body ");
    offset += kHeaderSize;
  }
  EXPECT_EQ(offset, stream.size());
}

// ---------------------------------------------------------------------------------------------
// Header validation: lengths, limits, types.

TEST(CodecHeader, NeedsFiveBytes) {
  for (const auto direction : {Direction::frontend, Direction::backend}) {
    const std::string header = header_only('S', 4);
    for (std::size_t size = 0; size < kHeaderSize; ++size) {
      EXPECT_EQ(outcome(parse_header(as_bytes(header.substr(0, size)), direction)), need_more(5))
          << size;
    }
    EXPECT_EQ(outcome(parse_header(as_bytes(header), direction)), "header 'S' length 4");
  }
}

TEST(CodecHeader, BodyMissingNeedsTheWholeMessage) {
  const std::string wire = header_only('Q', 104) + std::string(50, 'x');
  EXPECT_EQ(outcome(parse_header(as_bytes(wire), Direction::frontend)), "header 'Q' length 104");
  EXPECT_EQ(outcome(parse_message(as_bytes(wire), Direction::frontend)), need_more(105));
}

TEST(CodecHeader, LengthBelowFourIsInvalid) {
  for (std::uint32_t length = 0; length < 4; ++length) {
    EXPECT_EQ(outcome(parse_header(as_bytes(header_only('Q', length)), Direction::frontend)),
              error(CodecError::invalid_length))
        << length;
    EXPECT_EQ(outcome(parse_message(as_bytes(header_only('Q', length)), Direction::frontend)),
              error(CodecError::invalid_length))
        << length;
    EXPECT_EQ(outcome(parse_message(as_bytes(header_only('Z', length)), Direction::backend)),
              error(CodecError::invalid_length))
        << length;
  }
  EXPECT_EQ(outcome(parse_message(as_bytes(header_only('S', 4)), Direction::frontend)),
            "header 'S' length 4 body ");
}

TEST(CodecHeader, FrontendLimitsFollowPostgresql) {
  // postgres.c SocketBackend / copyfromparse.c: large messages may reach 1 GB, control messages
  // 10000 bytes; password packets are limited to PG_MAX_AUTH_TOKEN_LENGTH (auth.h). Describe and
  // Close may carry statement names up to 1 MB: pgwarden maps them to short ones of its own.
  const std::vector<std::pair<char, std::uint32_t>> expected{
      {'Q', kLargeMessageLimit},     {'P', kLargeMessageLimit},     {'B', kLargeMessageLimit},
      {'F', kLargeMessageLimit},     {'d', kLargeMessageLimit},     {'p', 65535},
      {'D', kStatementMessageLimit}, {'E', kSmallMessageLimit},     {'S', kSmallMessageLimit},
      {'H', kSmallMessageLimit},     {'C', kStatementMessageLimit}, {'X', kSmallMessageLimit},
      {'c', kSmallMessageLimit},     {'f', kSmallMessageLimit}};
  for (const auto& [type, limit] : expected) {
    EXPECT_EQ(frontend_length_limit(type), limit) << type;
  }
  EXPECT_EQ(kSmallMessageLimit, 10000u);
}

TEST(CodecHeader, FrontendMessagesOverTheirLimitAreTooLarge) {
  for (const char type : {'Q', 'P', 'B', 'F', 'd', 'p', 'D', 'E', 'S', 'H', 'C', 'X', 'c', 'f'}) {
    const auto limit = frontend_length_limit(type);
    const auto at_limit = parse_header(as_bytes(header_only(type, limit + 4)), Direction::frontend);
    ASSERT_TRUE(std::holds_alternative<Header>(at_limit)) << type << ": " << outcome(at_limit);
    EXPECT_EQ(std::get<Header>(at_limit).body_size(), limit);
    // The error comes from the 5 header bytes alone: nothing gets buffered first.
    for (const auto length : {limit + 5, std::numeric_limits<std::uint32_t>::max()}) {
      const auto header = header_only(type, length);
      EXPECT_EQ(outcome(parse_header(as_bytes(header), Direction::frontend)),
                error(CodecError::message_too_large))
          << type << " " << length;
      for (const auto chunk : kChunkSizes) {
        EXPECT_EQ(
            feed_in_chunks(header, chunk,
                           [](Bytes input) { return parse_message(input, Direction::frontend); })
                .result,
            error(CodecError::message_too_large))
            << type << " chunk " << chunk;
      }
    }
  }
}

TEST(CodecHeader, ControlMessagesJustOverTheSmallLimit) {
  // A CopyFail or Sync of 10001 bytes is refused; a Query of that size is fine.
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('f', kSmallMessageLimit + 5)),
                                 Direction::frontend)),
            error(CodecError::message_too_large));
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('S', kSmallMessageLimit + 5)),
                                 Direction::frontend)),
            error(CodecError::message_too_large));
  EXPECT_TRUE(std::holds_alternative<Header>(
      parse_header(as_bytes(header_only('Q', kSmallMessageLimit + 5)), Direction::frontend)));
  // A 70000-byte password message is refused (PostgreSQL: "invalid message length").
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('p', 70000)), Direction::frontend)),
            error(CodecError::message_too_large));
}

TEST(CodecHeader, BackendMessagesUpToTheLargeLimit) {
  // The server's control messages are not held to the small limit (a big ErrorResponse is fine).
  for (const char type : {'D', 'E', 'T', 'd', 'N'}) {
    EXPECT_EQ(outcome(parse_header(as_bytes(header_only(type, kSmallMessageLimit + 100)),
                                   Direction::backend)),
              summarize(Header{type, kSmallMessageLimit + 100}));
    EXPECT_TRUE(std::holds_alternative<Header>(
        parse_header(as_bytes(header_only(type, kLargeMessageLimit + 4)), Direction::backend)));
    EXPECT_EQ(outcome(parse_header(as_bytes(header_only(type, kLargeMessageLimit + 5)),
                                   Direction::backend)),
              error(CodecError::message_too_large));
    EXPECT_EQ(outcome(parse_header(as_bytes(header_only(type, 0xffffffff)), Direction::backend)),
              error(CodecError::message_too_large));
  }
}

void expect_valid_types(Direction direction, const std::set<char>& valid) {
  for (int byte = 0; byte < 256; ++byte) {
    const auto type = static_cast<char>(byte);
    const auto parsed = parse_header(as_bytes(header_only(type, 4)), direction);
    if (valid.contains(type)) {
      EXPECT_TRUE(std::holds_alternative<Header>(parsed)) << byte << ": " << outcome(parsed);
    } else {
      EXPECT_EQ(outcome(parsed), error(CodecError::unknown_message_type)) << "type byte " << byte;
      EXPECT_EQ(outcome(parse_message(as_bytes(header_only(type, 4)), direction)),
                error(CodecError::unknown_message_type))
          << "type byte " << byte;
    }
  }
}

TEST(CodecHeader, UnknownFrontendTypesAreRejected) {
  expect_valid_types(Direction::frontend,
                     {'Q', 'P', 'B', 'D', 'E', 'S', 'H', 'C', 'F', 'X', 'd', 'c', 'f', 'p'});
}

TEST(CodecHeader, UnknownBackendTypesAreRejected) {
  expect_valid_types(Direction::backend,
                     {'R', 'S', 'K', 'Z', 'T', 'D', 'C', 'E', 'N', 'A', '1', '2',
                      '3', 'n', 's', 't', 'I', 'G', 'H', 'W', 'c', 'd', 'v', 'V'});
}

TEST(CodecHeader, DirectionMatters) {
  // 'Z' and 'R' only come from the server, 'Q' and 'p' only from the client.
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('Z', 5)), Direction::frontend)),
            error(CodecError::unknown_message_type));
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('R', 8)), Direction::frontend)),
            error(CodecError::unknown_message_type));
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('Q', 5)), Direction::backend)),
            error(CodecError::unknown_message_type));
  EXPECT_EQ(outcome(parse_header(as_bytes(header_only('p', 5)), Direction::backend)),
            error(CodecError::unknown_message_type));
}

TEST(CodecHeader, SizesOfAHeader) {
  const Header header{'Q', 13};
  EXPECT_EQ(header.body_size(), 9u);
  EXPECT_EQ(header.total_size(), 14u);
  const Header huge{'d', 0xffffffff};
  EXPECT_EQ(huge.total_size(), std::size_t{0xffffffff} + 1);  // no 32-bit wrap-around
}

// ---------------------------------------------------------------------------------------------
// The first packet.

class CodecFirstPacket : public testing::TestWithParam<WireCase> {};

TEST_P(CodecFirstPacket, EveryFragmentationGivesTheWholeBufferResult) {
  const auto& c = GetParam();
  std::size_t whole_consumed = 0;
  const auto whole = outcome(parse_first_packet(as_bytes(c.wire), &whole_consumed));
  ASSERT_EQ(whole.rfind("error", 0), std::string::npos) << whole;
  ASSERT_EQ(whole.rfind("need", 0), std::string::npos) << whole;
  EXPECT_EQ(whole_consumed, c.wire.size());
  for (const auto chunk : kChunkSizes) {
    std::size_t consumed = 0;
    const auto fed = feed_in_chunks(
        c.wire, chunk, [&consumed](Bytes input) { return parse_first_packet(input, &consumed); });
    EXPECT_EQ(fed.result, whole) << "chunk " << chunk;
    EXPECT_EQ(fed.received, c.wire.size()) << "chunk " << chunk;
    EXPECT_EQ(consumed, c.wire.size()) << "chunk " << chunk;
  }
}

TEST_P(CodecFirstPacket, EveryTruncationNeedsMoreWithTheRightSize) {
  const auto& c = GetParam();
  for (std::size_t size = 0; size < c.wire.size(); ++size) {
    // Until its length is in, 8 bytes (the shortest first packet); then the whole packet.
    const std::size_t expected = size < 4 ? 8 : c.wire.size();
    ASSERT_EQ(
        outcome(parse_first_packet(as_bytes(std::string_view(c.wire).substr(0, size)), nullptr)),
        need_more(expected))
        << "prefix " << size;
  }
}

TEST_P(CodecFirstPacket, ConsumedIsThePacketNotTheBuffer) {
  // A client may pipeline bytes after its first packet; they belong to what comes next.
  const auto& c = GetParam();
  std::string wire = c.wire;
  MessageWriter(wire).query("SELECT 1");
  std::size_t consumed = 0;
  const auto parsed = parse_first_packet(as_bytes(wire), &consumed);
  EXPECT_EQ(outcome(parsed), outcome(parse_first_packet(as_bytes(c.wire), nullptr)));
  EXPECT_EQ(consumed, c.wire.size());
  const auto next = parse_message(as_bytes(wire).subspan(consumed), Direction::frontend);
  ASSERT_TRUE(std::holds_alternative<Message>(next)) << outcome(next);
  EXPECT_EQ(query_text(std::get<Message>(next).body), "SELECT 1");
}

INSTANTIATE_TEST_SUITE_P(CodecFirstPackets, CodecFirstPacket,
                         testing::ValuesIn(first_packet_cases()), case_name);

Parsed<FirstPacket> parse_first(std::string_view wire, std::size_t* consumed = nullptr) {
  return parse_first_packet(as_bytes(wire), consumed);
}

TEST(CodecFirstPacketKinds, SslAndGssEncRequests) {
  std::size_t consumed = 0;
  EXPECT_TRUE(std::holds_alternative<SslRequest>(
      std::get<FirstPacket>(parse_first(first_packet(kSslRequestCode, ""), &consumed))));
  EXPECT_EQ(consumed, 8u);
  EXPECT_EQ(first_packet(kSslRequestCode, ""), std::string("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8));
  consumed = 0;
  EXPECT_TRUE(std::holds_alternative<GssEncRequest>(
      std::get<FirstPacket>(parse_first(first_packet(kGssEncRequestCode, ""), &consumed))));
  EXPECT_EQ(consumed, 8u);
  // Either one with a payload is malformed.
  EXPECT_EQ(outcome(parse_first(first_packet(kSslRequestCode, "abcd"))),
            error(CodecError::malformed_body));
  EXPECT_EQ(outcome(parse_first(first_packet(kGssEncRequestCode, "abcd"))),
            error(CodecError::malformed_body));
}

TEST(CodecFirstPacketKinds, CancelRequest) {
  std::size_t consumed = 0;
  const auto parsed =
      parse_first(first_packet(kCancelRequestCode, i32(77) + i32(-1234567)), &consumed);
  ASSERT_TRUE(std::holds_alternative<FirstPacket>(parsed)) << outcome(parsed);
  const auto* cancel = std::get_if<CancelRequest>(&std::get<FirstPacket>(parsed));
  ASSERT_NE(cancel, nullptr);
  EXPECT_EQ(cancel->process_id, 77);
  EXPECT_EQ(cancel->secret_key, -1234567);
  EXPECT_EQ(consumed, 16u);
  // Keys other than 4 bytes are malformed (pgwarden speaks 3.0 and hands out 4-byte keys).
  EXPECT_EQ(outcome(parse_first(first_packet(kCancelRequestCode, i32(77)))),
            error(CodecError::malformed_body));
  EXPECT_EQ(outcome(parse_first(first_packet(kCancelRequestCode, i32(77) + i32(1) + i32(2)))),
            error(CodecError::malformed_body));
}

TEST(CodecFirstPacketKinds, StartupMessage30) {
  const std::string wire =
      first_packet(kProtocol30, cstr("user") + cstr("alice") + cstr("database") + cstr("shop") +
                                    cstr("options") + cstr("-c search_path=x") + cstr(""));
  std::size_t consumed = 0;
  const auto parsed = parse_first(wire, &consumed);
  ASSERT_TRUE(std::holds_alternative<FirstPacket>(parsed)) << outcome(parsed);
  const auto& startup = std::get<StartupMessage>(std::get<FirstPacket>(parsed));
  EXPECT_EQ(startup.protocol, 0x00030000u);
  const std::vector<std::pair<std::string, std::string>> expected{
      {"user", "alice"}, {"database", "shop"}, {"options", "-c search_path=x"}};
  EXPECT_EQ(startup.parameters, expected);
  ASSERT_NE(startup.find("user"), nullptr);
  EXPECT_EQ(*startup.find("user"), "alice");
  ASSERT_NE(startup.find("database"), nullptr);
  EXPECT_EQ(*startup.find("database"), "shop");
  EXPECT_EQ(startup.find("application_name"), nullptr);
  EXPECT_EQ(startup.find("use"), nullptr);
  EXPECT_EQ(consumed, wire.size());
}

TEST(CodecFirstPacketKinds, StartupMessage32) {
  const std::string wire =
      first_packet(0x00030002, cstr("user") + cstr("bob") + cstr("_pq_.compression") + cstr("on") +
                                   cstr("empty") + cstr("") + cstr(""));
  const auto parsed = parse_first(wire);
  ASSERT_TRUE(std::holds_alternative<FirstPacket>(parsed)) << outcome(parsed);
  const auto& startup = std::get<StartupMessage>(std::get<FirstPacket>(parsed));
  EXPECT_EQ(startup.protocol >> 16, 3u);
  EXPECT_EQ(startup.protocol & 0xffff, 2u);
  const std::vector<std::pair<std::string, std::string>> expected{
      {"user", "bob"}, {"_pq_.compression", "on"}, {"empty", ""}};
  EXPECT_EQ(startup.parameters, expected);
}

TEST(CodecFirstPacketKinds, StartupSizeLimit) {
  const auto startup_of_size = [](std::size_t size) {
    const std::string head = cstr("user") + cstr("u") + cstr("application_name");
    const std::size_t fixed = 8 + head.size() + 1 + 1;  // value NUL, terminator
    return first_packet(kProtocol30, head + cstr(std::string(size - fixed, 'a')) + cstr(""));
  };
  const std::string at_limit = startup_of_size(kStartupPacketLimit);
  ASSERT_EQ(at_limit.size(), kStartupPacketLimit);
  EXPECT_TRUE(std::holds_alternative<FirstPacket>(parse_first(at_limit)));
  const std::string over = startup_of_size(kStartupPacketLimit + 1);
  EXPECT_EQ(outcome(parse_first(over)), error(CodecError::message_too_large));
  // Refused as soon as the length is known, before the packet is buffered.
  EXPECT_EQ(outcome(parse_first(over.substr(0, 8))), error(CodecError::message_too_large));
  EXPECT_EQ(outcome(parse_first(be32(0x7fffffff) + be32(kProtocol30))),
            error(CodecError::message_too_large));
}

TEST(CodecFirstPacketKinds, MalformedStartupBodies) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"no terminator", cstr("user") + cstr("alice")},
      {"name without value", cstr("user") + cstr("alice") + cstr("database") + cstr("")},
      {"value without NUL", cstr("user") + "alice"},
      {"name without NUL", "user"},
      {"bytes after the terminator", cstr("user") + cstr("alice") + cstr("") + "x"},
      {"empty payload", ""},
  };
  for (const auto& [what, payload] : cases) {
    EXPECT_EQ(outcome(parse_first(first_packet(kProtocol30, payload))),
              error(CodecError::malformed_body))
        << what;
  }
}

TEST(CodecFirstPacketKinds, UnsupportedProtocols) {
  for (const std::uint32_t code :
       {0x00020000u, 0x00010000u, 0x00040000u, 0u, 80877101u, 80877105u}) {
    EXPECT_EQ(outcome(parse_first(first_packet(code, cstr("user") + cstr("alice") + cstr("")))),
              error(CodecError::unsupported_protocol))
        << code;
  }
}

TEST(CodecFirstPacketKinds, LengthBelowEightIsInvalid) {
  for (const std::uint32_t length : {0u, 4u, 7u}) {
    EXPECT_EQ(outcome(parse_first(be32(length) + be32(kProtocol30))),
              error(CodecError::invalid_startup_length))
        << length;
    // Judged from the length field alone: a client that sent nothing more is answered at once.
    EXPECT_EQ(outcome(parse_first(be32(length))), error(CodecError::invalid_startup_length))
        << length;
  }
  // Fewer than 4 bytes: the length is not known yet.
  EXPECT_EQ(outcome(parse_first(std::string("\0\0\0", 3))), need_more(8));
}

// ---------------------------------------------------------------------------------------------
// Body parsers.

TEST(CodecBody, ReadyForQuery) {
  EXPECT_EQ(parse_ready_for_query(as_bytes("I")), TransactionStatus::idle);
  EXPECT_EQ(parse_ready_for_query(as_bytes("T")), TransactionStatus::in_transaction);
  EXPECT_EQ(parse_ready_for_query(as_bytes("E")), TransactionStatus::failed);
  for (const std::string_view bad :
       std::initializer_list<std::string_view>{"", "X", "i", "II", {"\0", 1}}) {
    EXPECT_FALSE(parse_ready_for_query(as_bytes(bad)).has_value()) << printable(bad);
  }
}

TEST(CodecBody, ParameterStatus) {
  const std::string body = cstr("server_version") + cstr("15.4");
  const auto status = parse_parameter_status(as_bytes(body));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->name, "server_version");
  EXPECT_EQ(status->value, "15.4");
  const std::string empty_value = cstr("application_name") + cstr("");
  ASSERT_TRUE(parse_parameter_status(as_bytes(empty_value)).has_value());
  EXPECT_EQ(parse_parameter_status(as_bytes(empty_value))->value, "");
  for (const std::string& bad : {cstr("name"), cstr("name") + "value", std::string("name"),
                                 std::string(), cstr("a") + cstr("b") + "c"}) {
    EXPECT_FALSE(parse_parameter_status(as_bytes(bad)).has_value()) << printable(bad);
  }
}

TEST(CodecBody, BackendKeyData) {
  const std::string body = i32(31337) + i32(-559038737);
  const auto key = parse_backend_key_data(as_bytes(body));
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->process_id, 31337);
  EXPECT_EQ(key->secret_key, -559038737);
  EXPECT_FALSE(parse_backend_key_data(as_bytes(i32(1))).has_value());
  EXPECT_FALSE(parse_backend_key_data(as_bytes(i32(1) + i32(2) + "x")).has_value());
}

std::string error_body(std::initializer_list<std::pair<char, std::string_view>> fields) {
  std::string body;
  for (const auto& [code, value] : fields) {
    // push_back + append rather than string(1, code) + ...: g++ 12 -O2 reports a false
    // -Wrestrict on that temporary concatenation.
    body.push_back(code);
    body.append(cstr(value));
  }
  return body + '\0';
}

TEST(CodecBody, ErrorFields) {
  const std::string body = error_body({{'S', "ERROR"},
                                       {'V', "ERROR"},
                                       {'C', "42P01"},
                                       {'M', "relation \"t\" does not exist"},
                                       {'D', "the detail"},
                                       {'H', "the hint"},
                                       {'P', "15"},
                                       {'F', "parse_relation.c"},
                                       {'L', "1392"},
                                       {'R', "parserOpenTable"}});
  const auto fields = parse_error_fields(as_bytes(body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "ERROR");
  EXPECT_EQ(fields->sqlstate, "42P01");
  EXPECT_EQ(fields->message, "relation \"t\" does not exist");
  EXPECT_EQ(fields->detail, "the detail");
  EXPECT_EQ(fields->hint, "the hint");
  EXPECT_FALSE(fields->is_fatal());
}

TEST(CodecBody, ErrorFieldsFatality) {
  for (const auto& [severity, fatal] :
       std::vector<std::pair<std::string_view, bool>>{{"FATAL", true},
                                                      {"PANIC", true},
                                                      {"ERROR", false},
                                                      {"WARNING", false},
                                                      {"NOTICE", false}}) {
    const std::string body = error_body({{'S', severity}, {'C', "XX000"}, {'M', "m"}});
    const auto fields = parse_error_fields(as_bytes(body));
    ASSERT_TRUE(fields.has_value()) << severity;
    EXPECT_EQ(fields->severity, severity);
    EXPECT_EQ(fields->is_fatal(), fatal) << severity;
    EXPECT_TRUE(fields->detail.empty());
    EXPECT_TRUE(fields->hint.empty());
  }
}

TEST(CodecBody, ErrorFieldsSeverityFromNonLocalizedField) {
  // A server with lc_messages in another language localizes 'S'; 'V' stays English, and is what
  // decides whether the error is fatal. 'V' alone (without 'S') works as well.
  const std::string localized =
      error_body({{'S', "ВАЖНО"}, {'V', "FATAL"}, {'C', "57P01"}, {'M', "m"}});
  const auto fields = parse_error_fields(as_bytes(localized));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "FATAL");
  EXPECT_TRUE(fields->is_fatal());
  const std::string v_first = error_body({{'V', "FATAL"}, {'S', "SCHWERWIEGEND"}, {'M', "m"}});
  const auto v_first_fields = parse_error_fields(as_bytes(v_first));
  ASSERT_TRUE(v_first_fields.has_value());
  EXPECT_TRUE(v_first_fields->is_fatal());
  const std::string only_v = error_body({{'V', "PANIC"}, {'M', "m"}});
  const auto only_v_fields = parse_error_fields(as_bytes(only_v));
  ASSERT_TRUE(only_v_fields.has_value());
  EXPECT_EQ(only_v_fields->severity, "PANIC");
}

TEST(CodecBody, ErrorFieldsMalformed) {
  const std::string good = error_body({{'S', "ERROR"}, {'M', "m"}});
  EXPECT_FALSE(parse_error_fields(as_bytes(good.substr(0, good.size() - 1))).has_value())
      << "missing final terminator";
  EXPECT_FALSE(parse_error_fields(as_bytes(std::string("SERROR"))).has_value())
      << "value without NUL";
  EXPECT_FALSE(parse_error_fields(as_bytes(std::string())).has_value()) << "empty body";
  EXPECT_FALSE(parse_error_fields(as_bytes(good + "x")).has_value())
      << "bytes after the terminator";
  const std::string just_terminator(1, '\0');
  const auto empty = parse_error_fields(as_bytes(just_terminator));
  ASSERT_TRUE(empty.has_value()) << "no fields at all is well-formed";
  EXPECT_TRUE(empty->severity.empty());
}

TEST(CodecBody, AuthRequestOkAndCleartext) {
  const auto ok = parse_auth_request(as_bytes(i32(0)));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->kind, AuthRequestKind::ok);
  const auto cleartext = parse_auth_request(as_bytes(i32(3)));
  ASSERT_TRUE(cleartext.has_value());
  EXPECT_EQ(cleartext->kind, AuthRequestKind::cleartext);
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(0) + "x")).has_value());
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(3) + "x")).has_value());
}

TEST(CodecBody, AuthRequestMd5) {
  const std::string body = i32(5) + std::string("\x01\x00\xfe\x7f", 4);
  const auto md5 = parse_auth_request(as_bytes(body));
  ASSERT_TRUE(md5.has_value());
  EXPECT_EQ(md5->kind, AuthRequestKind::md5);
  EXPECT_EQ(md5->md5_salt, (std::array<std::byte, 4>{std::byte{0x01}, std::byte{0x00},
                                                     std::byte{0xfe}, std::byte{0x7f}}));
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(5) + "abc")).has_value()) << "short salt";
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(5) + "abcde")).has_value()) << "long salt";
}

TEST(CodecBody, AuthRequestSasl) {
  const auto sasl = parse_auth_request(
      as_bytes(i32(10) + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + cstr("")));
  ASSERT_TRUE(sasl.has_value());
  EXPECT_EQ(sasl->kind, AuthRequestKind::sasl);
  EXPECT_EQ(sasl->mechanisms, (std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}));
  const auto none = parse_auth_request(as_bytes(i32(10) + cstr("")));
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->mechanisms.empty());
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(10) + cstr("SCRAM-SHA-256"))).has_value())
      << "no terminator";
  EXPECT_FALSE(parse_auth_request(as_bytes(i32(10) + "SCRAM")).has_value()) << "no NUL";
  EXPECT_FALSE(
      parse_auth_request(as_bytes(i32(10) + cstr("SCRAM-SHA-256") + cstr("") + "x")).has_value());
}

TEST(CodecBody, AuthRequestSaslContinueAndFinal) {
  const std::string cont_body = i32(11) + "r=nonce,s=salt,i=4096";
  const auto cont = parse_auth_request(as_bytes(cont_body));
  ASSERT_TRUE(cont.has_value());
  EXPECT_EQ(cont->kind, AuthRequestKind::sasl_continue);
  EXPECT_EQ(as_chars(cont->data), "r=nonce,s=salt,i=4096");
  const std::string fin_body = i32(12) + "v=signature";
  const auto fin = parse_auth_request(as_bytes(fin_body));
  ASSERT_TRUE(fin.has_value());
  EXPECT_EQ(fin->kind, AuthRequestKind::sasl_final);
  EXPECT_EQ(as_chars(fin->data), "v=signature");
  const std::string empty_body = i32(12);
  const auto empty = parse_auth_request(as_bytes(empty_body));
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->data.empty());
}

TEST(CodecBody, AuthRequestUnsupportedOrShort) {
  for (const std::int32_t code : {2, 4, 6, 7, 8, 9, 13, -1, 99}) {
    EXPECT_FALSE(parse_auth_request(as_bytes(i32(code))).has_value()) << code;
  }
  EXPECT_FALSE(parse_auth_request(as_bytes(std::string("\0\0\0", 3))).has_value());
  EXPECT_FALSE(parse_auth_request(as_bytes(std::string())).has_value());
}

TEST(CodecBody, PasswordMessage) {
  EXPECT_EQ(parse_password_message(as_bytes(cstr("secret"))), "secret");
  EXPECT_EQ(parse_password_message(as_bytes(cstr("md5" + std::string(32, 'f')))),
            "md5" + std::string(32, 'f'));
  EXPECT_EQ(parse_password_message(as_bytes(cstr(""))), "");
  EXPECT_FALSE(parse_password_message(as_bytes(std::string("secret"))).has_value()) << "no NUL";
  EXPECT_FALSE(parse_password_message(as_bytes(cstr("secret") + "x")).has_value())
      << "trailing bytes";
  EXPECT_FALSE(parse_password_message(as_bytes(std::string())).has_value());
}

TEST(CodecBody, SaslInitialResponse) {
  const std::string body = cstr("SCRAM-SHA-256") + i32(11) + "n,,n=,r=abc";
  const auto response = parse_sasl_initial_response(as_bytes(body));
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->mechanism, "SCRAM-SHA-256");
  EXPECT_EQ(as_chars(response->data), "n,,n=,r=abc");
  const std::string zero_body = cstr("SCRAM-SHA-256") + i32(0);
  const auto zero = parse_sasl_initial_response(as_bytes(zero_body));
  ASSERT_TRUE(zero.has_value());
  EXPECT_TRUE(zero->data.empty());
}

TEST(CodecBody, SaslInitialResponseWithoutData) {
  const std::string body = cstr("SCRAM-SHA-256") + i32(-1);
  const auto response = parse_sasl_initial_response(as_bytes(body));
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->mechanism, "SCRAM-SHA-256");
  EXPECT_TRUE(response->data.empty());
  EXPECT_FALSE(
      parse_sasl_initial_response(as_bytes(cstr("SCRAM-SHA-256") + i32(-1) + "x")).has_value());
}

TEST(CodecBody, SaslInitialResponseMalformed) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"negative length", cstr("SCRAM-SHA-256") + i32(-2)},
      {"length past the end", cstr("SCRAM-SHA-256") + i32(12) + "n,,n=,r=abc"},
      {"bytes after the data", cstr("SCRAM-SHA-256") + i32(10) + "n,,n=,r=abc"},
      {"no length", cstr("SCRAM-SHA-256")},
      {"short length", cstr("SCRAM-SHA-256") + std::string(2, '\0')},
      {"mechanism without NUL", "SCRAM-SHA-256"},
      {"empty", ""},
  };
  for (const auto& [what, body] : cases) {
    EXPECT_FALSE(parse_sasl_initial_response(as_bytes(body)).has_value()) << what;
  }
}

TEST(CodecBody, QueryText) {
  EXPECT_EQ(query_text(as_bytes(cstr("SELECT 1"))), "SELECT 1");
  EXPECT_EQ(query_text(as_bytes(cstr(""))), "");
  EXPECT_EQ(query_text(as_bytes(std::string())), "");
  // A streamed query: only a prefix of the body is there, without the NUL.
  const std::string body = cstr("SELECT * FROM big_table WHERE id = 42");
  for (std::size_t size = 0; size < body.size(); ++size) {
    EXPECT_EQ(query_text(as_bytes(std::string_view(body).substr(0, size))),
              std::string_view(body).substr(0, size));
  }
}

TEST(CodecBody, Parse) {
  const std::string body = cstr("stmt_1") + cstr("SELECT $1, $2") + i16(2) + i32(23) + i32(25);
  const auto parse = parse_parse(as_bytes(body));
  ASSERT_TRUE(parse.has_value());
  EXPECT_EQ(parse->statement, "stmt_1");
  EXPECT_EQ(parse->query, "SELECT $1, $2");
  const std::string unnamed_body = cstr("") + cstr("SELECT 1") + i16(0);
  const auto unnamed = parse_parse(as_bytes(unnamed_body));
  ASSERT_TRUE(unnamed.has_value());
  EXPECT_EQ(unnamed->statement, "");
  EXPECT_EQ(unnamed->query, "SELECT 1");
}

TEST(CodecBody, ParseWithMoreThan32767ParameterTypes) {
  // The count is unsigned 16-bit on the wire: PostgreSQL reads it with pq_getmsgint(.., 2) and
  // libpq allows up to 65535 parameters.
  for (const std::uint16_t count :
       {std::uint16_t{32768}, std::uint16_t{40000}, std::uint16_t{65535}}) {
    std::string body = cstr("") + cstr("INSERT ...") + be16(count);
    body.append(std::size_t{count} * 4, '\0');
    const auto parse = parse_parse(as_bytes(body));
    ASSERT_TRUE(parse.has_value()) << count;
    EXPECT_EQ(parse->query, "INSERT ...");
    body.pop_back();
    EXPECT_FALSE(parse_parse(as_bytes(body)).has_value()) << count << " with a missing byte";
  }
}

TEST(CodecBody, ParseMalformed) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"too few parameter types", cstr("s") + cstr("q") + i16(2) + i32(23)},
      {"bytes after the types", cstr("s") + cstr("q") + i16(1) + i32(23) + "x"},
      {"no count", cstr("s") + cstr("q")},
      {"query without NUL", cstr("s") + "q"},
      {"name without NUL", "s"},
      {"empty", ""},
  };
  for (const auto& [what, body] : cases) {
    EXPECT_FALSE(parse_parse(as_bytes(body)).has_value()) << what;
  }
}

// ---------------------------------------------------------------------------------------------
// MessageWriter: what each builder writes parses back to the same values.

TEST(CodecWriter, GenericFieldsAreBigEndianAndLengthIsPatched) {
  std::string out = "prefix";
  MessageWriter(out)
      .begin('d')
      .int8(0xab)
      .int16(-2)
      .int32(0x01020304)
      .cstring("hi")
      .raw("xy")
      .raw(as_bytes("z"))
      .finish();
  EXPECT_EQ(out, "prefix" + std::string("d") + be32(4 + 1 + 2 + 4 + 3 + 2 + 1) + "\xab" +
                     "\xff\xfe" + "\x01\x02\x03\x04" + cstr("hi") + "xyz");
}

TEST(CodecWriter, AppendsAfterExistingContent) {
  std::string out;
  MessageWriter writer(out);
  writer.parameter_status("a", "1");
  const std::size_t first = out.size();
  writer.parameter_status("bb", "22");
  EXPECT_EQ(out,
            hand_message('S', cstr("a") + cstr("1")) + hand_message('S', cstr("bb") + cstr("22")));
  EXPECT_EQ(first, 9u);
}

TEST(CodecWriter, Authentication) {
  static constexpr std::array<std::byte, 4> kSalt{std::byte{0xde}, std::byte{0xad}, std::byte{0},
                                                  std::byte{1}};
  static constexpr std::array<std::string_view, 2> kMechanisms{"SCRAM-SHA-256-PLUS",
                                                               "SCRAM-SHA-256"};
  const auto request_of = [](const std::string& wire) -> std::optional<AuthRequest> {
    auto message = message_of(wire, Direction::backend);
    if (!message) return std::nullopt;
    EXPECT_EQ(message->type, 'R');
    auto request = parse_auth_request(as_bytes(message->body));
    if (request) request->data = {};  // a view into `message`: do not keep it
    return request;
  };
  EXPECT_EQ(request_of(written([](MessageWriter& w) { w.authentication_ok(); })).value().kind,
            AuthRequestKind::ok);
  EXPECT_EQ(
      request_of(written([](MessageWriter& w) { w.authentication_cleartext(); })).value().kind,
      AuthRequestKind::cleartext);
  const auto md5 = request_of(written([](MessageWriter& w) { w.authentication_md5(kSalt); }));
  ASSERT_TRUE(md5.has_value());
  EXPECT_EQ(md5->kind, AuthRequestKind::md5);
  EXPECT_EQ(md5->md5_salt, kSalt);
  const auto sasl =
      request_of(written([](MessageWriter& w) { w.authentication_sasl(kMechanisms); }));
  ASSERT_TRUE(sasl.has_value());
  EXPECT_EQ(sasl->kind, AuthRequestKind::sasl);
  EXPECT_EQ(sasl->mechanisms, (std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}));

  const std::string cont =
      written([](MessageWriter& w) { w.authentication_sasl_continue("r=abc,s=xyz,i=4096"); });
  const auto cont_body = message_of(cont, Direction::backend);
  ASSERT_TRUE(cont_body.has_value());
  const auto cont_request = parse_auth_request(as_bytes(cont_body->body));
  ASSERT_TRUE(cont_request.has_value());
  EXPECT_EQ(cont_request->kind, AuthRequestKind::sasl_continue);
  EXPECT_EQ(as_chars(cont_request->data), "r=abc,s=xyz,i=4096");

  const std::string fin = written([](MessageWriter& w) { w.authentication_sasl_final("v=sig"); });
  const auto fin_body = message_of(fin, Direction::backend);
  ASSERT_TRUE(fin_body.has_value());
  const auto fin_request = parse_auth_request(as_bytes(fin_body->body));
  ASSERT_TRUE(fin_request.has_value());
  EXPECT_EQ(fin_request->kind, AuthRequestKind::sasl_final);
  EXPECT_EQ(as_chars(fin_request->data), "v=sig");
}

TEST(CodecWriter, ParameterStatusAndBackendKeyData) {
  const auto status =
      message_of(written([](MessageWriter& w) { w.parameter_status("client_encoding", "UTF8"); }),
                 Direction::backend);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->type, 'S');
  const auto parsed_status = parse_parameter_status(as_bytes(status->body));
  ASSERT_TRUE(parsed_status.has_value());
  EXPECT_EQ(parsed_status->name, "client_encoding");
  EXPECT_EQ(parsed_status->value, "UTF8");

  const auto key = message_of(written([](MessageWriter& w) { w.backend_key_data(-5, 2147483647); }),
                              Direction::backend);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->type, 'K');
  const auto parsed_key = parse_backend_key_data(as_bytes(key->body));
  ASSERT_TRUE(parsed_key.has_value());
  EXPECT_EQ(parsed_key->process_id, -5);
  EXPECT_EQ(parsed_key->secret_key, 2147483647);
}

TEST(CodecWriter, ReadyForQuery) {
  for (const auto status :
       {TransactionStatus::idle, TransactionStatus::in_transaction, TransactionStatus::failed}) {
    const auto message = message_of(
        written([status](MessageWriter& w) { w.ready_for_query(status); }), Direction::backend);
    ASSERT_TRUE(message.has_value());
    EXPECT_EQ(message->type, 'Z');
    EXPECT_EQ(parse_ready_for_query(as_bytes(message->body)), status);
  }
}

TEST(CodecWriter, ErrorResponseWithDetailAndHint) {
  const auto message = message_of(
      written([](MessageWriter& w) {
        w.error_response("FATAL", "28P01", "password authentication failed for user \"a\"",
                         "the detail", "the hint");
      }),
      Direction::backend);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->type, 'E');
  const auto fields = parse_error_fields(as_bytes(message->body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "FATAL");
  EXPECT_EQ(fields->sqlstate, "28P01");
  EXPECT_EQ(fields->message, "password authentication failed for user \"a\"");
  EXPECT_EQ(fields->detail, "the detail");
  EXPECT_EQ(fields->hint, "the hint");
  EXPECT_TRUE(fields->is_fatal());
  // Both severities are sent ('V' exists since PostgreSQL 9.6 and drivers rely on it).
  Reader reader(message->body);
  EXPECT_EQ(reader.take(1), "S");
  EXPECT_EQ(reader.cstring(), "FATAL");
  EXPECT_EQ(reader.take(1), "V");
  EXPECT_EQ(reader.cstring(), "FATAL");
}

TEST(CodecWriter, ErrorResponseOmitsEmptyDetailAndHint) {
  const std::string wire =
      written([](MessageWriter& w) { w.error_response("ERROR", "08P01", "bad"); });
  EXPECT_EQ(wire, hand_message('E', "S" + cstr("ERROR") + "V" + cstr("ERROR") + "C" +
                                        cstr("08P01") + "M" + cstr("bad") + std::string(1, '\0')));
  const auto message = message_of(wire, Direction::backend);
  ASSERT_TRUE(message.has_value());
  const auto fields = parse_error_fields(as_bytes(message->body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->message, "bad");
  EXPECT_TRUE(fields->detail.empty());
  EXPECT_TRUE(fields->hint.empty());
  EXPECT_FALSE(fields->is_fatal());
}

TEST(CodecWriter, NoticeResponse) {
  const auto message = message_of(written([](MessageWriter& w) {
                                    w.notice_response("WARNING", "01000", "careful", "", "a hint");
                                  }),
                                  Direction::backend);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->type, 'N');
  const auto fields = parse_error_fields(as_bytes(message->body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "WARNING");
  EXPECT_EQ(fields->sqlstate, "01000");
  EXPECT_EQ(fields->message, "careful");
  EXPECT_TRUE(fields->detail.empty());
  EXPECT_EQ(fields->hint, "a hint");
}

TEST(CodecWriter, NegotiateProtocolVersion) {
  const std::array<std::string, 2> options{"_pq_.compression", "_pq_.other"};
  const auto message = message_of(
      written([&options](MessageWriter& w) { w.negotiate_protocol_version(0, options); }),
      Direction::backend);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->type, 'v');
  Reader reader(message->body);
  EXPECT_EQ(reader.u32(), 0x00030000u);  // newest supported: 3.0
  EXPECT_EQ(reader.int32(), 2);
  EXPECT_EQ(reader.cstring(), "_pq_.compression");
  EXPECT_EQ(reader.cstring(), "_pq_.other");
  EXPECT_TRUE(reader.done());

  const auto none = message_of(
      written([](MessageWriter& w) { w.negotiate_protocol_version(2, {}); }), Direction::backend);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->body, be32(0x00030002) + i32(0));
}

TEST(CodecWriter, RowDescriptionOfTextColumns) {
  static constexpr std::array<std::string_view, 3> kColumns{"database", "user", "cl_active"};
  const auto message = message_of(written([](MessageWriter& w) { w.row_description(kColumns); }),
                                  Direction::backend);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->type, 'T');
  Reader reader(message->body);
  EXPECT_EQ(reader.int16(), 3);
  for (const auto name : kColumns) {
    EXPECT_EQ(reader.cstring(), name);
    EXPECT_EQ(reader.int32(), 0) << "table oid";
    EXPECT_EQ(reader.int16(), 0) << "column number";
    EXPECT_EQ(reader.int32(), 25) << "type oid (text)";
    EXPECT_EQ(reader.int16(), -1) << "type length (varlena)";
    EXPECT_EQ(reader.int32(), -1) << "type modifier";
    EXPECT_EQ(reader.int16(), 0) << "format (text)";
  }
  EXPECT_TRUE(reader.done());
}

TEST(CodecWriter, DataRowWithNulls) {
  const std::array<std::optional<std::string_view>, 4> values{
      std::string_view("pgwarden"), std::nullopt, std::string_view(""), std::string_view("42")};
  const auto message =
      message_of(written([&values](MessageWriter& w) { w.data_row(values); }), Direction::backend);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(message->type, 'D');
  Reader reader(message->body);
  EXPECT_EQ(reader.int16(), 4);
  for (const auto& value : values) {
    const auto length = reader.int32();
    if (!value) {
      EXPECT_EQ(length, -1) << "NULL";
      continue;
    }
    ASSERT_EQ(length, static_cast<std::int32_t>(value->size()));
    EXPECT_EQ(reader.take(value->size()), *value);
  }
  EXPECT_TRUE(reader.done());
}

TEST(CodecWriter, CommandCompleteAndEmptyQuery) {
  const auto complete =
      message_of(written([](MessageWriter& w) { w.command_complete("SHOW"); }), Direction::backend);
  ASSERT_TRUE(complete.has_value());
  EXPECT_EQ(complete->type, 'C');
  EXPECT_EQ(complete->body, cstr("SHOW"));
  EXPECT_EQ(written([](MessageWriter& w) { w.empty_query_response(); }), hand_message('I', ""));
}

TEST(CodecWriter, StartupMessage) {
  const std::vector<std::pair<std::string, std::string>> params{
      {"user", "pgwarden"}, {"database", "app"}, {"application_name", ""}};
  const std::string wire = written([&params](MessageWriter& w) { w.startup_message(params); });
  std::size_t consumed = 0;
  const auto parsed = parse_first_packet(as_bytes(wire), &consumed);
  ASSERT_TRUE(std::holds_alternative<FirstPacket>(parsed)) << outcome(parsed);
  const auto* startup = std::get_if<StartupMessage>(&std::get<FirstPacket>(parsed));
  ASSERT_NE(startup, nullptr);
  EXPECT_EQ(startup->protocol, kProtocol30);
  EXPECT_EQ(startup->parameters, params);
  EXPECT_EQ(consumed, wire.size());
  // Appending after other content keeps the length right.
  std::string out = "xyz";
  MessageWriter(out).startup_message(params);
  EXPECT_EQ(out, "xyz" + wire);
}

TEST(CodecWriter, CancelRequest) {
  const std::string wire = written([](MessageWriter& w) { w.cancel_request(-1, 123456789); });
  EXPECT_EQ(wire, be32(16) + be32(kCancelRequestCode) + i32(-1) + i32(123456789));
  EXPECT_EQ(outcome(parse_first_packet(as_bytes(wire), nullptr)), "CancelRequest -1/123456789");
}

TEST(CodecWriter, PasswordAndSaslMessages) {
  const auto password = message_of(written([](MessageWriter& w) { w.password_message("md5abc"); }),
                                   Direction::frontend);
  ASSERT_TRUE(password.has_value());
  EXPECT_EQ(password->type, 'p');
  EXPECT_EQ(parse_password_message(as_bytes(password->body)), "md5abc");

  const auto initial = message_of(
      written([](MessageWriter& w) { w.sasl_initial_response("SCRAM-SHA-256", "n,,n=,r=nonce"); }),
      Direction::frontend);
  ASSERT_TRUE(initial.has_value());
  EXPECT_EQ(initial->type, 'p');
  const auto parsed = parse_sasl_initial_response(as_bytes(initial->body));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->mechanism, "SCRAM-SHA-256");
  EXPECT_EQ(as_chars(parsed->data), "n,,n=,r=nonce");

  const auto response =
      message_of(written([](MessageWriter& w) { w.sasl_response("c=biws,r=nonce,p=proof"); }),
                 Direction::frontend);
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->type, 'p');
  EXPECT_EQ(response->body, "c=biws,r=nonce,p=proof");
}

TEST(CodecWriter, QuerySyncTerminate) {
  const auto query =
      message_of(written([](MessageWriter& w) { w.query("SELECT 'ü'"); }), Direction::frontend);
  ASSERT_TRUE(query.has_value());
  EXPECT_EQ(query->type, 'Q');
  EXPECT_EQ(query_text(as_bytes(query->body)), "SELECT 'ü'");
  EXPECT_EQ(written([](MessageWriter& w) { w.sync(); }), hand_message('S', ""));
  EXPECT_EQ(written([](MessageWriter& w) { w.terminate(); }), hand_message('X', ""));
}

// ---------------------------------------------------------------------------------------------

TEST(CodecDescribe, EveryErrorHasItsOwnText) {
  std::set<std::string_view> texts;
  for (const auto e : {CodecError::invalid_length, CodecError::invalid_startup_length,
                       CodecError::message_too_large, CodecError::unknown_message_type,
                       CodecError::malformed_body, CodecError::unsupported_protocol}) {
    const auto text = describe(e);
    EXPECT_FALSE(text.empty()) << error_name(e);
    EXPECT_NE(text, "codec error") << error_name(e) << " falls through to the default";
    texts.insert(text);
  }
  EXPECT_EQ(texts.size(), 6u);
}

}  // namespace
}  // namespace pgw::proto
