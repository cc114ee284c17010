#include "admin/command.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <vector>

namespace pgw::admin {
namespace {

struct Token {
  enum Kind { word, quoted_ident, string, symbol } kind;
  std::string text;  // words keep their case; callers lower them where case does not matter
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
         c == '$' || static_cast<unsigned char>(c) >= 0x80;
}

// Splits into words, "identifiers", 'strings' and the symbols = , ;. nullopt on an unterminated
// quote or a character the grammar has no use for.
std::optional<std::vector<Token>> tokenize(std::string_view sql, std::string& problem) {
  std::vector<Token> tokens;
  std::size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"' || c == '\'') {
      std::string text;
      ++i;
      bool closed = false;
      while (i < sql.size()) {
        if (sql[i] == c) {
          if (i + 1 < sql.size() && sql[i + 1] == c) {  // doubled quote = the quote itself
            text += c;
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        text += sql[i++];
      }
      if (!closed) {
        problem = "unterminated quoted string";
        return std::nullopt;
      }
      tokens.push_back({c == '"' ? Token::quoted_ident : Token::string, std::move(text)});
    } else if (c == '=' || c == ';' || c == ',') {
      tokens.push_back({Token::symbol, std::string(1, c)});
      ++i;
    } else if (word_char(c)) {
      std::size_t start = i;
      while (i < sql.size() && word_char(sql[i])) ++i;
      tokens.push_back({Token::word, std::string(sql.substr(start, i - start))});
    } else {
      problem = std::string("unexpected character '") + c + "'";
      return std::nullopt;
    }
  }
  // Trailing semicolons end the command; one command per query.
  while (!tokens.empty() && tokens.back().kind == Token::symbol && tokens.back().text == ";") {
    tokens.pop_back();
  }
  return tokens;
}

constexpr std::array kShowSubjects{
    std::string_view{"help"},           std::string_view{"version"},
    std::string_view{"config"},         std::string_view{"databases"},
    std::string_view{"pools"},          std::string_view{"clients"},
    std::string_view{"servers"},        std::string_view{"users"},
    std::string_view{"stats"},          std::string_view{"stats_totals"},
    std::string_view{"stats_averages"}, std::string_view{"totals"},
    std::string_view{"lists"},          std::string_view{"state"},
    std::string_view{"leases"},         std::string_view{"leaks"},
    std::string_view{"events"},         std::string_view{"apps"}};

}  // namespace

bool is_show_subject(std::string_view subject) {
  return std::find(kShowSubjects.begin(), kShowSubjects.end(), subject) != kShowSubjects.end();
}

bool needs_admin(const Command& command) {
  return command.verb != Verb::show && command.verb != Verb::empty;
}

std::string_view verb_name(Verb verb) {
  switch (verb) {
    case Verb::empty:
      return "";
    case Verb::show:
      return "SHOW";
    case Verb::set:
      return "SET";
    case Verb::pause:
      return "PAUSE";
    case Verb::resume:
      return "RESUME";
    case Verb::reconnect:
      return "RECONNECT";
    case Verb::kill:
      return "KILL";
    case Verb::kill_client:
      return "KILL_CLIENT";
    case Verb::cancel_client:
      return "CANCEL_CLIENT";
    case Verb::kill_app:
      return "KILL_APP";
    case Verb::disable:
      return "DISABLE";
    case Verb::enable:
      return "ENABLE";
    case Verb::wait_close:
      return "WAIT_CLOSE";
    case Verb::reload:
      return "RELOAD";
    case Verb::shutdown:
      return "SHUTDOWN";
  }
  return "";
}

std::variant<Command, ParseError> parse_command(std::string_view sql) {
  std::string problem;
  auto tokens_or = tokenize(sql, problem);
  if (!tokens_or) return ParseError{Err::admin_syntax_error, problem};
  const auto& tokens = *tokens_or;
  Command command;
  if (tokens.empty()) return command;  // empty query
  if (tokens[0].kind != Token::word) {
    return ParseError{Err::admin_unknown_command, std::string(sql)};
  }
  const std::string verb = lower(tokens[0].text);
  const std::size_t args = tokens.size() - 1;
  auto name_at = [&](std::size_t i) -> std::optional<std::string> {
    if (tokens[i].kind == Token::word || tokens[i].kind == Token::quoted_ident)
      return tokens[i].text;
    return std::nullopt;
  };
  // Commands with an optional database argument.
  static const std::array<std::pair<std::string_view, Verb>, 5> optional_db{{
      {"pause", Verb::pause},
      {"resume", Verb::resume},
      {"reconnect", Verb::reconnect},
      {"kill", Verb::kill},
      {"wait_close", Verb::wait_close},
  }};
  for (const auto& [word, kind] : optional_db) {
    if (verb != word) continue;
    command.verb = kind;
    if (args == 0) return command;
    auto name = name_at(1);
    if (args > 1 || !name) {
      return ParseError{Err::admin_syntax_error,
                        std::string(verb_name(kind)) + " takes at most one database name"};
    }
    command.arg = *name;
    return command;
  }
  if (verb == "disable" || verb == "enable") {
    // PgBouncer's: one database, never all of them at once.
    command.verb = verb == "disable" ? Verb::disable : Verb::enable;
    auto name = args == 1 ? name_at(1) : std::nullopt;
    if (!name) {
      return ParseError{Err::admin_syntax_error,
                        std::string(verb_name(command.verb)) + " takes one database name"};
    }
    command.arg = *name;
    return command;
  }
  if (verb == "show") {
    if (args != 1 || tokens[1].kind != Token::word) {
      return ParseError{Err::admin_syntax_error, "SHOW takes one word, see SHOW HELP"};
    }
    command.verb = Verb::show;
    command.arg = lower(tokens[1].text);
    if (!is_show_subject(command.arg)) {
      return ParseError{Err::admin_unknown_command, "SHOW " + tokens[1].text};
    }
    return command;
  }
  if (verb == "set") {
    // SET key = value | SET key TO value
    if (args != 3 || !name_at(1) ||
        !((tokens[2].kind == Token::symbol && tokens[2].text == "=") ||
          (tokens[2].kind == Token::word && lower(tokens[2].text) == "to")) ||
        tokens[3].kind == Token::symbol) {
      return ParseError{Err::admin_syntax_error, "expected SET key = value"};
    }
    command.verb = Verb::set;
    command.arg = lower(tokens[1].text);
    command.value = tokens[3].text;
    return command;
  }
  if (verb == "kill_client" || verb == "cancel_client") {
    const bool kill = verb == "kill_client";
    const bool digits = args == 1 && tokens[1].kind == Token::word && !tokens[1].text.empty() &&
                        tokens[1].text.size() <= 19 &&
                        std::all_of(tokens[1].text.begin(), tokens[1].text.end(),
                                    [](unsigned char c) { return std::isdigit(c); });
    if (!digits) {
      return ParseError{Err::admin_syntax_error,
                        std::string(kill ? "KILL_CLIENT" : "CANCEL_CLIENT") + " takes a client id"};
    }
    command.verb = kill ? Verb::kill_client : Verb::cancel_client;
    command.arg = tokens[1].text;
    return command;
  }
  if (verb == "kill_app") {
    // One application_name: a word, or quoted ("my app", 'my app') for anything else.
    if (args != 1 || tokens[1].kind == Token::symbol) {
      return ParseError{Err::admin_syntax_error, "KILL_APP takes one application_name"};
    }
    command.verb = Verb::kill_app;
    command.arg = tokens[1].text;
    return command;
  }
  if (verb == "reload") {
    if (args != 0) return ParseError{Err::admin_syntax_error, "RELOAD takes no argument"};
    command.verb = Verb::reload;
    return command;
  }
  if (verb == "shutdown") {
    command.verb = Verb::shutdown;
    if (args == 0) return command;
    const std::string mode =
        args == 1 && tokens[1].kind == Token::word ? lower(tokens[1].text) : "";
    if (mode != "wait_for_servers" && mode != "wait_for_clients") {
      return ParseError{Err::admin_syntax_error,
                        "SHUTDOWN takes no argument, WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS"};
    }
    command.arg = mode;
    return command;
  }
  return ParseError{Err::admin_unknown_command, std::string(sql)};
}

}  // namespace pgw::admin
