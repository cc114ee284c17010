#include "protocol/codec.hpp"

#include "protocol/message_types.hpp"

#include <algorithm>
#include <cstring>

namespace pgw::proto {
namespace {

std::uint32_t read_u32(const std::byte* p) {
  return (std::to_integer<std::uint32_t>(p[0]) << 24) |
         (std::to_integer<std::uint32_t>(p[1]) << 16) |
         (std::to_integer<std::uint32_t>(p[2]) << 8) | std::to_integer<std::uint32_t>(p[3]);
}
std::int32_t read_i32(const std::byte* p) {
  return static_cast<std::int32_t>(read_u32(p));
}
std::int16_t read_i16(const std::byte* p) {
  return static_cast<std::int16_t>((std::to_integer<std::uint16_t>(p[0]) << 8) |
                                   std::to_integer<std::uint16_t>(p[1]));
}

// A bounds-checked cursor over a message body.
class Cursor {
 public:
  explicit Cursor(Bytes bytes) : bytes_(bytes) {}
  bool empty() const { return pos_ == bytes_.size(); }
  std::size_t left() const { return bytes_.size() - pos_; }
  std::optional<std::string_view> cstring() {
    const auto* begin = bytes_.data() + pos_;
    const auto* end = bytes_.data() + bytes_.size();
    const auto* nul = std::find(begin, end, std::byte{0});
    if (nul == end) return std::nullopt;
    std::string_view s(reinterpret_cast<const char*>(begin), static_cast<std::size_t>(nul - begin));
    pos_ += s.size() + 1;
    return s;
  }
  std::optional<std::int32_t> int32() {
    if (left() < 4) return std::nullopt;
    auto v = read_i32(bytes_.data() + pos_);
    pos_ += 4;
    return v;
  }
  std::optional<std::int16_t> int16() {
    if (left() < 2) return std::nullopt;
    auto v = read_i16(bytes_.data() + pos_);
    pos_ += 2;
    return v;
  }
  std::optional<std::byte> byte() {
    if (left() < 1) return std::nullopt;
    return bytes_[pos_++];
  }
  std::optional<Bytes> take(std::size_t n) {
    if (left() < n) return std::nullopt;
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  Bytes rest() {
    auto s = bytes_.subspan(pos_);
    pos_ = bytes_.size();
    return s;
  }

 private:
  Bytes bytes_;
  std::size_t pos_ = 0;
};

bool valid_frontend_type(char type) {
  using namespace from_client;
  switch (type) {
    case kQuery:
    case kParse:
    case kBind:
    case kDescribe:
    case kExecute:
    case kSync:
    case kFlush:
    case kClose:
    case kTerminate:
    case kCopyData:
    case kCopyDone:
    case kCopyFail:
    case kFunctionCall:
    case kPassword:
      return true;
    default:
      return false;
  }
}

bool valid_backend_type(char type) {
  using namespace from_server;
  switch (type) {
    case kAuthentication:
    case kBackendKeyData:
    case kParameterStatus:
    case kReadyForQuery:
    case kRowDescription:
    case kDataRow:
    case kCommandComplete:
    case kErrorResponse:
    case kNoticeResponse:
    case kNotificationResponse:
    case kCopyInResponse:
    case kCopyOutResponse:
    case kCopyBothResponse:
    case kCopyData:
    case kCopyDone:
    case kEmptyQueryResponse:
    case kNoData:
    case kParseComplete:
    case kBindComplete:
    case kCloseComplete:
    case kPortalSuspended:
    case kParameterDescription:
    case kNegotiateProtocolVersion:
    case kFunctionCallResponse:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string_view describe(CodecError error) {
  switch (error) {
    case CodecError::invalid_length:
      return "invalid message length";
    case CodecError::invalid_startup_length:
      return "invalid length of startup packet";
    case CodecError::message_too_large:
      return "message too large";
    case CodecError::unknown_message_type:
      return "unknown message type";
    case CodecError::malformed_body:
      return "malformed message";
    case CodecError::unsupported_protocol:
      return "unsupported frontend protocol";
  }
  return "codec error";
}

std::uint32_t frontend_length_limit(char type) {
  using namespace from_client;
  switch (type) {
    case kQuery:
    case kParse:
    case kBind:
    case kFunctionCall:
    case kCopyData:
      return kLargeMessageLimit;
    case kPassword:  // password / SASL / GSS responses: PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH
      return 65535;
    case kDescribe:
    case kClose:
      // PostgreSQL's limit is kSmallMessageLimit, but in transaction pooling a statement name
      // the client chose is replaced by a short one of pgwarden's (as PgBouncer does), so a
      // name of up to 1 MB (what the relay reads whole) is accepted here.
      return kStatementMessageLimit;
    default:
      return kSmallMessageLimit;
  }
}

Parsed<Header> parse_header(Bytes input, Direction direction) {
  if (input.size() < kHeaderSize) return NeedMore{kHeaderSize};
  const char type = static_cast<char>(input[0]);
  const std::uint32_t length = read_u32(input.data() + 1);
  if (direction == Direction::frontend) {
    if (!valid_frontend_type(type)) return CodecError::unknown_message_type;
    if (length < 4) return CodecError::invalid_length;
    if (length - 4 > frontend_length_limit(type)) return CodecError::message_too_large;
  } else {
    if (!valid_backend_type(type)) return CodecError::unknown_message_type;
    if (length < 4) return CodecError::invalid_length;
    if (length - 4 > kLargeMessageLimit) return CodecError::message_too_large;
  }
  return Header{type, length};
}

Parsed<Message> parse_message(Bytes input, Direction direction) {
  auto header = parse_header(input, direction);
  if (auto* h = std::get_if<Header>(&header)) {
    if (input.size() < h->total_size()) return NeedMore{h->total_size()};
    return Message{*h, input.subspan(kHeaderSize, h->body_size())};
  }
  if (auto* e = std::get_if<CodecError>(&header)) return *e;
  return std::get<NeedMore>(header);
}

const std::string* StartupMessage::find(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return &value;
  }
  return nullptr;
}

Parsed<FirstPacket> parse_first_packet(Bytes input, std::size_t* consumed) {
  // The length is judged as soon as its 4 bytes are in: a client that sent a length below 8
  // (say 4, and nothing else) must be answered now, not after client_login_timeout.
  if (input.size() < 4) return NeedMore{8};
  const std::uint32_t length = read_u32(input.data());
  if (length < 8) return CodecError::invalid_startup_length;
  if (length > kStartupPacketLimit) return CodecError::message_too_large;
  if (input.size() < length) return NeedMore{length};
  const std::uint32_t code = read_u32(input.data() + 4);
  if (consumed) *consumed = length;
  Cursor body(input.subspan(8, length - 8));
  if (code == kSslRequestCode) {
    if (length != 8) return CodecError::malformed_body;
    return FirstPacket{SslRequest{}};
  }
  if (code == kGssEncRequestCode) {
    if (length != 8) return CodecError::malformed_body;
    return FirstPacket{GssEncRequest{}};
  }
  if (code == kCancelRequestCode) {
    if (length != 16) return CodecError::malformed_body;
    auto pid = body.int32();
    auto key = body.int32();
    return FirstPacket{CancelRequest{*pid, *key}};
  }
  if ((code >> 16) != 3) return CodecError::unsupported_protocol;
  StartupMessage startup;
  startup.protocol = code;
  for (;;) {
    auto name = body.cstring();
    if (!name) return CodecError::malformed_body;
    if (name->empty()) break;
    auto value = body.cstring();
    if (!value) return CodecError::malformed_body;
    startup.parameters.emplace_back(std::string(*name), std::string(*value));
  }
  if (!body.empty()) return CodecError::malformed_body;
  return FirstPacket{std::move(startup)};
}

std::optional<TransactionStatus> parse_ready_for_query(Bytes body) {
  if (body.size() != 1) return std::nullopt;
  const char c = static_cast<char>(body[0]);
  if (c != 'I' && c != 'T' && c != 'E') return std::nullopt;
  return static_cast<TransactionStatus>(c);
}

std::optional<ParameterStatus> parse_parameter_status(Bytes body) {
  Cursor cursor(body);
  auto name = cursor.cstring();
  auto value = name ? cursor.cstring() : std::nullopt;
  if (!value || !cursor.empty()) return std::nullopt;
  return ParameterStatus{*name, *value};
}

std::optional<std::vector<std::optional<std::string_view>>> parse_data_row(Bytes body) {
  Cursor cursor(body);
  auto count = cursor.int16();
  if (!count || *count < 0) return std::nullopt;
  std::vector<std::optional<std::string_view>> columns;
  columns.reserve(static_cast<std::size_t>(*count));
  for (std::int16_t i = 0; i < *count; ++i) {
    auto length = cursor.int32();
    if (!length || *length < -1) return std::nullopt;
    if (*length == -1) {
      columns.emplace_back(std::nullopt);
      continue;
    }
    auto bytes = cursor.take(static_cast<std::size_t>(*length));
    if (!bytes) return std::nullopt;
    columns.emplace_back(as_chars(*bytes));
  }
  if (!cursor.empty()) return std::nullopt;
  return columns;
}

std::optional<BackendKeyData> parse_backend_key_data(Bytes body) {
  if (body.size() != 8) return std::nullopt;
  return BackendKeyData{read_i32(body.data()), read_i32(body.data() + 4)};
}

std::optional<ErrorFields> parse_error_fields(Bytes body) {
  Cursor cursor(body);
  ErrorFields fields;
  std::string_view nonlocalized;
  for (;;) {
    auto code = cursor.byte();
    if (!code) return std::nullopt;
    if (*code == std::byte{0}) break;
    auto value = cursor.cstring();
    if (!value) return std::nullopt;
    switch (static_cast<char>(*code)) {
      case 'S':
        fields.severity = *value;
        break;
      case 'V':
        nonlocalized = *value;
        break;
      case 'C':
        fields.sqlstate = *value;
        break;
      case 'M':
        fields.message = *value;
        break;
      case 'D':
        fields.detail = *value;
        break;
      case 'H':
        fields.hint = *value;
        break;
      default:
        break;
    }
  }
  if (!cursor.empty()) return std::nullopt;
  if (!nonlocalized.empty()) fields.severity = nonlocalized;
  return fields;
}

std::optional<AuthRequest> parse_auth_request(Bytes body) {
  Cursor cursor(body);
  auto code = cursor.int32();
  if (!code) return std::nullopt;
  AuthRequest request;
  switch (*code) {
    case 0:
    case 3:
      if (!cursor.empty()) return std::nullopt;
      request.kind = static_cast<AuthRequestKind>(*code);
      return request;
    case 5: {
      auto salt = cursor.take(4);
      if (!salt || !cursor.empty()) return std::nullopt;
      request.kind = AuthRequestKind::md5;
      std::copy(salt->begin(), salt->end(), request.md5_salt.begin());
      return request;
    }
    case 10:
      request.kind = AuthRequestKind::sasl;
      for (;;) {
        auto mechanism = cursor.cstring();
        if (!mechanism) return std::nullopt;
        if (mechanism->empty()) break;
        request.mechanisms.emplace_back(*mechanism);
      }
      if (!cursor.empty()) return std::nullopt;
      return request;
    case 11:
    case 12:
      request.kind = static_cast<AuthRequestKind>(*code);
      request.data = cursor.rest();
      return request;
    default:
      return std::nullopt;
  }
}

std::optional<std::string_view> parse_password_message(Bytes body) {
  Cursor cursor(body);
  auto password = cursor.cstring();
  if (!password || !cursor.empty()) return std::nullopt;
  return password;
}

std::optional<SaslInitialResponse> parse_sasl_initial_response(Bytes body) {
  Cursor cursor(body);
  auto mechanism = cursor.cstring();
  auto length = mechanism ? cursor.int32() : std::nullopt;
  if (!length) return std::nullopt;
  SaslInitialResponse response{*mechanism, {}};
  if (*length == -1) {
    if (!cursor.empty()) return std::nullopt;
    return response;
  }
  if (*length < 0) return std::nullopt;
  auto data = cursor.take(static_cast<std::size_t>(*length));
  if (!data || !cursor.empty()) return std::nullopt;
  response.data = *data;
  return response;
}

std::string_view query_text(Bytes body) {
  auto chars = as_chars(body);
  auto nul = chars.find('\0');
  return nul == std::string_view::npos ? chars : chars.substr(0, nul);
}

std::optional<ParseMessage> parse_parse(Bytes body) {
  Cursor cursor(body);
  auto name = cursor.cstring();
  auto query = name ? cursor.cstring() : std::nullopt;
  auto count = query ? cursor.int16() : std::nullopt;
  if (!count) return std::nullopt;
  // The count is unsigned on the wire: PostgreSQL and libpq allow up to 65535 parameters.
  const auto types = static_cast<std::uint16_t>(*count);
  if (!cursor.take(std::size_t{types} * 4) || !cursor.empty()) return std::nullopt;
  return ParseMessage{*name, *query};
}

// ---------------------------------------------------------------------------------------------

MessageWriter& MessageWriter::begin(char type) {
  start_ = out_.size();
  out_.push_back(type);
  out_.append(4, '\0');
  return *this;
}
MessageWriter& MessageWriter::int8(std::uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}
MessageWriter& MessageWriter::int16(std::int16_t v) {
  const auto u = static_cast<std::uint16_t>(v);
  out_.push_back(static_cast<char>(u >> 8));
  out_.push_back(static_cast<char>(u & 0xff));
  return *this;
}
MessageWriter& MessageWriter::int32(std::int32_t v) {
  const auto u = static_cast<std::uint32_t>(v);
  out_.push_back(static_cast<char>(u >> 24));
  out_.push_back(static_cast<char>((u >> 16) & 0xff));
  out_.push_back(static_cast<char>((u >> 8) & 0xff));
  out_.push_back(static_cast<char>(u & 0xff));
  return *this;
}
MessageWriter& MessageWriter::cstring(std::string_view s) {
  out_.append(s);
  out_.push_back('\0');
  return *this;
}
MessageWriter& MessageWriter::raw(std::string_view s) {
  out_.append(s);
  return *this;
}
MessageWriter& MessageWriter::raw(Bytes s) {
  return raw(as_chars(s));
}
void MessageWriter::finish() {
  const auto length = static_cast<std::uint32_t>(out_.size() - start_ - 1);
  out_[start_ + 1] = static_cast<char>(length >> 24);
  out_[start_ + 2] = static_cast<char>((length >> 16) & 0xff);
  out_[start_ + 3] = static_cast<char>((length >> 8) & 0xff);
  out_[start_ + 4] = static_cast<char>(length & 0xff);
}

void MessageWriter::authentication_ok() {
  begin(from_server::kAuthentication).int32(0).finish();
}
void MessageWriter::authentication_cleartext() {
  begin(from_server::kAuthentication).int32(3).finish();
}
void MessageWriter::authentication_md5(std::span<const std::byte, 4> salt) {
  begin(from_server::kAuthentication).int32(5).raw(Bytes(salt.data(), 4)).finish();
}
void MessageWriter::authentication_sasl(std::span<const std::string_view> mechanisms) {
  begin(from_server::kAuthentication).int32(10);
  for (auto m : mechanisms) cstring(m);
  int8(0).finish();
}
void MessageWriter::authentication_sasl_continue(std::string_view data) {
  begin(from_server::kAuthentication).int32(11).raw(data).finish();
}
void MessageWriter::authentication_sasl_final(std::string_view data) {
  begin(from_server::kAuthentication).int32(12).raw(data).finish();
}
void MessageWriter::parameter_status(std::string_view name, std::string_view value) {
  begin(from_server::kParameterStatus).cstring(name).cstring(value).finish();
}
void MessageWriter::backend_key_data(std::int32_t pid, std::int32_t key) {
  begin(from_server::kBackendKeyData).int32(pid).int32(key).finish();
}
void MessageWriter::ready_for_query(TransactionStatus status) {
  begin(from_server::kReadyForQuery).int8(static_cast<std::uint8_t>(status)).finish();
}
void MessageWriter::notice_or_error(char type, std::string_view severity, std::string_view sqlstate,
                                    std::string_view message, std::string_view detail,
                                    std::string_view hint) {
  begin(type);
  int8('S').cstring(severity);
  int8('V').cstring(severity);
  int8('C').cstring(sqlstate);
  int8('M').cstring(message);
  if (!detail.empty()) int8('D').cstring(detail);
  if (!hint.empty()) int8('H').cstring(hint);
  int8(0).finish();
}
void MessageWriter::error_response(std::string_view severity, std::string_view sqlstate,
                                   std::string_view message, std::string_view detail,
                                   std::string_view hint) {
  notice_or_error(from_server::kErrorResponse, severity, sqlstate, message, detail, hint);
}
void MessageWriter::notice_response(std::string_view severity, std::string_view sqlstate,
                                    std::string_view message, std::string_view detail,
                                    std::string_view hint) {
  notice_or_error(from_server::kNoticeResponse, severity, sqlstate, message, detail, hint);
}
void MessageWriter::negotiate_protocol_version(std::int32_t newest_minor,
                                               std::span<const std::string> unrecognized_options) {
  begin(from_server::kNegotiateProtocolVersion)
      .int32(static_cast<std::int32_t>(kProtocol30 | static_cast<std::uint32_t>(newest_minor)));
  int32(static_cast<std::int32_t>(unrecognized_options.size()));
  for (const auto& option : unrecognized_options) cstring(option);
  finish();
}
void MessageWriter::row_description(std::span<const std::string_view> column_names) {
  begin(from_server::kRowDescription).int16(static_cast<std::int16_t>(column_names.size()));
  for (auto name : column_names)
    cstring(name).int32(0).int16(0).int32(25).int16(-1).int32(-1).int16(0);
  finish();
}
void MessageWriter::data_row(std::span<const std::optional<std::string_view>> values) {
  begin(from_server::kDataRow).int16(static_cast<std::int16_t>(values.size()));
  for (const auto& value : values) {
    if (!value) {
      int32(-1);
    } else {
      int32(static_cast<std::int32_t>(value->size())).raw(*value);
    }
  }
  finish();
}
void MessageWriter::command_complete(std::string_view tag) {
  begin(from_server::kCommandComplete).cstring(tag).finish();
}
void MessageWriter::empty_query_response() {
  begin(from_server::kEmptyQueryResponse).finish();
}

void MessageWriter::startup_message(
    std::span<const std::pair<std::string, std::string>> parameters) {
  start_ = out_.size();
  out_.append(4, '\0');
  int32(static_cast<std::int32_t>(kProtocol30));
  for (const auto& [name, value] : parameters) cstring(name).cstring(value);
  int8(0);
  const auto length = static_cast<std::uint32_t>(out_.size() - start_);
  out_[start_] = static_cast<char>(length >> 24);
  out_[start_ + 1] = static_cast<char>((length >> 16) & 0xff);
  out_[start_ + 2] = static_cast<char>((length >> 8) & 0xff);
  out_[start_ + 3] = static_cast<char>(length & 0xff);
}
void MessageWriter::password_message(std::string_view password) {
  begin(from_client::kPassword).cstring(password).finish();
}
void MessageWriter::sasl_initial_response(std::string_view mechanism, std::string_view data) {
  begin(from_client::kPassword)
      .cstring(mechanism)
      .int32(static_cast<std::int32_t>(data.size()))
      .raw(data)
      .finish();
}
void MessageWriter::sasl_response(std::string_view data) {
  begin(from_client::kPassword).raw(data).finish();
}
void MessageWriter::query(std::string_view sql) {
  begin(from_client::kQuery).cstring(sql).finish();
}
void MessageWriter::parse(std::string_view sql, std::string_view statement) {
  begin(from_client::kParse).cstring(statement).cstring(sql).int16(0).finish();
}
void MessageWriter::bind(std::span<const std::string_view> text_parameters,
                         std::string_view statement, std::string_view portal) {
  begin(from_client::kBind).cstring(portal).cstring(statement).int16(0);  // all text
  int16(static_cast<std::int16_t>(text_parameters.size()));
  for (const auto& value : text_parameters) {
    int32(static_cast<std::int32_t>(value.size())).raw(value);
  }
  int16(0).finish();  // results in text
}
void MessageWriter::execute(std::string_view portal, std::int32_t max_rows) {
  begin(from_client::kExecute).cstring(portal).int32(max_rows).finish();
}
void MessageWriter::sync() {
  begin(from_client::kSync).finish();
}
void MessageWriter::terminate() {
  begin(from_client::kTerminate).finish();
}
void MessageWriter::cancel_request(std::int32_t pid, std::int32_t key) {
  int32(16).int32(static_cast<std::int32_t>(kCancelRequestCode)).int32(pid).int32(key);
}

}  // namespace pgw::proto
