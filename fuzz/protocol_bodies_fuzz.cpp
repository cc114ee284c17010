// Fuzz target "protocol_bodies": the input is one message body (what follows the 5-byte
// header). Every body parser of the codec runs on it, with MessageWriter round trips.
#include "protocol_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  pgw::fuzz::check_bodies(pgw::fuzz::as_byte_span(data, size));
  return 0;
}
