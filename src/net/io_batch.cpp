#include "net/io_batch.hpp"

#include <liburing.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "net/reactor.hpp"

namespace pgw::net {

IoBatch::IoBatch()
    : ring_(std::make_unique<io_uring>()),
      entries_(std::make_unique<Entry[]>(kEntries)),
      results_(std::make_unique<int[]>(kEntries)),
      // Not value-initialised: the pages are touched only as far as the busiest turn uses them.
      bytes_(std::make_unique_for_overwrite<std::byte[]>(kMaxBytes)),
      read_results_(std::make_unique<int[]>(kReadAhead)),
      reads_(std::make_unique_for_overwrite<std::byte[]>(kReadAhead * kReadSlot)) {}

IoBatch::~IoBatch() {
  if (ring_) io_uring_queue_exit(ring_.get());
}

std::unique_ptr<IoBatch> IoBatch::open(std::string& why) {
  std::unique_ptr<IoBatch> batch(new IoBatch);
  // SUBMIT_ALL (5.18): one refused entry does not stop the rest. COOP_TASKRUN (5.19): no
  // interrupt of this thread for completion work. SINGLE_ISSUER (6.0): only this thread
  // submits, so the kernel skips some locking; optional. A kernel without the first two is not
  // used: that is also where a MSG_DONTWAIT send is sure to complete inside the submission
  // instead of being handed to a kernel worker (send_all waits for every completion).
  int rc = -EINVAL;
  for (const unsigned flags :
       {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER,
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN}) {
    io_uring_params params{};
    params.flags = flags;
    rc = io_uring_queue_init_params(kEntries, batch->ring_.get(), &params);
    if (rc != -EINVAL) break;
  }
  if (rc < 0) {
    why = rc == -EINVAL ? "kernel older than 5.19" : std::strerror(-rc);
    batch->ring_.reset();  // never set up: no queue_exit
    return nullptr;
  }
  io_uring_probe* probe = io_uring_get_probe_ring(batch->ring_.get());
  const bool can_send = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_SEND);
  if (probe != nullptr) io_uring_free_probe(probe);
  if (!can_send) {
    why = "no IORING_OP_SEND";
    return nullptr;
  }
  return batch;
}

std::int16_t IoBatch::add(Connection& connection, const void* data, std::size_t size) {
  std::memcpy(bytes_.get() + used_, data, size);
  entries_[count_] = {&connection, static_cast<std::uint32_t>(used_),
                      static_cast<std::uint32_t>(size)};
  used_ += size;
  return static_cast<std::int16_t>(count_++);
}

void IoBatch::append(std::int16_t slot, const void* data, std::size_t size) {
  std::memcpy(bytes_.get() + used_, data, size);
  entries_[static_cast<std::size_t>(slot)].size += static_cast<std::uint32_t>(size);
  used_ += size;
}

std::span<const std::byte> IoBatch::bytes(std::int16_t slot) const {
  const Entry& entry = entries_[static_cast<std::size_t>(slot)];
  return {bytes_.get() + entry.offset, entry.size};
}

void IoBatch::submit_and_reap(unsigned count, int* results) {
  io_uring* ring = ring_.get();
  unsigned completed = 0;
  while (completed < count) {
    // Submits (the first time) and waits for the completions: with MSG_DONTWAIT they are
    // posted before the system call returns, so this waits for nothing.
    const int rc = io_uring_submit_and_wait(ring, count - completed);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN) {
      failure_ = -rc;  // what did not complete keeps its initial result
      return;
    }
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(ring, head, cqe) {
      results[io_uring_cqe_get_data64(cqe)] = cqe->res;
      ++seen;
    }
    io_uring_cq_advance(ring, seen);
    completed += seen;
  }
}

std::span<const int> IoBatch::send_all() {
  io_uring* ring = ring_.get();
  unsigned submitted = 0;
  for (std::size_t slot = 0; slot < count_; ++slot) {
    const Entry& entry = entries_[slot];
    if (entry.connection == nullptr) continue;
    io_uring_sqe* sqe = io_uring_get_sqe(ring);  // never null: count_ <= kEntries
    io_uring_prep_send(sqe, entry.connection->fd(), bytes_.get() + entry.offset, entry.size,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    io_uring_sqe_set_data64(sqe, slot);
    results_[slot] = -ECANCELED;
    ++submitted;
  }
  submit_and_reap(submitted, results_.get());
  if (failure_ != 0) {
    for (std::size_t slot = 0; slot < count_; ++slot) {
      if (results_[slot] == -ECANCELED) results_[slot] = -failure_;
    }
  }
  return {results_.get(), count_};
}

std::span<const int> IoBatch::receive_all(std::span<const int> fds) {
  io_uring* ring = ring_.get();
  for (std::size_t slot = 0; slot < fds.size(); ++slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(ring);  // never null: fds.size() <= kReadAhead
    io_uring_prep_recv(sqe, fds[slot], reads_.get() + slot * kReadSlot, kReadSlot, MSG_DONTWAIT);
    io_uring_sqe_set_data64(sqe, slot);
    read_results_[slot] = kNotRead;
  }
  // A failed submission may have done some of the reads: those keep their results (their bytes
  // are out of the socket), the others stay kNotRead.
  submit_and_reap(static_cast<unsigned>(fds.size()), read_results_.get());
  return {read_results_.get(), fds.size()};
}

}  // namespace pgw::net
