// Fuzz target "auth_file": the input is userlist.txt text for config::parse_auth_file.
// Invalid text must throw (ConfigError); valid text must round-trip: writing the entries back
// as "user" "secret" lines (with "" for a quote) and parsing again gives the same map.
#include <exception>
#include <map>
#include <string>

#include "config/config.hpp"
#include "fuzz_common.hpp"

namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(pgw::fuzz::as_text(data, size));
  std::map<std::string, std::string> users;
  try {
    users = pgw::config::parse_auth_file(text, "userlist.txt");
  } catch (const pgw::config::ConfigError& e) {
    FUZZ_CHECK(e.what()[0] != '\0');
    return 0;
  } catch (const std::exception&) {
    return 0;
  }
  std::string written;
  for (const auto& [user, secret] : users) {
    FUZZ_CHECK(user.find('\n') == std::string::npos && secret.find('\n') == std::string::npos);
    written += quoted(user) + " " + quoted(secret) + "\n";
  }
  std::map<std::string, std::string> again;
  try {
    again = pgw::config::parse_auth_file(written, "rewritten");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "re-parse failed: %s\n", e.what());
    pgw::fuzz::check_failed("a rewritten auth file must parse", __FILE__, __LINE__);
  }
  FUZZ_CHECK(again == users);
  return 0;
}
