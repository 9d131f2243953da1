// The process-wide registry of shared read-only objects (issue 8: one byte LM per process).
#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>
#include <vector>

#include "neat/nn/shared.hpp"

namespace neat::nn {
namespace {

TEST(SharedInstance, OneKeyGivesOneInstanceMadeOnceEvenFromManyThreads) {
  int made = 0;
  auto make = [&] {
    ++made;  // under the registry's lock
    return std::make_shared<const std::vector<float>>(1000, 1.5f);
  };
  std::vector<std::shared_ptr<const std::vector<float>>> got(4);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back(
        [&, i] { got[i] = shared_instance<const std::vector<float>>("test:weights", make); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(made, 1);
  for (const auto& g : got) EXPECT_EQ(g.get(), got[0].get());
  EXPECT_EQ((*got[0])[999], 1.5f);
  // Another key, or the same key for another type, is another instance.
  auto other = shared_instance<const std::vector<float>>("test:other", make);
  EXPECT_NE(other.get(), got[0].get());
  auto as_int =
      shared_instance<const int>("test:weights", [] { return std::make_shared<const int>(7); });
  EXPECT_EQ(*as_int, 7);
}

TEST(SharedInstance, ReleasedInstanceIsMadeAgainAndAFailedMakeRegistersNothing) {
  int made = 0;
  auto make = [&] { return std::make_shared<int>(++made); };
  const auto before = shared_instance_count();
  {
    auto a = shared_instance<int>("test:released", make);
    EXPECT_EQ(*a, 1);
    EXPECT_EQ(shared_instance_count(), before + 1);
  }
  EXPECT_EQ(shared_instance_count(), before);  // the registry keeps no instance alive
  auto b = shared_instance<int>("test:released", make);
  EXPECT_EQ(*b, 2);
  EXPECT_THROW(shared_instance<int>(
                   "test:failing",
                   []() -> std::shared_ptr<int> { throw std::runtime_error("cannot load"); }),
               std::runtime_error);
  EXPECT_EQ(*shared_instance<int>("test:failing", [] { return std::make_shared<int>(3); }), 3);
}

}  // namespace
}  // namespace neat::nn
