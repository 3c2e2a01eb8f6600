// The model step's device contract, checked on the CPU through a counting wrapper Backend:
//  - a steady-state step allocates nothing, uploads its inputs with one copy, downloads the
//    logits (and the expert-load counters) and synchronises once;
//  - a backend that reports a non-CPU device gets the weights copied to its memory at load
//    (after a free-memory check), and computes bitwise the same logits as the CPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/model_loader.h"
#include "tests/golden/ep_harness.h"
#include "tests/unit/counting_backend.h"

namespace moeserve::runtime {
namespace {

using counting_test::CountingBackend;
using counting_test::Counts;

ModelConfig Config() { return ep_test::SmallConfig(/*layers=*/2); }

// Greedy generation over a batch of two sequences (a prefill, then decode steps); returns every
// step's logits and the per-step counts of the backend.
struct GenerateRun {
  std::vector<std::vector<float>> logits;
  std::vector<Counts> per_step;
};

GenerateRun Generate(CountingBackend& backend, MixtralModel& model, int steps) {
  GenerateRun run;
  auto pool = KvBlockPool::Create(backend, model.KvShape(16, 16));  // one block per sequence
  EXPECT_TRUE(pool.ok()) << pool.status();
  SequenceKv kv[2];
  std::vector<int32_t> next[2] = {{5, 17, 3, 99, 42}, {7, 7, 300}};
  for (int s = 0; s < steps; ++s) {
    std::vector<SequenceStep> batch(2);
    for (int i = 0; i < 2; ++i) {
      batch[i].new_tokens = next[i];
      batch[i].kv = &kv[i];
    }
    const Counts before = backend.counts;
    StepOutput out;
    const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    run.per_step.push_back(backend.counts - before);
    run.logits.push_back(out.logits);
    for (int i = 0; i < 2; ++i) {
      const float* row = out.last_row(i);
      int32_t best = 0;
      for (int32_t v = 1; v < out.vocab; ++v) best = row[v] > row[best] ? v : best;
      next[i] = {best};
    }
  }
  return run;
}

void ExpectSteadyState(const GenerateRun& run) {
  // Step 0 (prefill) sizes every buffer (and builds the expert tables); decode steps fit in
  // what exists (capacities only grow, by powers of two, when a step is larger).
  ASSERT_GE(run.per_step.size(), 4u);
  for (size_t s = 1; s < run.per_step.size(); ++s) {
    const Counts& c = run.per_step[s];
    EXPECT_EQ(c.allocations(), 0) << "step " << s;
    EXPECT_EQ(c.to_device, 1) << "step " << s;  // the staging buffer
    EXPECT_EQ(c.to_host, 2) << "step " << s;    // logits + expert-load counters
    EXPECT_EQ(c.synchronize, 1) << "step " << s;
    EXPECT_EQ(c.on_device + c.memset, 0) << "step " << s;
  }
}

TEST(DeviceStepTest, CpuSteadyStateStepAllocatesNothingAndSynchronisesOnce) {
  CountingBackend backend(/*fake_device=*/false);
  auto loaded = LoadRandomModel(Config(), 3, &backend);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // CPU: no device copy; one host buffer of the matmul weights packed at load (cpu_weights.h).
  ASSERT_EQ((*loaded)->device_weights.size(), 1u);
  EXPECT_EQ((*loaded)->device_weights[0].device(), kernels::Device::kCpu);
  const GenerateRun run = Generate(backend, *(*loaded)->model, 8);
  ExpectSteadyState(run);
}

TEST(DeviceStepTest, DeviceBackendGetsWeightCopiesAndTheSameBits) {
  auto cpu = std::make_unique<CountingBackend>(false);
  auto reference = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(reference.ok());
  const GenerateRun want = Generate(*cpu, *(*reference)->model, 6);

  CountingBackend device(/*fake_device=*/true);
  auto loaded = LoadRandomModel(Config(), 3, &device);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Dense tensors in one buffer, then w1/w3/w2 stacks per layer.
  EXPECT_EQ((*loaded)->device_weights.size(), 1u + 3u * Config().num_hidden_layers);
  EXPECT_EQ(device.counts.synchronize, 1);  // one at the end of the upload
  const GenerateRun got = Generate(device, *(*loaded)->model, 6);
  ASSERT_EQ(got.logits.size(), want.logits.size());
  for (size_t s = 0; s < got.logits.size(); ++s) {
    ASSERT_EQ(got.logits[s].size(), want.logits[s].size());
    EXPECT_EQ(0, std::memcmp(got.logits[s].data(), want.logits[s].data(),
                             sizeof(float) * got.logits[s].size()))
        << "step " << s;
  }
  ExpectSteadyState(got);
}

TEST(DeviceStepTest, WeightsThatDoNotFitFailBeforeAnyCopy) {
  CountingBackend device(/*fake_device=*/true, /*free_bytes=*/4096);
  auto loaded = LoadRandomModel(Config(), 3, &device);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(loaded.status().message().find("4096 bytes"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("model weights need"), std::string::npos);
  EXPECT_EQ(device.counts.to_device, 0);
  EXPECT_EQ(device.counts.allocations(), 0);
}

TEST(DeviceStepTest, Bf16ActivationsAndKvCacheStayCloseToTheFp32Reference) {
  CountingBackend fp32(/*fake_device=*/false);
  auto reference = LoadRandomModel(Config(), 3, &fp32);
  ASSERT_TRUE(reference.ok());
  const GenerateRun want = Generate(fp32, *(*reference)->model, 1);

  CountingBackend bf16(/*fake_device=*/true);
  bf16.UseBf16();
  auto loaded = LoadRandomModel(Config(), 3, &bf16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->model->KvShape(16, 1).kv_dtype, kernels::DType::kBF16);
  const GenerateRun got = Generate(bf16, *(*loaded)->model, 4);
  ASSERT_EQ(got.logits.size(), 4u);
  // The prefill's logits: bf16 rounding of every activation moves them a little, not a lot.
  const std::vector<float>& a = want.logits[0];
  const std::vector<float>& b = got.logits[0];
  ASSERT_EQ(a.size(), b.size());
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(double(a[i])));
    max_diff = std::max(max_diff, std::fabs(double(a[i]) - b[i]));
  }
  EXPECT_GT(max_diff, 0.0);  // really computed in bf16
  EXPECT_LT(max_diff, 0.02 * max_ref) << "max |diff| " << max_diff << " of max |logit| " << max_ref;
  ExpectSteadyState(got);
}

}  // namespace
}  // namespace moeserve::runtime
