// Fuzz target "scram_server": auth::ScramServer (pgwarden verifying a client's SCRAM-SHA-256
// login) fed an arbitrary client-first-message (first line of the input) and
// client-final-message (the rest). Afterwards a genuine exchange, with the client nonce and
// password taken from the input, must always succeed, and the ClientKey the server learns must
// let pgwarden log in to a server with the same secret (SCRAM pass-through).
#include <string>

#include "auth/auth.hpp"
#include "fuzz_common.hpp"
#include "scram_fixture.hpp"

namespace {

namespace auth = pgw::auth;
namespace fx = pgw::fuzz::scram;

const auth::ScramSecret& fixture_secret() {
  static const auth::ScramSecret secret =
      auth::make_scram_secret(fx::kPassword, fx::kSalt, fx::kIterations);
  return secret;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A complete exchange between pgwarden's client and server sides; returns the ClientKey.
std::string genuine_exchange(const auth::ScramSecret& secret, std::string_view password,
                             std::string nonce_raw) {
  auth::ScramServer server(secret, std::string(fx::kServerNonceRaw));
  auto client = auth::ScramClient::with_password("", std::string(password), std::move(nonce_raw));
  const auto server_first = server.handle_client_first(client.client_first());
  FUZZ_CHECK(server_first.has_value());
  const auto client_final = client.handle_server_first(*server_first);
  FUZZ_CHECK(client_final.has_value());
  const auto server_final = server.handle_client_final(*client_final);
  FUZZ_CHECK(server_final.has_value());
  FUZZ_CHECK(client.verify_server_final(*server_final));
  FUZZ_CHECK(server.client_key().size() == 32);
  return server.client_key();
}

// pgwarden logging in to a server (same secret) with a ClientKey instead of the password.
void pass_through(const auth::ScramSecret& secret, const std::string& client_key) {
  auth::ScramServer server(secret, "other-server-nonce");
  auto client = auth::ScramClient::with_client_key("", client_key, secret, "pass-through-nonce");
  const auto server_first = server.handle_client_first(client.client_first());
  FUZZ_CHECK(server_first.has_value());
  const auto client_final = client.handle_server_first(*server_first);
  FUZZ_CHECK(client_final.has_value());
  const auto server_final = server.handle_client_final(*client_final);
  FUZZ_CHECK(server_final.has_value());
  FUZZ_CHECK(client.verify_server_final(*server_final));
  FUZZ_CHECK(server.client_key() == client_key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [client_first, client_final] = pgw::fuzz::split_line(pgw::fuzz::as_text(data, size));
  const auto& secret = fixture_secret();

  auth::ScramServer server(secret, std::string(fx::kServerNonceRaw));
  const auto server_first = server.handle_client_first(client_first);
  if (!server_first) {
    // No exchange in progress: nothing the client sends next can be accepted.
    FUZZ_CHECK(!server.handle_client_final(client_final).has_value());
  } else {
    FUZZ_CHECK(client_first.size() <= 1024);
    FUZZ_CHECK(starts_with(client_first, "n,,") || starts_with(client_first, "y,,"));
    FUZZ_CHECK(starts_with(*server_first, "r="));
    const auto server_nonce = auth::base64_encode(fx::kServerNonceRaw);
    const std::string tail = server_nonce + ",s=" + auth::base64_encode(secret.salt) +
                             ",i=" + std::to_string(secret.iterations);
    FUZZ_CHECK(server_first->size() > tail.size() + 2);
    FUZZ_CHECK(server_first->compare(server_first->size() - tail.size(), tail.size(), tail) == 0);
    // The echoed client nonce is the r= attribute of the client's message.
    const auto client_nonce = std::string_view(*server_first).substr(2, server_first->size() - 2 - tail.size());
    FUZZ_CHECK(client_first.find(",r=" + std::string(client_nonce)) != std::string_view::npos);
    if (const auto server_final = server.handle_client_final(client_final)) {
      FUZZ_CHECK(starts_with(*server_final, "v="));
      pass_through(secret, server.client_key());
    }
    // Once the exchange is over (or failed), a replayed final message is handled the same way.
    (void)server.handle_client_final(client_final);
  }

  // A genuine exchange with a password and client nonce chosen by the input.
  const std::string password(client_final.substr(0, 256));
  const std::string nonce_raw = "n" + std::string(client_first.substr(0, 256));
  const auth::ScramSecret own = password == fx::kPassword
                                    ? secret
                                    : auth::make_scram_secret(password, fx::kSalt, 2);
  const std::string client_key = genuine_exchange(own, password, nonce_raw);
  pass_through(own, client_key);
  return 0;
}
