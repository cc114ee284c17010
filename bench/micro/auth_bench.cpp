// One SCRAM-SHA-256 exchange against a verifier from userlist.txt, both sides in memory: the
// server's nonce, two HMACs and a SHA-256 (what a pooler spends per login, auth/auth.cpp), and
// the client's two HMACs from a ClientKey derived once, as a driver that caches PBKDF2 does.
#include <benchmark/benchmark.h>

#include <string>

#include "auth/auth.hpp"

namespace {

void BM_ScramExchangeFromClientKey(benchmark::State& state) {
  const auto secret = pgw::auth::make_scram_secret("pencil", "salt-of-sixteen!", 4096);
  // One exchange from the password gives the ClientKey (the server learns it on success).
  auto first_client = pgw::auth::ScramClient::with_password("user", "pencil");
  pgw::auth::ScramServer first_server(secret);
  auto reply = first_server.handle_client_first(first_client.client_first());
  auto proof = first_client.handle_server_first(*reply);
  if (!first_server.handle_client_final(*proof)) {
    state.SkipWithError("the password exchange did not verify");
    return;
  }
  const std::string client_key = first_server.client_key();
  for (auto _ : state) {
    auto client = pgw::auth::ScramClient::with_client_key("user", client_key, secret);
    pgw::auth::ScramServer server(secret);
    auto server_first = server.handle_client_first(client.client_first());
    auto client_final = client.handle_server_first(*server_first);
    auto server_final = server.handle_client_final(*client_final);
    if (!server_final || !client.verify_server_final(*server_final)) {
      state.SkipWithError("the proof did not verify");
      break;
    }
    benchmark::DoNotOptimize(server_final);
  }
}
BENCHMARK(BM_ScramExchangeFromClientKey);

// The server's side alone, as a login runs it: the verifier from the worker's cache (parsed and
// its HMAC keys scheduled once), the two messages and the proof's check. The server's nonce is
// fixed so that one client-final, made before the loop, verifies every time (the draw of a
// random nonce, from the thread's reserve, is left out).
void BM_ScramServerSideCachedVerifier(benchmark::State& state) {
  const auto secret = pgw::auth::make_scram_secret("pencil", "salt-of-sixteen!", 4096);
  const std::string text = pgw::auth::format_scram_secret(secret);
  const std::string server_nonce = "fixed-server-nonce-for-the-bench";
  auto client = pgw::auth::ScramClient::with_password("user", "pencil");
  const std::string client_first = client.client_first();
  auto primer =
      pgw::auth::ScramServer::with_literal_nonce(pgw::auth::scram_verifier_for(text), server_nonce);
  const auto client_final = client.handle_server_first(*primer.handle_client_first(client_first));
  if (!client_final || !primer.handle_client_final(*client_final)) {
    state.SkipWithError("the password exchange did not verify");
    return;
  }
  for (auto _ : state) {
    auto server = pgw::auth::ScramServer::with_literal_nonce(pgw::auth::scram_verifier_for(text),
                                                             server_nonce);
    auto server_first = server.handle_client_first(client_first);
    auto server_final = server.handle_client_final(*client_final);
    if (!server_first || !server_final) {
      state.SkipWithError("the proof did not verify");
      break;
    }
    benchmark::DoNotOptimize(server_final);
  }
}
BENCHMARK(BM_ScramServerSideCachedVerifier);

}  // namespace
