// Unit tests for src/auth: md5, base64, SCRAM secrets, and both sides of a SCRAM-SHA-256
// exchange, anchored on the RFC 7677 test vector.
#include "auth/auth.hpp"
#include "auth/secret_cache.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using pgw::auth::ScramClient;
using pgw::auth::ScramSecret;
using pgw::auth::ScramServer;

// --- RFC 7677 section 3 test vector -------------------------------------------------------
constexpr std::string_view kUser = "user";
constexpr std::string_view kPassword = "pencil";
constexpr std::string_view kClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr int kIterations = 4096;
constexpr std::string_view kClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view kClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
// As printed in RFC 7677 (and recomputed independently: HMAC(ServerKey, AuthMessage)).
constexpr std::string_view kServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// Derived from the vector: SaltedPassword = PBKDF2(pencil, salt, 4096),
// ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey),
// ServerKey = HMAC(SaltedPassword, "Server Key").
constexpr std::string_view kClientKeyB64 = "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos=";
constexpr std::string_view kStoredKeyB64 = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
constexpr std::string_view kServerKeyB64 = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
constexpr std::string_view kVectorSecret =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

std::string b64(std::string_view raw) {
  return pgw::auth::base64_encode(raw);
}

std::string unb64(std::string_view text) {
  auto decoded = pgw::auth::base64_decode(text);
  EXPECT_TRUE(decoded.has_value()) << "not base64: " << text;
  return decoded.value_or(std::string{});
}

ScramSecret vector_secret() {
  return pgw::auth::make_scram_secret(kPassword, unb64(kSaltB64), kIterations);
}

// A server primed with the RFC nonce, already past client-first.
ScramServer vector_server_after_first() {
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  EXPECT_EQ(server.handle_client_first(kClientFirst), std::optional<std::string>(kServerFirst));
  return server;
}

// Replaces the p= attribute of a client-final message.
std::string with_proof(std::string_view client_final, std::string_view proof_b64) {
  const auto pos = client_final.rfind(",p=");
  return std::string(client_final.substr(0, pos)) + ",p=" + std::string(proof_b64);
}

// Flips one bit of the decoded proof and re-encodes it.
std::string tampered_proof(std::string_view client_final) {
  const auto pos = client_final.rfind(",p=");
  std::string proof = unb64(client_final.substr(pos + 3));
  proof[5] = static_cast<char>(proof[5] ^ 0x01);
  return with_proof(client_final, b64(proof));
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

struct ExpectedProof {
  std::string proof_b64;
  std::string server_signature_b64;
};

// Computes proof and server signature for the vector's client-first-bare and server-first
// and the given client-final-without-proof, straight from RFC 5802 section 3 (independent of
// ScramClient/ScramServer).
ExpectedProof independent_proof(std::string_view client_final_without_proof) {
  const std::string auth_message = std::string(kClientFirst.substr(3)) + "," +
                                   std::string(kServerFirst) + "," +
                                   std::string(client_final_without_proof);
  const std::string client_key = unb64(kClientKeyB64);
  const std::string signature = hmac_sha256(unb64(kStoredKeyB64), auth_message);
  std::string proof = client_key;
  for (std::size_t i = 0; i < proof.size(); ++i) {
    proof[i] = static_cast<char>(proof[i] ^ signature[i]);
  }
  return {b64(proof), b64(hmac_sha256(unb64(kServerKeyB64), auth_message))};
}

struct Exchange {
  bool server_accepted = false;
  bool client_verified_server = false;
  std::string server_client_key;
};

// A full exchange between a ScramClient and a ScramServer with random nonces.
Exchange run_exchange(ScramClient client, ScramServer server) {
  Exchange result;
  const auto server_first = server.handle_client_first(client.client_first());
  if (!server_first) return result;
  const auto client_final = client.handle_server_first(*server_first);
  if (!client_final) return result;
  const auto server_final = server.handle_client_final(*client_final);
  if (!server_final) return result;
  result.server_accepted = true;
  result.client_verified_server = client.verify_server_final(*server_final);
  result.server_client_key = server.client_key();
  return result;
}

// --- md5 ----------------------------------------------------------------------------------

TEST(Md5Test, PasswordHashMatchesPostgresForm) {
  // md5("postgres" + "postgres"), as stored in pg_authid for user postgres / password postgres.
  EXPECT_EQ(pgw::auth::md5_password_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d");
}

TEST(Md5Test, PasswordHashIsPasswordThenUser) {
  // Swapping user and password changes the input order and therefore the hash.
  EXPECT_NE(pgw::auth::md5_password_hash("alice", "secret"),
            pgw::auth::md5_password_hash("secret", "alice"));
  EXPECT_TRUE(pgw::auth::is_md5_hash(pgw::auth::md5_password_hash("alice", "secret")));
}

TEST(Md5Test, ResponseKnownValue) {
  // "md5" + md5("3175bce1d3201d16594cebf9d7eb3f9d" + salt), computed independently.
  EXPECT_EQ(pgw::auth::md5_response("postgres", "postgres", "abcd"),
            "md50800ba833a175e428fc0110c29998942");
  const std::string binary_salt{'\x01', '\x02', '\x03', '\x04'};
  EXPECT_EQ(pgw::auth::md5_response("postgres", "postgres", binary_salt),
            "md568be9ed08db75f318087ab337aaea044");
}

TEST(Md5Test, ResponseFromStoredHashEqualsResponseFromPlaintext) {
  const std::string stored = pgw::auth::md5_password_hash("postgres", "postgres");
  EXPECT_EQ(pgw::auth::md5_response("postgres", stored, "abcd"),
            pgw::auth::md5_response("postgres", "postgres", "abcd"));
}

TEST(Md5Test, ResponseDependsOnSaltAndUser) {
  const auto base = pgw::auth::md5_response("postgres", "postgres", "abcd");
  EXPECT_NE(base, pgw::auth::md5_response("postgres", "postgres", "abce"));
  EXPECT_NE(base, pgw::auth::md5_response("postgrez", "postgres", "abcd"));
  EXPECT_EQ(base.size(), 35U);
  EXPECT_TRUE(pgw::auth::is_md5_hash(base));
}

TEST(Md5Test, IsMd5Hash) {
  EXPECT_TRUE(pgw::auth::is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(pgw::auth::is_md5_hash("md53175BCE1D3201D16594CEBF9D7EB3F9D"));   // upper case
  EXPECT_FALSE(pgw::auth::is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9"));    // 31 hex
  EXPECT_FALSE(pgw::auth::is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d0"));  // 33 hex
  EXPECT_FALSE(pgw::auth::is_md5_hash("MD53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(pgw::auth::is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9g"));  // not hex
  EXPECT_FALSE(pgw::auth::is_md5_hash("xyz3175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(pgw::auth::is_md5_hash("postgres"));
  EXPECT_FALSE(pgw::auth::is_md5_hash(""));
}

TEST(Md5Test, PlaintextThatLooksLikeMd5IsTreatedAsStoredHash) {
  // Documented: an "md5..." string is taken as the stored hash, not hashed again.
  const std::string looks_stored = "md5" + std::string(32, 'a');
  const auto response = pgw::auth::md5_response("bob", looks_stored, "salt");
  EXPECT_NE(response, pgw::auth::md5_response(
                          "bob", pgw::auth::md5_password_hash("bob", looks_stored), "salt"));
}

TEST(AuthSecretKindTest, IsScramSecret) {
  EXPECT_TRUE(pgw::auth::is_scram_secret(kVectorSecret));
  EXPECT_TRUE(pgw::auth::is_scram_secret("SCRAM-SHA-256$"));
  EXPECT_FALSE(pgw::auth::is_scram_secret("scram-sha-256$4096:abc$def:ghi"));
  EXPECT_FALSE(pgw::auth::is_scram_secret("SCRAM-SHA-1$4096:abc$def:ghi"));
  EXPECT_FALSE(pgw::auth::is_scram_secret(" SCRAM-SHA-256$4096:abc$def:ghi"));
  EXPECT_FALSE(pgw::auth::is_scram_secret("md53175bce1d3201d16594cebf9d7eb3f9d"));
  EXPECT_FALSE(pgw::auth::is_scram_secret(""));
}

// --- base64 / random ----------------------------------------------------------------------

TEST(AuthBase64Test, Rfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, encoded] : vectors) {
    EXPECT_EQ(b64(raw), encoded) << "raw: " << raw;
    EXPECT_EQ(pgw::auth::base64_decode(encoded), std::optional<std::string>(raw))
        << "encoded: " << encoded;
  }
}

TEST(AuthBase64Test, RoundTripsBinaryOfEveryLengthModulo3) {
  std::string raw;
  for (int i = 0; i < 70; ++i) {
    raw.push_back(static_cast<char>((i * 37 + 200) & 0xff));  // includes NUL and high bytes
    const auto encoded = b64(raw);
    EXPECT_EQ(encoded.size() % 4, 0U);
    EXPECT_EQ(encoded.find('\n'), std::string::npos);
    EXPECT_EQ(pgw::auth::base64_decode(encoded), std::optional<std::string>(raw))
        << "length " << raw.size();
  }
  const std::string zeros(5, '\0');
  EXPECT_EQ(pgw::auth::base64_decode(b64(zeros)), std::optional<std::string>(zeros));
}

TEST(AuthBase64Test, RejectsInvalidInput) {
  const std::string_view invalid[] = {
      "Zg=",         // length not a multiple of 4
      "Zg",          // unpadded
      "Zm9v!A==",    // bad character
      "Zm 9v",       // space
      "Zm9v\nYmFy",  // newline
      "Zg==Zg==",    // padding in the middle
      "Z===",        // three padding characters
      "====",        // only padding
      "=Zm9",        // padding first
      "Zm9-",        // base64url alphabet is not accepted
  };
  for (const auto text : invalid) {
    EXPECT_EQ(pgw::auth::base64_decode(text), std::nullopt) << "accepted: " << text;
  }
}

TEST(AuthBase64Test, RejectsDataAfterPadding) {
  // '=' may only end the text; "Zm=v" has a data character after the padding.
  EXPECT_EQ(pgw::auth::base64_decode("Zm=v"), std::nullopt);
}

TEST(AuthRandomTest, RandomBytesHaveRequestedLengthAndDiffer) {
  EXPECT_EQ(pgw::auth::random_bytes(0).size(), 0U);
  const auto a = pgw::auth::random_bytes(32);
  const auto b = pgw::auth::random_bytes(32);
  EXPECT_EQ(a.size(), 32U);
  EXPECT_EQ(b.size(), 32U);
  EXPECT_NE(a, b);
}

// --- SCRAM secrets ------------------------------------------------------------------------

TEST(ScramSecretTest, MakeSecretMatchesRfc7677Keys) {
  const auto secret = vector_secret();
  EXPECT_EQ(secret.iterations, kIterations);
  EXPECT_EQ(b64(secret.salt), kSaltB64);
  EXPECT_EQ(b64(secret.stored_key), kStoredKeyB64);
  EXPECT_EQ(b64(secret.server_key), kServerKeyB64);
}

TEST(ScramSecretTest, FormatMatchesPostgresLayout) {
  EXPECT_EQ(pgw::auth::format_scram_secret(vector_secret()), kVectorSecret);
}

TEST(ScramSecretTest, ParseVectorSecret) {
  const auto parsed = pgw::auth::parse_scram_secret(kVectorSecret);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt, unb64(kSaltB64));
  EXPECT_EQ(parsed->stored_key, unb64(kStoredKeyB64));
  EXPECT_EQ(parsed->server_key, unb64(kServerKeyB64));
}

TEST(ScramSecretTest, ParseFormatRoundTrip) {
  const auto parsed = pgw::auth::parse_scram_secret(kVectorSecret);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(pgw::auth::format_scram_secret(*parsed), kVectorSecret);

  const auto other = pgw::auth::make_scram_secret("another password", "0123456789abcdef", 10000);
  const auto text = pgw::auth::format_scram_secret(other);
  EXPECT_EQ(text.rfind("SCRAM-SHA-256$10000:", 0), 0U) << text;
  const auto reparsed = pgw::auth::parse_scram_secret(text);
  ASSERT_TRUE(reparsed.has_value());
  EXPECT_EQ(reparsed->iterations, 10000);
  EXPECT_EQ(reparsed->salt, other.salt);
  EXPECT_EQ(reparsed->stored_key, other.stored_key);
  EXPECT_EQ(reparsed->server_key, other.server_key);
}

TEST(ScramSecretTest, DifferentPasswordSaltOrIterationsGiveDifferentKeys) {
  const auto base = vector_secret();
  const auto salt = unb64(kSaltB64);
  EXPECT_NE(pgw::auth::make_scram_secret("pencil2", salt, kIterations).stored_key, base.stored_key);
  EXPECT_NE(pgw::auth::make_scram_secret(kPassword, salt + "x", kIterations).stored_key,
            base.stored_key);
  EXPECT_NE(pgw::auth::make_scram_secret(kPassword, salt, kIterations + 1).server_key,
            base.server_key);
}

TEST(ScramSecretTest, RejectsMalformedSecrets) {
  const std::string stored(kStoredKeyB64);
  const std::string server(kServerKeyB64);
  const std::string salt(kSaltB64);
  const std::string short_key = b64(std::string(31, 'k'));
  const std::string long_key = b64(std::string(33, 'k'));
  const std::string malformed[] = {
      "",
      "md53175bce1d3201d16594cebf9d7eb3f9d",
      "SCRAM-SHA-256$",
      "SCRAM-SHA-1$4096:" + salt + "$" + stored + ":" + server,
      "scram-sha-256$4096:" + salt + "$" + stored + ":" + server,
      "SCRAM-SHA-256$" + salt + "$" + stored + ":" + server,              // no iterations
      "SCRAM-SHA-256$:" + salt + "$" + stored + ":" + server,             // empty iterations
      "SCRAM-SHA-256$abc:" + salt + "$" + stored + ":" + server,          // non-numeric
      "SCRAM-SHA-256$0:" + salt + "$" + stored + ":" + server,            // zero
      "SCRAM-SHA-256$-4096:" + salt + "$" + stored + ":" + server,        // negative
      "SCRAM-SHA-256$99999999999:" + salt + "$" + stored + ":" + server,  // overflows int
      "SCRAM-SHA-256$4096:" + salt + "$" + stored,                        // no ServerKey
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + server,               // no ':'
      "SCRAM-SHA-256$4096:" + salt + ":" + stored + ":" + server,         // no '$'
      "SCRAM-SHA-256$4096$" + salt + ":" + stored + ":" + server,         // '$' before ':'
      "SCRAM-SHA-256$4096:" + salt + "!$" + stored + ":" + server,        // bad salt base64
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + "!:" + server,        // bad StoredKey
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server + "!",   // bad ServerKey
      "SCRAM-SHA-256$4096:" + salt + "$" + short_key + ":" + server,      // 31-byte key
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + long_key,       // 33-byte key
      "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server + ":" + server,
  };
  for (const auto& text : malformed) {
    EXPECT_EQ(pgw::auth::parse_scram_secret(text), std::nullopt) << "accepted: " << text;
  }
}

TEST(ScramSecretTest, RejectsIterationsWithExtraCharacters) {
  // PostgreSQL parses the count with strtol and rejects anything left over.
  for (const std::string iterations : {"4096x", "4096 ", " 4096", "40 96", "4096.0"}) {
    const std::string text = "SCRAM-SHA-256$" + iterations + ":" + std::string(kSaltB64) + "$" +
                             std::string(kStoredKeyB64) + ":" + std::string(kServerKeyB64);
    EXPECT_EQ(pgw::auth::parse_scram_secret(text), std::nullopt) << "accepted: " << text;
  }
}

TEST(ScramSecretTest, SecretFromPasswordUsesRandomSaltAnd4096Iterations) {
  const auto a = pgw::auth::scram_secret_from_password("hunter2");
  const auto b = pgw::auth::scram_secret_from_password("hunter2");
  EXPECT_NE(a, b);  // random salt
  const auto parsed = pgw::auth::parse_scram_secret(a);
  ASSERT_TRUE(parsed.has_value()) << a;
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt.size(), 16U);
  // The secret must be the one make_scram_secret derives from that salt.
  const auto expected = pgw::auth::make_scram_secret("hunter2", parsed->salt, 4096);
  EXPECT_EQ(parsed->stored_key, expected.stored_key);
  EXPECT_EQ(parsed->server_key, expected.server_key);
}

// --- SCRAM client, RFC 7677 vector --------------------------------------------------------

TEST(ScramClientTest, Rfc7677ClientFirst) {
  auto client = ScramClient::with_password(kUser, std::string(kPassword));
  client.set_literal_nonce(std::string(kClientNonce));
  EXPECT_EQ(client.client_first_with_user(kUser), kClientFirst);
}

TEST(ScramClientTest, Rfc7677ClientFinalProofAndServerSignature) {
  auto client = ScramClient::with_password(kUser, std::string(kPassword));
  client.set_literal_nonce(std::string(kClientNonce));
  client.client_first_with_user(kUser);
  EXPECT_EQ(client.handle_server_first(kServerFirst), std::optional<std::string>(kClientFinal));
  EXPECT_TRUE(client.verify_server_final(kServerFinal));
}

TEST(ScramClientTest, Rfc7677WithClientKeyPassThrough) {
  // SCRAM pass-through: ClientKey plus the stored secret, no password.
  auto client = ScramClient::with_client_key(kUser, unb64(kClientKeyB64), vector_secret());
  client.set_literal_nonce(std::string(kClientNonce));
  EXPECT_EQ(client.client_first_with_user(kUser), kClientFirst);
  EXPECT_EQ(client.handle_server_first(kServerFirst), std::optional<std::string>(kClientFinal));
  EXPECT_TRUE(client.verify_server_final(kServerFinal));
}

TEST(ScramClientTest, RejectsWrongServerSignature) {
  auto client = ScramClient::with_password(kUser, std::string(kPassword));
  client.set_literal_nonce(std::string(kClientNonce));
  client.client_first_with_user(kUser);
  ASSERT_TRUE(client.handle_server_first(kServerFirst).has_value());
  std::string signature = unb64(kServerFinal.substr(2));
  signature[0] = static_cast<char>(signature[0] ^ 0x80);
  EXPECT_FALSE(client.verify_server_final("v=" + b64(signature)));
  EXPECT_FALSE(client.verify_server_final("v=" + b64(signature.substr(1))));  // too short
  EXPECT_FALSE(client.verify_server_final("e=invalid-proof"));
  EXPECT_FALSE(client.verify_server_final(""));
  EXPECT_FALSE(client.verify_server_final("v=not base64"));
}

TEST(ScramClientTest, WrongPasswordGivesDifferentProof) {
  auto client = ScramClient::with_password(kUser, "pencil!");
  client.set_literal_nonce(std::string(kClientNonce));
  client.client_first_with_user(kUser);
  const auto final_message = client.handle_server_first(kServerFirst);
  ASSERT_TRUE(final_message.has_value());
  EXPECT_NE(*final_message, kClientFinal);
  // ...and the real server's signature does not verify.
  EXPECT_FALSE(client.verify_server_final(kServerFinal));
}

TEST(ScramClientTest, ClientFirstWithoutUserSendsEmptyName) {
  auto client = ScramClient::with_password(kUser, std::string(kPassword), "0123456789");
  const auto first = client.client_first();
  EXPECT_EQ(first, "n,,n=,r=" + b64("0123456789"));
}

TEST(ScramClientTest, RandomNoncesDiffer) {
  auto a = ScramClient::with_password(kUser, "pw");
  auto b = ScramClient::with_password(kUser, "pw");
  const auto first_a = a.client_first();
  EXPECT_EQ(first_a.rfind("n,,n=,r=", 0), 0U);
  EXPECT_GT(first_a.size(), std::string("n,,n=,r=").size() + 16);
  EXPECT_NE(first_a, b.client_first());
}

// A client that has sent the RFC client-first, for the negative server-first cases.
ScramClient vector_client() {
  auto client = ScramClient::with_password(kUser, std::string(kPassword));
  client.set_literal_nonce(std::string(kClientNonce));
  client.client_first_with_user(kUser);
  return client;
}

TEST(ScramClientTest, RejectsMalformedServerFirst) {
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  const std::string salt(kSaltB64);
  const std::string malformed[] = {
      "",
      "garbage",
      "r=" + nonce + ",s=" + salt,                                  // no iterations
      "r=" + nonce + ",i=4096",                                     // no salt
      "s=" + salt + ",r=" + nonce + ",i=4096",                      // wrong order
      "m=ext,r=" + nonce + ",s=" + salt + ",i=4096",                // mandatory extension
      "r=" + nonce + ",s=" + salt + ",i=0",                         // zero iterations
      "r=" + nonce + ",s=" + salt + ",i=-1",                        // negative
      "r=" + nonce + ",s=" + salt + ",i=abc",                       // not a number
      "r=" + nonce + ",s=" + salt + ",i=99999999999",               // overflows int
      "r=" + nonce + ",s=" + salt + ",i=10000001",                  // above the cap
      "r=" + nonce + ",s=" + salt + ",i=4096x",                     // trailing garbage
      "r=" + nonce + ",s=" + salt + ",i= 4096",                     // leading space
      "r=" + nonce + ",s=" + salt + ",i=",                          // empty
      "r=" + nonce + ",s=not!base64,i=4096",                        // bad salt
      "r=" + nonce + ",s=" + salt + ",i=4096,",                     // trailing comma
      "r=" + std::string(kClientNonce) + ",s=" + salt + ",i=4096",  // no server part
      "r=XXXXXXXXXXXXXXXXXXXX" + std::string(kServerNonce) + ",s=" + salt + ",i=4096",
      "r=rOprNGfwEbeRWgbNEkq" + std::string(kServerNonce) + ",s=" + salt + ",i=4096",
      "r=" + nonce + "\x01,s=" + salt + ",i=4096",                       // unprintable nonce
      "r=" + nonce + ",s=" + salt + ",i=4096" + std::string(1100, 'x'),  // oversized
  };
  for (const auto& server_first : malformed) {
    auto client = vector_client();
    EXPECT_EQ(client.handle_server_first(server_first), std::nullopt)
        << "accepted: " << server_first;
    EXPECT_FALSE(client.verify_server_final(kServerFinal));
  }
}

TEST(ScramClientTest, ServerFirstBeforeClientFirstIsRejected) {
  auto client = ScramClient::with_password(kUser, std::string(kPassword));
  client.set_literal_nonce(std::string(kClientNonce));
  EXPECT_EQ(client.handle_server_first(kServerFirst), std::nullopt);
  EXPECT_FALSE(client.verify_server_final(kServerFinal));
}

TEST(ScramClientTest, PassThroughRejectsServerWithDifferentSaltOrIterations) {
  auto other_salt = ScramClient::with_client_key(
      kUser, unb64(kClientKeyB64),
      pgw::auth::make_scram_secret(kPassword, "other salt", kIterations));
  other_salt.set_literal_nonce(std::string(kClientNonce));
  other_salt.client_first_with_user(kUser);
  EXPECT_EQ(other_salt.handle_server_first(kServerFirst), std::nullopt);

  auto secret = vector_secret();
  secret.iterations = 8192;
  auto other_iterations = ScramClient::with_client_key(kUser, unb64(kClientKeyB64), secret);
  other_iterations.set_literal_nonce(std::string(kClientNonce));
  other_iterations.client_first_with_user(kUser);
  EXPECT_EQ(other_iterations.handle_server_first(kServerFirst), std::nullopt);
}

// --- SCRAM server, RFC 7677 vector --------------------------------------------------------

TEST(ScramServerTest, Rfc7677ServerFirst) {
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  EXPECT_EQ(server.handle_client_first(kClientFirst), std::optional<std::string>(kServerFirst));
}

TEST(ScramServerTest, Rfc7677VerifiesProofAndAnswersServerFinal) {
  auto server = vector_server_after_first();
  EXPECT_EQ(server.handle_client_final(kClientFinal), std::optional<std::string>(kServerFinal));
  EXPECT_EQ(b64(server.client_key()), kClientKeyB64);
}

TEST(ScramServerTest, Rfc7677WithSecretParsedFromUserlist) {
  const auto secret = pgw::auth::parse_scram_secret(kVectorSecret);
  ASSERT_TRUE(secret.has_value());
  auto server = ScramServer::with_literal_nonce(*secret, std::string(kServerNonce));
  ASSERT_EQ(server.handle_client_first(kClientFirst), std::optional<std::string>(kServerFirst));
  EXPECT_EQ(server.handle_client_final(kClientFinal), std::optional<std::string>(kServerFinal));
}

TEST(ScramServerTest, ServerNonceRawIsBase64Encoded) {
  auto server = ScramServer(vector_secret(), "raw-nonce-bytes");
  const auto first = server.handle_client_first("n,,n=,r=abc");
  EXPECT_EQ(first, std::optional<std::string>("r=abc" + b64("raw-nonce-bytes") +
                                              ",s=" + std::string(kSaltB64) + ",i=4096"));
}

TEST(ScramServerTest, RandomServerNoncesDiffer) {
  auto a = ScramServer(vector_secret());
  auto b = ScramServer(vector_secret());
  const auto first_a = a.handle_client_first(kClientFirst);
  const auto first_b = b.handle_client_first(kClientFirst);
  ASSERT_TRUE(first_a && first_b);
  EXPECT_EQ(first_a->rfind("r=" + std::string(kClientNonce), 0), 0U);
  EXPECT_NE(*first_a, *first_b);
}

TEST(ScramServerTest, WrongPasswordFails) {
  auto server = vector_server_after_first();
  auto client = ScramClient::with_password(kUser, "pencil2");
  client.set_literal_nonce(std::string(kClientNonce));
  client.client_first_with_user(kUser);
  const auto client_final = client.handle_server_first(kServerFirst);
  ASSERT_TRUE(client_final.has_value());
  EXPECT_EQ(server.handle_client_final(*client_final), std::nullopt);
  EXPECT_TRUE(server.client_key().empty());
}

TEST(ScramServerTest, TamperedProofFails) {
  auto server = vector_server_after_first();
  EXPECT_EQ(server.handle_client_final(tampered_proof(kClientFinal)), std::nullopt);
  EXPECT_TRUE(server.client_key().empty());
}

TEST(ScramServerTest, ProofOfWrongLengthOrEncodingFails) {
  const std::string proof = unb64(kClientFinal.substr(kClientFinal.rfind(",p=") + 3));
  const std::string bad_proofs[] = {
      b64(proof.substr(0, 31)),  // 31 bytes
      b64(proof + "x"),          // 33 bytes
      "",                        // empty
      "not*base64*at*all",
  };
  for (const auto& bad : bad_proofs) {
    auto server = vector_server_after_first();
    EXPECT_EQ(server.handle_client_final(with_proof(kClientFinal, bad)), std::nullopt)
        << "accepted proof " << bad;
  }
}

TEST(ScramServerTest, WrongNonceFails) {
  const std::string proof_attr(kClientFinal.substr(kClientFinal.rfind(",p=")));
  const std::string nonces[] = {
      std::string(kClientNonce),                                     // client part only
      std::string(kClientNonce) + "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1",  // last char changed
      std::string(kClientNonce) + std::string(kServerNonce) + "x",   // extra char
      "",
  };
  for (const auto& nonce : nonces) {
    auto server = vector_server_after_first();
    EXPECT_EQ(server.handle_client_final("c=biws,r=" + nonce + proof_attr), std::nullopt)
        << "accepted nonce " << nonce;
  }
}

TEST(ScramServerTest, ClientFinalBeforeClientFirstFails) {
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  EXPECT_EQ(server.handle_client_final(kClientFinal), std::nullopt);
}

TEST(ScramServerTest, RejectsMalformedClientFirst) {
  const std::string malformed[] = {
      "",
      "n",
      "n,,",
      "n,,n=user",         // no nonce
      "n,,r=abc",          // no user attribute
      "n,,r=abc,n=user",   // wrong order
      "n,,n=user,r=",      // empty nonce
      "n,,n=user,r=ab,c",  // ',' ends the nonce: "c" is not k=v
      "n,,n=user,r=a\x7f"
      "b",                                          // unprintable nonce
      "n,,n=user,r=a b",                            // space in nonce
      "x,,n=user,r=abc",                            // unknown gs2 flag
      "n=user,r=abc",                               // gs2 header missing
      "n,a=admin,n=user,r=abc",                     // authzid not supported
      "n,,n=user,r=abc," + std::string(1100, 'x'),  // oversized
  };
  for (const auto& first : malformed) {
    auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
    EXPECT_EQ(server.handle_client_first(first), std::nullopt) << "accepted: " << first;
  }
}

TEST(ScramServerTest, ChannelBindingRequestedIsRejected) {
  // "p=..." asks for channel binding, which needs SCRAM-SHA-256-PLUS (not offered).
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  EXPECT_EQ(server.handle_client_first("p=tls-server-end-point,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            std::nullopt);
}

TEST(ScramServerTest, ChannelBindingFlagYFullExchange) {
  // "y,,": the client supports channel binding but believes the server does not. c= must then
  // echo base64("y,,") = "eSws".
  ASSERT_EQ(b64("y,,"), "eSws");
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  ASSERT_EQ(server.handle_client_first("y,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            std::optional<std::string>(kServerFirst));
  const std::string without_proof = "c=eSws,r=" + nonce;
  const auto expected = independent_proof(without_proof);
  EXPECT_EQ(server.handle_client_final(without_proof + ",p=" + expected.proof_b64),
            std::optional<std::string>("v=" + expected.server_signature_b64));
  EXPECT_EQ(b64(server.client_key()), kClientKeyB64);
}

TEST(ScramServerTest, ChannelBindingFlagYRejectsBiws) {
  // After a "y,," header, c=biws (base64 "n,,") is a downgrade mismatch, even with a proof
  // that is valid for the message as sent.
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  auto server = ScramServer::with_literal_nonce(vector_secret(), std::string(kServerNonce));
  ASSERT_TRUE(server.handle_client_first("y,,n=user,r=rOprNGfwEbeRWgbNEkqO").has_value());
  const std::string without_proof = "c=biws,r=" + nonce;
  EXPECT_EQ(server.handle_client_final(without_proof +
                                       ",p=" + independent_proof(without_proof).proof_b64),
            std::nullopt);
}

TEST(ScramServerTest, ChannelBindingFlagNRejectsEsws) {
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  auto server = vector_server_after_first();
  const std::string without_proof = "c=eSws,r=" + nonce;
  EXPECT_EQ(server.handle_client_final(without_proof +
                                       ",p=" + independent_proof(without_proof).proof_b64),
            std::nullopt);
}

TEST(ScramServerTest, RejectsMalformedClientFinal) {
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  const std::string proof(kClientFinal.substr(kClientFinal.rfind(",p=") + 3));
  const std::string malformed[] = {
      "",
      "c=biws,r=" + nonce,                  // no proof
      "r=" + nonce + ",p=" + proof,         // no channel binding attribute
      "r=" + nonce + ",c=biws,p=" + proof,  // wrong order
      "c=eSws,r=" + nonce + ",p=" + proof,  // c= does not echo "n,,"
      "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" + nonce + ",p=" + proof,     // channel binding data
      "c=biws,r=" + nonce + ",p=" + proof + "," + std::string(1100, 'x'),  // oversized
      "c=biws,r=" + nonce + "," + proof,                                   // p= missing its name
  };
  for (const auto& final_message : malformed) {
    auto server = vector_server_after_first();
    EXPECT_EQ(server.handle_client_final(final_message), std::nullopt)
        << "accepted: " << final_message;
    EXPECT_TRUE(server.client_key().empty());
  }
}

TEST(ScramServerTest, ExtensionsBeforeProofAreCoveredByTheSignature) {
  // An extra attribute before p= is allowed by the grammar, and it is part of the
  // AuthMessage: the RFC proof (computed without it) must fail, a proof over it must pass.
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  const std::string rfc_proof(kClientFinal.substr(kClientFinal.rfind(",p=") + 3));
  const std::string without_proof = "c=biws,r=" + nonce + ",x=ext";
  auto server = vector_server_after_first();
  EXPECT_EQ(server.handle_client_final(without_proof + ",p=" + rfc_proof), std::nullopt);
  auto server2 = vector_server_after_first();
  const auto expected = independent_proof(without_proof);
  EXPECT_EQ(server2.handle_client_final(without_proof + ",p=" + expected.proof_b64),
            std::optional<std::string>("v=" + expected.server_signature_b64));
}

TEST(ScramServerTest, IndependentProofReproducesRfcVector) {
  // Guards the test helper itself: it must give the RFC proof and signature.
  const std::string nonce = std::string(kClientNonce) + std::string(kServerNonce);
  const auto expected = independent_proof("c=biws,r=" + nonce);
  EXPECT_EQ("c=biws,r=" + nonce + ",p=" + expected.proof_b64, kClientFinal);
  EXPECT_EQ("v=" + expected.server_signature_b64, kServerFinal);
}

// --- full client <-> server exchanges with random nonces ---------------------------------

TEST(ScramRoundTripTest, PasswordClientAgainstSecretServer) {
  const auto secret = pgw::auth::make_scram_secret("correct horse", "some salt bytes!", 4096);
  const auto result =
      run_exchange(ScramClient::with_password("alice", "correct horse"), ScramServer(secret));
  EXPECT_TRUE(result.server_accepted);
  EXPECT_TRUE(result.client_verified_server);
  EXPECT_EQ(result.server_client_key.size(), 32U);
}

TEST(ScramRoundTripTest, ServerFromScramSecretFromPassword) {
  const auto secret = pgw::auth::parse_scram_secret(pgw::auth::scram_secret_from_password("pw"));
  ASSERT_TRUE(secret.has_value());
  const auto result = run_exchange(ScramClient::with_password("bob", "pw"), ScramServer(*secret));
  EXPECT_TRUE(result.server_accepted);
  EXPECT_TRUE(result.client_verified_server);
}

TEST(ScramRoundTripTest, WrongPasswordIsRefused) {
  const auto secret = pgw::auth::make_scram_secret("correct horse", "some salt bytes!", 4096);
  const auto result =
      run_exchange(ScramClient::with_password("alice", "battery staple"), ScramServer(secret));
  EXPECT_FALSE(result.server_accepted);
  EXPECT_FALSE(result.client_verified_server);
}

TEST(ScramRoundTripTest, ClientKeyFromOneExchangeLogsIntoAnotherServer) {
  // pgwarden authenticates a client, then reuses its ClientKey to log in to PostgreSQL.
  const auto secret = pgw::auth::make_scram_secret("pass-through", "salt-salt-salt", 4096);
  const auto first =
      run_exchange(ScramClient::with_password("carol", "pass-through"), ScramServer(secret));
  ASSERT_TRUE(first.server_accepted);
  const auto second = run_exchange(
      ScramClient::with_client_key("carol", first.server_client_key, secret), ScramServer(secret));
  EXPECT_TRUE(second.server_accepted);
  EXPECT_TRUE(second.client_verified_server);
  EXPECT_EQ(second.server_client_key, first.server_client_key);
}

TEST(ScramRoundTripTest, ClientVerifiesOnlyTheRealServer) {
  // A server holding a different secret for the same password (other salt) cannot produce a
  // signature the client accepts for the first server's exchange.
  const auto secret_a = pgw::auth::make_scram_secret("pw", "salt-a", 4096);
  auto client = ScramClient::with_password("dave", "pw");
  auto server = ScramServer(secret_a);
  const auto server_first = server.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first.has_value());
  const auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  // Forged server-final: right length, wrong key.
  EXPECT_FALSE(client.verify_server_final("v=" + b64(std::string(32, 'z'))));
  const auto server_final = server.handle_client_final(*client_final);
  ASSERT_TRUE(server_final.has_value());
  EXPECT_TRUE(client.verify_server_final(*server_final));
}

}  // namespace

TEST(ScramSecretCacheTest, OneSecretPerUserPasswordAndIterationCount) {
  pgw::auth::ScramSecretCache cache;
  const auto first = cache.secret_for("alice", "pw", 1000);
  EXPECT_EQ(cache.secret_for("alice", "pw", 1000), first);  // cached: the same salt
  const auto parsed = pgw::auth::parse_scram_secret(first);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->iterations, 1000);
  // scram_iterations changed by a reload, or the password changed: a new secret.
  const auto more = cache.secret_for("alice", "pw", 2000);
  EXPECT_NE(more, first);
  EXPECT_EQ(pgw::auth::parse_scram_secret(more)->iterations, 2000);
  EXPECT_NE(cache.secret_for("alice", "other", 2000), more);
}

namespace {

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string to_hex(const pgw::auth::Sha256Digest& digest) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : digest) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

}  // namespace

TEST(Sha256Test, KnownDigests) {
  // FIPS 180-2 examples.
  EXPECT_EQ(to_hex(pgw::auth::sha256_digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(pgw::auth::sha256_digest("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(
      to_hex(pgw::auth::sha256_digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(HmacSha256Test, Rfc4231Vectors) {
  // Test case 1: a 20-byte key.
  EXPECT_EQ(to_hex(pgw::auth::HmacSha256Key(std::string(20, '\x0b')).sign("Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2: a key shorter than the output.
  EXPECT_EQ(to_hex(pgw::auth::HmacSha256Key("Jefe").sign("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a 131-byte key, longer than the block (hashed first).
  EXPECT_EQ(to_hex(pgw::auth::HmacSha256Key(std::string(131, '\xaa'))
                       .sign("Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  // Test case 7: long key and long data.
  EXPECT_EQ(to_hex(pgw::auth::HmacSha256Key(std::string(131, '\xaa'))
                       .sign("This is a test using a larger than block-size key and a larger than "
                             "block-size data. The key needs to be hashed before being used by the "
                             "HMAC algorithm.")),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
  // Test case 4, with the data given in parts: the same as in one piece.
  const pgw::auth::HmacSha256Key key(
      from_hex("0102030405060708090a0b0c0d0e0f10111213141516171819"));
  const std::string data(50, '\xcd');
  EXPECT_EQ(to_hex(key.sign(data)),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  EXPECT_EQ(key.sign({std::string_view(data).substr(0, 7), std::string_view(data).substr(7)}),
            key.sign(data));
  // The key is reused: signing again gives the same answer (its states are copied, not used).
  EXPECT_EQ(to_hex(key.sign(data)),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
}

TEST(ScramVerifierTest, ParsedOncePerThreadAndVerifiesTheRfcVector) {
  const auto first = pgw::auth::scram_verifier_for(kVectorSecret);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(pgw::auth::scram_verifier_for(kVectorSecret), first);  // from the thread's cache
  EXPECT_EQ(first->salt_base64, kSaltB64);
  EXPECT_EQ(b64(first->secret.stored_key), kStoredKeyB64);
  EXPECT_EQ(pgw::auth::scram_verifier_for("md5" + std::string(32, 'a')), nullptr);
  EXPECT_EQ(pgw::auth::scram_verifier_for("SCRAM-SHA-256$4096:bad"), nullptr);

  auto server = ScramServer::with_literal_nonce(first, std::string(kServerNonce));
  ASSERT_EQ(server.handle_client_first(kClientFirst), std::optional<std::string>(kServerFirst));
  EXPECT_EQ(server.handle_client_final(kClientFinal), std::optional<std::string>(kServerFinal));
  EXPECT_EQ(b64(server.client_key()), kClientKeyB64);
}

TEST(ScramVerifierTest, StandInKeepsItsSaltPerUserAndAcceptsNoProof) {
  const auto a = pgw::auth::scram_stand_in_verifier("nobody", 4096);
  const auto b = pgw::auth::scram_stand_in_verifier("nobody", 4096);
  const auto other = pgw::auth::scram_stand_in_verifier("someone", 4096);
  // A second try shows the same salt (as for a real user), another name another salt.
  EXPECT_EQ(a->salt_base64, b->salt_base64);
  EXPECT_NE(a->salt_base64, other->salt_base64);
  EXPECT_EQ(a->secret.salt.size(), 16u);
  EXPECT_EQ(pgw::auth::scram_stand_in_verifier("nobody", 10000)->secret.iterations, 10000);
  // Whatever the password, the exchange fails at the proof.
  for (const char* password : {"", "pw", "nobody"}) {
    auto server = ScramServer(a);
    auto client = ScramClient::with_password("nobody", password);
    const auto server_first = server.handle_client_first(client.client_first());
    ASSERT_TRUE(server_first.has_value());
    EXPECT_NE(server_first->find(",s=" + a->salt_base64 + ",i=4096"), std::string::npos);
    const auto client_final = client.handle_server_first(*server_first);
    ASSERT_TRUE(client_final.has_value());
    EXPECT_FALSE(server.handle_client_final(*client_final).has_value());
  }
}

TEST(AuthRandomTest, FillRandomServesSmallAndLargeRequests) {
  // Small requests come from the thread's reserve, across its refills; large ones directly.
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::array<unsigned char, 18> nonce{};
    pgw::auth::fill_random(nonce);
    seen.emplace(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  }
  EXPECT_EQ(seen.size(), 1000u);  // 18 bytes: a repeat would mean bytes handed out twice
  std::vector<unsigned char> large(8192, 0);
  pgw::auth::fill_random(large);
  EXPECT_GT(std::count(large.begin(), large.end(), 0), 0);  // about 32 of 8192 are zero
  EXPECT_LT(std::count(large.begin(), large.end(), 0), 200);
}
