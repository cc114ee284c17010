// The session-state guard's message work for the relay (docs/transaction-pooling.md#session-
// state): the statement text of a Query or Parse, and under session_state = reject the message
// that replaces a refused one. Pure functions over bytes; the relay owns the state
// (proto::SessionState) and the edit of the stream.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/message_types.hpp"
#include "protocol/session_state.hpp"

namespace pgw::session {

// The text of a Query or Parse body and where it starts in the body; `whole`: the body is all
// there and the text is NUL-terminated within it.
struct GuardedText {
  std::string_view text;
  std::size_t offset = 0;
  bool whole = false;
};
GuardedText statement_text(char type, proto::Bytes body, bool whole_body);

// SQL text pgwarden sends on a client's behalf. A string literal that means the same whatever
// standard_conforming_strings is (with a backslash in the value, the E'' form with doubled
// backslashes), and a double-quoted identifier.
std::string quote_literal(std::string_view value);
std::string quote_ident(std::string_view name);

// What a client should do instead of creating session state of `kind` (the refusal's HINT).
std::string_view session_state_hint(proto::SessionStateKind kind);

// session_state = reject: writes to `out` the message to send in place of the Query or Parse
// `body` (whole) whose statement would create session state of `kind`. Its text is a DO block
// that makes PostgreSQL raise Err::session_state_rejected (0A000, DETAIL, HINT), so the
// transaction fails as for any error of the statement. A Parse keeps its name and the client's
// parameter types, with a text parameter for each it left unspecified or did not declare (the
// highest $n of the text), so the client's Bind still fits.
void build_refusal(std::string& out, char type, proto::Bytes body, const GuardedText& statement,
                   proto::SessionStateKind kind);

}  // namespace pgw::session
