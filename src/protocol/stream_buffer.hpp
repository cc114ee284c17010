// The bytes of one direction of a relay between the read that brought them and the write that
// passes them on. One abstraction for both directions: the client's bytes on their way to the
// server and the server's on their way to the client.
//
//   [0, sent)          written already
//   [sent, scanned)    scanned (whole headers and the body bytes behind them), waiting to go out
//   [scanned, size)    read but not scanned yet: at most an incomplete header, or a message
//                      the reader needs whole
//
// Once everything scanned has been written, the unscanned rest moves to the front, so a steady
// stream of messages never grows the buffer. Pure bookkeeping: the caller reads into
// free_space() and writes out of unsent(); storage can be handed back while the buffer is
// empty (an idle client holds none).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace pgw::proto {

class StreamBuffer {
 public:
  StreamBuffer() = default;
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  // --- Storage
  bool has_storage() const { return !storage_.empty(); }
  std::size_t capacity() const { return storage_.size(); }
  // Takes `storage` (its contents are garbage) for an empty buffer.
  void adopt(std::vector<std::byte> storage) { storage_ = std::move(storage); }
  // Gives the storage back; the buffer must be empty.
  std::vector<std::byte> release_storage() { return std::exchange(storage_, {}); }
  // At least `bytes` of capacity (the bytes held stay where they are).
  void reserve(std::size_t bytes) {
    if (storage_.size() < bytes) storage_.resize(bytes);
  }
  void grow() { storage_.resize(storage_.empty() ? 4096 : storage_.size() * 2); }

  // --- Reading into it
  std::span<std::byte> free_space() { return {storage_.data() + size_, storage_.size() - size_}; }
  void added(std::size_t bytes) { size_ += static_cast<std::uint32_t>(bytes); }
  // Bytes copied in from elsewhere (what a login reader read ahead); grows to fit.
  void append(std::span<const std::byte> bytes) {
    reserve(size_ + bytes.size());
    if (!bytes.empty()) std::memcpy(storage_.data() + size_, bytes.data(), bytes.size());
    size_ += static_cast<std::uint32_t>(bytes.size());
  }
  bool full() const { return size_ == storage_.size(); }

  // --- Scanning
  std::span<const std::byte> unscanned() const {
    return {storage_.data() + scanned_, size_ - scanned_};
  }
  void mark_scanned(std::size_t bytes) { scanned_ += static_cast<std::uint32_t>(bytes); }
  // Drops every scanned byte, written or not (replies nobody will read), keeping the rest.
  void discard_scanned() {
    sent_ = scanned_;
    compact();
  }

  // --- Writing out of it
  std::span<const std::byte> unsent() const { return {storage_.data() + sent_, scanned_ - sent_}; }
  bool has_unsent() const { return sent_ < scanned_; }
  void mark_sent(std::size_t bytes) {
    sent_ += static_cast<std::uint32_t>(bytes);
    if (sent_ == scanned_) compact();
  }

  // --- Editing bytes not yet sent (prepared statements in transaction pooling)
  // Where `at` (a pointer into the buffer, as a scan's body spans are) lies in it.
  std::size_t offset_of(const std::byte* at) const {
    return static_cast<std::size_t>(at - storage_.data());
  }
  std::size_t scanned_end() const { return scanned_; }
  // Room for `bytes` more from the first unscanned byte on (a message needed whole).
  void reserve_unscanned(std::size_t bytes) { reserve(scanned_ + bytes); }
  // Replaces the `erase` bytes at `offset` (none of them sent) with `insert`; the bytes behind
  // move. Inserted bytes in front of the scanned end count as scanned.
  void splice(std::size_t offset, std::size_t erase, std::span<const std::byte> insert) {
    const std::size_t tail = size_ - offset - erase;
    const std::size_t new_size = size_ - erase + insert.size();
    reserve(new_size);
    std::byte* at = storage_.data() + offset;
    if (tail > 0) std::memmove(at + insert.size(), at + erase, tail);
    if (!insert.empty()) std::memcpy(at, insert.data(), insert.size());
    if (scanned_ >= offset + erase) {
      scanned_ = static_cast<std::uint32_t>(scanned_ - erase + insert.size());
    }
    size_ = static_cast<std::uint32_t>(new_size);
  }

  // Nothing held at all (no partial header either).
  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  void clear() { size_ = scanned_ = sent_ = 0; }

 private:
  // Everything scanned is out: the unscanned rest moves to the front.
  void compact() {
    const std::size_t rest = size_ - scanned_;
    if (rest > 0 && scanned_ > 0) std::memmove(storage_.data(), storage_.data() + scanned_, rest);
    size_ = static_cast<std::uint32_t>(rest);
    scanned_ = sent_ = 0;
  }

  std::vector<std::byte> storage_;
  std::uint32_t size_ = 0;
  std::uint32_t scanned_ = 0;
  std::uint32_t sent_ = 0;
};

}  // namespace pgw::proto
