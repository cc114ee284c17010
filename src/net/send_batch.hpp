// The writes of one turn of a worker's event loop, sent together by one io_uring_enter(2).
//
// Why: a send() on loopback or a LAN socket wakes the process that waits on the other end, and
// the woken backend or client often preempts the pooler as that send() returns to user space
// (the scheduler's wake-up preemption: the woken task has slept, so its deadline is earlier).
// A proxy that writes N replies in a turn with N send() calls is switched out up to N times,
// two context switches each. Queued here and submitted as one batch, the same N sends run
// inside one system call: one return to user space, at most one preemption, and wake-ups aimed
// at the same other core share one inter-processor interrupt. docs/benchmarks.md has the
// figures (CPU per transaction and context switches, with and without).
//
// Bytes are copied in, so the caller's buffer is free again at once, exactly as after send()
// (the relay reuses and memmoves its buffers right away, and a released server's buffer may be
// read into by another worker). The data path's writes are small (a reply or a query: tens to
// hundreds of bytes); writes above kMaxWrite bypass the batch.
//
// Owned by one Reactor and used on its thread only. Nothing here allocates after open().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

struct io_uring;

namespace pgw::net {

class Connection;

class SendBatch {
 public:
  // Sends per io_uring_enter, and the size of the submission ring.
  static constexpr unsigned kEntries = 256;
  // Largest write that is queued; larger ones go out with send() at once.
  static constexpr std::size_t kMaxWrite = 16 * 1024;
  // Bytes queued at most: a turn that writes more is sent in parts.
  static constexpr std::size_t kMaxBytes = 256 * 1024;

  // Sets up the io_uring instance; nullptr, with the kernel's reason in `why`, when it has none
  // for us (an old kernel, kernel.io_uring_disabled, a seccomp filter).
  static std::unique_ptr<SendBatch> open(std::string& why);
  SendBatch(const SendBatch&) = delete;
  SendBatch& operator=(const SendBatch&) = delete;
  ~SendBatch();

  struct Entry {
    Connection* connection;  // null once forgotten (the connection closed or pushed it itself)
    std::uint32_t offset;
    std::uint32_t size;
  };

  bool empty() const { return count_ == 0; }
  // Room for `size` more bytes (as a new entry, or appended to the last one if `append`).
  bool has_room(std::size_t size, bool append) const {
    return (append || count_ < kEntries) && used_ + size <= kMaxBytes;
  }
  // Copies `data` in as a new entry for `connection`; returns its slot.
  std::int32_t add(Connection& connection, const void* data, std::size_t size);
  // Whether `slot` is the last entry, so more bytes for its connection can be appended to it.
  bool is_last(std::int32_t slot) const { return slot == static_cast<std::int32_t>(count_) - 1; }
  void append(std::int32_t slot, const void* data, std::size_t size);
  std::span<const std::byte> bytes(std::int32_t slot) const;
  // The entry is not to be sent (its connection sends or drops the bytes itself).
  void forget(std::int32_t slot) { entries_[static_cast<std::size_t>(slot)].connection = nullptr; }

  // Sends every live entry: one io_uring_enter per kEntries, each send non-blocking
  // (MSG_DONTWAIT, so it completes inside the system call: done, short, or EAGAIN). Returns the
  // result of each entry by slot, as send() would give it: bytes sent or -errno. Entries stay
  // readable until clear(). `error` is set (and the results of what could not be submitted are
  // -error) if io_uring itself failed; the batch should not be used again then.
  std::span<const int> send_all(int& error);
  std::span<const Entry> entries() const { return {entries_.get(), count_}; }
  void clear() {
    count_ = 0;
    used_ = 0;
  }

 private:
  SendBatch();
  std::unique_ptr<io_uring> ring_;
  std::unique_ptr<Entry[]> entries_;
  std::unique_ptr<int[]> results_;
  std::unique_ptr<std::byte[]> bytes_;
  std::size_t count_ = 0;
  std::size_t used_ = 0;
};

}  // namespace pgw::net
