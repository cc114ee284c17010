#include "config/parse.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace pgw::config::parse {

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(begin, end - begin + 1));
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

void invalid(const Location& at, const std::string& key, const std::string& value,
             const std::string& allowed) {
  throw ConfigError(ConfigError::Kind::invalid_value, at.str(),
                    "invalid value '" + value + "' for " + key + ": expected " + allowed);
}

int integer(const Location& at, const std::string& key, const std::string& value, long min,
            long max) {
  std::size_t used = 0;
  long parsed = 0;
  try {
    parsed = std::stol(value, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != value.size() || parsed < min || parsed > max) {
    invalid(at, key, value,
            "an integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return static_cast<int>(parsed);
}

bool boolean(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(value);
  if (v == "1" || v == "yes" || v == "on" || v == "true") return true;
  if (v == "0" || v == "no" || v == "off" || v == "false") return false;
  invalid(at, key, value, "a boolean (0/1, yes/no, on/off, true/false)");
}

Millis duration(const Location& at, const std::string& key, const std::string& value) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(value, &used);
  } catch (...) {
    used = 0;
  }
  const std::string unit = trim(std::string_view(value).substr(used));
  double scale = 1000.0;
  if (unit.empty() || unit == "s") {
    scale = 1000.0;
  } else if (unit == "ms") {
    scale = 1.0;
  } else if (unit == "us") {
    scale = 0.001;
  } else if (unit == "min") {
    scale = 60000.0;
  } else if (unit == "h") {
    scale = 3600000.0;
  } else if (unit == "d") {
    scale = 86400000.0;
  } else {
    used = 0;
  }
  // Larger values would overflow llround (giving a negative duration) or a conversion to
  // nanoseconds (steady_clock): cap at what fits in int64 nanoseconds (about 292 years).
  constexpr double kMaxMillis =
      static_cast<double>(std::chrono::nanoseconds::max().count() / 1'000'000);
  if (used == 0 || number < 0 || !std::isfinite(number) || number * scale > kMaxMillis) {
    invalid(at, key, value, "a duration in seconds (e.g. 30, 0.5, 250ms, 5min)");
  }
  return Millis(static_cast<long long>(std::llround(number * scale)));
}

PoolMode pool_mode(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(value);
  if (v == "session") return PoolMode::session;
  if (v == "transaction") return PoolMode::transaction;
  if (v == "statement") return PoolMode::statement;
  invalid(at, key, value, "session, transaction or statement");
}

proto::SessionStateMode session_state(const Location& at, const std::string& key,
                                      const std::string& value) {
  proto::SessionStateMode mode{};
  if (!proto::parse_session_state_mode(trim(value), mode)) {
    invalid(at, key, value, "track, pin, reject or allow");
  }
  return mode;
}

AuthType auth_type(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(value);
  if (v == "trust") return AuthType::trust;
  if (v == "plain") return AuthType::plain;
  if (v == "md5") return AuthType::md5;
  if (v == "scram-sha-256") return AuthType::scram_sha_256;
  if (v == "any") return AuthType::any;
  if (v == "hba") return AuthType::hba;
  if (v == "cert") return AuthType::cert;
  if (v == "peer") return AuthType::peer;
  invalid(at, key, value,
          "trust, plain, md5, scram-sha-256, cert, peer, hba or any (pam and ldap are not "
          "supported as auth_type; ldap works as an auth_hba_file method)");
}

SslMode ssl_mode(const Location& at, const std::string& key, const std::string& value) {
  const auto v = lower(trim(value));
  for (auto mode : {SslMode::disable, SslMode::allow, SslMode::prefer, SslMode::require,
                    SslMode::verify_ca, SslMode::verify_full}) {
    if (v == to_string(mode)) return mode;
  }
  invalid(at, key, value, "disable, allow, prefer, require, verify-ca or verify-full");
}

std::vector<std::string> list(const std::string& value) {
  std::vector<std::string> out;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace pgw::config::parse
