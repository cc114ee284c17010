// Session parameters (GUCs) as pgwarden tracks them for clients and server connections.
// A handful of entries at most, so a flat vector beats a map for both memory and speed.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgw {

class ParamSet {
 public:
  const std::string* find(std::string_view name) const {
    for (const auto& [key, value] : entries_) {
      if (equal_names(key, name)) return &value;
    }
    return nullptr;
  }
  // Returns true if the value changed.
  bool set(std::string_view name, std::string_view value) {
    for (auto& [key, current] : entries_) {
      if (equal_names(key, name)) {
        if (current == value) return false;
        current.assign(value);
        return true;
      }
    }
    entries_.emplace_back(std::string(name), std::string(value));
    return true;
  }
  void erase(std::string_view name) {
    std::erase_if(entries_, [&](const auto& entry) { return equal_names(entry.first, name); });
  }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }
  bool empty() const { return entries_.empty(); }

  // GUC names are case-insensitive ("DateStyle" == "datestyle").
  static bool equal_names(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
  }

 private:
  static char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
  std::vector<std::pair<std::string, std::string>> entries_;
};

}  // namespace pgw
