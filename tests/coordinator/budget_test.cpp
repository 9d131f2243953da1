// Memory budgets: grants by priority, escalating degrade commands, the summary.
#include <gtest/gtest.h>

#include "neat/coordinator/budget.hpp"

namespace neat::coordinator {
namespace {

TEST(MemoryBudget, GrantsFollowPrioritiesAndSumToTheBudget) {
  MemoryBudgetManager m(1000, {{"blt", 3.0}, {"titans", 1.0}, {"t2", 0.5}, {"mvot", 0.5}},
                        {{"blt", "blt"}, {"titans", "titans"}, {"t2", "t2"}, {"mvot", "mvot"}});
  EXPECT_EQ(m.grant("blt"), 600u);
  EXPECT_EQ(m.grant("titans"), 200u);
  EXPECT_EQ(m.grant("t2"), 100u);
  EXPECT_EQ(m.grant("mvot"), 100u);
  EXPECT_EQ(m.grant("nobody"), 0u);
  EXPECT_THROW(MemoryBudgetManager(10, {{"x", 0.0}}, {}), std::invalid_argument);
}

TEST(MemoryBudget, OverGrantEscalatesThroughTheKindsActionsAfterSettling) {
  MemoryBudgetManager m(1000, {{"mem", 1.0}, {"other", 1.0}}, {{"mem", "titans"}}, 2);
  EXPECT_FALSE(m.report("mem", 400, 400)) << "within its grant of 500";
  auto first = m.report("mem", 700, 700);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->action, "skip_low_surprise");
  EXPECT_NE(first->reason.find("grant of 500"), std::string::npos);
  EXPECT_FALSE(m.report("mem", 650, 700)) << "the action gets time to work";
  auto second = m.report("mem", 650, 700);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->action, "shrink_chunks");
  EXPECT_FALSE(m.report("mem", 300, 700));
  const auto s = m.summary();
  EXPECT_EQ(s["mem"]["peak_bytes"], 700);
  EXPECT_EQ(s["mem"]["current_bytes"], 300);
  EXPECT_EQ(s["mem"]["actions"], nlohmann::json::array({"skip_low_surprise", "shrink_chunks"}));
  EXPECT_EQ(s["mem"]["over_budget_reports"], 3);
}

TEST(MemoryBudget, KindsWithoutActionsAreReportedButNotCommanded) {
  MemoryBudgetManager m(100, {{"sink", 1.0}}, {{"sink", "sink"}});
  EXPECT_FALSE(m.report("sink", 1000, 1000));
  EXPECT_EQ(m.summary()["sink"]["over_budget_reports"], 1);
}

}  // namespace
}  // namespace neat::coordinator
