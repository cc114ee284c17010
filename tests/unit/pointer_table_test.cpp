// util::PointerTable: the cancel-key registry's table (session/cancel_registry.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "util/pointer_table.hpp"

namespace {

struct Entry {
  std::uint64_t key;
};
struct KeyOf {
  std::uint64_t operator()(const Entry* entry) const { return entry->key; }
};
using Table = pgw::util::PointerTable<Entry, KeyOf>;

TEST(PointerTableTest, FindsWhatWasInsertedAndNothingElse) {
  Entry a{1}, b{2}, c{0xdead'beef'0000'0001ULL};
  Table table;
  EXPECT_EQ(table.find(1), nullptr);  // empty: no slots yet
  EXPECT_FALSE(table.erase(1));
  EXPECT_TRUE(table.insert(&a));
  EXPECT_TRUE(table.insert(&b));
  EXPECT_TRUE(table.insert(&c));
  EXPECT_EQ(table.size(), 3u);
  EXPECT_EQ(table.find(1), &a);
  EXPECT_EQ(table.find(2), &b);
  EXPECT_EQ(table.find(c.key), &c);
  EXPECT_EQ(table.find(3), nullptr);

  Entry a_again{1};
  EXPECT_FALSE(table.insert(&a_again));  // the key is taken
  EXPECT_EQ(table.find(1), &a);
  EXPECT_EQ(table.size(), 3u);

  EXPECT_TRUE(table.erase(2));
  EXPECT_FALSE(table.erase(2));
  EXPECT_EQ(table.find(2), nullptr);
  EXPECT_EQ(table.find(1), &a);
  EXPECT_EQ(table.find(c.key), &c);
  EXPECT_EQ(table.size(), 2u);
}

// Keys that all hash to the same home slot make one long probe run; erasing from its middle
// must leave every other key findable (the backward shift), including across the array's end.
TEST(PointerTableTest, ErasingInsideACollisionRunKeepsTheRestFindable) {
  // Multiples of 2^58 differ only in their top 6 bits; Fibonacci hashing spreads them, so
  // pick keys by their actual home slot instead: collect keys whose home is the last slot.
  Table probe;
  Entry seed{0};
  probe.insert(&seed);
  const std::size_t slots = probe.capacity();
  std::vector<std::unique_ptr<Entry>> colliding;
  for (std::uint64_t k = 1; colliding.size() < 20; ++k) {
    const auto home = static_cast<std::size_t>((k * 0x9e3779b97f4a7c15ULL) >> 58);  // 64 slots
    if (home == slots - 1) colliding.push_back(std::make_unique<Entry>(Entry{k}));
  }
  ASSERT_EQ(slots, 64u);
  Table table;
  for (auto& e : colliding) ASSERT_TRUE(table.insert(e.get()));  // run wraps past slot 63
  for (std::size_t i = 0; i < colliding.size(); i += 3) {
    ASSERT_TRUE(table.erase(colliding[i]->key));
    for (std::size_t j = 0; j < colliding.size(); ++j) {
      const bool gone = j % 3 == 0 && j <= i;
      EXPECT_EQ(table.find(colliding[j]->key), gone ? nullptr : colliding[j].get())
          << "key " << j << " after erasing " << i;
    }
  }
}

TEST(PointerTableTest, AgreesWithAMapThroughRandomChurnAndGivesMemoryBack) {
  std::mt19937_64 random(42);
  std::vector<std::unique_ptr<Entry>> pool;
  std::unordered_map<std::uint64_t, Entry*> expected;
  Table table;
  std::size_t peak_capacity = 0;
  for (int round = 0; round < 40'000; ++round) {
    // Grow to about 5,000 entries, then shrink back to a few.
    const bool growing = round < 20'000;
    if (growing ? random() % 4 != 0 : random() % 4 == 0) {
      pool.push_back(std::make_unique<Entry>(Entry{random() % 100'000}));  // some repeat
      Entry* e = pool.back().get();
      const bool fresh = expected.emplace(e->key, e).second;
      EXPECT_EQ(table.insert(e), fresh);
    } else if (!expected.empty()) {
      auto it = expected.begin();
      std::advance(it, static_cast<long>(random() % std::min<std::size_t>(expected.size(), 8)));
      EXPECT_TRUE(table.erase(it->first));
      expected.erase(it);
    }
    ASSERT_EQ(table.size(), expected.size());
    ASSERT_LE(table.size() * 4, table.capacity() * 3);
    peak_capacity = std::max(peak_capacity, table.capacity());
    if (round % 1000 == 0) {
      for (auto& [key, entry] : expected) ASSERT_EQ(table.find(key), entry);
      for (int i = 0; i < 100; ++i) {
        const std::uint64_t key = 100'000 + random() % 100'000;  // never inserted
        ASSERT_EQ(table.find(key), nullptr);
      }
    }
  }
  for (auto& [key, entry] : expected) EXPECT_EQ(table.find(key), entry);
  EXPECT_GE(peak_capacity, 8192u);
  EXPECT_LE(table.capacity(), std::max<std::size_t>(64, expected.size() * 16));
}

}  // namespace
