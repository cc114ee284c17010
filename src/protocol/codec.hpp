// Pure PostgreSQL v3 wire codec: byte spans in, messages / "need more bytes" / typed errors out.
// Nothing here does I/O or links anything beyond the standard library, so every parser can be
// unit-tested at every fragmentation and fuzzed (fuzz/).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace pgw::proto {

using Bytes = std::span<const std::byte>;

// ---------------------------------------------------------------------------------------------
// Limits. PostgreSQL rejects frontend messages over 1 GB and short control messages over
// 10000 bytes (PQ_SMALL_MESSAGE_LIMIT); the startup packet may not exceed 10000 bytes either.
inline constexpr std::uint32_t kLargeMessageLimit = 0x3fffffff;  // 1 GB - 1
inline constexpr std::uint32_t kSmallMessageLimit = 10000;
inline constexpr std::uint32_t kStatementMessageLimit = 1 << 20;  // Describe, Close
inline constexpr std::uint32_t kStartupPacketLimit = 10000;
inline constexpr std::size_t kHeaderSize = 5;  // type byte + int32 length

// Protocol version numbers and special request codes of the first packet.
inline constexpr std::uint32_t kProtocol30 = 0x00030000;
inline constexpr std::uint32_t kSslRequestCode = 80877103;
inline constexpr std::uint32_t kGssEncRequestCode = 80877104;
inline constexpr std::uint32_t kCancelRequestCode = 80877102;

// Every codec failure. The session maps each to ErrorResponse 08P01 with describe() as text.
enum class CodecError : std::uint8_t {
  invalid_length,          // length field < 4
  invalid_startup_length,  // the first packet's length field < 8
  message_too_large,       // over the per-type limit
  unknown_message_type,    // type byte not valid in this direction / phase
  malformed_body,          // missing NUL terminator, counts that do not fit, trailing bytes...
  unsupported_protocol,    // major version other than 3
};
std::string_view describe(CodecError error);

// The result of parsing something that may still be incomplete.
struct NeedMore {
  std::size_t at_least;  // total bytes the caller should hold before trying again
};
template <typename T>
using Parsed = std::variant<T, NeedMore, CodecError>;

// ---------------------------------------------------------------------------------------------
// Regular message framing: 1 type byte, int32 length (counting itself), body.
struct Header {
  char type;
  std::uint32_t length;  // as on the wire: body size + 4
  std::uint32_t body_size() const { return length - 4; }
  std::size_t total_size() const { return std::size_t{length} + 1; }
};

enum class Direction : std::uint8_t { frontend, backend };  // frontend = sent by the client

// Reads the 5-byte header at the front of `input` and validates type and length for the
// direction: NeedMore when fewer than 5 bytes are there. Does not need the body.
Parsed<Header> parse_header(Bytes input, Direction direction);

// The largest body size PostgreSQL accepts for a frontend message of this type.
std::uint32_t frontend_length_limit(char type);

// A whole message (header + body) at the front of `input`, or NeedMore.
struct Message {
  Header header;
  Bytes body;
};
Parsed<Message> parse_message(Bytes input, Direction direction);

// ---------------------------------------------------------------------------------------------
// The first packet of a connection: int32 length, int32 code, payload (no type byte).
struct SslRequest {};
struct GssEncRequest {};
struct CancelRequest {
  std::int32_t process_id;
  std::int32_t secret_key;
};
struct StartupMessage {
  std::uint32_t protocol;  // major << 16 | minor
  // Parameters in wire order; "user" and "database" are among them when the client sent them.
  std::vector<std::pair<std::string, std::string>> parameters;
  const std::string* find(std::string_view name) const;
};
using FirstPacket = std::variant<SslRequest, GssEncRequest, CancelRequest, StartupMessage>;
// The whole first packet, or NeedMore. The returned packet's size is reported via `consumed`.
Parsed<FirstPacket> parse_first_packet(Bytes input, std::size_t* consumed);

// ---------------------------------------------------------------------------------------------
// Bodies the pooler looks inside. Each takes the body (after the 5-byte header).

enum class TransactionStatus : char { idle = 'I', in_transaction = 'T', failed = 'E' };
std::optional<TransactionStatus> parse_ready_for_query(Bytes body);

struct ParameterStatus {
  std::string_view name;
  std::string_view value;
};
std::optional<ParameterStatus> parse_parameter_status(Bytes body);

struct BackendKeyData {
  std::int32_t process_id;
  std::int32_t secret_key;
};
std::optional<BackendKeyData> parse_backend_key_data(Bytes body);

// ErrorResponse / NoticeResponse fields (views into the body).
struct ErrorFields {
  std::string_view severity;  // 'V' (never localized) when present, else the localized 'S'
  std::string_view sqlstate;  // 'C'
  std::string_view message;   // 'M'
  std::string_view detail;    // 'D'
  std::string_view hint;      // 'H'
  bool is_fatal() const { return severity == "FATAL" || severity == "PANIC"; }
};
std::optional<ErrorFields> parse_error_fields(Bytes body);

// Backend 'R' (Authentication*) requests.
enum class AuthRequestKind : std::int32_t {
  ok = 0,
  cleartext = 3,
  md5 = 5,
  sasl = 10,
  sasl_continue = 11,
  sasl_final = 12,
};
struct AuthRequest {
  AuthRequestKind kind;
  std::array<std::byte, 4> md5_salt{};  // for md5
  std::vector<std::string> mechanisms;  // for sasl
  Bytes data;                           // for sasl_continue / sasl_final
};
std::optional<AuthRequest> parse_auth_request(Bytes body);

// Frontend 'p' in its three meanings, chosen by what the server asked for.
std::optional<std::string_view> parse_password_message(Bytes body);  // cleartext / md5
struct SaslInitialResponse {
  std::string_view mechanism;
  Bytes data;  // empty when the client sent length -1
};
std::optional<SaslInitialResponse> parse_sasl_initial_response(Bytes body);

// Frontend 'Q': the query text without its NUL. For a body that arrived only in part
// (streamed large queries) pass the prefix: the text up to the end of `body` is returned.
std::string_view query_text(Bytes body);
// Frontend 'P': statement name and query text.
struct ParseMessage {
  std::string_view statement;
  std::string_view query;
};
std::optional<ParseMessage> parse_parse(Bytes body);
// Backend 'D': the columns, text or binary as the server sent them; nullopt for SQL NULL.
// Views into the body.
std::optional<std::vector<std::optional<std::string_view>>> parse_data_row(Bytes body);

// ---------------------------------------------------------------------------------------------
// Building messages. Appends to `out`, which the caller reuses to avoid allocations.
class MessageWriter {
 public:
  explicit MessageWriter(std::string& out) : out_(out) {}

  // Generic: begin a message of `type`, append fields, finish() patches the length.
  MessageWriter& begin(char type);
  MessageWriter& int8(std::uint8_t v);
  MessageWriter& int16(std::int16_t v);
  MessageWriter& int32(std::int32_t v);
  MessageWriter& cstring(std::string_view s);  // s + NUL
  MessageWriter& raw(std::string_view s);
  MessageWriter& raw(Bytes s);
  void finish();

  // Backend messages.
  void authentication_ok();
  void authentication_cleartext();
  void authentication_md5(std::span<const std::byte, 4> salt);
  void authentication_sasl(std::span<const std::string_view> mechanisms);
  void authentication_sasl_continue(std::string_view data);
  void authentication_sasl_final(std::string_view data);
  void parameter_status(std::string_view name, std::string_view value);
  void backend_key_data(std::int32_t pid, std::int32_t key);
  void ready_for_query(TransactionStatus status);
  // ErrorResponse ('E') or NoticeResponse ('N'); empty detail/hint are omitted.
  void error_response(std::string_view severity, std::string_view sqlstate,
                      std::string_view message, std::string_view detail = {},
                      std::string_view hint = {});
  void notice_response(std::string_view severity, std::string_view sqlstate,
                       std::string_view message, std::string_view detail = {},
                       std::string_view hint = {});
  void negotiate_protocol_version(std::int32_t newest_minor,
                                  std::span<const std::string> unrecognized_options);
  void row_description(std::span<const std::string_view> column_names);  // all text columns
  void data_row(std::span<const std::optional<std::string_view>> values);
  void command_complete(std::string_view tag);
  void empty_query_response();

  // Frontend messages (pgwarden as a client of PostgreSQL).
  void startup_message(std::span<const std::pair<std::string, std::string>> parameters);
  void password_message(std::string_view password);
  void sasl_initial_response(std::string_view mechanism, std::string_view data);
  void sasl_response(std::string_view data);
  void query(std::string_view sql);
  // The extended protocol with text parameters (the unnamed statement and portal by default):
  // Parse without parameter types, Bind, Execute of every row.
  void parse(std::string_view sql, std::string_view statement = {});
  void bind(std::span<const std::string_view> text_parameters, std::string_view statement = {},
            std::string_view portal = {});
  void execute(std::string_view portal = {}, std::int32_t max_rows = 0);
  void sync();
  void terminate();
  void cancel_request(std::int32_t pid, std::int32_t key);  // a complete first packet

 private:
  void notice_or_error(char type, std::string_view severity, std::string_view sqlstate,
                       std::string_view message, std::string_view detail, std::string_view hint);
  std::string& out_;
  std::size_t start_ = 0;
};

// Helpers for byte views.
inline Bytes as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view as_chars(Bytes b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace pgw::proto
