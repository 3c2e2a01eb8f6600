#include "runtime/sampling/sampler.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

TEST(SamplerTest, GreedyTakesLowestIdOnTies) {
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(ArgMax(logits.data(), 4), 1);
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
}

TEST(SamplerTest, SameSeedSameTokensAndFrequenciesFollowSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  Sampler a(p), b(p);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int32_t t = a.Sample(logits.data(), 4);
    EXPECT_EQ(t, b.Sample(logits.data(), 4));
    ++counts[t];
  }
  double z = 0;
  for (float l : logits) z += std::exp(l);
  for (int32_t t = 0; t < 4; ++t) {
    const double expected = std::exp(logits[t]) / z;
    // 5 standard deviations of a binomial proportion: a real bug shifts these far more.
    EXPECT_NEAR(counts[t] / double(n), expected, 5 * std::sqrt(expected * (1 - expected) / n));
  }
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = {0.1f, 0.3f, 3.0f, 0.2f};
  SamplingParams k1;
  k1.temperature = 5.0f;
  k1.top_k = 1;
  SamplingParams p_small;
  p_small.temperature = 5.0f;
  p_small.top_p = 1e-6f;
  Sampler a(k1), b(p_small);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.Sample(logits.data(), 4), 2);
    EXPECT_EQ(b.Sample(logits.data(), 4), 2);
  }
}

TEST(SamplerTest, ValidateNamesTheBadParameter) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(p.Validate().message().find("temperature"), std::string::npos);
  p = {};
  p.top_p = 0;
  EXPECT_NE(p.Validate().message().find("top_p"), std::string::npos);
  p = {};
  p.top_k = -2;
  EXPECT_NE(p.Validate().message().find("top_k"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::runtime
