// What an event loop is doing right now, for the watchdog (net/watchdog.hpp) to report when the
// loop stalls. Each worker's Reactor owns one Marker and binds it to its thread; the loop names
// its phases, and code that may block the thread for long (PBKDF2, DNS) names itself with a
// Scope. A marker holds a pointer to a static string: setting it is one relaxed store, reading
// it from the watchdog's thread one relaxed load.
#pragma once

#include <atomic>

namespace pgw::activity {

class Marker {
 public:
  void set(const char* what) { what_.store(what, std::memory_order_relaxed); }
  const char* get() const { return what_.load(std::memory_order_relaxed); }

 private:
  std::atomic<const char*> what_{"starting"};
};

// The marker of the event loop running on this thread; null on threads without one.
Marker* this_thread();
void bind_this_thread(Marker* marker);

// Names a synchronous piece of work for its duration (never across a co_await: the loop runs
// other work while a coroutine is suspended). Restores the previous name when it ends.
class Scope {
 public:
  explicit Scope(const char* what) : marker_(this_thread()) {
    if (marker_) {
      previous_ = marker_->get();
      marker_->set(what);
    }
  }
  ~Scope() {
    if (marker_) marker_->set(previous_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Marker* marker_;
  const char* previous_ = nullptr;
};

}  // namespace pgw::activity
