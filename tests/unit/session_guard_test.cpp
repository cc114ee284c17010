// The session-state guard's messages (session/session_guard.hpp): the statement text of a Query
// or Parse, and the message that replaces a refused one under session_state = reject.
#include "session/session_guard.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

using pgw::proto::SessionStateKind;
using pgw::session::build_refusal;
using pgw::session::statement_text;

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string be16(std::uint16_t v) {
  return {static_cast<char>(v >> 8), static_cast<char>(v)};
}
pgw::proto::Bytes bytes(const std::string& s) {
  return pgw::proto::as_bytes(s);
}
std::uint32_t read32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

TEST(SessionGuard, StatementTextOfQueryAndParse) {
  const std::string query = std::string("SET a = 1") + '\0';
  auto text = statement_text('Q', bytes(query), true);
  EXPECT_EQ(text.text, "SET a = 1");
  EXPECT_EQ(text.offset, 0u);
  EXPECT_TRUE(text.whole);
  const std::string parse = std::string("s1") + '\0' + "LISTEN c" + '\0' + be16(0);
  text = statement_text('P', bytes(parse), true);
  EXPECT_EQ(text.text, "LISTEN c");
  EXPECT_EQ(text.offset, 3u);
  EXPECT_TRUE(text.whole);
  // A body cut off before its NUL: the text so far, not whole.
  const std::string cut = "SET a";
  text = statement_text('Q', bytes(cut), false);
  EXPECT_EQ(text.text, "SET a");
  EXPECT_FALSE(text.whole);
  // A Parse without the name's NUL has no text.
  const std::string nameless = "s1";
  EXPECT_TRUE(statement_text('P', bytes(nameless), false).text.empty());
}

TEST(SessionGuard, RefusedQueryRaisesTheErrorInItsPlace) {
  const std::string body = std::string("SELECT pg_advisory_lock(1)") + '\0';
  std::string out;
  build_refusal(out, 'Q', bytes(body), statement_text('Q', bytes(body), true),
                SessionStateKind::advisory_lock);
  ASSERT_GE(out.size(), 6u);
  EXPECT_EQ(out[0], 'Q');
  EXPECT_EQ(read32(out, 1), out.size() - 1);  // the length covers the rest
  EXPECT_EQ(out.back(), '\0');
  const std::string sql = out.substr(5, out.size() - 6);
  EXPECT_EQ(sql.rfind("DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000'", 0), 0u) << sql;
  EXPECT_NE(sql.find("session advisory lock"), std::string::npos) << sql;
  EXPECT_NE(sql.find("session_state = reject"), std::string::npos) << sql;
  EXPECT_NE(sql.find("pg_advisory_xact_lock"), std::string::npos) << sql;  // the hint
  EXPECT_EQ(sql.find('\0'), std::string::npos);
}

TEST(SessionGuard, RefusedParseKeepsItsNameAndFitsTheBind) {
  // Declared: $1 as int8; the text uses $3: $2 and $3 become text parameters.
  const std::string text = "SELECT pg_advisory_lock($1, $3)";
  const std::string body = std::string("S_7") + '\0' + text + '\0' + be16(1) + be32(20);
  std::string out;
  build_refusal(out, 'P', bytes(body), statement_text('P', bytes(body), true),
                SessionStateKind::advisory_lock);
  EXPECT_EQ(out[0], 'P');
  EXPECT_EQ(read32(out, 1), out.size() - 1);
  EXPECT_EQ(out.substr(5, 4), std::string("S_7") + '\0');
  const auto sql_end = out.find('\0', 9);
  ASSERT_NE(sql_end, std::string::npos);
  EXPECT_EQ(out.substr(9, 3), "DO ");
  const std::string types = out.substr(sql_end + 1);
  ASSERT_EQ(types.size(), 2u + 3 * 4);
  EXPECT_EQ(types.substr(0, 2), be16(3));
  EXPECT_EQ(read32(types, 2), 20u);  // the client's
  EXPECT_EQ(read32(types, 6), 25u);  // text
  EXPECT_EQ(read32(types, 10), 25u);
  // An unspecified (0) type becomes text too; no parameters: none declared.
  const std::string unspecified = std::string("") + '\0' + "SET a = $1" + '\0' + be16(1) + be32(0);
  build_refusal(out, 'P', bytes(unspecified), statement_text('P', bytes(unspecified), true),
                SessionStateKind::parameter);
  EXPECT_EQ(read32(out, out.size() - 4), 25u);
  const std::string none = std::string("") + '\0' + "LISTEN c" + '\0' + be16(0);
  build_refusal(out, 'P', bytes(none), statement_text('P', bytes(none), true),
                SessionStateKind::listen);
  EXPECT_EQ(out.substr(out.size() - 2), be16(0));
}

TEST(SessionGuard, EveryKindHasAHint) {
  for (int k = 0; k < pgw::proto::kSessionStateKinds; ++k) {
    const auto hint = pgw::session::session_state_hint(static_cast<SessionStateKind>(k));
    EXPECT_FALSE(hint.empty()) << k;
    EXPECT_EQ(hint.back(), '.') << hint;
  }
}

}  // namespace
