// Random fill (kernels/cpu/random_fill.h) and the random model built in backend memory
// (runtime/model/device_random_model.h), on the CPU backend. The CUDA fill is compared with the
// CPU one in tests/gpu/random_fill_cuda_test.cc.
#include "runtime/model/device_random_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "kernels/cpu/random_fill.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/random_model.h"

namespace moeserve::runtime {
namespace {

TEST(RandomFillTest, UniformInRangeDeterministicAndVaried) {
  const int64_t n = 100000;
  std::vector<float> a(n), b(n);
  kernels::RandomFillParams p{.out = a.data(),
                              .dtype = kernels::DType::kF32,
                              .numel = n,
                              .seed = 7,
                              .center = 1.0f,
                              .half_range = 0.5f};
  ASSERT_TRUE(kernels::Validate(p).ok());
  kernels::cpu::RandomFill(p);
  p.out = b.data();
  kernels::cpu::RandomFill(p);
  EXPECT_EQ(a, b);
  double sum = 0, sq = 0;
  for (float v : a) {
    ASSERT_GE(v, 0.5f);
    ASSERT_LT(v, 1.5f);
    sum += v;
    sq += (v - 1.0) * (v - 1.0);
  }
  EXPECT_NEAR(sum / n, 1.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / n), 0.5 / std::sqrt(3.0), 0.01);  // uniform: half / sqrt(3)
  EXPECT_GT(std::set<float>(a.begin(), a.end()).size(), static_cast<size_t>(n / 2));
  p.seed = 8;
  kernels::cpu::RandomFill(p);
  EXPECT_NE(a, b);
}

TEST(RandomFillTest, Bf16IsTheRoundedF32Fill) {
  const int64_t n = 4099;
  std::vector<float> f(n);
  std::vector<uint16_t> h(n);
  kernels::RandomFillParams p{.out = f.data(),
                              .dtype = kernels::DType::kF32,
                              .numel = n,
                              .seed = 3,
                              .center = 0.0f,
                              .half_range = 0.02f};
  kernels::cpu::RandomFill(p);
  p.out = h.data();
  p.dtype = kernels::DType::kBF16;
  kernels::cpu::RandomFill(p);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(h[i], kernels::F32ToBf16(f[i])) << i;
}

TEST(RandomFillTest, RejectsBadParams) {
  kernels::RandomFillParams p{.out = nullptr, .dtype = kernels::DType::kF32, .numel = 4};
  EXPECT_FALSE(kernels::Validate(p).ok());
  float x;
  p.out = &x;
  p.dtype = kernels::DType::kI32;
  EXPECT_FALSE(kernels::Validate(p).ok());
}

TEST(DeviceRandomModelTest, TinyModelRunsWithVariedRouting) {
  absl::StatusOr<ModelConfig> config = PresetConfig("tiny");
  ASSERT_TRUE(config.ok());
  std::unique_ptr<kernels::Backend> be = kernels::MakeCpuBackend(1);
  MixtralWeights weights;
  absl::StatusOr<std::unique_ptr<LoadedModel>> loaded =
      MakeDeviceRandomModel(*config, 5, be.get(), 0, &weights);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->source, "device-random:5");
  ASSERT_EQ(weights.layers.size(), static_cast<size_t>(config->num_hidden_layers));
  MixtralModel& model = *(*loaded)->model;
  absl::StatusOr<KvBlockPool> pool = KvBlockPool::Create(*be, model.KvShape(16, 8));
  ASSERT_TRUE(pool.ok());
  SequenceKv kv;
  SequenceStep step;
  for (int32_t t = 0; t < 24; ++t) step.new_tokens.push_back(3 + 97 * t);
  step.kv = &kv;
  StepOutput out;
  ASSERT_TRUE(model.Forward(absl::MakeSpan(&step, 1), *pool, &out).ok());
  for (int64_t v = 0; v < out.vocab; ++v) ASSERT_TRUE(std::isfinite(out.last_row(0)[v]));
  // 24 tokens x top-2 spread over more than two experts in every layer: routing is not degenerate.
  for (const std::vector<int64_t>& layer : model.expert_load().tokens) {
    int hit = 0;
    for (int64_t n : layer) hit += n > 0;
    EXPECT_GT(hit, 2);
  }
  pool->Release(kv);
}

TEST(DeviceRandomModelTest, ChecksFreeMemoryFirst) {
  absl::StatusOr<ModelConfig> config = PresetConfig("mixtral-8x7b");
  ASSERT_TRUE(config.ok());
  std::unique_ptr<kernels::Backend> be = kernels::MakeCpuBackend(1);
  // 87 GiB of weights plus an absurd reserve: refused before anything is allocated.
  absl::StatusOr<std::unique_ptr<LoadedModel>> loaded =
      MakeDeviceRandomModel(*config, 1, be.get(), size_t{1} << 50);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(loaded.status().message().find("GiB"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::runtime
