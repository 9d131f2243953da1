// The component host's process-level duties: CPU priority of the executor thread.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <thread>

#include "neat/components/host.hpp"

namespace neat::components {
namespace {

TEST(Scheduling, SetThreadNicenessLowersOnlyTheCallingThread) {
  const int before = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  int inside = 0, seen_by_kernel = 0;
  std::thread t([&] {
    inside = set_thread_niceness(3);
    seen_by_kernel = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
  });
  t.join();
  EXPECT_EQ(inside, std::min(before + 3, 19));
  EXPECT_EQ(seen_by_kernel, inside);
  // The caller's own thread is untouched.
  EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid())), before);
}

}  // namespace
}  // namespace neat::components
