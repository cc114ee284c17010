// Password verification and generation for md5 and SCRAM-SHA-256 (RFC 5802 / RFC 7677), in
// both roles: pgwarden as the server its clients log in to, and as a client of PostgreSQL.
// Pure computation on strings, using OpenSSL only for hashes, HMAC, PBKDF2 and randomness.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "auth/sha256.hpp"

namespace pgw::auth {

// "md5" + hex(md5(password + user)), the form stored in pg_authid and userlist.txt.
std::string md5_password_hash(std::string_view user, std::string_view password);
// What a client sends in reply to AuthenticationMD5Password:
// "md5" + hex(md5(hex(md5(password + user)) + salt)). `stored_or_plain` may be either a
// plaintext password or an "md5..." stored hash (then only the outer hash is computed).
std::string md5_response(std::string_view user, std::string_view stored_or_plain,
                         std::string_view salt4);
bool is_md5_hash(std::string_view secret);
bool is_scram_secret(std::string_view secret);

// Cryptographically random bytes. Each thread draws from OpenSSL's generator a few KiB at a
// time: a call to it costs about as much for 18 bytes (a login's nonce) as for 4 KiB.
void fill_random(std::span<unsigned char> out);
std::string random_bytes(std::size_t n);
std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);

// A parsed "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>" secret.
struct ScramSecret {
  int iterations = 0;
  std::string salt;        // raw bytes
  std::string stored_key;  // raw 32 bytes
  std::string server_key;  // raw 32 bytes
};
std::optional<ScramSecret> parse_scram_secret(std::string_view text);
// Derive a secret from a plaintext password (SASLprep is the identity for ASCII passwords;
// non-ASCII passwords are used as-is, as PostgreSQL does when SASLprep fails).
ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations);
std::string format_scram_secret(const ScramSecret& secret);
// A new secret for `password` with a random salt and `iterations` (scram_iterations), formatted.
std::string scram_secret_from_password(std::string_view password, int iterations = 4096);

// A secret made ready to verify logins: parsed once, the salt's base64 kept, and the HMAC keys
// of StoredKey and ServerKey scheduled once (sha256.hpp), so that a login hashes only its own
// messages.
struct ScramVerifier {
  explicit ScramVerifier(ScramSecret parsed);
  ScramSecret secret;
  std::string salt_base64;
  HmacSha256Key stored_key_mac;  // ClientSignature = HMAC(StoredKey, AuthMessage)
  HmacSha256Key server_key_mac;  // ServerSignature = HMAC(ServerKey, AuthMessage)
};

// The verifier of a "SCRAM-SHA-256$..." text, or nullptr if it is not one. Kept per thread by
// the text (auth_file's, auth_query's, or a plaintext password's derived secret), so a worker
// parses and schedules each secret once; a changed password is a new text.
std::shared_ptr<const ScramVerifier> scram_verifier_for(std::string_view secret_text);

// The secret a login of an unknown user (or one with no SCRAM secret) is run against, so the
// exchange does not tell that it cannot succeed: the salt is the same for the same name as long
// as the process runs (a second try shows no change), as PostgreSQL's mock authentication does;
// the keys are random, so no proof matches them.
std::shared_ptr<const ScramVerifier> scram_stand_in_verifier(std::string_view user, int iterations);

// Server side of one SCRAM-SHA-256 exchange (pgwarden authenticating a client).
class ScramServer {
 public:
  explicit ScramServer(std::shared_ptr<const ScramVerifier> verifier,
                       std::string server_nonce_raw = {});
  // `secret` from userlist.txt (plaintext passwords are turned into a secret first).
  explicit ScramServer(ScramSecret secret, std::string server_nonce_raw = {});
  // For test vectors: use `nonce` verbatim as the server part of the nonce.
  static ScramServer with_literal_nonce(ScramSecret secret, std::string nonce);
  static ScramServer with_literal_nonce(std::shared_ptr<const ScramVerifier> verifier,
                                        std::string nonce);
  // client-first-message -> server-first-message; nullopt if malformed (then fail auth).
  std::optional<std::string> handle_client_first(std::string_view client_first);
  // client-final-message -> server-final-message ("v=..."); nullopt if malformed or the proof
  // is wrong (authentication failed).
  std::optional<std::string> handle_client_final(std::string_view client_final);
  // After a successful exchange: the client's ClientKey, which lets pgwarden log in to a
  // server that has the same secret without knowing the password (SCRAM pass-through).
  const std::string& client_key() const { return client_key_; }

 private:
  std::shared_ptr<const ScramVerifier> verifier_;
  std::string gs2_header_;  // "n,," or "y,,", echoed base64-encoded in c=
  std::string nonce_;       // full nonce (client + server)
  std::string client_first_bare_;
  std::string server_first_;
  std::string server_nonce_raw_;
  std::string client_key_;
};

// Client side of one SCRAM-SHA-256 exchange (pgwarden logging in to PostgreSQL).
class ScramClient {
 public:
  // Either a plaintext password, or (pass-through) a ClientKey plus the matching secret.
  static ScramClient with_password(std::string_view user, std::string password,
                                   std::string client_nonce_raw = {});
  static ScramClient with_client_key(std::string_view user, std::string client_key,
                                     ScramSecret secret, std::string client_nonce_raw = {});
  std::string client_first();                                 // "n,,n=,r=<nonce>"
  std::string client_first_with_user(std::string_view user);  // "n,,n=<user>,r=<nonce>"
  void set_literal_nonce(std::string nonce);                  // for test vectors
  // server-first-message -> client-final-message; nullopt if malformed or nonce mismatch.
  std::optional<std::string> handle_server_first(std::string_view server_first);
  // server-final-message: true if the server signature checks out.
  bool verify_server_final(std::string_view server_final) const;

 private:
  ScramClient() = default;
  std::string password_;
  std::string client_key_;
  std::optional<ScramSecret> secret_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string server_signature_;
};

}  // namespace pgw::auth
