// util::IntrusiveList: the per-worker list of client sessions (session/session_registry.hpp) and
// the pool's FIFOs of waiters (pool/pool.hpp, tested with the pool in pool_wait_test.cpp).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "util/intrusive_list.hpp"

namespace {

struct Item : pgw::util::ListHook<Item> {
  explicit Item(int v) : value(v) {}
  int value;
};

using List = pgw::util::IntrusiveList<Item>;

std::vector<int> values(const List& list) {
  std::vector<int> out;
  for (Item* item : list) out.push_back(item->value);
  return out;
}

TEST(IntrusiveListTest, KeepsInsertionOrderAndErasesAnywhere) {
  Item a{1}, b{2}, c{3}, d{4};
  List list;
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.begin(), list.end());
  EXPECT_EQ(list.front(), nullptr);
  for (Item* item : {&a, &b, &c, &d}) list.insert(item);
  EXPECT_EQ(list.size(), 4u);
  EXPECT_EQ(values(list), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(list.front(), &a);

  list.erase(&b);  // middle
  EXPECT_EQ(values(list), (std::vector<int>{1, 3, 4}));
  list.erase(&a);  // first
  EXPECT_EQ(values(list), (std::vector<int>{3, 4}));
  EXPECT_EQ(list.front(), &c);
  list.erase(&d);  // last
  EXPECT_EQ(values(list), (std::vector<int>{3}));
  EXPECT_FALSE(b.is_linked());
  EXPECT_TRUE(c.is_linked());
  list.erase(&c);
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(list.front(), nullptr);
  EXPECT_EQ(values(list), std::vector<int>{});

  list.insert(&b);  // an erased item can be listed again
  EXPECT_EQ(values(list), (std::vector<int>{2}));
  list.erase(&b);
}

TEST(IntrusiveListTest, InsertingTwiceAndErasingAnUnlistedItemChangeNothing) {
  Item a{1}, b{2}, stranger{9};
  List list;
  list.insert(&a);
  list.insert(&b);
  list.insert(&a);
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(values(list), (std::vector<int>{1, 2}));
  list.erase(&stranger);
  EXPECT_EQ(list.size(), 2u);
  EXPECT_EQ(values(list), (std::vector<int>{1, 2}));
  list.erase(&a);
  list.erase(&a);
  EXPECT_EQ(values(list), (std::vector<int>{2}));
  list.erase(&b);
}

TEST(IntrusiveListTest, ACopiedItemIsNotListedAndAGoneListUnlinksItsItems) {
  auto a = std::make_unique<Item>(1);
  Item b{2};
  {
    List list;
    list.insert(a.get());
    list.insert(&b);
    Item copy = *a;  // the copy's links are its own
    EXPECT_FALSE(copy.is_linked());
    EXPECT_EQ(copy.value, 1);
    list.insert(&copy);
    EXPECT_EQ(values(list), (std::vector<int>{1, 2, 1}));
    list.erase(&copy);
  }
  EXPECT_FALSE(a->is_linked());
  EXPECT_FALSE(b.is_linked());
  List other;  // and they can join another list
  other.insert(&b);
  other.insert(a.get());
  EXPECT_EQ(values(other), (std::vector<int>{2, 1}));
  other.erase(a.get());
  other.erase(&b);
}

TEST(IntrusiveListTest, ManyItemsComeAndGo) {
  std::vector<std::unique_ptr<Item>> items;
  List list;
  for (int i = 0; i < 1000; ++i) {
    items.push_back(std::make_unique<Item>(i));
    list.insert(items.back().get());
  }
  for (int i = 0; i < 1000; i += 2) list.erase(items[static_cast<std::size_t>(i)].get());
  EXPECT_EQ(list.size(), 500u);
  int expected = 1;
  for (Item* item : list) {
    EXPECT_EQ(item->value, expected);
    expected += 2;
  }
  for (auto& item : items) list.erase(item.get());
  EXPECT_TRUE(list.empty());
}

}  // namespace
