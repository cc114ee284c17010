// Fuzz target "scram_secret": auth::parse_scram_secret (the SCRAM-SHA-256$iter:salt$stored:server
// form of userlist.txt / pg_authid) and the md5 / SCRAM secret classifiers. A parsed secret
// must be well-formed, re-format to text that parses to the same secret, and be usable by a
// ScramServer.
#include <string>

#include "auth/auth.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = pgw::fuzz::as_text(data, size);

  if (pgw::auth::is_md5_hash(text)) {
    FUZZ_CHECK(text.size() == 35 && text.substr(0, 3) == "md5");
    FUZZ_CHECK(!pgw::auth::is_scram_secret(text));
  }

  const auto secret = pgw::auth::parse_scram_secret(text);
  if (!secret) return 0;
  FUZZ_CHECK(pgw::auth::is_scram_secret(text));
  FUZZ_CHECK(secret->iterations > 0);
  FUZZ_CHECK(secret->stored_key.size() == 32 && secret->server_key.size() == 32);

  const std::string formatted = pgw::auth::format_scram_secret(*secret);
  const auto again = pgw::auth::parse_scram_secret(formatted);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->iterations == secret->iterations && again->salt == secret->salt &&
             again->stored_key == secret->stored_key && again->server_key == secret->server_key);

  // The server side of an exchange announces exactly this salt and iteration count.
  pgw::auth::ScramServer server(*secret, "fuzz-nonce");
  const auto server_first = server.handle_client_first("n,,n=,r=clientnonce");
  FUZZ_CHECK(server_first.has_value());
  const std::string tail =
      ",s=" + pgw::auth::base64_encode(secret->salt) + ",i=" + std::to_string(secret->iterations);
  FUZZ_CHECK(server_first->size() > tail.size() &&
             server_first->compare(server_first->size() - tail.size(), tail.size(), tail) == 0);
  return 0;
}
