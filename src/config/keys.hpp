// The [pgbouncer] keys, declared once: name, type, where the value goes in Config, the range it
// may take, when a change reaches the running process, and a line of documentation. Parsing
// the ini, SET on the console, SHOW CONFIG, the list of known keys and what a reload keeps are
// all read off this table (PgBouncer keeps its keys in one table too). docs/configuration.md
// documents every key in it and no other (a unit test checks).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace pgw::config {

// When a changed value (a reload, or SET on the console) reaches the running process.
enum class Applies : std::uint8_t {
  live,         // at once, for connected clients and existing pools too
  next_login,   // for clients that log in after the change (a client keeps its snapshot)
  next_server,  // for server connections opened after the change
  restart,      // only at start: SET refuses it, a reload keeps the running value and warns
};
std::string_view to_string(Applies applies);

// How a value is written and read.
enum class KeyType : std::uint8_t {
  text,           // as given
  integer,        // within [min, max]
  boolean,        // 0/1, yes/no, on/off, true/false
  duration,       // seconds, fractions or a unit (250ms, 5min)
  list,           // comma-separated
  pool_mode,      // session, transaction, statement
  session_state,  // track, pin, reject, allow
  auth_type,      // trust, plain, md5, scram-sha-256, any
  ssl_mode,       // disable, allow, prefer, require, verify-ca, verify-full
  verbosity,      // 0-10, any value above 0 meaning debug logging
  accepted,       // PgBouncer's, accepted and kept as text (SHOW CONFIG) but not acted on
};

struct KeySpec {
  using Target =
      std::variant<std::monostate, std::string Config::*, int Config::*, bool Config::*,
                   Millis Config::*, std::vector<std::string> Config::*, PoolMode Config::*,
                   AuthType Config::*, proto::SessionStateMode Config::*, SslMode Config::*>;
  std::string_view name;
  KeyType type;
  Target target;  // std::monostate for `accepted` keys (they go to Config::other)
  long min = 0;   // KeyType::integer
  long max = 0;
  Applies applies = Applies::live;
  std::string_view doc;
};

// Every [pgbouncer] key, in the order SHOW CONFIG and docs/configuration.md list them.
std::span<const KeySpec> pgbouncer_keys();
// The key's row, or null if there is none (`name` in lower case).
const KeySpec* find_key(std::string_view name);
// The value of `key` in `config` as SHOW CONFIG shows it (durations in seconds).
std::string show_value(const Config& config, const KeySpec& key);

}  // namespace pgw::config
