// Driver for a fuzz target without libFuzzer: the fuzz smoke test that CI runs with any
// compiler (CTest: fuzz.<name>). Linked with one fuzz/<name>_fuzz.cpp as fuzz_replay_<name>.
//
//   fuzz_replay_<name> [--iterations N] [--seconds S] [--seed X] [--max-len N]
//                      [--crash-dir DIR] CORPUS_DIR_OR_FILE...
//
// 1. Runs LLVMFuzzerTestOneInput on every file given / in every directory given (sorted, so
//    the order is stable; names starting with '.' are skipped). Pass a single crash file to
//    reproduce a failure.
// 2. Then runs N inputs made by deterministic mutation of those files: a fixed-seed xorshift
//    picks bit flips, byte changes, insertions and deletions, splices of two corpus entries,
//    edits of 32/16-bit big-endian length fields (the protocol's framing) and insertions of
//    tokens from the formats being parsed. Mutants are fed back into the pool now and then so
//    mutations stack. Stops after N inputs or S seconds, whichever comes first (0 = no limit).
// Each input is handed over in a heap buffer of exactly its size, so sanitizers catch reads
// past the end. When an input crashes (an invariant's abort, a signal, a sanitizer report) it
// is written to DIR/crash-<name>-<n> before the process dies.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "fuzz_common.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define PGW_FUZZ_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define PGW_FUZZ_SANITIZER 1
#endif
#if defined(PGW_FUZZ_SANITIZER) && __has_include(<sanitizer/common_interface_defs.h>)
#include <sanitizer/common_interface_defs.h>
#define PGW_FUZZ_DEATH_CALLBACK 1
#endif

namespace {

using Input = std::vector<std::uint8_t>;

// --- crash capture: the input being run, and where to write it if the process dies --------
const std::uint8_t* volatile g_current = nullptr;
volatile std::size_t g_current_size = 0;
char g_crash_path[4096] = {};
volatile sig_atomic_t g_dumped = 0;
volatile sig_atomic_t g_from_corpus = 0;  // the input is a file already: name it, don't copy

void write_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n <= 0) return;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void say(const char* text) { write_all(2, text, std::strlen(text)); }

// Async-signal-safe: open/write/close only.
void dump_current_input() {
  if (g_dumped || g_current == nullptr) return;
  g_dumped = 1;
  if (g_from_corpus) {
    say("fuzz replay: crash on corpus file ");
    say(g_crash_path);
    say("\n");
    return;
  }
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    say("fuzz replay: could not write the crashing input\n");
    return;
  }
  write_all(fd, g_current, g_current_size);
  ::close(fd);
  say("fuzz replay: crashing input written to ");
  say(g_crash_path);
  say("\n");
}

extern "C" void on_fatal_signal(int sig) {
  dump_current_input();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

#ifdef PGW_FUZZ_DEATH_CALLBACK
extern "C" void on_sanitizer_death() { dump_current_input(); }
#endif

void install_crash_handlers() {
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_fatal_signal);
#ifdef PGW_FUZZ_DEATH_CALLBACK
  __sanitizer_set_death_callback(on_sanitizer_death);
#endif
}

// --- the deterministic mutator --------------------------------------------------------------
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed ? seed : 0x2545f4914f6cdd1dULL) {}
  std::uint64_t next() {  // xorshift64*
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545f4914f6cdd1dULL;
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
  bool chance(unsigned one_in) { return below(one_in) == 0; }

 private:
  std::uint64_t state_;
};

// Tokens of the formats the targets parse: protocol type bytes and codes, ini syntax, SCRAM.
const std::vector<std::string_view>& dictionary() {
  static const std::vector<std::string_view> tokens{
      "Q", "P", "B", "E", "S", "X", "p", "R", "Z", "K", "d", "c", "f", "H", "D", "C", "N",
      std::string_view("\0", 1), std::string_view("\0\0", 2), std::string_view("\0\0\0\0", 4),
      std::string_view("\x00\x03\x00\x00", 4), std::string_view("\x04\xd2\x16\x2f", 4),
      std::string_view("\x04\xd2\x16\x30", 4), std::string_view("\x04\xd2\x16\x2e", 4),
      std::string_view("\xff\xff\xff\xff", 4), std::string_view("\x00\x00\x00\x0a", 4),
      "user", "database", "options", "SCRAM-SHA-256", "SCRAM-SHA-256$", "md5", "FATAL", "PANIC",
      "[pgbouncer]", "[databases]", "[users]", "[apps]", " = ", "=", "\n", "'", "\\", "\"", "\"\"",
      "host=", "port=", "pool_size=", "pool_mode=", "dbname=", "listen_port", "auth_type",
      "server_lifetime", "query_timeout", "1e308", "-1", "0.5", "ms", "min", "9999999999",
      "n,,", "y,,", "p=", "n=", "r=", ",r=", ",s=", ",i=", "c=biws", ",p=", "v=", "==", "=",
      "%include", ";", "#"};
  return tokens;
}

std::uint32_t interesting_u32(Rng& rng, std::size_t room) {
  // Around the codec's limits: a length field counts itself (body + 4), the startup packet's
  // its whole size; 10000 small messages / startup, 65535 'p', 0x3fffffff large messages.
  static constexpr std::uint32_t values[] = {
      0,          1,          3,          4,          5,          7,          8,
      9,          16,         255,        256,        9999,       10000,      10001,
      10003,      10004,      10005,      65535,      65536,      65539,      65540,
      0x3fffffff, 0x40000000, 0x40000003, 0x40000004, 0x7fffffff, 0x80000000, 0xfffffffe,
      0xffffffff};
  switch (rng.below(3)) {
    case 0: return static_cast<std::uint32_t>(room);  // a length that fits the rest exactly
    case 1: return static_cast<std::uint32_t>(room + rng.below(3)) - 1;
    default: return values[rng.below(std::size(values))];
  }
}

void put_u32(Input& data, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) data[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

std::uint32_t get_u32(const Input& data, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | data[at + static_cast<std::size_t>(i)];
  return v;
}

void mutate_once(Input& data, const std::vector<Input>& pool, Rng& rng, std::size_t max_len) {
  switch (rng.below(11)) {
    case 0:  // flip a bit
      if (!data.empty()) data[rng.below(data.size())] ^= static_cast<std::uint8_t>(1u << rng.below(8));
      break;
    case 1: {  // set a byte
      static constexpr std::uint8_t bytes[] = {0, 1, 0x7f, 0x80, 0xff, '\n', '=', ',', '"', '\'', ' ', '$', ':', '['};
      if (!data.empty()) {
        data[rng.below(data.size())] = rng.chance(2) ? bytes[rng.below(std::size(bytes))]
                                                     : static_cast<std::uint8_t>(rng.next());
      }
      break;
    }
    case 2: {  // insert random bytes
      const std::size_t n = 1 + rng.below(8);
      const std::size_t at = rng.below(data.size() + 1);
      Input bytes(n);
      for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.next());
      data.insert(data.begin() + static_cast<std::ptrdiff_t>(at), bytes.begin(), bytes.end());
      break;
    }
    case 3: {  // delete a range
      if (data.empty()) break;
      const std::size_t at = rng.below(data.size());
      const std::size_t n = std::min(data.size() - at, 1 + rng.below(rng.chance(4) ? 64 : 8));
      data.erase(data.begin() + static_cast<std::ptrdiff_t>(at),
                 data.begin() + static_cast<std::ptrdiff_t>(at + n));
      break;
    }
    case 4: {  // duplicate a range somewhere else
      if (data.empty()) break;
      const std::size_t from = rng.below(data.size());
      const std::size_t n = std::min(data.size() - from, 1 + rng.below(32));
      const Input chunk(data.begin() + static_cast<std::ptrdiff_t>(from),
                        data.begin() + static_cast<std::ptrdiff_t>(from + n));
      const std::size_t at = rng.below(data.size() + 1);
      data.insert(data.begin() + static_cast<std::ptrdiff_t>(at), chunk.begin(), chunk.end());
      break;
    }
    case 5: {  // splice: our prefix + another entry's suffix
      const Input& other = pool[rng.below(pool.size())];
      const std::size_t cut = rng.below(data.size() + 1);
      const std::size_t from = rng.below(other.size() + 1);
      data.resize(cut);
      data.insert(data.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
      break;
    }
    case 6: {  // insert a chunk of another entry (e.g. a second message into a stream)
      const Input& other = pool[rng.below(pool.size())];
      if (other.empty()) break;
      const std::size_t from = rng.below(other.size());
      const std::size_t n = std::min(other.size() - from, 1 + rng.below(256));
      const std::size_t at = rng.below(data.size() + 1);
      data.insert(data.begin() + static_cast<std::ptrdiff_t>(at),
                  other.begin() + static_cast<std::ptrdiff_t>(from),
                  other.begin() + static_cast<std::ptrdiff_t>(from + n));
      break;
    }
    case 7:
    case 8: {  // edit a big-endian length field: at a header position or anywhere
      if (data.size() < 4) break;
      std::size_t at = 0;
      switch (rng.below(4)) {
        case 0: at = 0; break;                                  // first packet length
        case 1: at = std::min<std::size_t>(1, data.size() - 4); break;  // message length
        default: at = rng.below(data.size() - 3); break;
      }
      if (rng.chance(3)) {
        const auto delta = static_cast<std::uint32_t>(rng.below(9)) - 4u;  // -4..+4
        put_u32(data, at, get_u32(data, at) + delta);
      } else if (rng.chance(4)) {  // a 16-bit count (Parse parameter types, field counts)
        const std::uint16_t v = rng.chance(2) ? static_cast<std::uint16_t>(0x8000 + rng.below(3) - 1)
                                              : static_cast<std::uint16_t>(rng.below(0x10000));
        data[at] = static_cast<std::uint8_t>(v >> 8);
        data[at + 1] = static_cast<std::uint8_t>(v);
      } else {
        put_u32(data, at, interesting_u32(rng, data.size() - at));
      }
      break;
    }
    case 9: {  // insert or overwrite with a dictionary token
      const auto token = dictionary()[rng.below(dictionary().size())];
      const std::size_t at = rng.below(data.size() + 1);
      if (rng.chance(2) && at + token.size() <= data.size()) {
        std::memcpy(data.data() + at, token.data(), token.size());
      } else {
        data.insert(data.begin() + static_cast<std::ptrdiff_t>(at), token.begin(), token.end());
      }
      break;
    }
    default:  // truncate
      data.resize(rng.below(data.size() + 1));
      break;
  }
  if (data.size() > max_len) data.resize(max_len);
}

// Runs the target on `data` from an exact-size heap copy.
void run_one(const Input& data) {
  std::unique_ptr<std::uint8_t[]> copy(new std::uint8_t[data.size()]);
  if (!data.empty()) std::memcpy(copy.get(), data.data(), data.size());
  g_current = copy.get();
  g_current_size = data.size();
  LLVMFuzzerTestOneInput(copy.get(), data.size());
  g_current = nullptr;
  g_current_size = 0;
}

bool read_file(const std::filesystem::path& path, Input& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

[[noreturn]] void usage(const char* argv0, const char* problem) {
  if (problem) std::fprintf(stderr, "%s: %s\n", argv0, problem);
  std::fprintf(stderr,
               "usage: %s [--iterations N] [--seconds S] [--seed X] [--max-len N] "
               "[--crash-dir DIR] CORPUS_DIR_OR_FILE...\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t iterations = 0;
  double seconds = 0;
  std::uint64_t seed = 0x5eed0f9a11de7ULL;
  std::size_t max_len = 4096;
  std::filesystem::path crash_dir = ".";
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(argv[0], "missing option value");
      return argv[++i];
    };
    if (arg == "--iterations") iterations = std::strtoull(value(), nullptr, 10);
    else if (arg == "--seconds") seconds = std::strtod(value(), nullptr);
    else if (arg == "--seed") seed = std::strtoull(value(), nullptr, 0);
    else if (arg == "--max-len") max_len = std::strtoull(value(), nullptr, 10);
    else if (arg == "--crash-dir") crash_dir = value();
    else if (arg == "-h" || arg == "--help") usage(argv[0], nullptr);
    else if (arg.substr(0, 2) == "--") usage(argv[0], "unknown option");
    else inputs.emplace_back(arg);
  }
  const std::string name = [&] {
    std::string base = std::filesystem::path(argv[0]).filename().string();
    const std::string prefix = "fuzz_replay_";
    return base.rfind(prefix, 0) == 0 ? base.substr(prefix.size()) : base;
  }();

  // The corpus: files in sorted order.
  std::vector<std::filesystem::path> files;
  for (const auto& path : inputs) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (entry.is_regular_file() && entry.path().filename().string().front() != '.') {
          files.push_back(entry.path());
        }
      }
    } else if (std::filesystem::is_regular_file(path, ec)) {
      files.push_back(path);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], path.string().c_str());
      return 2;
    }
  }
  std::sort(files.begin(), files.end());

  install_crash_handlers();
  const auto start = std::chrono::steady_clock::now();
  std::vector<Input> pool;
  for (const auto& file : files) {
    Input data;
    if (!read_file(file, data)) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], file.string().c_str());
      return 2;
    }
    std::snprintf(g_crash_path, sizeof g_crash_path, "%s", file.string().c_str());
    g_from_corpus = 1;
    run_one(data);
    g_from_corpus = 0;
    max_len = std::max(max_len, data.size());
    pool.push_back(std::move(data));
  }
  if (pool.empty()) pool.emplace_back();  // mutate from nothing
  const std::size_t seeds = pool.size();

  Rng rng(seed);
  std::uint64_t done = 0;
  for (; done < iterations; ++done) {
    if ((done & 63) == 0 && seconds > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds) {
      break;
    }
    Input data = pool[rng.below(pool.size())];
    const std::size_t rounds = 1 + rng.below(rng.chance(4) ? 8 : 3);
    for (std::size_t r = 0; r < rounds; ++r) mutate_once(data, pool, rng, max_len);
    const auto crash_file = crash_dir / ("crash-" + name + "-" + std::to_string(done));
    std::snprintf(g_crash_path, sizeof g_crash_path, "%s", crash_file.string().c_str());
    run_one(data);
    // Feed some mutants back so mutations stack; the seeds always stay.
    if (rng.chance(8)) {
      if (pool.size() < seeds + 256) {
        pool.push_back(std::move(data));
      } else {
        pool[seeds + rng.below(pool.size() - seeds)] = std::move(data);
      }
    }
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz replay %s: %zu corpus inputs, %llu mutated inputs (seed %#llx) in %.2f s%s\n",
              name.c_str(), files.size(), static_cast<unsigned long long>(done),
              static_cast<unsigned long long>(seed), elapsed,
              done < iterations ? " (time limit reached)" : "");
  return 0;
}
