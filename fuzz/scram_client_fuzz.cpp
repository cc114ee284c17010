// Fuzz target "scram_client": auth::ScramClient (pgwarden logging in to PostgreSQL with
// SCRAM-SHA-256) fed an arbitrary server-first-message (first line of the input) and
// server-final-message (the rest), in both of its modes: with the password, and with a
// ClientKey plus secret (pass-through). For the same server messages both modes must answer
// identically, since the ClientKey is derived from that password.
#include <string>

#include "auth/auth.hpp"
#include "fuzz_common.hpp"
#include "scram_fixture.hpp"

namespace {

namespace auth = pgw::auth;
namespace fx = pgw::fuzz::scram;

struct Fixture {
  auth::ScramSecret secret;
  std::string client_key;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture out;
    out.secret = auth::make_scram_secret(fx::kPassword, fx::kSalt, fx::kIterations);
    // Learn the ClientKey the way pgwarden does: from a client's successful login.
    auth::ScramServer server(out.secret, std::string(fx::kServerNonceRaw));
    auto client = auth::ScramClient::with_password("", std::string(fx::kPassword), "fixture");
    const auto server_first = server.handle_client_first(client.client_first());
    FUZZ_CHECK(server_first.has_value());
    const auto client_final = client.handle_server_first(*server_first);
    FUZZ_CHECK(client_final.has_value());
    FUZZ_CHECK(server.handle_client_final(*client_final).has_value());
    out.client_key = server.client_key();
    return out;
  }();
  return f;
}

// The iteration count the password client would run PBKDF2 with, if it gets that far
// (the third comma-separated attribute, parsed as ScramClient does); 0 if it cannot.
long long announced_iterations(std::string_view server_first) {
  for (int i = 0; i < 2; ++i) {
    const auto comma = server_first.find(',');
    if (comma == std::string_view::npos) return 0;
    server_first.remove_prefix(comma + 1);
  }
  const auto attribute = server_first.substr(0, server_first.find(','));
  if (attribute.substr(0, 2) != "i=") return 0;
  try {
    return std::stoi(std::string(attribute.substr(2)));
  } catch (...) {
    return 0;
  }
}

struct Outcome {
  std::optional<std::string> client_final;
  bool verified = false;
};

Outcome run(auth::ScramClient client, std::string_view server_first, std::string_view server_final) {
  const std::string first = client.client_first();
  FUZZ_CHECK(first == "n,,n=,r=" + auth::base64_encode(fx::kClientNonceRaw));
  Outcome out;
  out.client_final = client.handle_server_first(server_first);
  out.verified = client.verify_server_final(server_final);
  if (!out.client_final) {
    FUZZ_CHECK(!out.verified);  // nothing to verify without an exchange
    return out;
  }
  FUZZ_CHECK(out.client_final->rfind("c=biws,r=" + auth::base64_encode(fx::kClientNonceRaw), 0) == 0);
  FUZZ_CHECK(out.client_final->find(",p=") != std::string::npos);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto [server_first, server_final] = pgw::fuzz::split_line(pgw::fuzz::as_text(data, size));
  const auto& f = fixture();

  const Outcome by_key = run(auth::ScramClient::with_client_key("", f.client_key, f.secret,
                                                                std::string(fx::kClientNonceRaw)),
                             server_first, server_final);
  const long long iterations = announced_iterations(server_first);
  if (iterations > fx::kMaxFuzzIterations) return 0;

  const Outcome by_password = run(auth::ScramClient::with_password("", std::string(fx::kPassword),
                                                                   std::string(fx::kClientNonceRaw)),
                                  server_first, server_final);
  if (by_key.client_final) {
    // Pass-through only accepts the secret's own salt and iteration count.
    FUZZ_CHECK(by_password.client_final == by_key.client_final);
    FUZZ_CHECK(by_password.verified == by_key.verified);
  }
  return 0;
}
