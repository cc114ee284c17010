#include "auth/secret_cache.hpp"

#include "auth/auth.hpp"

namespace pgw::auth {

std::string ScramSecretCache::secret_for(const std::string& user, const std::string& password) {
  {
    std::lock_guard lock(mutex_);
    auto it = cache_.find(user);
    if (it != cache_.end() && it->second.first == password) return it->second.second;
  }
  std::string secret = scram_secret_from_password(password);
  std::lock_guard lock(mutex_);
  cache_[user] = {password, secret};
  return secret;
}

}  // namespace pgw::auth
