// Invariant and round-trip checks for the wire codec (src/protocol/codec.hpp), shared by the
// protocol, protocol_bodies, first_packet and stream fuzz targets.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_common.hpp"
#include "protocol/codec.hpp"

namespace pgw::fuzz {

namespace proto = pgw::proto;

// The body of the single message that `build` appends with a MessageWriter.
template <typename Build>
std::string written_body(Build&& build) {
  std::string out;
  proto::MessageWriter writer(out);
  build(writer);
  FUZZ_CHECK(out.size() >= proto::kHeaderSize);
  return out.substr(proto::kHeaderSize);
}

// parse_header: a valid header respects the per-direction limits; the result depends on the
// first 5 bytes only; NeedMore only when fewer than 5 bytes are there.
inline proto::Parsed<proto::Header> check_header(proto::Bytes input, proto::Direction direction) {
  auto parsed = proto::parse_header(input, direction);
  if (const auto* need = std::get_if<proto::NeedMore>(&parsed)) {
    FUZZ_CHECK(input.size() < proto::kHeaderSize);
    FUZZ_CHECK(need->at_least == proto::kHeaderSize);
    FUZZ_CHECK(need->at_least > input.size());
    return parsed;
  }
  FUZZ_CHECK(input.size() >= proto::kHeaderSize);
  const auto again = proto::parse_header(input.first(proto::kHeaderSize), direction);
  FUZZ_CHECK(again.index() == parsed.index());
  if (const auto* h = std::get_if<proto::Header>(&parsed)) {
    const auto& h2 = std::get<proto::Header>(again);
    FUZZ_CHECK(h2.type == h->type && h2.length == h->length);
    FUZZ_CHECK(h->type == static_cast<char>(input[0]));
    FUZZ_CHECK(h->length >= 4);
    FUZZ_CHECK(std::size_t{h->body_size()} + 4 == h->length);
    FUZZ_CHECK(h->total_size() == std::size_t{h->body_size()} + proto::kHeaderSize);
    FUZZ_CHECK(h->body_size() <= proto::kLargeMessageLimit);
    FUZZ_CHECK(h->total_size() <= std::size_t{proto::kLargeMessageLimit} + proto::kHeaderSize);
    if (direction == proto::Direction::frontend) {
      FUZZ_CHECK(h->body_size() <= proto::frontend_length_limit(h->type));
    }
  } else {
    FUZZ_CHECK(std::get<proto::CodecError>(again) == std::get<proto::CodecError>(parsed));
    FUZZ_CHECK(!proto::describe(std::get<proto::CodecError>(parsed)).empty());
  }
  return parsed;
}

// parse_message agrees with parse_header and hands out exactly the declared body.
inline proto::Parsed<proto::Message> check_message(proto::Bytes input, proto::Direction direction) {
  const auto header = check_header(input, direction);
  auto parsed = proto::parse_message(input, direction);
  if (const auto* error = std::get_if<proto::CodecError>(&parsed)) {
    FUZZ_CHECK(std::holds_alternative<proto::CodecError>(header));
    FUZZ_CHECK(std::get<proto::CodecError>(header) == *error);
  } else if (const auto* need = std::get_if<proto::NeedMore>(&parsed)) {
    FUZZ_CHECK(need->at_least > input.size());
    if (const auto* h = std::get_if<proto::Header>(&header)) {
      FUZZ_CHECK(need->at_least == h->total_size());
    } else {
      FUZZ_CHECK(std::holds_alternative<proto::NeedMore>(header));
    }
  } else {
    const auto& message = std::get<proto::Message>(parsed);
    const auto* h = std::get_if<proto::Header>(&header);
    FUZZ_CHECK(h != nullptr);
    FUZZ_CHECK(message.header.type == h->type && message.header.length == h->length);
    FUZZ_CHECK(message.header.total_size() <= input.size());
    FUZZ_CHECK(message.body.size() == message.header.body_size());
    FUZZ_CHECK(message.body.data() == input.data() + proto::kHeaderSize);
  }
  return parsed;
}

// Every body parser on `body`, with round trips through MessageWriter where the writer can
// produce the message: parsing what the writer wrote must give back the same bytes/values.
inline void check_bodies(proto::Bytes body) {
  const std::string_view text = proto::as_chars(body);

  if (auto status = proto::parse_ready_for_query(body)) {
    FUZZ_CHECK(written_body([&](proto::MessageWriter& w) { w.ready_for_query(*status); }) == text);
  }

  if (auto ps = proto::parse_parameter_status(body)) {
    FUZZ_CHECK(within(ps->name, text) && within(ps->value, text));
    FUZZ_CHECK(written_body([&](proto::MessageWriter& w) { w.parameter_status(ps->name, ps->value); }) ==
               text);
  }

  if (auto row = proto::parse_data_row(body)) {
    for (const auto& column : *row) FUZZ_CHECK(!column || within(*column, text));
    FUZZ_CHECK(written_body([&](proto::MessageWriter& w) { w.data_row(*row); }) == text);
  }

  if (auto key = proto::parse_backend_key_data(body)) {
    FUZZ_CHECK(written_body([&](proto::MessageWriter& w) {
                 w.backend_key_data(key->process_id, key->secret_key);
               }) == text);
  }

  if (auto fields = proto::parse_error_fields(body)) {
    FUZZ_CHECK(within(fields->severity, text) && within(fields->sqlstate, text) &&
               within(fields->message, text) && within(fields->detail, text) &&
               within(fields->hint, text));
    const std::string rebuilt = written_body([&](proto::MessageWriter& w) {
      w.error_response(fields->severity, fields->sqlstate, fields->message, fields->detail, fields->hint);
    });
    auto again = proto::parse_error_fields(proto::as_bytes(rebuilt));
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(again->severity == fields->severity && again->sqlstate == fields->sqlstate &&
               again->message == fields->message && again->detail == fields->detail &&
               again->hint == fields->hint);
    FUZZ_CHECK(again->is_fatal() == fields->is_fatal());
  }

  if (auto request = proto::parse_auth_request(body)) {
    std::string rebuilt;
    switch (request->kind) {
      case proto::AuthRequestKind::ok:
        rebuilt = written_body([](proto::MessageWriter& w) { w.authentication_ok(); });
        break;
      case proto::AuthRequestKind::cleartext:
        rebuilt = written_body([](proto::MessageWriter& w) { w.authentication_cleartext(); });
        break;
      case proto::AuthRequestKind::md5:
        rebuilt = written_body([&](proto::MessageWriter& w) {
          w.authentication_md5(std::span<const std::byte, 4>(request->md5_salt));
        });
        break;
      case proto::AuthRequestKind::sasl: {
        std::vector<std::string_view> mechanisms(request->mechanisms.begin(), request->mechanisms.end());
        for (auto m : mechanisms) FUZZ_CHECK(!m.empty() && m.find('\0') == std::string_view::npos);
        rebuilt = written_body([&](proto::MessageWriter& w) { w.authentication_sasl(mechanisms); });
        break;
      }
      case proto::AuthRequestKind::sasl_continue:
        FUZZ_CHECK(within(proto::as_chars(request->data), text));
        rebuilt = written_body([&](proto::MessageWriter& w) {
          w.authentication_sasl_continue(proto::as_chars(request->data));
        });
        break;
      case proto::AuthRequestKind::sasl_final:
        FUZZ_CHECK(within(proto::as_chars(request->data), text));
        rebuilt = written_body([&](proto::MessageWriter& w) {
          w.authentication_sasl_final(proto::as_chars(request->data));
        });
        break;
    }
    FUZZ_CHECK(rebuilt == text);
  }

  if (auto password = proto::parse_password_message(body)) {
    FUZZ_CHECK(within(*password, text));
    FUZZ_CHECK(written_body([&](proto::MessageWriter& w) { w.password_message(*password); }) == text);
  }

  if (auto sasl = proto::parse_sasl_initial_response(body)) {
    const auto data = proto::as_chars(sasl->data);
    FUZZ_CHECK(within(sasl->mechanism, text) && within(data, text));
    const std::string rebuilt = written_body([&](proto::MessageWriter& w) {
      w.sasl_initial_response(sasl->mechanism, data);
    });
    // The writer never sends length -1 (it sends 0 for no data); otherwise byte-exact.
    if (!data.empty() || text.size() < 4 || text.substr(text.size() - 4) != std::string_view("\xff\xff\xff\xff", 4)) {
      FUZZ_CHECK(rebuilt == text);
    }
    auto again = proto::parse_sasl_initial_response(proto::as_bytes(rebuilt));
    FUZZ_CHECK(again && again->mechanism == sasl->mechanism && proto::as_chars(again->data) == data);
  }

  const auto query = proto::query_text(body);
  FUZZ_CHECK(query.size() <= text.size());
  FUZZ_CHECK(query.empty() || query.data() == text.data());
  FUZZ_CHECK(query.find('\0') == std::string_view::npos);
  FUZZ_CHECK(query.size() == text.size() || text[query.size()] == '\0');

  if (auto parse = proto::parse_parse(body)) {
    FUZZ_CHECK(within(parse->statement, text) && within(parse->query, text));
    const std::size_t fixed = parse->statement.size() + 1 + parse->query.size() + 1 + 2;
    FUZZ_CHECK(fixed <= text.size() && (text.size() - fixed) % 4 == 0);
    FUZZ_CHECK(parse->query == proto::query_text(body.subspan(parse->statement.size() + 1)));
  }
}

}  // namespace pgw::fuzz
