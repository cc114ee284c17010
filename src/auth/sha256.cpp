// OpenSSL 3 deprecates the low-level SHA256_* functions in favour of EVP, but keeps them (and
// their hardware-accelerated block code) for its whole 3.x line; see sha256.hpp for why the
// login path uses them.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "auth/sha256.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstring>

namespace pgw::auth {
namespace {

template <typename State>
SHA256_CTX* ctx_of(State& state) {
  static_assert(sizeof(SHA256_CTX) == sizeof(state.bytes), "SHA256_CTX layout changed");
  static_assert(alignof(SHA256_CTX) <= alignof(State));
  return reinterpret_cast<SHA256_CTX*>(state.bytes.data());
}

}  // namespace

Sha256Digest sha256_digest(std::string_view data) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, data.data(), data.size());
  Sha256Digest out{};
  SHA256_Final(out.data(), &ctx);
  return out;
}

HmacSha256Key::HmacSha256Key(std::string_view key) {
  // RFC 2104: a key longer than the block is hashed first; the padded key XOR ipad / opad is
  // one block each, hashed into the states every message starts from.
  std::array<unsigned char, SHA256_CBLOCK> block{};
  if (key.size() > block.size()) {
    const auto hashed = sha256_digest(key);
    std::memcpy(block.data(), hashed.data(), hashed.size());
  } else {
    std::memcpy(block.data(), key.data(), key.size());
  }
  std::array<unsigned char, SHA256_CBLOCK> pad{};
  for (std::size_t i = 0; i < block.size(); ++i) pad[i] = block[i] ^ 0x36;
  SHA256_Init(ctx_of(inner_));
  SHA256_Update(ctx_of(inner_), pad.data(), pad.size());
  for (std::size_t i = 0; i < block.size(); ++i) pad[i] = block[i] ^ 0x5c;
  SHA256_Init(ctx_of(outer_));
  SHA256_Update(ctx_of(outer_), pad.data(), pad.size());
  OPENSSL_cleanse(block.data(), block.size());
  OPENSSL_cleanse(pad.data(), pad.size());
}

Sha256Digest HmacSha256Key::sign(std::string_view data) const {
  return sign({data});
}

Sha256Digest HmacSha256Key::sign(std::initializer_list<std::string_view> parts) const {
  State inner = inner_;
  for (auto part : parts) SHA256_Update(ctx_of(inner), part.data(), part.size());
  Sha256Digest out{};
  SHA256_Final(out.data(), ctx_of(inner));
  State outer = outer_;
  SHA256_Update(ctx_of(outer), out.data(), out.size());
  SHA256_Final(out.data(), ctx_of(outer));
  return out;
}

}  // namespace pgw::auth
