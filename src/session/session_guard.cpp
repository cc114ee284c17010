#include "session/session_guard.hpp"

#include <algorithm>
#include <cstdint>

#include "util/errors.hpp"

namespace pgw::session {
namespace {

// The highest $n a statement text refers to (0: none); strings and comments are not told apart,
// which at worst declares a parameter too many for a statement that is refused anyway.
int highest_parameter(std::string_view text) {
  int highest = 0;
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '$' || text[i + 1] < '1' || text[i + 1] > '9') continue;
    int n = 0;
    std::size_t j = i + 1;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9' && n < 65536) {
      n = n * 10 + (text[j++] - '0');
    }
    highest = std::max(highest, std::min(n, 65535));
  }
  return highest;
}

constexpr std::uint32_t kTextOid = 25;

void append_int32(std::string& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

}  // namespace

std::string quote_literal(std::string_view value) {
  const bool escape = value.find('\\') != std::string_view::npos;
  std::string out = escape ? "E'" : "'";
  for (char c : value) {
    if (c == '\'' || (escape && c == '\\')) out += c;
    out += c;
  }
  out += '\'';
  return out;
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

GuardedText statement_text(char type, proto::Bytes body, bool whole_body) {
  const auto* chars = reinterpret_cast<const char*>(body.data());
  std::string_view rest(chars, body.size());
  std::size_t offset = 0;
  if (type == proto::from_client::kParse) {
    const auto name_end = rest.find('\0');
    if (name_end == std::string_view::npos) return {};
    offset = name_end + 1;
  }
  const auto text = rest.substr(offset);
  const auto end = text.find('\0');
  if (end == std::string_view::npos) return {text, offset, false};
  return {text.substr(0, end), offset, whole_body};
}

std::string_view session_state_hint(proto::SessionStateKind kind) {
  using K = proto::SessionStateKind;
  switch (kind) {
    case K::parameter:
      return "Use SET LOCAL (or set_config(..., true)) inside a transaction, or a session-mode "
             "pool.";
    case K::role:
      return "Use SET LOCAL ROLE inside a transaction, or a session-mode pool.";
    case K::advisory_lock:
      return "Use pg_advisory_xact_lock(), which the transaction's end releases, or a "
             "session-mode pool.";
    case K::listen:
      return "Use a session-mode pool (or session_state = track) for LISTEN.";
    case K::temp_table:
      return "Create it with ON COMMIT DROP inside a transaction, or use a session-mode pool.";
    case K::sql_prepare:
      return "Use your driver's protocol-level prepared statements, which pgwarden keeps per "
             "client, or a session-mode pool.";
    case K::hold_cursor:
      return "Use a cursor WITHOUT HOLD inside a transaction, or a session-mode pool.";
    case K::load:
      return "Load the library with session_preload_libraries on the server, or use a "
             "session-mode pool.";
  }
  return "";
}

void build_refusal(std::string& out, char type, proto::Bytes body, const GuardedText& statement,
                   proto::SessionStateKind kind) {
  const auto refusal =
      report(Err::session_state_rejected, proto::describe(kind), session_state_hint(kind));
  const std::string sql = "DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = '" +
                          std::string(error_spec(Err::session_state_rejected).sqlstate) +
                          "', MESSAGE = " + quote_literal(refusal.message) +
                          ", DETAIL = " + quote_literal(refusal.detail) +
                          ", HINT = " + quote_literal(refusal.hint) + "; END$pgwarden$";
  out.clear();
  out.push_back(type);
  append_int32(out, 0);  // the length, below
  if (type == proto::from_client::kParse) {
    out.append(reinterpret_cast<const char*>(body.data()), statement.offset);  // the name
    out.append(sql).push_back('\0');
    const auto* types = body.data() + statement.offset + statement.text.size() + 1;
    const auto types_size = static_cast<std::size_t>(body.data() + body.size() - types);
    std::uint16_t declared = 0;
    if (types_size >= 2) {
      declared = static_cast<std::uint16_t>((std::to_integer<unsigned>(types[0]) << 8) |
                                            std::to_integer<unsigned>(types[1]));
    }
    const auto count = std::max<int>(declared, highest_parameter(statement.text));
    out.push_back(static_cast<char>(count >> 8));
    out.push_back(static_cast<char>(count & 0xff));
    for (int i = 0; i < count; ++i) {
      std::uint32_t oid = 0;
      if (i < declared && types_size >= 2 + 4 * static_cast<std::size_t>(i + 1)) {
        for (int b = 0; b < 4; ++b) {
          oid = (oid << 8) | std::to_integer<unsigned>(types[2 + 4 * i + b]);
        }
      }
      append_int32(out, oid == 0 ? kTextOid : oid);
    }
  } else {
    out.append(sql).push_back('\0');
  }
  const auto length = static_cast<std::uint32_t>(out.size() - 1);
  for (int b = 0; b < 4; ++b) out[1 + b] = static_cast<char>(length >> (24 - 8 * b));
}

}  // namespace pgw::session
