// Fuzz target "ident": the input is pg_ident.conf text for config::parse_ident. Invalid text
// must end in ConfigError naming the file and line; a parsed file's rules each admit what they
// say: a name rule admits its own system user as its database user (or anyone, for "all"), and
// allows() of names taken from the input never throws.
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "config/hba.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  pgw::config::IdentFile file;
  try {
    file = pgw::config::parse_ident(text, "fuzz_ident.conf");
  } catch (const pgw::config::ConfigError& e) {
    FUZZ_CHECK(std::string(e.where()).rfind("fuzz_ident.conf:", 0) == 0);
    return 0;
  }
  for (const auto& rule : file.rules()) {
    FUZZ_CHECK(rule.line > 0);
    FUZZ_CHECK(rule.expression == (rule.pattern != nullptr));
    if (!rule.expression && rule.system_user.size() <= 256) {
      const std::string user = rule.all_users ? "anyone" : rule.database_user;
      FUZZ_CHECK(file.allows(rule.map, rule.system_user, user));
    }
    // Names from the input in every role: whatever the answer, no exception escapes.
    static_cast<void>(file.allows(rule.map, rule.database_user, rule.system_user));
    static_cast<void>(file.allows(rule.system_user, rule.map, rule.database_user));
  }
  return 0;
}
