// A doubly linked list whose links live in the listed objects (they derive from ListHook), so
// listing and unlisting allocate nothing and cost O(1). Used where every idle client would
// otherwise pay for a node of a standard container: a worker's list of its sessions, and each
// worker's FIFO of clients waiting for a server (pool::Waiter).
//
// The list does not own its items. An item is in at most one list per hook type and must be
// erased before it is destroyed. Not thread-safe: one thread owns a list.
#pragma once

#include <cstddef>
#include <iterator>

namespace pgw::util {

template <typename T>
class IntrusiveList;

template <typename T>
class ListHook {
 public:
  ListHook() = default;
  // Copying an item must not copy its place in a list.
  ListHook(const ListHook&) {}
  ListHook& operator=(const ListHook&) { return *this; }

  // Links are null exactly while the item is in no list (the list is circular through its
  // own hook, so a listed item always has both neighbours).
  bool is_linked() const { return next_ != nullptr; }

 protected:
  ~ListHook() = default;

 private:
  friend class IntrusiveList<T>;
  ListHook* prev_ = nullptr;
  ListHook* next_ = nullptr;
};

template <typename T>
class IntrusiveList {
  using Hook = ListHook<T>;

 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = T*;
    using difference_type = std::ptrdiff_t;
    using pointer = T**;
    using reference = T*;

    iterator() = default;
    explicit iterator(const Hook* at) : at_(at) {}
    T* operator*() const { return static_cast<T*>(const_cast<Hook*>(at_)); }
    iterator& operator++() {
      at_ = at_->next_;
      return *this;
    }
    iterator operator++(int) {
      iterator before = *this;
      ++*this;
      return before;
    }
    bool operator==(const iterator& other) const { return at_ == other.at_; }

   private:
    const Hook* at_ = nullptr;
  };

  IntrusiveList() { root_.prev_ = root_.next_ = &root_; }
  // Items point at the list's own hook: it cannot move.
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;
  // Unlinks whatever is left, so no item points into a list that is gone.
  // Works on the hooks alone, so it compiles where T is still incomplete.
  ~IntrusiveList() {
    while (root_.next_ != &root_) unlink(root_.next_);
  }

  // Appends `item`; does nothing if it is already in a list.
  void insert(T* item) {
    Hook* hook = item;
    if (hook->is_linked()) return;
    hook->prev_ = root_.prev_;
    hook->next_ = &root_;
    root_.prev_->next_ = hook;
    root_.prev_ = hook;
    ++size_;
  }

  // Removes `item` (which must be in this list, or in none).
  void erase(T* item) {
    Hook* hook = item;
    if (hook->is_linked()) unlink(hook);
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The first item (the oldest insert), or null when the list is empty.
  T* front() const { return empty() ? nullptr : *begin(); }
  iterator begin() const { return iterator(root_.next_); }
  iterator end() const { return iterator(&root_); }

 private:
  void unlink(Hook* hook) {
    hook->prev_->next_ = hook->next_;
    hook->next_->prev_ = hook->prev_;
    hook->prev_ = hook->next_ = nullptr;
    --size_;
  }
  // Plays the part of the item before the first and after the last; never handed out.
  struct Root : Hook {};
  Root root_;
  std::size_t size_ = 0;
};

}  // namespace pgw::util
