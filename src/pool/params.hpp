// Session parameters (GUCs) as pgwarden tracks them for clients and server connections.
// A handful of entries at most, so a flat vector beats a map for both memory and speed.
#pragma once

#include <cstdint>
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

  // Identifies the set of (name, value) pairs whatever their order (0 for the empty set), so
  // "does this server already have this client's parameters?" is one comparison per lease.
  std::uint64_t fingerprint() const {
    std::uint64_t sum = 0;
    for (const auto& [key, value] : entries_) {
      std::uint64_t h = 14695981039346656037ull;  // FNV-1a over lower(name) '=' value
      for (char c : key) h = (h ^ static_cast<unsigned char>(lower(c))) * 1099511628211ull;
      h = (h ^ '=') * 1099511628211ull;
      for (char c : value) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
      sum += h * 0x9E3779B97F4A7C15ull | 1;  // commutative, so order does not matter
    }
    return sum;
  }

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
