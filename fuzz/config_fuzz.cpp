// Fuzz target "config": the input is pgbouncer.ini text for config::load_string. Invalid text
// must end in ConfigError (any std::exception is accepted); valid text must give a Config
// whose values respect the documented ranges. %include lines are dropped: they would read
// files from disk, which is not what is fuzzed here.
#include <exception>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config_checks.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(pgw::fuzz::as_text(data, size));
  // Neutralize %include (it opens files); "%inclu_e" is just an invalid line.
  for (auto at = text.find("%include"); at != std::string::npos; at = text.find("%include", at)) {
    text[at + 6] = '_';
  }
  std::vector<pgw::config::Warning> warnings;
  try {
    const auto config =
        pgw::config::load_string(text, "fuzz.ini", warnings, "/nonexistent-pgwarden-fuzz");
    pgw::fuzz::check_config(config);
    for (const auto& warning : warnings) FUZZ_CHECK(!warning.text.empty());
  } catch (const pgw::config::ConfigError& e) {
    FUZZ_CHECK(e.what()[0] != '\0');
  } catch (const std::exception&) {
    // Allowed by the contract, though a ConfigError with file:line would be nicer.
  }
  return 0;
}
