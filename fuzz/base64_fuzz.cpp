// Fuzz target "base64": auth::base64_decode on arbitrary text, and base64_encode/decode round
// trips of arbitrary bytes.
#include <string>

#include "auth/auth.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = pgw::fuzz::as_text(data, size);

  if (const auto decoded = pgw::auth::base64_decode(text)) {
    FUZZ_CHECK(text.size() % 4 == 0);
    std::size_t padding = 0;
    while (padding < text.size() && padding < 3 && text[text.size() - 1 - padding] == '=')
      ++padding;
    FUZZ_CHECK(padding <= 2);
    // Padding only at the end: every other character is a base64 digit, each giving 6 bits.
    FUZZ_CHECK(text.substr(0, text.size() - padding).find('=') == std::string_view::npos);
    FUZZ_CHECK(decoded->size() == text.size() / 4 * 3 - padding);
    const std::string encoded = pgw::auth::base64_encode(*decoded);
    FUZZ_CHECK(encoded.size() == text.size());
    const auto again = pgw::auth::base64_decode(encoded);
    FUZZ_CHECK(again && *again == *decoded);
  }

  const std::string encoded = pgw::auth::base64_encode(text);
  FUZZ_CHECK(encoded.size() == 4 * ((text.size() + 2) / 3));
  const auto decoded = pgw::auth::base64_decode(encoded);
  FUZZ_CHECK(decoded && *decoded == text);
  return 0;
}
