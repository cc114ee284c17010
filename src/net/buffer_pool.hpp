// Read buffers shared by the client sessions of one worker thread. A session holds a buffer
// only while bytes are on their way through it; an idle client holds none, so ten thousand idle
// clients cost no buffer memory, and a busy worker cycles through a handful of warm buffers
// instead of calling malloc per wake-up. Thread-local: a session never leaves its worker.
#pragma once

#include <cstddef>
#include <vector>

namespace pgw::net {

class BufferPool {
 public:
  // A buffer of exactly `size` bytes (contents unspecified).
  static std::vector<std::byte> take(std::size_t size) {
    auto& free = free_list();
    if (!free.empty() && free.back().size() == size) {
      std::vector<std::byte> buffer = std::move(free.back());
      free.pop_back();
      return buffer;
    }
    return std::vector<std::byte>(size);
  }

  // Returns a buffer; one of another size (grown for a large header, or from before a reload
  // changed pkt_buf) is freed instead, as are buffers beyond what a busy worker needs.
  static void give(std::vector<std::byte>&& buffer, std::size_t size) {
    auto& free = free_list();
    if (buffer.size() == size && free.size() < kMaxFree) {
      free.push_back(std::move(buffer));
    }
    buffer = std::vector<std::byte>();
  }

 private:
  static constexpr std::size_t kMaxFree = 256;
  static std::vector<std::vector<std::byte>>& free_list() {
    thread_local std::vector<std::vector<std::byte>> free;
    return free;
  }
};

}  // namespace pgw::net
