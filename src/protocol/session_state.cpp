// Session state in transaction pooling: the statement scanner and SessionState
// (session_state.hpp).
#include "protocol/session_state.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace pgw::proto {
namespace {

// ---------------------------------------------------------------------------------------------
// Characters and words.

constexpr char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// `a` equals `lower` (lower-case ASCII), ignoring the case of `a`.
bool iequals(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (to_lower(a[i]) != lower[i]) return false;
  }
  return true;
}

// Character classes of PostgreSQL's scanner (a table: the scanner runs on every statement).
enum : std::uint8_t {
  kSpace = 1,       // [ \t\n\r\f\v]
  kIdentStart = 2,  // [A-Za-z\200-\377_]
  kDigit = 4,       // [0-9]
  kDollar = 8,      // $
};
constexpr std::array<std::uint8_t, 256> kClasses = [] {
  std::array<std::uint8_t, 256> t{};
  for (const char c : {' ', '\t', '\n', '\r', '\f', '\v'})
    t[static_cast<unsigned char>(c)] = kSpace;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = kIdentStart;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = kIdentStart;
  for (int c = 0x80; c < 256; ++c) t[c] = kIdentStart;
  t['_'] = kIdentStart;
  for (int c = '0'; c <= '9'; ++c) t[c] = kDigit;
  t['$'] = kDollar;
  return t;
}();
constexpr bool has_class(unsigned char c, std::uint8_t classes) {
  return (kClasses[c] & classes) != 0;
}
constexpr bool is_space(unsigned char c) {
  return has_class(c, kSpace);
}
constexpr bool is_digit(unsigned char c) {
  return has_class(c, kDigit);
}
constexpr bool ident_start(unsigned char c) {
  return has_class(c, kIdentStart);
}
// A dollar quote's tag: [A-Za-z\200-\377_0-9]; identifiers add '$'.
constexpr bool tag_cont(unsigned char c) {
  return has_class(c, kIdentStart | kDigit);
}
constexpr bool ident_cont(unsigned char c) {
  return has_class(c, kIdentStart | kDigit | kDollar);
}

// ---------------------------------------------------------------------------------------------
// The lexer: tokens of PostgreSQL's SQL, enough to find statement boundaries and words.

enum class Tok : std::uint8_t {
  end,     // no more tokens
  word,    // identifier or keyword
  qident,  // "quoted identifier" (or U&"...")
  string,  // '...', E'...', B'...', X'...', N'...', U&'...'
  dollar,  // $$...$$, $tag$...$tag$
  number,
  param,  // $1
  punct,  // any other single character
};

struct Token {
  Tok type = Tok::end;
  char ch = 0;                // punct: the character
  bool escapes = false;       // string: E'...' (backslash escapes)
  bool unterminated = false;  // string, qident, dollar: runs to the end of the text
  std::size_t begin = 0;
  std::size_t end = 0;
  bool is(char c) const { return type == Tok::punct && ch == c; }
  bool is_name() const { return type == Tok::word || type == Tok::qident; }
  bool is_literal() const { return (type == Tok::string || type == Tok::dollar) && !unterminated; }
};

class Lexer {
 public:
  explicit Lexer(std::string_view text) : s_(text) {}

  std::string_view text() const { return s_; }
  std::string_view text(const Token& t) const { return s_.substr(t.begin, t.end - t.begin); }
  std::string_view span(std::size_t begin, std::size_t end) const {
    return s_.substr(begin, end - begin);
  }
  bool keyword(const Token& t, std::string_view lower) const {
    return t.type == Tok::word && iequals(text(t), lower);
  }
  Token peek() const {
    Lexer copy = *this;
    return copy.next();
  }

  Token next() {
    skip();
    Token t;
    t.begin = pos_;
    const std::size_t n = s_.size();
    if (pos_ >= n) {
      t.end = pos_;
      return t;
    }
    const auto c = static_cast<unsigned char>(s_[pos_]);
    const unsigned char c1 = at(pos_ + 1);
    if (ident_start(c)) {
      const char lc = to_lower(static_cast<char>(c));
      if (c1 == '\'' && (lc == 'e' || lc == 'b' || lc == 'x' || lc == 'n')) {
        t.type = Tok::string;
        t.escapes = lc == 'e';
        pos_ = quoted(pos_ + 1, '\'', t.escapes, t.unterminated);
      } else if (lc == 'u' && c1 == '&' && (at(pos_ + 2) == '\'' || at(pos_ + 2) == '"')) {
        const char quote = static_cast<char>(at(pos_ + 2));
        t.type = quote == '"' ? Tok::qident : Tok::string;
        pos_ = quoted(pos_ + 2, quote, false, t.unterminated);
      } else {
        t.type = Tok::word;
        std::size_t i = pos_ + 1;
        while (i < n && ident_cont(static_cast<unsigned char>(s_[i]))) ++i;
        pos_ = i;
      }
    } else if (c == '"') {
      t.type = Tok::qident;
      pos_ = quoted(pos_, '"', false, t.unterminated);
    } else if (c == '\'') {
      t.type = Tok::string;
      pos_ = quoted(pos_, '\'', false, t.unterminated);
    } else if (c == '$' && is_digit(c1)) {
      t.type = Tok::param;
      std::size_t i = pos_ + 1;
      while (i < n && is_digit(static_cast<unsigned char>(s_[i]))) ++i;
      pos_ = i;
    } else if (c == '$' && (c1 == '$' || (pos_ + 1 < n && ident_start(c1)))) {
      std::size_t i = pos_ + 1;
      while (i < n && tag_cont(static_cast<unsigned char>(s_[i]))) ++i;
      if (i < n && s_[i] == '$') {
        t.type = Tok::dollar;
        const std::string_view delimiter = s_.substr(pos_, i + 1 - pos_);
        const std::size_t close = s_.find(delimiter, i + 1);
        if (close == std::string_view::npos) {
          t.unterminated = true;
          pos_ = n;
        } else {
          pos_ = close + delimiter.size();
        }
      } else {
        t.type = Tok::punct;
        t.ch = '$';
        ++pos_;
      }
    } else if (is_digit(c)) {
      t.type = Tok::number;
      std::size_t i = pos_ + 1;
      while (i < n && (tag_cont(static_cast<unsigned char>(s_[i])) || s_[i] == '.')) ++i;
      pos_ = i;
    } else {
      t.type = Tok::punct;
      t.ch = static_cast<char>(c);
      ++pos_;
    }
    t.end = pos_;
    return t;
  }

 private:
  unsigned char at(std::size_t i) const {
    return i < s_.size() ? static_cast<unsigned char>(s_[i]) : 0;
  }

  // Whitespace and comments (-- to the end of the line, nested /* */).
  void skip() {
    const std::size_t n = s_.size();
    while (pos_ < n) {
      const auto c = static_cast<unsigned char>(s_[pos_]);
      if (is_space(c)) {
        ++pos_;
      } else if (c == '-' && at(pos_ + 1) == '-') {
        pos_ += 2;
        while (pos_ < n && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
      } else if (c == '/' && at(pos_ + 1) == '*') {
        pos_ += 2;
        std::size_t depth = 1;
        while (pos_ < n && depth > 0) {
          if (s_[pos_] == '/' && at(pos_ + 1) == '*') {
            ++depth;
            pos_ += 2;
          } else if (s_[pos_] == '*' && at(pos_ + 1) == '/') {
            --depth;
            pos_ += 2;
          } else {
            ++pos_;
          }
        }
      } else {
        return;
      }
    }
  }

  // A quoted string or identifier whose opening quote is at `open`; a doubled quote stands for
  // itself, and with `escapes` a backslash escapes the next byte. Returns the end.
  std::size_t quoted(std::size_t open, char quote, bool escapes, bool& unterminated) const {
    const std::size_t n = s_.size();
    std::size_t i = open + 1;
    while (true) {
      if (escapes) {
        while (i < n && s_[i] != quote && s_[i] != '\\') ++i;
      } else {
        const std::size_t q = s_.find(quote, i);
        i = q == std::string_view::npos ? n : q;
      }
      if (i >= n) {
        unterminated = true;
        return n;
      }
      if (s_[i] == '\\') {
        i = std::min(i + 2, n);
        continue;
      }
      if (at(i + 1) == static_cast<unsigned char>(quote) && i + 1 < n) {
        i += 2;
        continue;
      }
      return i + 1;
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

// The text between the quotes of a string, quoted identifier or dollar-quoted token (no
// unescaping); the token's text for other tokens.
std::string_view inner_text(std::string_view token, Tok type) {
  if (type == Tok::dollar) {
    const std::size_t open = token.find('$', 1);
    if (open == std::string_view::npos) return {};
    const std::string_view delimiter = token.substr(0, open + 1);
    std::string_view body = token.substr(open + 1);
    if (body.size() >= delimiter.size() &&
        body.substr(body.size() - delimiter.size()) == delimiter) {
      body.remove_suffix(delimiter.size());
    }
    return body;
  }
  if (type != Tok::string && type != Tok::qident) return token;
  const char quote = type == Tok::string ? '\'' : '"';
  const std::size_t open = token.find(quote);
  if (open == std::string_view::npos) return {};
  std::string_view body = token.substr(open + 1);
  // A terminated token ends with its quote (a doubled quote inside is two of them).
  if (!body.empty() && body.back() == quote) body.remove_suffix(1);
  return body;
}

// Appends a quoted token's content with doubled quotes (and, for E'', backslashes) undone.
void append_unquoted(std::string& out, std::string_view token, const Token& t, bool lower) {
  const std::string_view body = inner_text(token, t.type);
  const char quote = t.type == Tok::qident ? '"' : '\'';
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (t.type != Tok::dollar) {
      if (c == quote && i + 1 < body.size() && body[i + 1] == quote) {
        ++i;
      } else if (t.escapes && c == '\\' && i + 1 < body.size()) {
        c = body[++i];
      }
    }
    out += lower ? to_lower(c) : c;
  }
}

// A name of session_state.hpp's kinds, unquoted and compared case-insensitively with `lower`
// ("role", 'Role', "ROLE" all name the role parameter).
bool names(std::string_view name, std::string_view lower) {
  if (name.size() >= 2 && (name.front() == '"' || name.front() == '\'') &&
      name.back() == name.front()) {
    name = name.substr(1, name.size() - 2);
  }
  return iequals(name, lower);
}

bool is_role_parameter(std::string_view name) {
  return names(name, "role") || names(name, "session_authorization");
}

// ---------------------------------------------------------------------------------------------
// Statements.

// The first word of a statement, for the cheap dispatch.
enum class First : std::uint8_t {
  other,
  set,
  reset,
  listen,
  unlisten,
  create,
  drop,
  discard,
  prepare,
  deallocate,
  declare,
  close,
  load,
  rollback,
  select,
  with,
};

First classify(std::string_view w) {
  switch (w.size()) {
    case 3:
      return iequals(w, "set") ? First::set : First::other;
    case 4:
      if (iequals(w, "drop")) return First::drop;
      if (iequals(w, "load")) return First::load;
      if (iequals(w, "with")) return First::with;
      return First::other;
    case 5:
      if (iequals(w, "reset")) return First::reset;
      if (iequals(w, "close")) return First::close;
      if (iequals(w, "abort")) return First::rollback;
      return First::other;
    case 6:
      if (iequals(w, "select")) return First::select;
      if (iequals(w, "create")) return First::create;
      if (iequals(w, "listen")) return First::listen;
      return First::other;
    case 7:
      if (iequals(w, "discard")) return First::discard;
      if (iequals(w, "prepare")) return First::prepare;
      if (iequals(w, "declare")) return First::declare;
      return First::other;
    case 8:
      if (iequals(w, "unlisten")) return First::unlisten;
      if (iequals(w, "rollback")) return First::rollback;
      return First::other;
    case 10:
      return iequals(w, "deallocate") ? First::deallocate : First::other;
    default:
      return First::other;
  }
}

// The functions looked for anywhere in a statement.
enum class Function : std::uint8_t { none, lock, unlock, unlock_all, set_config };

// Could `name` be one of the functions (cheap: this runs on every identifier)?
constexpr bool maybe_function(std::string_view name) {
  if (name.size() < 10 || name.size() > 27) return false;
  const char c0 = to_lower(name[0]);
  return c0 == 'p' || c0 == 's';
}

Function function_named(std::string_view name, bool exact_case) {
  if (!maybe_function(name)) return Function::none;
  const char c0 = exact_case ? name[0] : to_lower(name[0]);
  if (c0 != 'p' && c0 != 's') return Function::none;
  const auto is = [&](std::string_view lower) {
    return exact_case ? name == lower : iequals(name, lower);
  };
  if (c0 == 's') return is("set_config") ? Function::set_config : Function::none;
  if (is("pg_advisory_lock") || is("pg_advisory_lock_shared") || is("pg_try_advisory_lock") ||
      is("pg_try_advisory_lock_shared")) {
    return Function::lock;
  }
  if (is("pg_advisory_unlock") || is("pg_advisory_unlock_shared")) return Function::unlock;
  if (is("pg_advisory_unlock_all")) return Function::unlock_all;
  return Function::none;
}

Function function_of(const Lexer& lexer, const Token& t) {
  if (t.type == Tok::word) return function_named(lexer.text(t), false);
  if (t.type == Tok::qident && !t.unterminated && lexer.text(t).front() == '"') {
    const std::string_view quoted = lexer.text(t);
    return function_named(quoted.substr(1, quoted.size() - 2), true);
  }
  return Function::none;
}

// The effects of one statement go to the scan.
class Emitter {
 public:
  Emitter(SessionStateScan& scan, std::string_view statement) : scan_(scan), stmt_(statement) {}
  void add(SessionStateKind kind, SessionStateOp op, std::string_view name = {},
           bool replayable = false, std::string_view value = {}) {
    if (scan_.count >= SessionStateScan::kMaxEffects) {
      scan_.overflow = true;
      return;
    }
    auto& e = scan_.effects[scan_.count++];
    e.kind = kind;
    e.op = op;
    e.replayable = op == SessionStateOp::create && replayable;
    e.name = name;
    e.statement = stmt_;
    e.value = value;
  }
  void parameter(std::string_view name, SessionStateOp op, bool replayable = true) {
    add(is_role_parameter(name) ? SessionStateKind::role : SessionStateKind::parameter, op, name,
        replayable);
  }

 private:
  SessionStateScan& scan_;
  std::string_view stmt_;
};

using Kind = SessionStateKind;
using Op = SessionStateOp;

// A name, qualified or not ("a", "s"."T", pg_temp.x), starting with `first`: its text as
// written, or empty when `first` is not a name.
std::string_view qualified_name(Lexer& c, const Token& first) {
  if (!first.is_name()) return {};
  std::size_t end = first.end;
  while (true) {
    Lexer look = c;
    if (!look.next().is('.')) break;
    const Token part = look.next();
    if (!part.is_name()) break;
    end = part.end;
    c = look;
  }
  return c.span(first.begin, end);
}

bool at_end(const Lexer& c) {
  return c.peek().type == Tok::end;
}

bool is_none(const Lexer& c, const Token& t) {
  return c.keyword(t, "none") || (t.type == Tok::string && c.text(t) == "'none'");
}

// A name whose schema is pg_temp.
bool in_pg_temp(std::string_view name) {
  Lexer c(name);
  const Token schema = c.next();
  const bool temp = c.keyword(schema, "pg_temp") ||
                    (schema.type == Tok::qident && c.text(schema) == "\"pg_temp\"");
  return temp && c.next().is('.');
}

// SET [SESSION | LOCAL] ...
void scan_set(Lexer& c, Emitter& out) {
  Token t = c.next();
  if (c.keyword(t, "local")) return;  // transaction-local
  const auto is_assign = [&](const Token& x) { return x.is('=') || c.keyword(x, "to"); };
  bool session = false;
  if (c.keyword(t, "session") && !is_assign(c.peek())) {
    session = true;
    t = c.next();
  }
  Token n = c.peek();
  if (!is_assign(n) && t.type == Tok::word) {
    if (session && c.keyword(t, "characteristics")) {
      out.parameter("transaction_characteristics", Op::create);
      return;
    }
    bool authorization = false;
    if (session && c.keyword(t, "authorization")) {
      authorization = true;
    } else if (c.keyword(t, "session") && c.keyword(n, "authorization")) {
      c.next();
      authorization = true;
    }
    if (authorization) {
      const bool release = c.keyword(c.next(), "default");
      out.add(Kind::role, release ? Op::release : Op::create, "session_authorization", true);
      return;
    }
    if (c.keyword(t, "transaction") || c.keyword(t, "constraints")) return;
    if (c.keyword(t, "role")) {
      out.add(Kind::role, is_none(c, n) ? Op::release : Op::create, "role", true);
      return;
    }
    if (c.keyword(t, "time") && c.keyword(n, "zone")) {
      c.next();
      const Token v = c.next();
      const bool release = c.keyword(v, "default") || c.keyword(v, "local");
      out.parameter("timezone", release ? Op::release : Op::create);
      return;
    }
    if (c.keyword(t, "names")) {
      const bool release = n.type == Tok::end || c.keyword(n, "default");
      out.parameter("client_encoding", release ? Op::release : Op::create);
      return;
    }
    if (c.keyword(t, "schema")) {
      out.parameter("search_path", Op::create);
      return;
    }
    if (c.keyword(t, "xml") && c.keyword(n, "option")) {
      out.parameter("xmloption", Op::create);
      return;
    }
  }
  // SET name {TO | =} value, SET name FROM CURRENT.
  const std::string_view name = qualified_name(c, t);
  if (name.empty()) return;  // not SET syntax: PostgreSQL refuses it
  const Token op = c.next();
  if (is_assign(op)) {
    const Token v = c.next();
    if (v.type == Tok::end) return;  // a syntax error
    const bool last = at_end(c);
    if (last && (c.keyword(v, "default") || (names(name, "role") && is_none(c, v)))) {
      out.parameter(name, Op::release);
    } else {
      out.parameter(name, Op::create, true);
    }
  } else {
    // FROM CURRENT: the value is the one of the function being run (or anything unknown).
    out.parameter(name, Op::create, false);
  }
}

// RESET ...
void scan_reset(Lexer& c, Emitter& out) {
  const Token t = c.next();
  const Token n = c.peek();
  if (c.keyword(t, "all")) {
    out.add(Kind::parameter, Op::release_all);
  } else if (c.keyword(t, "time") && c.keyword(n, "zone")) {
    out.parameter("timezone", Op::release);
  } else if (c.keyword(t, "role") && n.type == Tok::end) {
    out.add(Kind::role, Op::release, "role");
  } else if (c.keyword(t, "session") && c.keyword(n, "authorization")) {
    out.add(Kind::role, Op::release, "session_authorization");
  } else if (c.keyword(t, "transaction") && c.keyword(n, "isolation")) {
    // transaction-local
  } else if (const std::string_view name = qualified_name(c, t); !name.empty()) {
    out.parameter(name, Op::release);
  }
}

// CREATE [OR REPLACE] [{GLOBAL | LOCAL} {TEMP | TEMPORARY}] [UNLOGGED] [RECURSIVE]
// {TABLE | SEQUENCE | VIEW} [IF NOT EXISTS] name ...
void scan_create(Lexer& c, Emitter& out) {
  Token t = c.next();
  if (c.keyword(t, "or") && c.keyword(c.peek(), "replace")) {
    c.next();
    t = c.next();
  }
  bool temp = false;
  if (c.keyword(t, "global") || c.keyword(t, "local")) {
    t = c.next();
    if (!c.keyword(t, "temp") && !c.keyword(t, "temporary")) return;
  }
  if (c.keyword(t, "temp") || c.keyword(t, "temporary")) {
    temp = true;
    t = c.next();
  }
  if (c.keyword(t, "unlogged")) t = c.next();
  if (c.keyword(t, "recursive")) t = c.next();
  const bool relation = c.keyword(t, "table") || c.keyword(t, "sequence") || c.keyword(t, "view");
  // A function or procedure in pg_temp is session state too (DISCARD TEMP drops it).
  const bool routine = !temp && (c.keyword(t, "function") || c.keyword(t, "procedure"));
  if (!relation && !routine) return;
  t = c.next();
  if (c.keyword(t, "if") && c.keyword(c.peek(), "not")) {
    c.next();
    c.next();  // EXISTS
    t = c.next();
  }
  const std::string_view name = qualified_name(c, t);
  if (name.empty() || (!temp && !in_pg_temp(name))) return;
  if (relation) {
    // ON COMMIT DROP: gone with its transaction.
    bool on = false;
    bool commit = false;
    for (Token x = c.next(); x.type != Tok::end; x = c.next()) {
      if (commit && c.keyword(x, "drop")) return;
      commit = on && c.keyword(x, "commit");
      on = c.keyword(x, "on");
    }
  }
  out.add(Kind::temp_table, Op::create, name);
}

// DROP {TABLE | SEQUENCE | VIEW} [IF EXISTS] name [, ...] [CASCADE | RESTRICT]
void scan_drop(Lexer& c, Emitter& out) {
  Token t = c.next();
  if (!c.keyword(t, "table") && !c.keyword(t, "sequence") && !c.keyword(t, "view")) return;
  t = c.next();
  if (c.keyword(t, "if") && c.keyword(c.peek(), "exists")) {
    c.next();
    t = c.next();
  }
  while (true) {
    const std::string_view name = qualified_name(c, t);
    if (name.empty()) return;
    out.add(Kind::temp_table, Op::release, name);
    if (!c.next().is(',')) return;
    t = c.next();
  }
}

// DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR
// [{WITH | WITHOUT} HOLD] FOR query
void scan_declare(Lexer& c, Emitter& out) {
  const Token name = c.next();
  if (!name.is_name()) return;
  for (Token t = c.next(); t.type != Tok::end && !c.keyword(t, "for"); t = c.next()) {
    if (c.keyword(t, "with") && c.keyword(c.peek(), "hold")) {
      out.add(Kind::hold_cursor, Op::create, c.text(name));
      return;
    }
  }
}

// SELECT ... INTO [{GLOBAL | LOCAL}] {TEMP | TEMPORARY} [TABLE] name (WITH ... SELECT too).
void scan_select_into(Lexer& c, Emitter& out) {
  int depth = 0;
  for (Token t = c.next(); t.type != Tok::end; t = c.next()) {
    if (t.is('(')) {
      ++depth;
    } else if (t.is(')')) {
      depth = std::max(0, depth - 1);
    } else if (depth == 0 && c.keyword(t, "into")) {
      Token x = c.next();
      if (c.keyword(x, "global") || c.keyword(x, "local")) x = c.next();
      if (!c.keyword(x, "temp") && !c.keyword(x, "temporary")) continue;
      x = c.next();
      if (c.keyword(x, "unlogged")) x = c.next();
      if (c.keyword(x, "table")) x = c.next();
      if (const std::string_view name = qualified_name(c, x); !name.empty()) {
        out.add(Kind::temp_table, Op::create, name);
      }
      return;
    }
  }
}

void scan_statement(First first, Lexer& c, Emitter& out) {
  switch (first) {
    case First::set:
      scan_set(c, out);
      return;
    case First::reset:
      scan_reset(c, out);
      return;
    case First::listen:
      if (const Token t = c.next(); t.is_name()) out.add(Kind::listen, Op::create, c.text(t));
      return;
    case First::unlisten:
      if (const Token t = c.next(); t.is('*')) {
        out.add(Kind::listen, Op::release_all);
      } else if (t.is_name()) {
        out.add(Kind::listen, Op::release, c.text(t));
      }
      return;
    case First::create:
      scan_create(c, out);
      return;
    case First::drop:
      scan_drop(c, out);
      return;
    case First::discard: {
      const Token t = c.next();
      if (c.keyword(t, "all")) {
        out.add(Kind::parameter, Op::discard_all);
      } else if (c.keyword(t, "temp") || c.keyword(t, "temporary")) {
        out.add(Kind::temp_table, Op::release_all);
      }
      return;
    }
    case First::prepare: {
      const Token t = c.next();
      // PREPARE TRANSACTION 'gid' is two-phase commit.
      if (c.keyword(t, "transaction") && c.peek().type == Tok::string) return;
      if (t.is_name()) out.add(Kind::sql_prepare, Op::create, c.text(t));
      return;
    }
    case First::deallocate: {
      Token t = c.next();
      if (c.keyword(t, "prepare") && !at_end(c)) t = c.next();
      if (c.keyword(t, "all")) {
        out.add(Kind::sql_prepare, Op::release_all);
      } else if (t.is_name()) {
        out.add(Kind::sql_prepare, Op::release, c.text(t));
      }
      return;
    }
    case First::declare:
      scan_declare(c, out);
      return;
    case First::close: {
      const Token t = c.next();
      if (c.keyword(t, "all")) {
        out.add(Kind::hold_cursor, Op::release_all);
      } else if (t.is_name()) {
        out.add(Kind::hold_cursor, Op::release, c.text(t));
      }
      return;
    }
    case First::load: {
      const Token t = c.next();
      out.add(Kind::load, Op::create, t.type == Tok::end ? std::string_view{} : c.text(t));
      return;
    }
    case First::rollback: {
      Token t = c.next();
      if (c.keyword(t, "work") || c.keyword(t, "transaction")) t = c.next();
      if (c.keyword(t, "to") || c.keyword(t, "prepared")) return;  // savepoint, two-phase
      out.add(Kind::parameter, Op::rollback);
      return;
    }
    case First::select:
    case First::with:
      scan_select_into(c, out);
      return;
    case First::other:
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Function calls.

enum class Truth : std::uint8_t { unknown, no, yes };

// PostgreSQL's parse_bool() of a literal: a prefix of true/false/yes/no, on/off, 1/0.
Truth truth_of(std::string_view text) {
  while (!text.empty() && is_space(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && is_space(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (text.empty()) return Truth::unknown;
  const auto prefix_of = [&](std::string_view word, std::size_t min) {
    return text.size() >= min && text.size() <= word.size() &&
           iequals(text, word.substr(0, text.size()));
  };
  if (prefix_of("true", 1) || prefix_of("yes", 1) || iequals(text, "on") || text == "1") {
    return Truth::yes;
  }
  if (prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || text == "0") {
    return Truth::no;
  }
  return Truth::unknown;
}

struct Argument {
  Token first;
  int tokens = 0;
  bool literal() const { return tokens == 1 && first.is_literal(); }
};

Truth truth_of(const Lexer& c, const Argument& a) {
  if (a.tokens != 1) return Truth::unknown;
  const Token& t = a.first;
  if (t.type == Tok::word) {
    if (c.keyword(t, "true")) return Truth::yes;
    if (c.keyword(t, "false")) return Truth::no;
    return Truth::unknown;
  }
  if (t.type == Tok::number) {
    if (c.text(t) == "1") return Truth::yes;
    if (c.text(t) == "0") return Truth::no;
    return Truth::unknown;
  }
  if (!t.is_literal() || t.escapes) return Truth::unknown;
  return truth_of(inner_text(c.text(t), t.type));
}

// set_config(name, value, is_local): `c` is just past its '('.
void scan_set_config(Lexer c, Emitter& out) {
  Argument args[3];
  int count = 0;
  bool closed = false;
  int depth = 0;
  Argument current;
  for (Token t = c.next(); t.type != Tok::end; t = c.next()) {
    if (depth == 0 && (t.is(')') || t.is(','))) {
      if (count < 3) args[count] = current;
      ++count;
      current = Argument{};
      if (t.is(')')) {
        closed = true;
        break;
      }
      continue;
    }
    if (t.is('(')) ++depth;
    if (t.is(')')) --depth;
    if (current.tokens++ == 0) current.first = t;
  }
  const std::string_view name = args[0].literal() ? c.text(args[0].first) : std::string_view{};
  if (!closed || count != 3) {
    out.parameter(name, Op::create, false);
    return;
  }
  const Truth local = truth_of(c, args[2]);
  if (local == Truth::yes) return;  // transaction-local
  const bool replayable = local == Truth::no && args[0].literal() && args[1].literal();
  const Kind kind = is_role_parameter(name) ? Kind::role : Kind::parameter;
  out.add(kind, Op::create, name, replayable,
          args[0].literal() && args[1].literal() ? c.text(args[1].first) : std::string_view{});
}

bool is_pg_catalog(const Lexer& c, const Token& t) {
  return c.keyword(t, "pg_catalog") || (t.type == Tok::qident && c.text(t) == "\"pg_catalog\"");
}

void scan_calls(std::string_view statement, Emitter& out) {
  Lexer c(statement);
  Token before;  // the two tokens before t
  Token previous;
  for (Token t = c.next(); t.type != Tok::end; before = previous, previous = t, t = c.next()) {
    const Function function = function_of(c, t);
    if (function == Function::none) continue;
    if (previous.is('.') && !is_pg_catalog(c, before)) continue;  // another schema's function
    Lexer look = c;
    if (!look.next().is('(')) continue;
    switch (function) {
      case Function::lock:
        out.add(Kind::advisory_lock, Op::create);
        break;
      case Function::unlock:
        out.add(Kind::advisory_lock, Op::release);
        break;
      case Function::unlock_all:
        out.add(Kind::advisory_lock, Op::release_all);
        break;
      case Function::set_config:
        scan_set_config(look, out);
        break;
      case Function::none:
        break;
    }
  }
}

// CREATE [OR REPLACE] {FUNCTION | PROCEDURE}: a BEGIN ATOMIC ... END body holds ';' (the way
// psql finds it).
class RoutineBody {
 public:
  void word(const Lexer& c, const Token& t, int parens) {
    if (words_ < 4) {
      const std::size_t i = words_++;
      if (i == 1) {
        routine_ = c.keyword(t, "function") || c.keyword(t, "procedure");
        or_replace_ = c.keyword(t, "or");
      } else if (i == 2) {
        or_replace_ = or_replace_ && c.keyword(t, "replace");
      } else if (i == 3 && or_replace_) {
        routine_ = c.keyword(t, "function") || c.keyword(t, "procedure");
      }
      return;
    }
    if (!routine_ || parens != 0) return;
    if (c.keyword(t, "begin")) {
      ++depth_;
    } else if (c.keyword(t, "case")) {
      if (depth_ > 0) ++depth_;
    } else if (c.keyword(t, "end")) {
      if (depth_ > 0) --depth_;
    }
  }
  bool inside() const { return depth_ > 0; }

 private:
  std::size_t words_ = 1;  // CREATE was the first
  bool routine_ = false;
  bool or_replace_ = false;
  std::size_t depth_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names.

std::string_view to_string(SessionStateMode mode) {
  switch (mode) {
    case SessionStateMode::track:
      return "track";
    case SessionStateMode::pin:
      return "pin";
    case SessionStateMode::reject:
      return "reject";
    case SessionStateMode::allow:
      return "allow";
  }
  return "?";
}

bool parse_session_state_mode(std::string_view text, SessionStateMode& out) {
  for (const auto mode : {SessionStateMode::track, SessionStateMode::pin, SessionStateMode::reject,
                          SessionStateMode::allow}) {
    if (iequals(text, to_string(mode))) {
      out = mode;
      return true;
    }
  }
  return false;
}

std::string_view to_string(SessionStateKind kind) {
  switch (kind) {
    case SessionStateKind::parameter:
      return "parameter";
    case SessionStateKind::role:
      return "role";
    case SessionStateKind::advisory_lock:
      return "advisory_lock";
    case SessionStateKind::listen:
      return "listen";
    case SessionStateKind::temp_table:
      return "temp_table";
    case SessionStateKind::sql_prepare:
      return "sql_prepare";
    case SessionStateKind::hold_cursor:
      return "hold_cursor";
    case SessionStateKind::load:
      return "load";
  }
  return "?";
}

std::string_view describe(SessionStateKind kind) {
  switch (kind) {
    case SessionStateKind::parameter:
      return "session-level SET";
    case SessionStateKind::role:
      return "SET ROLE";
    case SessionStateKind::advisory_lock:
      return "session advisory locks";
    case SessionStateKind::listen:
      return "LISTEN";
    case SessionStateKind::temp_table:
      return "temporary tables";
    case SessionStateKind::sql_prepare:
      return "SQL PREPARE";
    case SessionStateKind::hold_cursor:
      return "WITH HOLD cursors";
    case SessionStateKind::load:
      return "LOAD";
  }
  return "?";
}

std::string to_string(SessionStateMask kinds) {
  std::string out;
  for (int i = 0; i < kSessionStateKinds; ++i) {
    const auto kind = static_cast<SessionStateKind>(i);
    if ((kinds & mask_of(kind)) == 0) continue;
    if (!out.empty()) out += ',';
    out += to_string(kind);
  }
  return out;
}

std::string normalize_parameter_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  Lexer c(name);
  for (Token t = c.next(); t.type != Tok::end; t = c.next()) {
    if (t.type == Tok::string || t.type == Tok::qident || t.type == Tok::dollar) {
      append_unquoted(out, c.text(t), t, true);
    } else {
      for (const char ch : c.text(t)) out += to_lower(ch);
    }
  }
  return out;
}

std::string normalize_identifier(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  Lexer c(name);
  for (Token t = c.next(); t.type != Tok::end; t = c.next()) {
    if (t.type == Tok::string || t.type == Tok::qident || t.type == Tok::dollar) {
      append_unquoted(out, c.text(t), t, false);
    } else {
      for (const char ch : c.text(t)) out += to_lower(ch);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The scan.

bool SessionStateScan::any_state() const {
  if (overflow) return true;
  return std::any_of(effects.begin(), effects.begin() + count,
                     [](const SessionStateEffect& e) { return e.op != SessionStateOp::rollback; });
}

bool SessionStateScan::creates_state() const {
  if (overflow) return true;
  return std::any_of(effects.begin(), effects.begin() + count,
                     [](const SessionStateEffect& e) { return e.op == SessionStateOp::create; });
}

namespace {

char lower_ascii(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// `word` (lower case) at `at` in `text`, compared without case.
bool word_at(std::string_view text, std::size_t at, std::string_view word) {
  if (at + word.size() > text.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (lower_ascii(text[at + i]) != word[i]) return false;
  }
  return true;
}

}  // namespace

// The bytes may_change_session_state() stops at.
constexpr auto kShortcutByte = [] {
  std::array<bool, 256> table{};
  for (unsigned char c : std::string_view(";\0vV_oO", 7)) table[c] = true;
  return table;
}();

bool may_change_session_state(std::string_view sql) {
  std::size_t i = 0;
  while (i < sql.size() && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r')) {
    ++i;
  }
  const std::size_t word_start = i;
  while (i < sql.size() && ((sql[i] >= 'a' && sql[i] <= 'z') || (sql[i] >= 'A' && sql[i] <= 'Z'))) {
    ++i;
  }
  const std::string_view first = sql.substr(word_start, i - word_start);
  auto is = [&](std::string_view word) {
    return first.size() == word.size() && word_at(sql, word_start, word);
  };
  const bool selects = is("select") || is("with");
  if (!selects && !is("insert") && !is("update") && !is("delete") && !is("values")) return true;
  for (; i < sql.size(); ++i) {
    const char c = sql[i];
    if (!kShortcutByte[static_cast<unsigned char>(c)]) continue;  // most bytes
    if (c == ';') {
      // Another statement behind this one: the scan decides.
      for (std::size_t j = i + 1; j < sql.size(); ++j) {
        if (sql[j] != ' ' && sql[j] != '\t' && sql[j] != '\n' && sql[j] != '\r') return true;
      }
      return false;
    }
    if (c == '\0') return true;  // the scan treats NUL bytes as it sees fit
    // pg_advisory_*, pg_try_advisory_*; set_config; SELECT ... INTO (a table, maybe TEMP).
    if ((c == 'v' || c == 'V') && i >= 2 && word_at(sql, i - 2, "advisory")) return true;
    if (c == '_' && i >= 3 && word_at(sql, i - 3, "set_config")) return true;
    if ((c == 'o' || c == 'O') && selects && i >= 3 && word_at(sql, i - 3, "into")) return true;
  }
  return false;
}

SessionStateScan scan_session_state(std::string_view sql, bool complete) {
  SessionStateScan scan;
  Lexer lexer(sql);
  while (true) {
    const Token first = lexer.next();
    if (first.type == Tok::end) break;
    if (first.is(';')) continue;  // an empty statement
    const First kind = first.type == Tok::word ? classify(lexer.text(first)) : First::other;
    const bool selects = kind == First::select || kind == First::with;
    std::size_t end = first.end;
    bool unterminated = first.unterminated;
    bool calls = first.type == Tok::qident && function_of(lexer, first) != Function::none;
    bool into = false;
    bool terminated = false;
    int parens = 0;
    RoutineBody body;
    // The statement's end: one pass, no allocation.
    for (Token t = lexer.next(); t.type != Tok::end; t = lexer.next()) {
      if (t.type == Tok::punct) {
        if (t.ch == ';' && parens == 0 && !body.inside()) {
          terminated = true;
          break;
        }
        if (t.ch == '(') ++parens;
        if (t.ch == ')' && parens > 0) --parens;
      } else if (t.type == Tok::word) {
        if (!calls && maybe_function(lexer.text(t)) && function_of(lexer, t) != Function::none) {
          calls = true;
        }
        if (selects && !into && t.end - t.begin == 4 && iequals(lexer.text(t), "into")) into = true;
        if (kind == First::create) body.word(lexer, t, parens);
      } else if (t.type == Tok::qident) {
        if (!calls && function_of(lexer, t) != Function::none) calls = true;
      }
      unterminated = unterminated || t.unterminated;
      end = t.end;
    }
    if (kind == First::other && !calls) continue;  // the common case
    if (selects && !into && !calls) continue;

    const std::string_view statement = lexer.span(first.begin, end);
    const std::size_t from = scan.count;
    Emitter out(scan, statement);
    if (kind != First::other && (!selects || into)) {
      Lexer c(statement);
      c.next();  // the first word
      scan_statement(kind, c, out);
    }
    if (calls) scan_calls(statement, out);
    // A statement cut off where the text ends, or one PostgreSQL cannot run as written, is
    // not re-created from its text.
    if ((!terminated && !complete) || unterminated ||
        statement.find('\0') != std::string_view::npos) {
      for (std::size_t i = from; i < scan.count; ++i) {
        auto& e = scan.effects[i];
        if (e.kind == Kind::parameter || e.kind == Kind::role) e.replayable = false;
      }
    }
  }
  return scan;
}

// ---------------------------------------------------------------------------------------------
// SessionState.

namespace {

std::string truncated(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return std::string(text);
  std::size_t cut = limit;
  // Not inside a UTF-8 sequence.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut));
}

template <typename T>
void erase_named(std::vector<T>& items, std::string_view name) {
  std::erase_if(items, [&](const T& item) {
    if constexpr (std::is_same_v<T, std::string>) {
      return item == name;
    } else {
      return item.name == name;
    }
  });
}

void add_unique(std::vector<std::string>& items, std::string name) {
  if (std::find(items.begin(), items.end(), name) == items.end()) items.push_back(std::move(name));
}

bool is_parameter_kind(SessionStateKind kind) {
  return kind == SessionStateKind::parameter || kind == SessionStateKind::role;
}

}  // namespace

void SessionState::on_statement(const SessionStateScan& scan, int ready_owed,
                                Clock::time_point now) {
  if (mode_ == SessionStateMode::allow) return;
  for (const auto& effect : scan.list()) {
    if (effect.kind == Kind::advisory_lock && effect.op == Op::create) {
      // A session lock is held from now on, whatever happens to its transaction.
      const bool was_empty = held() == 0;
      if (advisory_locks_ == 0) {
        origin(Kind::advisory_lock) = truncated(effect.statement, kFirstStatementLimit);
      }
      ++advisory_locks_;
      for (auto& p : pending_) ++p.later_locks;
      if (was_empty) {
        since_ = now;
        first_statement_ = truncated(effect.statement, kFirstStatementLimit);
      }
      continue;
    }
    Pending p;
    p.kind = effect.kind;
    p.op = effect.op;
    p.replayable = effect.replayable && effect.op == Op::create && is_parameter_kind(effect.kind);
    p.ready_ahead = std::max(ready_owed, 0);
    if (is_parameter_kind(effect.kind)) {
      p.name = normalize_parameter_name(effect.name);
    } else {
      p.name = normalize_identifier(effect.name);
      if (effect.kind == Kind::temp_table && p.name.starts_with("pg_temp.")) {
        p.name.erase(0, 8);  // pg_temp.x is x
      }
    }
    if (p.replayable) {
      if (!effect.value.empty()) {
        p.replay = "SELECT pg_catalog.set_config(";
        p.replay.append(effect.name).append(", ").append(effect.value).append(", false)");
      } else {
        p.replay = std::string(effect.statement);
      }
    }
    // The same effect again in the same transaction (SET x = 1 in a loop) is one entry: both
    // commit or are voided together.
    if (!pending_.empty() && p.ready_ahead == 0) {
      Pending& last = pending_.back();
      if (last.ready_ahead <= 0 && !last.failed && last.kind == p.kind && last.op == p.op &&
          last.op != Op::rollback && last.kind != Kind::advisory_lock &&
          last.replayable == p.replayable && last.name == p.name && last.replay == p.replay) {
        last.ready_ahead = 0;
        continue;
      }
    }
    p.statement = truncated(effect.statement, kFirstStatementLimit);
    p.at = now;
    pending_.push_back(std::move(p));
  }
}

void SessionState::on_error() {
  for (auto& p : pending_) {
    if (p.ready_ahead <= 0) p.failed = true;
  }
}

SessionStateMask SessionState::on_ready(char transaction_status, Clock::time_point now) {
  (void)now;
  if (!pending_.empty()) {
    // A ROLLBACK among the effects settling now voids those before it (its transaction's).
    std::size_t voided = 0;
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      if (pending_[i].ready_ahead <= 0 && pending_[i].op == Op::rollback) voided = i + 1;
    }
    std::size_t kept = 0;
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      Pending& p = pending_[i];
      bool keep = false;
      if (p.ready_ahead > 0) {
        --p.ready_ahead;
        keep = true;
      } else if (p.kind == Kind::advisory_lock) {
        // Unlocking is not transactional either: done once its request succeeded.
        if (!p.failed) apply(p);
      } else if (i < voided) {
        // rolled back (or the ROLLBACK itself)
      } else if (transaction_status == 'I') {
        if (!p.failed) apply(p);
      } else {
        if (transaction_status == 'E') p.failed = true;
        p.ready_ahead = -1;  // waits for its transaction's end
        keep = true;
      }
      if (keep) {
        if (kept != i) pending_[kept] = std::move(p);
        ++kept;
      }
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(kept), pending_.end());
  }
  const SessionStateMask now_held = held();
  const SessionStateMask added = now_held & static_cast<SessionStateMask>(~reported_);
  reported_ = now_held;
  return added;
}

void SessionState::apply(const Pending& p) {
  const SessionStateMask before = held();
  bool parameters_changed = false;
  switch (p.op) {
    case Op::create:
      switch (p.kind) {
        case Kind::parameter:
        case Kind::role:
          erase_named(parameters_, p.name);
          erase_named(unreplayable_parameters_, p.name);
          if (p.replayable) {
            parameters_.push_back(Parameter{p.name, p.replay, p.kind});
          } else {
            unreplayable_parameters_.push_back(Parameter{p.name, {}, p.kind});
          }
          parameters_changed = true;
          break;
        case Kind::advisory_lock:
          ++advisory_locks_;  // (counted by on_statement; not reached)
          break;
        case Kind::listen:
          add_unique(channels_, p.name);
          break;
        case Kind::temp_table:
          add_unique(temp_tables_, p.name);
          break;
        case Kind::sql_prepare:
          add_unique(sql_statements_, p.name);
          break;
        case Kind::hold_cursor:
          add_unique(cursors_, p.name);
          break;
        case Kind::load:
          loaded_ = true;
          break;
      }
      break;
    case Op::release:
      switch (p.kind) {
        case Kind::parameter:
        case Kind::role:
          erase_named(parameters_, p.name);
          erase_named(unreplayable_parameters_, p.name);
          parameters_changed = true;
          break;
        case Kind::advisory_lock:
          advisory_locks_ = std::min(advisory_locks_, std::max(p.later_locks, advisory_locks_ - 1));
          break;
        case Kind::listen:
          erase_named(channels_, p.name);
          break;
        case Kind::temp_table:
          erase_named(temp_tables_, p.name);
          break;
        case Kind::sql_prepare:
          erase_named(sql_statements_, p.name);
          break;
        case Kind::hold_cursor:
          erase_named(cursors_, p.name);
          break;
        case Kind::load:
          break;
      }
      break;
    case Op::release_all:
      switch (p.kind) {
        case Kind::parameter:
        case Kind::role:
          std::erase_if(parameters_, [&](const Parameter& x) { return x.kind == p.kind; });
          std::erase_if(unreplayable_parameters_,
                        [&](const Parameter& x) { return x.kind == p.kind; });
          parameters_changed = true;
          break;
        case Kind::advisory_lock:
          advisory_locks_ = std::min(advisory_locks_, p.later_locks);
          break;
        case Kind::listen:
          channels_.clear();
          break;
        case Kind::temp_table:
          temp_tables_.clear();
          break;
        case Kind::sql_prepare:
          sql_statements_.clear();
          break;
        case Kind::hold_cursor:
          cursors_.clear();
          break;
        case Kind::load:
          break;
      }
      break;
    case Op::discard_all:
      parameters_.clear();
      unreplayable_parameters_.clear();
      parameters_changed = true;
      advisory_locks_ = std::min(advisory_locks_, p.later_locks);
      channels_.clear();
      temp_tables_.clear();
      sql_statements_.clear();
      cursors_.clear();
      break;
    case Op::rollback:
      break;
  }
  if (parameters_changed) update_fingerprint();
  const SessionStateMask after = held();
  for (int k = 0; k < kSessionStateKinds; ++k) {
    if ((after & ~before) & mask_of(static_cast<Kind>(k))) {
      origin(static_cast<Kind>(k)) = p.statement;
    }
  }
  if (after == 0) {
    since_ = {};
    first_statement_.clear();
  } else if (before == 0) {
    since_ = p.at;
    first_statement_ = p.statement;
  }
}

void SessionState::update_fingerprint() {
  if (parameters_.empty()) {
    fingerprint_ = 0;
    return;
  }
  std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
  const auto mix = [&](std::string_view bytes) {
    for (const char c : bytes) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;
    }
  };
  for (const auto& p : parameters_) {
    mix(p.replay);
    mix(std::string_view("\0", 1));
  }
  fingerprint_ = h == 0 ? 1 : h;
}

void SessionState::on_server_lost() {
  pending_.clear();
  unreplayable_parameters_.clear();
  channels_.clear();
  temp_tables_.clear();
  sql_statements_.clear();
  cursors_.clear();
  advisory_locks_ = 0;
  loaded_ = false;
  if (held() == 0) {
    since_ = {};
    first_statement_.clear();
  }
  reported_ = held();
}

SessionStateMask SessionState::held() const {
  SessionStateMask kinds = 0;
  for (const auto& p : parameters_) kinds |= mask_of(p.kind);
  for (const auto& p : unreplayable_parameters_) kinds |= mask_of(p.kind);
  if (advisory_locks_ > 0) kinds |= mask_of(Kind::advisory_lock);
  if (!channels_.empty()) kinds |= mask_of(Kind::listen);
  if (!temp_tables_.empty()) kinds |= mask_of(Kind::temp_table);
  if (!sql_statements_.empty()) kinds |= mask_of(Kind::sql_prepare);
  if (!cursors_.empty()) kinds |= mask_of(Kind::hold_cursor);
  if (loaded_) kinds |= mask_of(Kind::load);
  return kinds;
}

bool SessionState::pinned() const {
  switch (mode_) {
    case SessionStateMode::pin:
      return held() != 0;
    case SessionStateMode::track: {
      const auto replayable =
          static_cast<SessionStateMask>(mask_of(Kind::parameter) | mask_of(Kind::role));
      return (held() & static_cast<SessionStateMask>(~replayable)) != 0 ||
             !unreplayable_parameters_.empty();
    }
    case SessionStateMode::reject:
    case SessionStateMode::allow:
      return false;
  }
  return false;
}

std::string SessionState::reset_sql(SessionStateMask kinds) {
  std::string out;
  const auto add = [&](Kind kind, std::string_view sql) {
    if ((kinds & mask_of(kind)) == 0) return;
    if (!out.empty()) out += ' ';
    out += sql;
  };
  add(Kind::role, "RESET ROLE; RESET SESSION AUTHORIZATION;");
  add(Kind::advisory_lock, "SELECT pg_catalog.pg_advisory_unlock_all();");
  add(Kind::listen, "UNLISTEN *;");
  add(Kind::temp_table, "DISCARD TEMP;");
  add(Kind::sql_prepare, "DEALLOCATE ALL;");
  add(Kind::hold_cursor, "CLOSE ALL;");
  add(Kind::parameter, "RESET ALL;");
  return out;
}

}  // namespace pgw::proto
