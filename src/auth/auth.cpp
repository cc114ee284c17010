#include "auth/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include "util/activity.hpp"

namespace pgw::auth {
namespace {

// OpenSSL 3 looks an algorithm up by name (a "fetch": locks, a hash table, parameter parsing)
// at every call given a legacy EVP_md5(), which costs more than hashing a few dozen bytes; so
// the digests PBKDF2 and md5 use are fetched once for the process (fetched objects may be
// shared between threads). SHA-256 and HMAC for the exchanges themselves: sha256.hpp.
const EVP_MD* sha256_md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

const EVP_MD* md5_md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "MD5", nullptr);
  return md;
}

std::string digest(const EVP_MD* md, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  if (md == nullptr || EVP_Digest(data.data(), data.size(), out.data(), &len, md, nullptr) != 1) {
    throw std::runtime_error("digest failed");
  }
  return std::string(reinterpret_cast<const char*>(out.data()), len);
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  return std::string(as_view(HmacSha256Key(key).sign(data)));
}

std::string sha256(std::string_view data) {
  return std::string(as_view(sha256_digest(data)));
}

std::string hex(std::string_view raw) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string xor_strings(std::string_view a, std::string_view b) {
  std::string out(a);
  for (std::size_t i = 0; i < out.size() && i < b.size(); ++i) {
    out[i] = static_cast<char>(out[i] ^ b[i]);
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// "a=...,b=..." SCRAM attributes in order: all checked for form, the first three kept (no
// message of the exchange needs more; extensions after them are covered by the signature).
class Attributes {
 public:
  explicit Attributes(std::string_view message) {
    std::size_t start = 0;
    while (start <= message.size()) {
      auto end = message.find(',', start);
      if (end == std::string_view::npos) end = message.size();
      auto part = message.substr(start, end - start);
      if (part.size() < 2 || part[1] != '=') {
        count_ = 0;  // malformed: as if empty, which every caller refuses
        return;
      }
      if (count_ < kept_.size()) kept_[count_] = {part[0], part.substr(2)};
      ++count_;
      start = end + 1;
    }
  }
  std::size_t size() const { return count_; }
  const std::pair<char, std::string_view>& operator[](std::size_t i) const { return kept_[i]; }

 private:
  std::array<std::pair<char, std::string_view>, 3> kept_{};
  std::size_t count_ = 0;
};

Attributes attributes(std::string_view message) {
  return Attributes(message);
}

// A decimal integer with nothing else around it (std::stoi alone accepts "4096x", " 4096").
std::optional<int> parse_decimal(std::string_view text) {
  if (text.empty() || !(text[0] == '-' || (text[0] >= '0' && text[0] <= '9'))) return std::nullopt;
  try {
    std::size_t used = 0;
    const int value = std::stoi(std::string(text), &used);
    if (used != text.size()) return std::nullopt;
    return value;
  } catch (...) {
    return std::nullopt;
  }
}

bool printable_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

}  // namespace

std::string md5_password_hash(std::string_view user, std::string_view password) {
  std::string input(password);
  input.append(user);
  return "md5" + hex(digest(md5_md(), input));
}

bool is_md5_hash(std::string_view secret) {
  if (secret.size() != 35 || secret.substr(0, 3) != "md5") return false;
  for (char c : secret.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_scram_secret(std::string_view secret) {
  return secret.rfind("SCRAM-SHA-256$", 0) == 0;
}

std::string md5_response(std::string_view user, std::string_view stored_or_plain,
                         std::string_view salt4) {
  const std::string stored = is_md5_hash(stored_or_plain)
                                 ? std::string(stored_or_plain)
                                 : md5_password_hash(user, stored_or_plain);
  std::string input = stored.substr(3);
  input.append(salt4);
  return "md5" + hex(digest(md5_md(), input));
}

namespace {

struct RandomReserve {
  std::array<unsigned char, 4096> bytes{};
  std::size_t used = bytes.size();  // all spent: the first call draws
};

thread_local RandomReserve random_reserve;

void draw(std::span<unsigned char> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
}

}  // namespace

void fill_random(std::span<unsigned char> out) {
  // A forked child must not hand out the bytes its parent also holds: the thread that forks
  // (the child's only thread) drops its reserve there.
  static std::once_flag at_fork;
  std::call_once(at_fork, [] {
    ::pthread_atfork(nullptr, nullptr, [] { random_reserve.used = random_reserve.bytes.size(); });
  });
  auto& reserve = random_reserve;
  if (out.size() > reserve.bytes.size() / 4) {
    draw(out);
    return;
  }
  if (reserve.bytes.size() - reserve.used < out.size()) {
    draw(reserve.bytes);
    reserve.used = 0;
  }
  std::memcpy(out.data(), reserve.bytes.data() + reserve.used, out.size());
  // Handed-out bytes do not stay behind in memory.
  OPENSSL_cleanse(reserve.bytes.data() + reserve.used, out.size());
  reserve.used += out.size();
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  fill_random({reinterpret_cast<unsigned char*>(out.data()), n});
  return out;
}

std::string base64_encode(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(raw.data()),
                                static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    // '=' only as padding: the last character, or the last two ("xx==").
    const bool padding =
        c == '=' && (i + 1 == text.size() || (i + 2 == text.size() && text.back() == '='));
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || padding;
    if (!ok) return std::nullopt;
  }
  if (text.empty()) return std::string{};
  std::string out(3 * text.size() / 4, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  // EVP_DecodeBlock counts padding as zero bytes: drop them.
  if (text.back() == '=') --len;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::optional<ScramSecret> parse_scram_secret(std::string_view text) {
  if (!is_scram_secret(text)) return std::nullopt;
  text.remove_prefix(14);
  const auto colon1 = text.find(':');
  const auto dollar = text.find('$');
  if (colon1 == std::string_view::npos || dollar == std::string_view::npos || colon1 > dollar) {
    return std::nullopt;
  }
  const auto colon2 = text.find(':', dollar);
  if (colon2 == std::string_view::npos) return std::nullopt;
  ScramSecret secret;
  const auto iterations = parse_decimal(text.substr(0, colon1));
  if (!iterations) return std::nullopt;
  secret.iterations = *iterations;
  auto salt = base64_decode(text.substr(colon1 + 1, dollar - colon1 - 1));
  auto stored = base64_decode(text.substr(dollar + 1, colon2 - dollar - 1));
  auto server = base64_decode(text.substr(colon2 + 1));
  if (secret.iterations <= 0 || !salt || !stored || !server || stored->size() != 32 ||
      server->size() != 32) {
    return std::nullopt;
  }
  secret.salt = *salt;
  secret.stored_key = *stored;
  secret.server_key = *server;
  return secret;
}

ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations) {
  // Thousands of HMAC rounds on the caller's event loop: named for the watchdog.
  activity::Scope scope("computing a SCRAM key (PBKDF2)");
  std::string salted(32, '\0');
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), iterations, sha256_md(), 32,
                        reinterpret_cast<unsigned char*>(salted.data())) != 1) {
    throw std::runtime_error("PBKDF2 failed");
  }
  ScramSecret secret;
  secret.iterations = iterations;
  secret.salt = std::string(salt);
  secret.stored_key = sha256(hmac_sha256(salted, "Client Key"));
  secret.server_key = hmac_sha256(salted, "Server Key");
  return secret;
}

std::string format_scram_secret(const ScramSecret& secret) {
  return "SCRAM-SHA-256$" + std::to_string(secret.iterations) + ":" + base64_encode(secret.salt) +
         "$" + base64_encode(secret.stored_key) + ":" + base64_encode(secret.server_key);
}

std::string scram_secret_from_password(std::string_view password, int iterations) {
  return format_scram_secret(make_scram_secret(password, random_bytes(16), iterations));
}

ScramVerifier::ScramVerifier(ScramSecret parsed)
    : secret(std::move(parsed)),
      salt_base64(base64_encode(secret.salt)),
      stored_key_mac(secret.stored_key),
      server_key_mac(secret.server_key) {}

std::shared_ptr<const ScramVerifier> scram_verifier_for(std::string_view secret_text) {
  // Bounded, so that passwords changed again and again do not grow it without end.
  constexpr std::size_t kMaxEntries = 4096;
  thread_local std::map<std::string, std::shared_ptr<const ScramVerifier>, std::less<>> cache;
  if (auto it = cache.find(secret_text); it != cache.end()) return it->second;
  auto parsed = parse_scram_secret(secret_text);
  if (!parsed) return nullptr;
  if (cache.size() >= kMaxEntries) cache.clear();
  auto verifier = std::make_shared<const ScramVerifier>(std::move(*parsed));
  cache.emplace(std::string(secret_text), verifier);
  return verifier;
}

std::shared_ptr<const ScramVerifier> scram_stand_in_verifier(std::string_view user,
                                                             int iterations) {
  static const HmacSha256Key salt_key(random_bytes(32));
  const auto salt = salt_key.sign(user);
  ScramSecret secret;
  secret.iterations = iterations;
  secret.salt.assign(reinterpret_cast<const char*>(salt.data()), 16);
  secret.stored_key = random_bytes(32);
  secret.server_key = random_bytes(32);
  return std::make_shared<const ScramVerifier>(std::move(secret));
}

ScramServer::ScramServer(std::shared_ptr<const ScramVerifier> verifier,
                         std::string server_nonce_raw)
    : verifier_(std::move(verifier)),
      server_nonce_raw_(server_nonce_raw.empty() ? base64_encode(random_bytes(18))
                                                 : base64_encode(server_nonce_raw)) {}

ScramServer::ScramServer(ScramSecret secret, std::string server_nonce_raw)
    : ScramServer(std::make_shared<const ScramVerifier>(std::move(secret)),
                  std::move(server_nonce_raw)) {}

ScramServer ScramServer::with_literal_nonce(ScramSecret secret, std::string nonce) {
  return with_literal_nonce(std::make_shared<const ScramVerifier>(std::move(secret)),
                            std::move(nonce));
}

ScramServer ScramServer::with_literal_nonce(std::shared_ptr<const ScramVerifier> verifier,
                                            std::string nonce) {
  ScramServer server(std::move(verifier), "x");
  server.server_nonce_raw_ = std::move(nonce);
  return server;
}

std::optional<std::string> ScramServer::handle_client_first(std::string_view client_first) {
  if (client_first.size() > 1024) return std::nullopt;
  // gs2-header: "n,," or "y,," (no channel binding); "p=" would require SCRAM-SHA-256-PLUS.
  if (client_first.size() < 3 || (client_first[0] != 'n' && client_first[0] != 'y') ||
      client_first[1] != ',') {
    return std::nullopt;
  }
  const auto second_comma = client_first.find(',', 2);
  if (second_comma == std::string_view::npos) return std::nullopt;
  if (second_comma != 2) return std::nullopt;  // authzid not supported, as in PostgreSQL
  gs2_header_ = std::string(client_first.substr(0, 3));
  client_first_bare_ = std::string(client_first.substr(3));
  auto attrs = attributes(client_first_bare_);
  if (attrs.size() < 2 || attrs[0].first != 'n' || attrs[1].first != 'r') return std::nullopt;
  if (!printable_nonce(attrs[1].second)) return std::nullopt;
  nonce_.reserve(attrs[1].second.size() + server_nonce_raw_.size());
  nonce_.assign(attrs[1].second).append(server_nonce_raw_);
  const auto& salt = verifier_->salt_base64;
  const auto iterations = std::to_string(verifier_->secret.iterations);
  server_first_.reserve(2 + nonce_.size() + 3 + salt.size() + 3 + iterations.size());
  server_first_.assign("r=").append(nonce_).append(",s=").append(salt).append(",i=").append(
      iterations);
  return server_first_;
}

std::optional<std::string> ScramServer::handle_client_final(std::string_view client_final) {
  if (server_first_.empty() || client_final.size() > 1024) return std::nullopt;
  const auto proof_pos = client_final.rfind(",p=");
  if (proof_pos == std::string_view::npos) return std::nullopt;
  const auto without_proof = client_final.substr(0, proof_pos);
  auto attrs = attributes(without_proof);
  if (attrs.size() < 2 || attrs[0].first != 'c' || attrs[1].first != 'r') return std::nullopt;
  if (attrs[0].second != base64_encode(gs2_header_)) return std::nullopt;
  if (attrs[1].second != nonce_) return std::nullopt;
  auto proof = base64_decode(client_final.substr(proof_pos + 3));
  if (!proof || proof->size() != 32) return std::nullopt;
  // AuthMessage = client-first-message-bare "," server-first-message "," client-final without
  // the proof, hashed in parts rather than joined.
  const std::initializer_list<std::string_view> auth_message = {client_first_bare_, ",",
                                                                server_first_, ",", without_proof};
  const auto client_signature = verifier_->stored_key_mac.sign(auth_message);
  Sha256Digest client_key{};
  for (std::size_t i = 0; i < client_key.size(); ++i) {
    client_key[i] = static_cast<unsigned char>((*proof)[i]) ^ client_signature[i];
  }
  if (!constant_time_equal(as_view(sha256_digest(as_view(client_key))),
                           verifier_->secret.stored_key)) {
    return std::nullopt;
  }
  client_key_ = as_view(client_key);
  return "v=" + base64_encode(as_view(verifier_->server_key_mac.sign(auth_message)));
}

ScramClient ScramClient::with_password(std::string_view /*user*/, std::string password,
                                       std::string client_nonce_raw) {
  ScramClient client;
  client.password_ = std::move(password);
  client.client_nonce_ =
      base64_encode(client_nonce_raw.empty() ? random_bytes(18) : client_nonce_raw);
  return client;
}

ScramClient ScramClient::with_client_key(std::string_view /*user*/, std::string client_key,
                                         ScramSecret secret, std::string client_nonce_raw) {
  ScramClient client;
  client.client_key_ = std::move(client_key);
  client.secret_ = std::move(secret);
  client.client_nonce_ =
      base64_encode(client_nonce_raw.empty() ? random_bytes(18) : client_nonce_raw);
  return client;
}

void ScramClient::set_literal_nonce(std::string nonce) {
  client_nonce_ = std::move(nonce);
}

std::string ScramClient::client_first() {
  // PostgreSQL ignores the SCRAM user name (it uses the startup packet's), so send none.
  client_first_bare_ = "n=,r=" + client_nonce_;
  return "n,," + client_first_bare_;
}

std::string ScramClient::client_first_with_user(std::string_view user) {
  client_first_bare_ = "n=" + std::string(user) + ",r=" + client_nonce_;
  return "n,," + client_first_bare_;
}

std::optional<std::string> ScramClient::handle_server_first(std::string_view server_first) {
  if (client_first_bare_.empty() || server_first.size() > 1024) return std::nullopt;
  auto attrs = attributes(server_first);
  if (attrs.size() < 3 || attrs[0].first != 'r' || attrs[1].first != 's' || attrs[2].first != 'i') {
    return std::nullopt;
  }
  const auto nonce = attrs[0].second;
  if (nonce.size() <= client_nonce_.size() ||
      nonce.substr(0, client_nonce_.size()) != client_nonce_ || !printable_nonce(nonce)) {
    return std::nullopt;
  }
  auto salt = base64_decode(attrs[1].second);
  const int iterations = parse_decimal(attrs[2].second).value_or(0);
  if (!salt || iterations <= 0 || iterations > 10'000'000) return std::nullopt;

  std::string client_key;
  std::string stored_key;
  std::string server_key;
  if (secret_) {
    if (*salt != secret_->salt || iterations != secret_->iterations) return std::nullopt;
    client_key = client_key_;
    stored_key = secret_->stored_key;
    server_key = secret_->server_key;
  } else {
    // One PBKDF2 (the expensive part of a login) gives all three keys.
    activity::Scope scope("computing a SCRAM key (PBKDF2)");
    std::string salted(32, '\0');
    if (PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                          reinterpret_cast<const unsigned char*>(salt->data()),
                          static_cast<int>(salt->size()), iterations, sha256_md(), 32,
                          reinterpret_cast<unsigned char*>(salted.data())) != 1) {
      return std::nullopt;
    }
    client_key = hmac_sha256(salted, "Client Key");
    stored_key = sha256(client_key);
    server_key = hmac_sha256(salted, "Server Key");
  }
  const std::string without_proof = "c=biws,r=" + std::string(nonce);
  const std::string auth_message =
      client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  const std::string proof = xor_strings(client_key, hmac_sha256(stored_key, auth_message));
  server_signature_ = hmac_sha256(server_key, auth_message);
  return without_proof + ",p=" + base64_encode(proof);
}

bool ScramClient::verify_server_final(std::string_view server_final) const {
  if (server_final.substr(0, 2) != "v=" || server_signature_.empty()) return false;
  auto signature = base64_decode(server_final.substr(2));
  return signature && constant_time_equal(*signature, server_signature_);
}

}  // namespace pgw::auth
