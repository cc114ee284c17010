#include "protocol/transaction_tracker.hpp"

namespace pgw::proto {

std::string_view to_string(CopyMode mode) {
  switch (mode) {
    case CopyMode::none:
      return "none";
    case CopyMode::in:
      return "in";
    case CopyMode::out:
      return "out";
    case CopyMode::both:
      return "both";
  }
  return "?";
}

}  // namespace pgw::proto
