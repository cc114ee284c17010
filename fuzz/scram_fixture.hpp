// Fixed SCRAM parameters shared by the scram_server / scram_client fuzz targets and the seed
// generator (make_corpus.cpp), so that the seeds are complete, valid exchanges the fuzzer can
// mutate from. Few PBKDF2 iterations keep every run cheap.
#pragma once

#include <string_view>

namespace pgw::fuzz::scram {

inline constexpr std::string_view kPassword = "pencil";
inline constexpr std::string_view kSalt = "pgwarden-fuzz-salt";
inline constexpr int kIterations = 16;
// Raw nonces: the server and client base64-encode them.
inline constexpr std::string_view kServerNonceRaw = "fuzz-server-nonce-0123";
inline constexpr std::string_view kClientNonceRaw = "fuzz-client-nonce-456";
// The password client runs PBKDF2 with the iteration count the server sends; the fuzz target
// skips that client for larger counts (up to 10,000,000 are accepted) to stay fast.
inline constexpr int kMaxFuzzIterations = 64;

}  // namespace pgw::fuzz::scram
