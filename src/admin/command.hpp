// Parsing of admin console commands (PgBouncer's syntax): pure, so it is unit-tested directly
// (tests/unit/admin_test.cpp). Keywords are case-insensitive, a trailing ';' is allowed,
// database names may be double-quoted and SET values single-quoted.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "util/errors.hpp"

namespace pgw::admin {

enum class Verb {
  empty,  // nothing but blanks and ';'
  show,   // arg: what to show, lower case ("pools", "stats_totals", ...)
  set,    // arg: key (lower case), value: the new value
  pause,  // arg: database or "" for all
  resume,
  reconnect,
  kill,
  kill_client,    // arg: client id (digits)
  cancel_client,  // arg: client id (digits): CancelRequest for its running query
  kill_app,       // arg: application_name (exact, case kept): disconnect its clients
  disable,        // arg: database (required): new logins to it are refused
  enable,         // arg: database (required): undo DISABLE
  wait_close,
  reload,
  shutdown,  // arg: "" or "wait_for_servers" / "wait_for_clients"
};

struct Command {
  Verb verb = Verb::empty;
  std::string arg;
  std::string value;
};

struct ParseError {
  Err code;              // admin_unknown_command or admin_syntax_error
  std::string argument;  // for the error text
};

std::variant<Command, ParseError> parse_command(std::string_view sql);

// The SHOW subjects the console knows.
bool is_show_subject(std::string_view subject);
// stats_users may run SHOW only; everything else needs admin_users.
bool needs_admin(const Command& command);
// The command word for messages and CommandComplete tags ("PAUSE", "SHOW", ...).
std::string_view verb_name(Verb verb);

}  // namespace pgw::admin
