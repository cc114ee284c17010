// SCRAM secrets derived from plaintext auth_file passwords, cached per user: PBKDF2 with 4096
// iterations costs milliseconds, far more than the rest of a login. Any thread.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "util/ranked_mutex.hpp"

namespace pgw::auth {

class ScramSecretCache {
 public:
  // The SCRAM secret for `password` (derived once per user and password).
  std::string secret_for(const std::string& user, const std::string& password);

 private:
  util::LeafMutex mutex_;
  std::map<std::string, std::pair<std::string, std::string>> cache_;  // user -> (pw, secret)
};

}  // namespace pgw::auth
