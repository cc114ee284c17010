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
  // The SCRAM secret for `password` with `iterations` (derived once per user, password and
  // iteration count: a reload that changes scram_iterations gives new secrets).
  std::string secret_for(const std::string& user, const std::string& password, int iterations);

 private:
  struct Entry {
    std::string password;
    int iterations = 0;
    std::string secret;
  };
  util::LeafMutex mutex_;
  std::map<std::string, Entry> cache_;  // by user
};

}  // namespace pgw::auth
