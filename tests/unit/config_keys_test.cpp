// Unit tests for the [pgbouncer] key table (src/config/keys.cpp): it is well formed, parsing,
// SET, SHOW CONFIG and reloads follow it, and docs/configuration.md documents exactly its keys
// with their defaults and reload classes. Errors are told apart by kind, not by wording.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/keys.hpp"

namespace {

using pgw::config::Applies;
using pgw::config::Config;
using pgw::config::ConfigError;
using pgw::config::KeySpec;
using pgw::config::KeyType;
using pgw::config::Warning;

std::string read_doc(const std::string& name) {
  std::ifstream file(std::string(PGWARDEN_SOURCE_DIR) + "/docs/" + name);
  EXPECT_TRUE(file) << "cannot read docs/" << name;
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The text of docs/configuration.md from the heading `from` (a line starting with it) up to the
// next heading of the same or a higher level.
std::string section(const std::string& doc, const std::string& from) {
  const auto start = doc.find("\n" + from);
  EXPECT_NE(start, std::string::npos) << "no section " << from;
  if (start == std::string::npos) return {};
  const std::string level = from.substr(0, from.find(' ') + 1);  // "## "
  auto end = doc.find("\n" + level, start + 1);
  return doc.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

std::vector<std::string> cells(const std::string& row) {
  std::vector<std::string> out;
  std::stringstream in(row);
  std::string cell;
  std::getline(in, cell, '|');  // before the first '|'
  while (std::getline(in, cell, '|')) {
    const auto begin = cell.find_first_not_of(' ');
    const auto end = cell.find_last_not_of(' ');
    out.push_back(begin == std::string::npos ? "" : cell.substr(begin, end - begin + 1));
  }
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

// A documented [pgbouncer] key: its "default" and "meaning" cells.
struct DocRow {
  std::string default_cell;
  std::string meaning;
};

// The rows of every `| key | default | meaning |` table in the [pgbouncer] section.
std::map<std::string, DocRow> documented_keys(const std::string& doc) {
  std::map<std::string, DocRow> out;
  std::stringstream in(section(doc, "## `[pgbouncer]`"));
  std::string line;
  bool in_key_table = false;
  const std::regex one_key("^`([a-z0-9_]+)`$");
  while (std::getline(in, line)) {
    if (line.rfind('|', 0) != 0) {
      in_key_table = false;
      continue;
    }
    const auto row = cells(line);
    if (row.size() == 3 && row[0] == "key" && row[1] == "default") {
      in_key_table = true;
      continue;
    }
    if (!in_key_table || row.empty() || row[0].rfind("---", 0) == 0) continue;
    std::smatch m;
    EXPECT_TRUE(std::regex_match(row[0], m, one_key)) << "not one key: " << line;
    if (row.size() != 3 || m.empty()) continue;
    EXPECT_FALSE(out.contains(m[1])) << m[1] << " documented twice";
    out[m[1]] = DocRow{row[1], row[2]};
  }
  return out;
}

std::set<std::string> backticked_names(const std::string& text) {
  std::set<std::string> out;
  const std::regex name("`([a-z0-9_]+)`");
  for (std::sregex_iterator it(text.begin(), text.end(), name), end; it != end; ++it) {
    out.insert((*it)[1]);
  }
  return out;
}

// The names of `a` that `b` lacks, space-separated.
std::string only_in(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string out;
  for (const auto& name : a) {
    if (!b.contains(name)) out += (out.empty() ? "" : " ") + name;
  }
  return out;
}

// The first bullet of "Accepted for compatibility, not acted on": the [pgbouncer] keys stored
// as given (the later bullets are keys of [databases] and [users] entries).
std::set<std::string> documented_accepted_keys(const std::string& doc) {
  const std::string accepted = section(doc, "## Accepted for compatibility, not acted on");
  const auto first = accepted.find("- Stored as given");
  const auto next = accepted.find("\n- ", first + 1);
  EXPECT_NE(first, std::string::npos);
  return backticked_names(accepted.substr(first, next - first));
}

TEST(ConfigKeyTable, IsWellFormed) {
  std::set<std::string_view> names;
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    EXPECT_TRUE(names.insert(key.name).second) << key.name << " twice";
    EXPECT_EQ(std::string(key.name),
              std::regex_replace(std::string(key.name), std::regex("[^a-z0-9_]"), ""));
    EXPECT_FALSE(key.doc.empty()) << key.name;
    EXPECT_EQ(pgw::config::find_key(key.name), &key);
    // The target's type is the one the key's type writes (a mismatch would throw
    // std::bad_variant_access when the key is set).
    const bool matches = [&] {
      switch (key.type) {
        case KeyType::text:
          return std::holds_alternative<std::string Config::*>(key.target);
        case KeyType::integer:
          return std::holds_alternative<int Config::*>(key.target) && key.min <= key.max;
        case KeyType::boolean:
        case KeyType::verbosity:
          return std::holds_alternative<bool Config::*>(key.target);
        case KeyType::duration:
          return std::holds_alternative<pgw::config::Millis Config::*>(key.target);
        case KeyType::list:
          return std::holds_alternative<std::vector<std::string> Config::*>(key.target);
        case KeyType::pool_mode:
          return std::holds_alternative<pgw::config::PoolMode Config::*>(key.target);
        case KeyType::session_state:
          return std::holds_alternative<pgw::proto::SessionStateMode Config::*>(key.target);
        case KeyType::auth_type:
          return std::holds_alternative<pgw::config::AuthType Config::*>(key.target);
        case KeyType::ssl_mode:
          return std::holds_alternative<pgw::config::SslMode Config::*>(key.target);
        case KeyType::accepted:
          return std::holds_alternative<std::monostate>(key.target);
      }
      return false;
    }();
    EXPECT_TRUE(matches) << key.name;
  }
  EXPECT_EQ(pgw::config::find_key("no_such_key"), nullptr);
}

TEST(ConfigKeyTable, EveryDefaultIsAValueTheKeyAccepts) {
  // Setting each key to its default as SHOW CONFIG prints it gives the same value back: the
  // printed form parses, and a default is within the key's range.
  const Config defaults;
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    if (key.type == KeyType::accepted) continue;
    Config c;
    const std::string shown = pgw::config::show_value(defaults, key);
    ASSERT_NO_THROW(pgw::config::set_key(c, std::string(key.name), shown)) << key.name;
    EXPECT_EQ(pgw::config::show_value(c, key), shown) << key.name;
  }
}

TEST(ConfigKeyTable, TheIniAndSetWriteTheSameFieldForEveryKey) {
  // A value other than the default, per type; the ini and SET must both put it where
  // SHOW CONFIG reads it.
  auto sample = [](const KeySpec& key) -> std::string {
    switch (key.type) {
      case KeyType::integer:
        return std::to_string(key.min + (key.max > key.min ? 1 : 0));
      case KeyType::boolean:
        return "1";
      case KeyType::verbosity:
        return "2";
      case KeyType::duration:
        return "0.25";
      case KeyType::list:
        return "a, b";
      case KeyType::pool_mode:
        return "statement";
      case KeyType::session_state:
        return "reject";
      case KeyType::auth_type:
        return "scram-sha-256";
      case KeyType::ssl_mode:
        return "verify-full";
      case KeyType::text:
      case KeyType::accepted:
        return "/some/value";
    }
    return {};
  };
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    const std::string value = sample(key);
    std::vector<Warning> warnings;
    const Config from_ini = pgw::config::load_string(
        "[pgbouncer]\n" + std::string(key.name) + " = " + value + "\n", "t.ini", warnings, "/");
    EXPECT_TRUE(warnings.empty()) << key.name;
    Config from_set;
    pgw::config::set_key(from_set, std::string(key.name), value);
    std::string expected = value;
    if (key.type == KeyType::verbosity) expected = "1";
    if (key.type == KeyType::list) expected = "a,b";
    EXPECT_EQ(pgw::config::show_value(from_ini, key), expected) << key.name;
    EXPECT_EQ(pgw::config::show_value(from_set, key), expected) << key.name;
  }
}

TEST(ConfigKeyTable, SetAndReloadAgreeOnWhatNeedsARestart) {
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    EXPECT_EQ(pgw::config::is_runtime_changeable(std::string(key.name)),
              key.applies != Applies::restart)
        << key.name;
  }
  // The keys the issue named: pkt_buf reaches new sessions, so SET may change it; a listener
  // cannot follow listen_port, so neither SET nor a reload does.
  EXPECT_TRUE(pgw::config::is_runtime_changeable("pkt_buf"));
  EXPECT_FALSE(pgw::config::is_runtime_changeable("listen_port"));
  EXPECT_FALSE(pgw::config::is_runtime_changeable("LISTEN_PORT"));
  EXPECT_FALSE(pgw::config::is_runtime_changeable("no_such_key"));
}

TEST(ConfigKeyTable, AReloadKeepsRestartKeysAndNamesThem) {
  std::vector<Warning> ignored;
  const Config running = pgw::config::load_string(
      "[pgbouncer]\nlisten_port = 6432\nunix_socket_mode = 0700\nresolv_conf = /etc/a\n"
      "default_pool_size = 5\n",
      "t.ini", ignored);
  Config loaded = pgw::config::load_string(
      "[pgbouncer]\nlisten_port = 6433\nworkers = 3\ndefault_pool_size = 7\npkt_buf = 8192\n",
      "t.ini", ignored);
  const auto warnings = pgw::config::keep_restart_values(running, loaded);
  std::set<std::string> named;
  for (const auto& w : warnings) {
    named.insert(w.text.substr(0, w.text.find(' ')));
  }
  EXPECT_EQ(named,
            (std::set<std::string>{"listen_port", "workers", "unix_socket_mode", "resolv_conf"}));
  EXPECT_EQ(loaded.listen_port, 6432);
  EXPECT_EQ(loaded.workers, 0);
  EXPECT_EQ(loaded.unix_socket_mode, "0700");
  EXPECT_EQ(loaded.other.at("resolv_conf"), "/etc/a");  // an accepted restart key too
  EXPECT_EQ(loaded.default_pool_size, 7);  // live and next-login keys take the file's value
  EXPECT_EQ(loaded.pkt_buf, 8192);
  ASSERT_FALSE(warnings.empty());
  for (const auto& w : warnings) {
    if (w.text.rfind("listen_port", 0) == 0) {
      EXPECT_EQ(w.text,
                "listen_port changed from '6432' to '6433' but takes effect only at restart: "
                "keeping '6432'");
    }
  }
  // Nothing changed: no warning.
  Config same = running;
  EXPECT_TRUE(pgw::config::keep_restart_values(running, same).empty());
}

TEST(ConfigKeyTable, ShowConfigListsTheTableInOrderAndAcceptedKeysWhenSet) {
  std::vector<Warning> ignored;
  const Config c = pgw::config::load_string("[pgbouncer]\nsyslog = 1\n", "t.ini", ignored);
  std::vector<std::string> expected;
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    if (key.type != KeyType::accepted || key.name == "syslog") {
      expected.emplace_back(key.name);
    }
  }
  std::vector<std::string> shown;
  for (const auto& [key, value] : pgw::config::show_config_rows(c)) shown.push_back(key);
  EXPECT_EQ(shown, expected);
}

TEST(ConfigErrors, AreTypedAndTheMessageCarriesNoPlaceForSet) {
  Config c;
  try {
    pgw::config::set_key(c, "no_such_key", "1");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.kind(), ConfigError::Kind::unknown_key);
  }
  try {
    pgw::config::set_key(c, "default_pool_size", "lots");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.kind(), ConfigError::Kind::invalid_value);
    EXPECT_EQ(e.message(),
              "invalid value 'lots' for default_pool_size: expected an integer from 1 to "
              "2147483647");
    EXPECT_EQ(std::string(e.what()), "SET: " + e.message());
  }
  auto kind_of = [](const std::string& text) {
    std::vector<Warning> warnings;
    try {
      pgw::config::load_string(text, "t.ini", warnings);
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.where(), "t.ini:2") << text;
      return e.kind();
    }
    ADD_FAILURE() << "no error for " << text;
    return ConfigError::Kind::file;
  };
  EXPECT_EQ(kind_of("[pgbouncer]\nlisten_port\n"), ConfigError::Kind::syntax);
  EXPECT_EQ(kind_of("[pgbouncer]\nlisten_port = x\n"), ConfigError::Kind::invalid_value);
  EXPECT_EQ(kind_of("[databases]\nd = hots=x\n"), ConfigError::Kind::unknown_key);
  EXPECT_EQ(kind_of("[users]\nu = pool_size=x\n"), ConfigError::Kind::invalid_value);
  std::vector<Warning> warnings;
  try {
    pgw::config::load_file("/nonexistent/pgwarden.ini", warnings);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.kind(), ConfigError::Kind::file);
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent/pgwarden.ini: cannot open the configuration file");
  }
}

// --- docs/configuration.md

TEST(ConfigKeyDocs, DocumentEveryKeyOfTheTableAndNoOther) {
  const std::string doc = read_doc("configuration.md");
  const auto documented = documented_keys(doc);
  const auto accepted = documented_accepted_keys(doc);
  std::set<std::string> typed_in_table, accepted_in_table, typed_in_doc;
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    (key.type == KeyType::accepted ? accepted_in_table : typed_in_table).emplace(key.name);
  }
  for (const auto& [name, row] : documented) typed_in_doc.insert(name);
  EXPECT_EQ(only_in(typed_in_table, typed_in_doc), "") << "keys of the table not documented";
  EXPECT_EQ(only_in(typed_in_doc, typed_in_table), "") << "documented keys not in the table";
  EXPECT_EQ(only_in(accepted_in_table, accepted), "") << "accepted keys not documented";
  EXPECT_EQ(only_in(accepted, accepted_in_table), "") << "documented as accepted, not in table";
  EXPECT_FALSE(typed_in_doc.empty());
}

TEST(ConfigKeyDocs, DefaultsAreTheDefaults) {
  const auto documented = documented_keys(read_doc("configuration.md"));
  const Config defaults;
  const std::regex literal("^`([^`]*)`$");
  for (const auto& [name, row] : documented) {
    const KeySpec* key = pgw::config::find_key(name);
    if (key == nullptr) continue;  // DocumentEveryKeyOfTheTableAndNoOther reports it
    const std::string actual = pgw::config::show_value(defaults, *key);
    std::smatch m;
    if (std::regex_match(row.default_cell, m, literal)) {
      EXPECT_EQ(m[1], actual) << name;
    } else if (row.default_cell.rfind("empty", 0) == 0) {
      EXPECT_EQ(actual, "") << name;
    } else {
      ADD_FAILURE() << name << ": default cell is neither `value` nor empty: " << row.default_cell;
    }
  }
}

TEST(ConfigKeyDocs, RestartNeededIsWhatTheTableSays) {
  const std::string doc = read_doc("configuration.md");
  for (const auto& [name, row] : documented_keys(doc)) {
    const KeySpec* key = pgw::config::find_key(name);
    if (key == nullptr) continue;
    EXPECT_EQ(row.meaning.find("Restart needed") != std::string::npos,
              key->applies == Applies::restart)
        << name;
  }
  // The Reloading table: each key it names sits in the row of its class, and the restart row
  // names every restart key.
  std::stringstream in(section(doc, "## Reloading (SIGHUP)"));
  std::string line;
  std::set<std::string> restart_row;
  while (std::getline(in, line)) {
    const auto row = cells(line);
    if (row.size() != 2 || line.rfind('|', 0) != 0) continue;
    std::optional<Applies> applies;
    if (row[0].find("at once") != std::string::npos) applies = Applies::live;
    if (row[0].find("new server connections") != std::string::npos) applies = Applies::next_server;
    if (row[0].find("connect after") != std::string::npos) applies = Applies::next_login;
    if (row[0].find("restart") != std::string::npos) applies = Applies::restart;
    if (!applies) continue;
    for (const auto& name : backticked_names(row[1])) {
      const KeySpec* key = pgw::config::find_key(name);
      // [databases] keys and commands are not in the table; `user` there is the database
      // entry's key, not the accepted [pgbouncer] one.
      if (key == nullptr || (key->type == KeyType::accepted && *applies != Applies::restart))
        continue;
      EXPECT_EQ(to_string(key->applies), to_string(*applies)) << name << " in " << row[0];
      if (*applies == Applies::restart) restart_row.insert(name);
    }
  }
  for (const auto& key : pgw::config::pgbouncer_keys()) {
    if (key.applies == Applies::restart) {
      EXPECT_TRUE(restart_row.contains(std::string(key.name))) << key.name;
    }
  }
}

}  // namespace
