// DispatchPlan against a direct enumeration of the routing.
#include "parallel/moe/dispatch_plan.h"

#include <random>

#include "gtest/gtest.h"

namespace moeserve::parallel {
namespace {

TEST(DispatchPlanTest, GroupsByExpertInTokenOrderAndInvertsExactly) {
  std::mt19937 rng(3);
  for (int64_t num_tokens : {0, 1, 7, 50}) {
    const int64_t top_k = 2, experts = 8;
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < num_tokens; ++t) {
      int32_t a = rng() % experts, b;
      do b = rng() % experts;
      while (b == a);
      ids.push_back(std::min(a, b));
      ids.push_back(std::max(a, b));
    }
    const DispatchPlan plan = BuildDispatchPlan(ids, num_tokens, top_k, experts);
    ASSERT_EQ(plan.expert_offsets.size(), size_t(experts + 1));
    EXPECT_EQ(plan.expert_offsets.back(), num_tokens * top_k);
    for (int64_t e = 0; e < experts; ++e) {
      std::vector<int32_t> expected;  // tokens routed to e, ascending
      for (int64_t t = 0; t < num_tokens; ++t) {
        if (ids[t * 2] == e || ids[t * 2 + 1] == e) expected.push_back(int32_t(t));
      }
      std::vector<int32_t> got(plan.permuted_token.begin() + plan.expert_offsets[e],
                               plan.permuted_token.begin() + plan.expert_offsets[e + 1]);
      EXPECT_EQ(got, expected) << "expert " << e;
    }
    for (int64_t t = 0; t < num_tokens; ++t) {
      for (int64_t j = 0; j < top_k; ++j) {
        const int32_t row = plan.combine_rows[t * top_k + j];
        EXPECT_EQ(plan.permuted_token[row], t);
        EXPECT_GE(row, plan.expert_offsets[ids[t * top_k + j]]);
        EXPECT_LT(row, plan.expert_offsets[ids[t * top_k + j] + 1]);
      }
    }
  }
}

}  // namespace
}  // namespace moeserve::parallel
