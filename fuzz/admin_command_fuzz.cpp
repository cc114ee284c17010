// Fuzz target "admin_command": the input is a query sent to the admin console (database
// pgbouncer / pgwarden) for admin::parse_command, PgBouncer's SHOW / SET / PAUSE / KILL ...
// syntax. A parsed command must be well-formed (known SHOW subject, lower-case SET key,
// numeric client id, ...). SET commands are then applied with config::set_key to a default
// Config as the console does: they may only fail with ConfigError (the console catches
// nothing else), and what they set must be within the key's range.
#include <algorithm>
#include <cctype>
#include <exception>
#include <string>

#include "admin/command.hpp"
#include "config/config.hpp"
#include "config_checks.hpp"
#include "fuzz_common.hpp"

namespace {

namespace admin = pgw::admin;

bool is_lower(const std::string& s) {
  return std::none_of(s.begin(), s.end(), [](unsigned char c) { return std::isupper(c); });
}

void check_set(const admin::Command& command) {
  pgw::config::Config config;
  try {
    pgw::config::set_key(config, command.arg, command.value);
  } catch (const pgw::config::ConfigError& e) {
    FUZZ_CHECK(e.what()[0] != '\0');
    return;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "set_key(\"%s\", \"%s\") threw a non-ConfigError: %s\n",
                 command.arg.c_str(), command.value.c_str(), e.what());
    pgw::fuzz::check_failed("set_key throws only ConfigError", __FILE__, __LINE__);
  }
  pgw::fuzz::check_config(config);
  (void)pgw::config::is_runtime_changeable(command.arg);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto sql = pgw::fuzz::as_text(data, size);
  const auto parsed = admin::parse_command(sql);
  if (const auto* error = std::get_if<admin::ParseError>(&parsed)) {
    FUZZ_CHECK(error->code == pgw::Err::admin_unknown_command ||
               error->code == pgw::Err::admin_syntax_error);
    return 0;
  }
  const auto& command = std::get<admin::Command>(parsed);
  FUZZ_CHECK(admin::needs_admin(command) ==
             (command.verb != admin::Verb::show && command.verb != admin::Verb::empty));
  FUZZ_CHECK(admin::verb_name(command.verb).empty() == (command.verb == admin::Verb::empty));
  switch (command.verb) {
    case admin::Verb::empty:
      FUZZ_CHECK(command.arg.empty() && command.value.empty());
      break;
    case admin::Verb::show:
      FUZZ_CHECK(admin::is_show_subject(command.arg) && is_lower(command.arg));
      break;
    case admin::Verb::set:
      FUZZ_CHECK(is_lower(command.arg));
      check_set(command);
      break;
    case admin::Verb::kill_client:
      FUZZ_CHECK(!command.arg.empty() && command.arg.size() <= 19);
      FUZZ_CHECK(std::all_of(command.arg.begin(), command.arg.end(),
                             [](unsigned char c) { return std::isdigit(c); }));
      break;
    case admin::Verb::shutdown:
      FUZZ_CHECK(command.arg.empty() || command.arg == "wait_for_servers" ||
                 command.arg == "wait_for_clients");
      break;
    case admin::Verb::reload:
      FUZZ_CHECK(command.arg.empty());
      break;
    default:  // pause, resume, reconnect, kill, wait_close: an optional database name
      FUZZ_CHECK(command.value.empty());
      break;
  }
  return 0;
}
