// A hash table of pointers whose keys live in the objects themselves: open addressing with
// linear probing over an array of `T*`, with `KeyOf{}(const T*)` giving an object's 64-bit
// key. Holding an object costs one pointer per slot (at most three quarters of the slots are
// used: 11-21 bytes per entry), where a node-based map costs a heap node and a bucket per entry
// (about 40 bytes). Used for the cancel keys that every client holds (session/cancel_registry.hpp).
//
// An object's key must not change while it is in the table. Not thread-safe: the owner locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace pgw::util {

template <typename T, typename KeyOf>
class PointerTable {
 public:
  // Adds `item` unless an object with its key is already there; true if added.
  bool insert(T* item) {
    if ((size_ + 1) * 4 > slots_.size() * 3) {
      resize(slots_.empty() ? kMinSlots : slots_.size() * 2);
    }
    const std::uint64_t key = KeyOf{}(item);
    std::size_t at = home(key);
    while (slots_[at]) {
      if (KeyOf{}(slots_[at]) == key) return false;
      at = next(at);
    }
    slots_[at] = item;
    ++size_;
    return true;
  }

  T* find(std::uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (std::size_t at = home(key); slots_[at]; at = next(at)) {
      if (KeyOf{}(slots_[at]) == key) return slots_[at];
    }
    return nullptr;
  }

  // Removes the object with `key`, if any; true if there was one.
  bool erase(std::uint64_t key) {
    if (slots_.empty()) return false;
    std::size_t hole = home(key);
    while (slots_[hole] && KeyOf{}(slots_[hole]) != key) hole = next(hole);
    if (!slots_[hole]) return false;
    slots_[hole] = nullptr;
    --size_;
    // Backward shift: move up every later entry of the run whose probe passed the hole, so
    // that no search stops early at it (no tombstones).
    for (std::size_t at = next(hole); slots_[at]; at = next(at)) {
      const std::size_t wanted = home(KeyOf{}(slots_[at]));
      // The entry may move into the hole unless its home lies cyclically in (hole, at].
      const bool home_after_hole =
          hole <= at ? (wanted > hole && wanted <= at) : (wanted > hole || wanted <= at);
      if (home_after_hole) continue;
      slots_[hole] = std::exchange(slots_[at], nullptr);
      hole = at;
    }
    // Give memory back after a crowd has gone (at most an eighth used).
    if (slots_.size() > kMinSlots && size_ * 8 < slots_.size()) resize(slots_.size() / 2);
    return true;
  }

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return slots_.size(); }

 private:
  static constexpr std::size_t kMinSlots = 64;

  std::size_t home(std::uint64_t key) const {
    // Fibonacci hashing spreads even keys that differ only in their high bits.
    return static_cast<std::size_t>((key * 0x9e3779b97f4a7c15ULL) >> shift_);
  }
  std::size_t next(std::size_t at) const { return (at + 1) & (slots_.size() - 1); }

  void resize(std::size_t slots) {
    std::vector<T*> old(slots, nullptr);
    old.swap(slots_);
    shift_ = 64;
    for (std::size_t n = slots; n > 1; n >>= 1) --shift_;
    size_ = 0;
    for (T* item : old) {
      if (!item) continue;
      std::size_t at = home(KeyOf{}(item));
      while (slots_[at]) at = next(at);
      slots_[at] = item;
      ++size_;
    }
  }

  std::vector<T*> slots_;  // a power of two in size, or empty
  std::size_t size_ = 0;
  unsigned shift_ = 64;  // 64 - log2(slots)
};

}  // namespace pgw::util
