#include "session/lease.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <span>
#include <string>

#include "net/turn_clock.hpp"
#include "protocol/message_types.hpp"

namespace pgw::session {
namespace {

// ASCII only, inline: this runs for the first statement of every lease, and the <cctype>
// functions go through the locale.
bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alnum(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
char to_upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}
char to_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// skip_blanks_and_comments(), with its common case (the text starts with its first word)
// inlined: the classification asks a few times per statement.
std::string_view skip_fast(std::string_view sql) {
  if (!sql.empty() && !is_blank(sql[0]) && sql[0] != '-' && sql[0] != '/') return sql;
  return skip_blanks_and_comments(sql);
}

bool is_word_char(char c) {
  return is_alnum(c) || c == '_' || c == '$' || static_cast<unsigned char>(c) >= 0x80;
}

// Case-insensitive: does `sql` start with the keyword `word` (upper case), followed by a
// non-identifier character or the end?
bool starts_with_keyword(std::string_view sql, std::string_view word) {
  if (sql.size() < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (to_upper(sql[i]) != word[i]) return false;
  }
  return sql.size() == word.size() || !is_word_char(sql[word.size()]);
}

// `s` without leading blanks.
std::string_view trim_left_blanks(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && is_blank(s[i])) ++i;
  return s.substr(i);
}

// `s` without trailing blanks and ';'.
std::string_view trim_right_blanks_and_semicolons(std::string_view s) {
  std::size_t n = s.size();
  while (n > 0 && (is_blank(s[n - 1]) || s[n - 1] == ';')) --n;
  return s.substr(0, n);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding; false on a malformed escape.
bool url_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

// The content of a comment: key='value',key2='value2'. Empty on anything else.
Tags parse_tag_list(std::string_view content) {
  Tags tags;
  std::size_t i = 0;
  auto skip = [&] {
    while (i < content.size() && is_blank(content[i])) ++i;
  };
  skip();
  if (i == content.size()) return {};
  for (;;) {
    skip();
    const auto key_start = i;
    while (i < content.size() && content[i] != '=' && content[i] != ',' && content[i] != '\'' &&
           !is_blank(content[i])) {
      ++i;
    }
    const auto raw_key = content.substr(key_start, i - key_start);
    skip();
    if (raw_key.empty() || i >= content.size() || content[i] != '=') return {};
    ++i;
    skip();
    if (i >= content.size() || content[i] != '\'') return {};
    ++i;
    std::string raw_value;
    bool closed = false;
    while (i < content.size()) {
      if (content[i] == '\\' && i + 1 < content.size()) {
        raw_value += content[i + 1];  // meta-escaped quote (\') or backslash
        i += 2;
      } else if (content[i] == '\'') {
        ++i;
        closed = true;
        break;
      } else {
        raw_value += content[i++];
      }
    }
    if (!closed) return {};
    std::string key, value;
    if (!url_decode(raw_key, key) || !url_decode(raw_value, value)) return {};
    tags.emplace_back(std::move(key), std::move(value));
    skip();
    if (i == content.size()) return tags;
    if (content[i] != ',') return {};
    ++i;
  }
}

// The text between /* and */ of a comment starting at `sql` (which starts with "/*"); false if
// it does not end.
bool comment_body(std::string_view sql, std::string_view& body, std::size_t& end) {
  const auto close = sql.find("*/", 2);
  if (close == std::string_view::npos) return false;
  body = sql.substr(2, close - 2);
  end = close + 2;
  return true;
}

}  // namespace

std::string_view to_string(LeaseState state) {
  switch (state) {
    case LeaseState::active:
      return "active";
    case LeaseState::idle_in_transaction:
      return "idle_in_transaction";
    case LeaseState::idle_pinned:
      return "idle_pinned";
  }
  return "?";
}

LeaseState lease_state(bool in_flight, bool in_transaction) {
  if (in_flight) return LeaseState::active;
  return in_transaction ? LeaseState::idle_in_transaction : LeaseState::idle_pinned;
}

std::size_t utf8_prefix(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text.size();
  std::size_t n = max;
  // A continuation byte (10xxxxxx) at the cut means the cut is inside a character: back up
  // to that character's first byte.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n;
}

std::string_view skip_blanks_and_comments(std::string_view sql) {
  std::size_t i = 0;
  while (i < sql.size()) {
    if (is_blank(sql[i])) {
      ++i;
    } else if (sql.compare(i, 2, "--") == 0) {
      const auto nl = sql.find('\n', i);
      i = nl == std::string_view::npos ? sql.size() : nl + 1;
    } else if (sql.compare(i, 2, "/*") == 0) {
      // PostgreSQL's block comments nest.
      int depth = 1;
      i += 2;
      while (i < sql.size() && depth > 0) {
        if (sql.compare(i, 2, "/*") == 0) {
          ++depth;
          i += 2;
        } else if (sql.compare(i, 2, "*/") == 0) {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return sql.substr(i);
}

namespace {

// A statement's tokens, enough to recognise the housekeeping shapes: words (identifiers and
// keywords, maybe schema-qualified: "pg_catalog.version"), numbers, quoted strings, and
// single punctuation characters. Blanks and comments are skipped.
struct Token {
  enum Kind : std::uint8_t { end, word, number, string, punct } kind = end;
  std::string_view text;
};

class Lexer {
 public:
  explicit Lexer(std::string_view sql) : sql_(sql) {}
  // The first character of the next token ('\0' at the end).
  char peek() {
    sql_ = skip_fast(sql_);
    return sql_.empty() ? '\0' : sql_[0];
  }
  Token next() {
    sql_ = skip_fast(sql_);
    if (sql_.empty()) return {};
    const char c = sql_[0];
    std::size_t n = 1;
    Token::Kind kind = Token::punct;
    if (is_word_char(c) && !is_digit(c)) {
      kind = Token::word;
      while (n < sql_.size() && (is_word_char(sql_[n]) || sql_[n] == '.')) ++n;
    } else if (is_digit(c)) {
      kind = Token::number;
      while (n < sql_.size() && (is_alnum(sql_[n]) || sql_[n] == '.')) {
        ++n;
      }
    } else if (c == '\'') {
      kind = Token::string;
      for (;;) {
        while (n < sql_.size() && sql_[n] != '\'') ++n;
        if (n + 1 < sql_.size() && sql_[n + 1] == '\'') {  // '' inside a string
          n += 2;
          continue;
        }
        n = std::min(n + 1, sql_.size());
        break;
      }
    } else if (c == ':' && sql_.size() > 1 && sql_[1] == ':') {
      n = 2;  // a cast
    }
    Token token{kind, sql_.substr(0, n)};
    sql_.remove_prefix(n);
    return token;
  }

 private:
  std::string_view sql_;
};

bool equals_word(std::string_view word, std::string_view lower) {
  if (word.size() != lower.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (to_lower(word[i]) != lower[i]) return false;
  }
  return true;
}

// `word` without a "pg_catalog." qualifier.
std::string_view unqualified(std::string_view word) {
  constexpr std::string_view schema = "pg_catalog.";
  if (word.size() > schema.size() && equals_word(word.substr(0, schema.size()), schema)) {
    return word.substr(schema.size());
  }
  return word;
}

// Server facts a driver reads at connect or on checkout, as function calls (and the advisory
// lock release of asyncpg's pool reset) ...
constexpr std::string_view kProbeFunctions[] = {"version",          "current_schema",
                                                "current_schemas",  "current_setting",
                                                "current_database", "pg_advisory_unlock_all"};
// ... and as SQL keywords without parentheses.
constexpr std::string_view kProbeKeywords[] = {"current_user",    "session_user",   "current_role",
                                               "current_catalog", "current_schema", "user"};

bool one_of(std::string_view word, std::span<const std::string_view> names) {
  for (const auto name : names) {
    if (equals_word(word, name)) return true;
  }
  return false;
}

// After SELECT: a list of probe calls and the ping's 1, each maybe cast and named, and nothing
// else ("SELECT 1", "select pg_catalog.version()", "SELECT current_setting('x') AS s").
bool is_probe_list(Lexer& lex) {
  for (;;) {
    // Every item starts with 1 or a letter of one of the names above ("pg_catalog." too): an
    // application's SELECT is mostly told apart here, before any word is read.
    if (std::string_view("1cCpPsSuUvV").find(lex.peek()) == std::string_view::npos) return false;
    Token t = lex.next();
    if (t.kind == Token::number && t.text == "1") {  // pools' and ORMs' liveness check
      t = lex.next();
    } else if (t.kind == Token::word) {
      const auto name = unqualified(t.text);
      t = lex.next();
      if (t.kind == Token::punct && t.text == "(") {
        if (!one_of(name, kProbeFunctions)) return false;
        // Arguments: constants only.
        for (t = lex.next(); !(t.kind == Token::punct && t.text == ")"); t = lex.next()) {
          const bool constant = t.kind == Token::number || t.kind == Token::string ||
                                (t.kind == Token::word &&
                                 (equals_word(t.text, "true") || equals_word(t.text, "false")));
          if (!constant && !(t.kind == Token::punct && t.text == ",")) return false;
        }
        t = lex.next();
      } else if (!one_of(name, kProbeKeywords)) {
        return false;
      }
    } else {
      return false;
    }
    if (t.kind == Token::punct && t.text == "::") {  // a cast to a (simple) type
      if (lex.next().kind != Token::word) return false;
      t = lex.next();
    }
    if (t.kind == Token::word && equals_word(t.text, "as")) t = lex.next();
    if (t.kind == Token::word && !equals_word(t.text, "from")) t = lex.next();  // the alias
    if (t.kind == Token::punct && t.text == ",") continue;
    // The statement ends here: what follows a ';' is the next one.
    return t.kind == Token::end || (t.kind == Token::punct && t.text == ";");
  }
}

std::size_t statement_end(std::string_view sql);

// Whether the statement at the start of `sql` names pg_type (maybe as pg_catalog.pg_type, in
// any case) as a word. Only the first 4 KB are searched: a driver's introspection names it early
// enough, and the data path must not scan a huge statement for it. One memchr pass over the
// underscores; where the statement ends is worked out only for a match.
constexpr std::size_t kIntrospectionSearch = 4096;
bool names_pg_type(std::string_view sql) {
  sql = sql.substr(0, kIntrospectionSearch);
  const char* const begin = sql.data();
  const char* const end = begin + sql.size();
  for (const char* p = begin + 2; p + 5 <= end;) {
    p = static_cast<const char*>(std::memchr(p, '_', static_cast<std::size_t>(end - p)));
    if (p == nullptr || p + 5 > end) return false;
    const std::size_t at = static_cast<std::size_t>(p - begin) - 2;  // where "pg" would start
    if (equals_word(sql.substr(at, 7), "pg_type") && (at == 0 || !is_word_char(sql[at - 1])) &&
        (at + 7 == sql.size() || !is_word_char(sql[at + 7]))) {
      return at < statement_end(sql);
    }
    ++p;
  }
  return false;
}

// The end of the statement that starts `sql`: its ';' outside quotes and comments, or the end.
std::size_t statement_end(std::string_view sql) {
  char quote = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == ';') {
      return i;
    } else if ((c == '-' || c == '/') && i + 1 < sql.size() &&
               (sql.compare(i, 2, "--") == 0 || sql.compare(i, 2, "/*") == 0)) {
      const auto rest = skip_fast(sql.substr(i));
      i = sql.size() - rest.size() - 1;
    }
  }
  return sql.size();
}

}  // namespace

std::string_view to_string(Housekeeping kind) {
  switch (kind) {
    case Housekeeping::none:
      return "none";
    case Housekeeping::transaction_control:
      return "transaction_control";
    case Housekeeping::session_setting:
      return "session_setting";
    case Housekeeping::probe:
      return "probe";
    case Housekeeping::type_introspection:
      return "type_introspection";
  }
  return "?";
}

Housekeeping classify_statement(std::string_view sql) {
  sql = skip_fast(sql);
  if (sql.empty()) return Housekeeping::none;
  using enum Housekeeping;
  switch (to_upper(sql[0])) {
    case 'A':
      return starts_with_keyword(sql, "ABORT") ? transaction_control : none;
    case 'B':
      return starts_with_keyword(sql, "BEGIN") ? transaction_control : none;
    case 'C':
      if (starts_with_keyword(sql, "COMMIT")) return transaction_control;
      return starts_with_keyword(sql, "CLOSE") ? session_setting : none;
    case 'D':
      return starts_with_keyword(sql, "DISCARD") || starts_with_keyword(sql, "DEALLOCATE")
                 ? session_setting
                 : none;
    case 'E':
      return starts_with_keyword(sql, "END") ? transaction_control : none;
    case 'P':
      return starts_with_keyword(sql, "PREPARE") &&
                     starts_with_keyword(skip_fast(sql.substr(7)), "TRANSACTION")
                 ? transaction_control
                 : none;
    case 'R':
      if (starts_with_keyword(sql, "ROLLBACK") || starts_with_keyword(sql, "RELEASE")) {
        return transaction_control;
      }
      return starts_with_keyword(sql, "RESET") ? session_setting : none;
    case 'S':
      if (starts_with_keyword(sql, "START") || starts_with_keyword(sql, "SAVEPOINT")) {
        return transaction_control;
      }
      if (starts_with_keyword(sql, "SET") || starts_with_keyword(sql, "SHOW")) {
        return session_setting;
      }
      if (starts_with_keyword(sql, "SELECT")) {
        Lexer lex(sql.substr(6));
        if (is_probe_list(lex)) return probe;
        return names_pg_type(sql) ? type_introspection : none;
      }
      return none;
    case 'U':
      return starts_with_keyword(sql, "UNLISTEN") ? session_setting : none;
    case 'W':
      return starts_with_keyword(sql, "WITH") && names_pg_type(sql) ? type_introspection : none;
    default:
      return none;
  }
}

std::string_view first_significant_statement(std::string_view sql) {
  for (;;) {
    sql = trim_left_blanks(sql);
    if (sql.empty()) return {};
    // classify_statement() stops at the statement's end by itself, so the common case (the
    // application's statement comes first) never scans for the end.
    const auto rest = skip_fast(sql);
    if (!rest.empty() && rest[0] != ';' && !is_driver_housekeeping(sql)) {
      return sql;  // with its leading comment: it may carry the sqlcommenter tags
    }
    const auto end = statement_end(sql);
    if (end >= sql.size()) return {};
    sql.remove_prefix(end + 1);
  }
}

std::string_view statement_text(char type, std::string_view body) {
  using namespace proto::from_client;
  if (type == kParse) {
    const auto nul = body.find('\0');
    if (nul == std::string_view::npos) return {};  // the name is not even complete
    body = body.substr(nul + 1);
  } else if (type != kQuery) {
    return {};
  }
  const auto nul = body.find('\0');
  return nul == std::string_view::npos ? body : body.substr(0, nul);
}

Tags parse_sqlcomment_tags(std::string_view sql) {
  // Leading: the first comment before the statement.
  std::string_view text = trim_left_blanks(sql);
  std::string_view body;
  std::size_t end = 0;
  if (text.substr(0, 2) == "/*" && comment_body(text, body, end)) {
    auto tags = parse_tag_list(body);
    if (!tags.empty()) return tags;
  }
  // Trailing: the statement ends with a comment (before an optional ';').
  text = trim_right_blanks_and_semicolons(sql);
  if (text.size() >= 4 && text.substr(text.size() - 2) == "*/") {
    const auto open = text.rfind("/*", text.size() - 3);
    if (open != std::string_view::npos) {
      auto tags = parse_tag_list(text.substr(open + 2, text.size() - 2 - (open + 2)));
      if (!tags.empty()) return tags;
    }
  }
  return {};
}

void merge_tags(Tags& into, const Tags& more) {
  for (const auto& tag : more) {
    if (std::find(into.begin(), into.end(), tag) == into.end()) into.push_back(tag);
  }
}

namespace {
// The longest comment looked at for tags: a sqlcommenter comment with a traceparent is about
// 150 bytes; a longer comment is prose, not tags, and is not searched for.
constexpr std::size_t kLongestTagComment = 400;

// A comment "of the key='value' shape" for the cheap test made on the data path: the real
// parse happens when the tags are shown.
bool may_hold_tags(std::string_view comment) {
  return comment.size() <= kLongestTagComment && comment.find("='") != std::string_view::npos;
}
}  // namespace

TagComments find_tag_comments(std::string_view sql, bool whole) {
  TagComments out;
  const auto text = trim_left_blanks(sql);
  if (text.empty()) return out;
  if (text.substr(0, 2) == "/*") {
    const auto close = text.substr(0, kLongestTagComment).find("*/", 2);
    if (close != std::string_view::npos && may_hold_tags(text.substr(0, close + 2))) {
      out.leading = text.substr(0, close + 2);
    }
  }
  if (!whole) return out;
  const auto trimmed = trim_right_blanks_and_semicolons(text);
  if (trimmed.size() >= 4 && trimmed.substr(trimmed.size() - 2) == "*/") {
    const auto from = trimmed.size() > kLongestTagComment ? trimmed.size() - kLongestTagComment : 0;
    // The last "/*" before the closing "*/": memrchr for the slashes (a vectorised scan).
    const char* const lowest = trimmed.data() + from;
    std::size_t span = trimmed.size() - 2 - from;
    const char* open = nullptr;
    while (span > 1) {
      const auto* slash = static_cast<const char*>(::memrchr(lowest, '/', span - 1));
      if (slash == nullptr) break;
      if (slash[1] == '*') {
        open = slash;
        break;
      }
      span = static_cast<std::size_t>(slash - lowest) + 1;
    }
    if (open != nullptr) {
      const auto comment = trimmed.substr(static_cast<std::size_t>(open - trimmed.data()));
      // The leading comment may be the whole text ("/* a='b' */"): count it once.
      if (comment.data() != out.leading.data() && may_hold_tags(comment)) out.trailing = comment;
    }
  }
  return out;
}

void CommentSet::add(std::string_view comment) {
  if (comment.empty() || full_) return;
  // Already kept? Walked in place: the data path allocates nothing here.
  for (std::string_view rest(data_.get(), len_); !rest.empty();) {
    const auto nul = rest.find('\0');
    if (rest.substr(0, nul) == comment) return;
    if (nul == std::string_view::npos) break;
    rest.remove_prefix(nul + 1);
  }
  const std::size_t need = comment.size() + (len_ > 0 ? 1 : 0);
  if (len_ + need > kTagCapture) {
    full_ = true;
    return;
  }
  if (!data_) data_ = Blocks::take();
  if (len_ > 0) data_[len_++] = '\0';
  comment.copy(data_.get() + len_, comment.size());
  len_ = static_cast<std::uint16_t>(len_ + comment.size());
}

void CommentSet::clear() {
  len_ = 0;
  full_ = false;
  if (data_) Blocks::give(std::move(data_));
}

std::vector<std::string_view> CommentSet::comments() const {
  std::vector<std::string_view> out;
  std::string_view rest(data_.get(), len_);
  while (!rest.empty()) {
    const auto nul = rest.find('\0');
    out.push_back(rest.substr(0, nul));
    if (nul == std::string_view::npos) break;
    rest.remove_prefix(nul + 1);
  }
  return out;
}

Tags CommentSet::tags() const {
  Tags out;
  for (const auto comment : comments()) merge_tags(out, parse_sqlcomment_tags(comment));
  return out;
}

std::string format_tags(const Tags& tags) {
  std::string out;
  for (const auto& [key, value] : tags) {
    if (!out.empty()) out += ',';
    out += key;
    out += '=';
    out += value;
  }
  return out;
}

LeasePolicy resolve_policy(const config::Config& config, std::string_view application_name,
                           std::string_view database, std::string_view user) {
  LeasePolicy policy{
      config.leak_warn_after, config.idle_transaction_timeout,     config.idle_pinned_timeout,
      config.query_timeout,   config.reclaim_under_pressure_after, config.transaction_timeout};
  if (!database.empty()) {
    auto entry = config.databases.find(std::string(database));
    if (entry == config.databases.end()) entry = config.databases.find("*");
    if (entry != config.databases.end() && entry->second.reclaim_under_pressure_after) {
      policy.reclaim_under_pressure_after = *entry->second.reclaim_under_pressure_after;
    }
  }
  if (!user.empty()) {
    if (auto entry = config.users.find(std::string(user)); entry != config.users.end()) {
      policy.query_timeout = entry->second.query_timeout.value_or(policy.query_timeout);
      policy.idle_transaction_timeout =
          entry->second.idle_transaction_timeout.value_or(policy.idle_transaction_timeout);
      policy.transaction_timeout =
          entry->second.transaction_timeout.value_or(policy.transaction_timeout);
    }
  }
  if (const auto* app = config.find_app(application_name)) {
    policy.leak_warn_after = app->leak_warn_after.value_or(policy.leak_warn_after);
    policy.idle_transaction_timeout =
        app->idle_transaction_timeout.value_or(policy.idle_transaction_timeout);
    policy.idle_pinned_timeout = app->idle_pinned_timeout.value_or(policy.idle_pinned_timeout);
    policy.query_timeout = app->query_timeout.value_or(policy.query_timeout);
    policy.reclaim_under_pressure_after =
        app->reclaim_under_pressure_after.value_or(policy.reclaim_under_pressure_after);
  }
  if (policy.reclaim_under_pressure_after.count() > 0) {
    policy.reclaim_under_pressure_after =
        std::max(policy.reclaim_under_pressure_after, policy.leak_warn_after);
  }
  return policy;
}

std::string_view describe(LadderAction action) {
  switch (action) {
    case LadderAction::warn:
      return "warn (leak_warn_after)";
    case LadderAction::cancel_query:
      return "cancel (query_timeout)";
    case LadderAction::disconnect_ignored_cancel:
      return "disconnect (query_timeout)";
    case LadderAction::disconnect_idle_transaction:
      return "disconnect (idle_transaction_timeout)";
    case LadderAction::disconnect_idle_pinned:
      return "disconnect (idle_pinned_timeout)";
    case LadderAction::disconnect_transaction:
      return "disconnect (transaction_timeout)";
  }
  return "?";
}

LadderSteps ladder_steps(const LeaseFacts& lease, const LeasePolicy& policy) {
  LadderSteps out;
  // Kept in time order as they are added; a step added later goes after one due at the same
  // moment (the state's timeout, then transaction_timeout, then the warning).
  auto add = [&out](LadderAction action, Lease::Clock::time_point at) {
    std::size_t i = out.count++;
    for (; i > 0 && at < out.steps[i - 1].at; --i) out.steps[i] = out.steps[i - 1];
    out.steps[i] = LadderStep{action, at};
  };
  // The states exclude each other, so at most one of their timeouts applies;
  // transaction_timeout applies to a transaction whether a query runs or it sits idle (a
  // server that is not idle, as PgBouncer checks it), and the warning may come before or after.
  const bool transaction_open =
      lease.xact_start != Lease::Clock::time_point{} && lease.state != LeaseState::idle_pinned;
  switch (lease.state) {
    case LeaseState::active:
      if (policy.query_timeout.count() > 0 && lease.query_start != Lease::Clock::time_point{}) {
        // Once the cancel went out for this query, the next step is giving up on it.
        if (lease.query_cancel_sent != Lease::Clock::time_point{}) {
          add(LadderAction::disconnect_ignored_cancel, lease.query_cancel_sent + kCancelGrace);
        } else {
          add(LadderAction::cancel_query, lease.query_start + policy.query_timeout);
        }
      }
      break;
    case LeaseState::idle_in_transaction:
      if (policy.idle_transaction_timeout.count() > 0) {
        add(LadderAction::disconnect_idle_transaction,
            lease.idle_since + policy.idle_transaction_timeout);
      }
      break;
    case LeaseState::idle_pinned:
      if (lease.session_mode && policy.idle_pinned_timeout.count() > 0) {
        add(LadderAction::disconnect_idle_pinned, lease.idle_since + policy.idle_pinned_timeout);
      }
      break;
  }
  if (transaction_open && policy.transaction_timeout.count() > 0) {
    add(LadderAction::disconnect_transaction, lease.xact_start + policy.transaction_timeout);
  }
  // An active lease is never a leak.
  if (lease.state != LeaseState::active && !lease.warned && policy.leak_warn_after.count() > 0) {
    add(LadderAction::warn, lease.idle_since + policy.leak_warn_after);
  }
  return out;
}

bool is_suspected_leak(const LeaseFacts& lease, const LeasePolicy& policy,
                       Lease::Clock::time_point now) {
  return lease.state != LeaseState::active && policy.leak_warn_after.count() > 0 &&
         now - lease.idle_since > policy.leak_warn_after;
}

LeaseFacts facts_of(const LeaseInfo& lease) {
  return LeaseFacts{lease.state,      lease.session_mode,      lease.warned,    lease.query_start,
                    lease.idle_since, lease.query_cancel_sent, lease.xact_start};
}

std::string printable(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

void Lease::on_message(char type, std::string_view body, bool whole) {
  using namespace proto::from_client;
  if (type == kExecute || type == kQuery) {
    ++statements;
    if (xact_start == Clock::time_point{}) xact_start = net::turn_now();
    if (type == kExecute) return;
  }
  // The whole text, for the tags of its trailing comment. A whole Query is its text and a
  // NUL, so that one costs nothing to find, however long the statement; a Parse's text ends
  // at its NUL (memchr).
  const auto text = whole && type == kQuery && !body.empty() && body.back() == '\0'
                        ? body.substr(0, body.size() - 1)
                        : statement_text(type, body);
  if (text.empty()) return;
  last.assign(text);
  // A partial body may end inside the text: then only its leading comment is known.
  const bool text_whole = whole || text.size() < body.size();
  const auto comments = find_tag_comments(text, text_whole);
  if (!comments.leading.empty()) tag_comments.add(comments.leading);
  if (!comments.trailing.empty()) tag_comments.add(comments.trailing);
  if (have_first) return;
  const auto significant = first_significant_statement(text);
  if (significant.empty()) {
    if (first.empty()) first.assign(text);  // until an application statement comes
    return;
  }
  have_first = true;
  first.assign(significant);
  if (significant.data() != text.data()) {
    // "BEGIN; /* t */ SELECT ...": the statement's own leading comment.
    const auto own = find_tag_comments(significant, false).leading;
    if (!own.empty()) tag_comments.add(own);
  }
}

void Lease::reset() {
  held = false;
  start = xact_start = idle_since = warned_at = Clock::time_point{};
  backend_pid = 0;
  statements = 0;
  have_first = false;
  first.clear();
  last.clear();
  tag_comments.clear();
  warned = false;
  reclaimed = false;
}

void EventRing::push(LeakEvent event) {
  std::lock_guard lock(mutex_);
  if (capacity_ == 0) return;
  if (events_.size() == capacity_) events_.pop_front();
  events_.push_back(std::move(event));
}

std::vector<LeakEvent> EventRing::newest_first() const {
  std::lock_guard lock(mutex_);
  return std::vector<LeakEvent>(events_.rbegin(), events_.rend());
}

std::uint64_t LeakBook::note_suspected(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  return ++apps_[application_name].suspected;
}

void LeakBook::note_resolved(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  ++apps_[application_name].resolved;
}

proto::SessionStateMask LeakBook::note_session_state(const std::string& application_name,
                                                     proto::SessionStateMask kinds) {
  std::lock_guard lock(mutex_);
  auto& seen = apps_[application_name].session_state;
  const auto fresh = static_cast<proto::SessionStateMask>(kinds & ~seen);
  seen |= kinds;
  return fresh;
}

void LeakBook::note_action(const std::string& application_name) {
  std::lock_guard lock(mutex_);
  ++apps_[application_name].actions;
}

std::map<std::string, LeakBook::AppCounters> LeakBook::counters() const {
  std::lock_guard lock(mutex_);
  return apps_;
}

}  // namespace pgw::session
