#include "auth/secret_cache.hpp"

#include "auth/auth.hpp"

namespace pgw::auth {

std::string ScramSecretCache::secret_for(const std::string& user, const std::string& password,
                                         int iterations) {
  {
    std::lock_guard lock(mutex_);
    auto it = cache_.find(user);
    if (it != cache_.end() && it->second.password == password &&
        it->second.iterations == iterations) {
      return it->second.secret;
    }
  }
  std::string secret = scram_secret_from_password(password, iterations);
  std::lock_guard lock(mutex_);
  cache_[user] = Entry{password, iterations, secret};
  return secret;
}

}  // namespace pgw::auth
