// The value parsers the configuration shares (the [pgbouncer] key table, [databases], [users]
// and [apps] lines): each checks a value and throws ConfigError(invalid_value) naming the
// place, the key and what it accepts.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pgw::config::parse {

// Where a value comes from: "file:line", or "SET" for the console.
struct Location {
  std::string file;
  int line = 0;
  std::string str() const { return line > 0 ? file + ":" + std::to_string(line) : file; }
};

std::string trim(std::string_view s);
std::string lower(std::string_view s);

[[noreturn]] void invalid(const Location& at, const std::string& key, const std::string& value,
                          const std::string& allowed);
int integer(const Location& at, const std::string& key, const std::string& value, long min,
            long max);
bool boolean(const Location& at, const std::string& key, const std::string& value);
// Seconds (fractions allowed) or a number with a unit: us, ms, s, min, h, d.
Millis duration(const Location& at, const std::string& key, const std::string& value);
PoolMode pool_mode(const Location& at, const std::string& key, const std::string& value);
AuthType auth_type(const Location& at, const std::string& key, const std::string& value);
SslMode ssl_mode(const Location& at, const std::string& key, const std::string& value);
proto::SessionStateMode session_state(const Location& at, const std::string& key,
                                      const std::string& value);
// Comma-separated, blanks trimmed, empty items dropped.
std::vector<std::string> list(const std::string& value);

}  // namespace pgw::config::parse
