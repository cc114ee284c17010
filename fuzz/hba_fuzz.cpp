// Fuzz target "hba": the input is pg_hba.conf text for config::parse_hba. An @file whose name
// starts with "x" cannot be read (read_include throws ConfigError); any other @file holds a
// fixed small list of names. Invalid text must end in ConfigError naming the file; then each
// line is also parsed alone. For a parsed file (or line):
// * match() of clients derived from the input returns null or a rule of rules(), and exactly
//   the first rule hba_rule_matches() accepts;
// * a client built to fit rule i (its address, a name of its lists) is matched by rule i, so
//   match() returns rule i or an earlier one;
// * format_hba_rule() of each rule parses back to the same rule (ldap options included);
// * address_text() of a client parses back: "host all all <text>/<bits> trust" matches it.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "config/hba.hpp"
#include "fuzz_common.hpp"

namespace {

using pgw::config::ConfigError;
using pgw::config::HbaClient;
using pgw::config::HbaConnection;
using pgw::config::HbaFile;
using pgw::config::HbaRule;

std::string read_include(const std::string& name) {
  if (!name.empty() && name[0] == 'x') {
    throw ConfigError(ConfigError::Kind::file, name, "No such file or directory");
  }
  return "alice, \"all\" bob # comment\n\"+g\" all\n";
}

HbaFile parse(std::string_view text) {
  return pgw::config::parse_hba(text, "fuzz_hba.conf", read_include);
}

void check_match(const HbaFile& file, const HbaClient& client) {
  const HbaRule* rule = file.match(client);
  const auto& rules = file.rules();
  const HbaRule* first = nullptr;
  for (const auto& r : rules) {
    if (pgw::config::hba_rule_matches(r, client)) {
      first = &r;
      break;
    }
  }
  FUZZ_CHECK(rule == first);
  if (rule != nullptr) FUZZ_CHECK(rule >= rules.data() && rule < rules.data() + rules.size());
}

bool same_rule(const HbaRule& a, const HbaRule& b) {
  return a.connection == b.connection && a.databases == b.databases && a.users == b.users &&
         a.any_address == b.any_address && a.family == b.family && a.address == b.address &&
         a.mask == b.mask && a.method == b.method && a.options == b.options && a.ldap == b.ldap;
}

bool is_mapped(const HbaClient& client) {
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return client.family == 6 && std::equal(kMapped, kMapped + 12, client.address.begin());
}

// A client that rule `rule` accepts, if one can be built from its lists.
bool client_for(const HbaRule& rule, HbaClient& client, std::uint8_t seed) {
  client = HbaClient{};
  client.unix_socket = rule.connection == HbaConnection::local;
  client.tls = rule.connection == HbaConnection::hostssl ||
               (rule.connection == HbaConnection::host && (seed & 1) != 0);
  if (!client.unix_socket) {
    if (rule.any_address) {
      client.family = (seed & 2) != 0 ? 6 : 4;
      client.address.fill(seed);
    } else {
      client.family = rule.family;
      client.address = rule.address;
      // An IPv4-mapped client counts as IPv4: it cannot match an IPv6 rule.
      if (is_mapped(client)) return false;
    }
  }
  bool have_user = false;
  for (const auto& item : rule.users) {
    if (item == pgw::config::kHbaAll || !pgw::config::hba_is_keyword(item)) {
      client.user = item == pgw::config::kHbaAll ? std::string_view("someone") : item;
      have_user = true;
      break;
    }
  }
  if (!have_user) return false;
  for (const auto& item : rule.databases) {
    if (item == pgw::config::kHbaAll) {
      client.database = "anydb";
      return true;
    }
    if (item == pgw::config::kHbaSameUser) {
      client.database = client.user;
      return true;
    }
    if (!pgw::config::hba_is_keyword(item)) {
      client.database = item;
      return true;
    }
  }
  return false;  // only "replication": matches nothing
}

void check_address_text(const HbaClient& client) {
  const std::string text = pgw::config::address_text(client);
  const std::string line =
      "host all all " + text + (client.family == 4 ? "/32" : "/128") + " trust";
  try {
    const auto file = parse(line);
    FUZZ_CHECK(file.rules().size() == 1);
    HbaClient again = client;
    again.database = "d";
    again.user = "u";
    FUZZ_CHECK(file.match(again) == &file.rules()[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", line.c_str(), e.what());
    pgw::fuzz::check_failed("address_text must parse back", __FILE__, __LINE__);
  }
}

// Every check of a parsed file; `text` is the text it was parsed from.
void check_file(const HbaFile& file, std::string_view text) {
  const auto& rules = file.rules();
  const std::size_t size = text.size();
  // Clients derived from the input bytes.
  std::array<std::uint8_t, 16> bytes{};
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i % 16] =
        static_cast<std::uint8_t>(bytes[i % 16] * 31 + static_cast<unsigned char>(text[i]));
  }
  const std::string_view db = text.substr(0, std::min<std::size_t>(size, 4));
  const std::string_view user = text.substr(size / 2, std::min<std::size_t>(size - size / 2, 5));
  for (int variant = 0; variant < 8; ++variant) {
    HbaClient client;
    client.unix_socket = variant == 0;
    client.tls = (variant & 1) != 0;
    client.family = variant < 4 ? 4 : 6;
    client.address = bytes;
    if (variant == 7) {  // IPv4-mapped
      std::fill(client.address.begin(), client.address.begin() + 10, 0);
      client.address[10] = client.address[11] = 0xff;
    }
    client.database = (variant & 2) != 0 ? db : user;
    client.user = user;
    check_match(file, client);
    if (variant != 0 && !is_mapped(client)) check_address_text(client);
  }

  for (std::size_t i = 0; i < rules.size(); ++i) {
    const HbaRule& rule = rules[i];
    FUZZ_CHECK(rule.line >= 1);
    FUZZ_CHECK(rule.connection == HbaConnection::local || rule.any_address || rule.family == 4 ||
               rule.family == 6);
    HbaClient client;
    if (client_for(rule, client, bytes[i % 16])) {
      FUZZ_CHECK(pgw::config::hba_rule_matches(rule, client));
      const HbaRule* matched = file.match(client);
      FUZZ_CHECK(matched != nullptr && matched <= &rule);
    }
    if (rule.databases.empty() || rule.users.empty()) continue;
    const std::string line = pgw::config::format_hba_rule(rule);
    try {
      const auto again = parse(line);
      FUZZ_CHECK(again.rules().size() == 1);
      FUZZ_CHECK(same_rule(again.rules()[0], rule));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", line.c_str(), e.what());
      pgw::fuzz::check_failed("a formatted rule must parse back", __FILE__, __LINE__);
    }
  }
}

// Parses `text`: checks a parsed file, or that the error is a ConfigError with the place.
bool try_parse(std::string_view text) {
  HbaFile file;
  try {
    file = parse(text);
  } catch (const ConfigError& e) {
    FUZZ_CHECK(e.what()[0] != '\0');
    FUZZ_CHECK(e.where().rfind("fuzz_hba.conf:", 0) == 0);
    return false;
  }
  check_file(file, text);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = pgw::fuzz::as_text(data, size);
  if (try_parse(text)) return 0;
  // One bad line rejects the whole file: also try each line alone, so that the matching and
  // round-trip checks see the good lines of a mutated file.
  for (std::size_t pos = 0; pos < text.size();) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    try_parse(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return 0;
}
