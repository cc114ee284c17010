// Helpers shared by the fuzz targets (fuzz/*_fuzz.cpp). Each target defines
// LLVMFuzzerTestOneInput; it is linked either with libFuzzer (clang, PGWARDEN_FUZZ=ON) or with
// fuzz/replay_main.cpp, the deterministic corpus replay + mutation smoke test that CTest runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <span>
#include <string_view>
#include <utility>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

// An invariant that must hold for every input: checked in every build type (unlike assert,
// which NDEBUG would remove), and it aborts so that libFuzzer and the replay record the input.
#define FUZZ_CHECK(cond)                                                 \
  do {                                                                   \
    if (!(cond)) ::pgw::fuzz::check_failed(#cond, __FILE__, __LINE__);   \
  } while (0)

namespace pgw::fuzz {

[[noreturn]] inline void check_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz invariant violated: %s\n", file, line, expr);
  std::fflush(stderr);
  std::abort();
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return size == 0 ? std::string_view{} : std::string_view(reinterpret_cast<const char*>(data), size);
}

inline std::span<const std::byte> as_byte_span(const std::uint8_t* data, std::size_t size) {
  return size == 0 ? std::span<const std::byte>{}
                   : std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
}

// Splits a two-part input at the first '\n' (the seeds put one message on each line). Without
// a newline the second part is empty.
inline std::pair<std::string_view, std::string_view> split_line(std::string_view text) {
  const auto nl = text.find('\n');
  if (nl == std::string_view::npos) return {text, {}};
  return {text.substr(0, nl), text.substr(nl + 1)};
}

// True when `part` lies entirely inside `whole` (or is empty): views returned by parsers must
// point into the bytes they were given.
inline bool within(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  const auto* b = whole.data();
  const auto* p = part.data();
  return !whole.empty() && std::less_equal<>{}(b, p) &&
         std::less_equal<>{}(p + part.size(), b + whole.size());
}

}  // namespace pgw::fuzz
