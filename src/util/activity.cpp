#include "util/activity.hpp"

namespace pgw::activity {
namespace {
thread_local Marker* current = nullptr;
}  // namespace

Marker* this_thread() {
  return current;
}

void bind_this_thread(Marker* marker) {
  current = marker;
}

}  // namespace pgw::activity
