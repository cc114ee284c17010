// SHA-256 and HMAC-SHA-256 for the login path: a SCRAM exchange hashes a few hundred bytes, and
// OpenSSL 3's EVP layer spends more on dispatch (provider look-ups, parameter arrays, context
// allocations) than on the hashing itself. These go straight to OpenSSL's SHA-256 block
// functions (the same SHA-NI/AVX code EVP reaches), and an HMAC key's schedule (the hash states
// after its inner and outer padded blocks, RFC 2104) is computed once and copied per message.
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <string_view>

namespace pgw::auth {

using Sha256Digest = std::array<unsigned char, 32>;

Sha256Digest sha256_digest(std::string_view data);

inline std::string_view as_view(const Sha256Digest& digest) {
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

class HmacSha256Key {
 public:
  explicit HmacSha256Key(std::string_view key);
  Sha256Digest sign(std::string_view data) const;
  Sha256Digest sign(std::initializer_list<std::string_view> parts) const;

 private:
  // OpenSSL's SHA256_CTX, kept opaque so that this header does not pull in its deprecated API.
  static constexpr std::size_t kStateSize = 112;
  struct alignas(8) State {
    std::array<unsigned char, kStateSize> bytes;
  };
  State inner_{};
  State outer_{};
};

}  // namespace pgw::auth
