// The system calls of one turn of a worker's event loop, made together through io_uring: the
// turn's writes in one submission, and the reads of its readiness events in one submission per
// up to kReadAhead events.
//
// Why the writes: a send() on loopback or a LAN socket wakes the process that waits on the other
// end, and the woken backend or client often preempts the pooler as that send() returns to user
// space (the scheduler's wake-up preemption: the woken task has slept, so its deadline is
// earlier). A proxy that writes N replies in a turn with N send() calls is switched out up to N
// times, two context switches each. Queued here and submitted as one batch, the same N sends
// run inside one system call: one return to user space, at most one preemption.
//
// Why the reads: after epoll_wait reports N readable sockets, N recv() calls are N system
// calls, each a return to user space where a pending preemption can strike. One submission of N
// non-blocking receives does the same work in one call; the data path then reads from the
// slots instead of the sockets (Connection::read_some).
//
// docs/benchmarks.md has the figures (CPU per transaction and context switches, with and
// without).
//
// Written bytes are copied in, so the caller's buffer is free again at once, exactly as after
// send() (the relay reuses and memmoves its buffers right away, and a released server's buffer
// may be read into by another worker). The data path's writes are small (a reply or a query:
// tens to hundreds of bytes); writes above kMaxWrite bypass the batch.
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

class IoBatch {
 public:
  // Writes per io_uring_enter, and the size of the submission ring.
  static constexpr unsigned kEntries = 256;
  // Largest write that is queued; larger ones go out with send() at once.
  static constexpr std::size_t kMaxWrite = 16 * 1024;
  // Bytes queued at most: a turn that writes more is sent in parts.
  static constexpr std::size_t kMaxBytes = 256 * 1024;
  // Readiness events whose reads go in one submission, and the bytes each read may take (what
  // the socket holds beyond that is read by the data path itself).
  static constexpr std::size_t kReadAhead = 64;
  static constexpr std::size_t kReadSlot = 4096;
  // The result of a read that was never submitted (io_uring itself failed).
  static constexpr int kNotRead = -1'000'000;

  // Sets up the io_uring instance; nullptr, with the kernel's reason in `why`, when it has none
  // for us (an old kernel, kernel.io_uring_disabled, a seccomp filter).
  static std::unique_ptr<IoBatch> open(std::string& why);
  IoBatch(const IoBatch&) = delete;
  IoBatch& operator=(const IoBatch&) = delete;
  ~IoBatch();

  // io_uring itself failed (not a send or a read): the errno, else 0. The owner stops using the
  // batch once the bytes in its read slots are taken.
  int failure() const { return failure_; }

  // ---- writes

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
  std::int16_t add(Connection& connection, const void* data, std::size_t size);
  // Whether `slot` is the last entry, so more bytes for its connection can be appended to it.
  bool is_last(std::int16_t slot) const { return slot == static_cast<std::int16_t>(count_) - 1; }
  void append(std::int16_t slot, const void* data, std::size_t size);
  std::span<const std::byte> bytes(std::int16_t slot) const;
  // The entry is not to be sent (its connection sends or drops the bytes itself).
  void forget(std::int16_t slot) { entries_[static_cast<std::size_t>(slot)].connection = nullptr; }

  // Sends every live entry in one io_uring_enter, each send non-blocking (MSG_DONTWAIT, so it
  // completes inside the system call: done, short, or EAGAIN). Returns the result of each
  // entry by slot, as send() would give it: bytes sent or -errno. Entries stay readable until
  // clear(). If io_uring itself fails, the entries it did not send get -failure().
  std::span<const int> send_all();
  std::span<const Entry> entries() const { return {entries_.get(), count_}; }
  void clear() {
    count_ = 0;
    used_ = 0;
  }

  // ---- reads

  // Receives from each of `fds` (at most kReadAhead) into read slot i, in one io_uring_enter,
  // non-blocking. Returns each read's result as recv() would give it (bytes, 0 at the end of
  // stream, -errno), or kNotRead for a read that io_uring itself failed to do (failure()).
  std::span<const int> receive_all(std::span<const int> fds);
  const std::byte* read_slot(std::size_t slot) const { return reads_.get() + slot * kReadSlot; }

 private:
  IoBatch();
  // Submits `count` prepared entries and waits for their completions (which the kernel posts
  // before the call returns), storing each result by its user_data. If io_uring itself fails,
  // sets failure_ and leaves the results of what did not complete as they were.
  void submit_and_reap(unsigned count, int* results);

  int failure_ = 0;  // errno of a failed io_uring_enter: the batch must not be used again
  std::unique_ptr<io_uring> ring_;
  std::unique_ptr<Entry[]> entries_;
  std::unique_ptr<int[]> results_;
  std::unique_ptr<std::byte[]> bytes_;
  std::unique_ptr<int[]> read_results_;
  std::unique_ptr<std::byte[]> reads_;
  std::size_t count_ = 0;
  std::size_t used_ = 0;
};

}  // namespace pgw::net
