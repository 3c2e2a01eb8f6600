// CUDA sampling against its CPU twin (kernels/cpu/sampling.cc, itself checked against
// runtime::Sampler by tests/unit/sampling_op_test.cc) on a wide grid of edge cases, with the
// agreement rule of kernels/ops/sampling.h: identical tokens and top_logprobs ids, logprobs within
// 1e-6 * max(1, |logprob|). Also: the device result of a row does not depend on the batch, and
// repeats bit for bit. Skips when no GPU is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <vector>

#include "kernels/cpu/sampling.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/ops/sampling.h"

namespace moeserve::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kMaxTop = 20;

template <typename T>
T Pick(std::mt19937_64& rng, const std::vector<T>& choices) {
  return choices[std::uniform_int_distribution<size_t>(0, choices.size() - 1)(rng)];
}

// A batch of `rows` random rows at `vocab`: logits of a random kind each (ties, masks, +inf, NaN,
// signed zeros, flat, peaked), random parameters within SamplingParams' ranges, and a history of
// distinct tokens (some outside the vocab, some penalising nothing).
struct Batch {
  int64_t rows = 0, vocab = 0;
  std::vector<float> logits;
  std::vector<SampleRow> row_params;
  std::vector<int32_t> history_tokens, history_counts;
  std::vector<uint8_t> history_in_prompt;
};

Batch RandomBatch(std::mt19937_64& rng, int64_t rows, int64_t vocab) {
  Batch b;
  b.rows = rows;
  b.vocab = vocab;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> any_id(0, vocab - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const int kind = std::uniform_int_distribution<int>(0, 11)(rng);
    const size_t first = b.logits.size();
    for (int64_t i = 0; i < vocab; ++i) {
      const float z = normal(rng);
      float x = 3.0f * z;
      if (kind == 1) x = std::round(z * 2.0f) / 2.0f;
      if (kind == 2) x = 1.5f;
      if (kind == 3 && std::bernoulli_distribution(0.3)(rng)) x = -kInf;
      if (kind == 4) x = -kInf;
      if (kind == 5) x = 30.0f * z;
      if (kind == 6) x = 0.01f * z;
      if (kind == 7) x = Pick<float>(rng, {-0.0f, 0.0f, -1.0f, 1.0f});
      b.logits.push_back(x);
    }
    float* l = b.logits.data() + first;
    if (kind == 4 && std::bernoulli_distribution(0.5)(rng)) l[any_id(rng)] = 2.0f;
    if (kind == 8) l[any_id(rng)] = kInf;
    if (kind == 9) {
      for (int i = 0; i < 3; ++i) l[any_id(rng)] = kNaN;
    }
    if (kind == 10) l[0] = kNaN;

    SampleRow row;
    row.temperature = Pick<float>(rng, {0.0f, 5e-6f, 2e-5f, 0.3f, 0.7f, 1.0f, 1.0f, 1.7f});
    row.top_k = Pick<int32_t>(rng, {-1, -1, 0, 1, 2, 5, 40, 1000});
    row.top_p = Pick<float>(rng, {1.0f, 1.0f, 0.95f, 0.9f, 0.5f, 0.1f, 1e-6f});
    row.min_p = Pick<float>(rng, {0.0f, 0.0f, 0.01f, 0.2f, 0.9f, 1.0f});
    if (std::bernoulli_distribution(0.5)(rng)) {
      row.repetition_penalty = Pick<float>(rng, {1.0f, 1.3f, 0.7f});
      row.frequency_penalty = Pick<float>(rng, {0.0f, 0.5f, -2.0f});
      row.presence_penalty = Pick<float>(rng, {0.0f, 1.0f, -1.0f});
    }
    row.num_top_logprobs = std::uniform_int_distribution<int32_t>(0, kMaxTop)(rng);
    row.stream_key = rng();
    row.draw_index = rng() % 100;
    row.history_begin = static_cast<int32_t>(b.history_tokens.size());
    std::map<int32_t, int32_t> history;  // distinct tokens
    const int entries = std::uniform_int_distribution<int>(0, 14)(rng);
    for (int i = 0; i < entries; ++i) {
      const auto t =
          static_cast<int32_t>(std::uniform_int_distribution<int64_t>(0, vocab + 1)(rng));
      history[t] = std::uniform_int_distribution<int32_t>(0, 3)(rng);
    }
    for (const auto& [t, count] : history) {
      b.history_tokens.push_back(t);
      b.history_counts.push_back(count);
      b.history_in_prompt.push_back(std::bernoulli_distribution(0.5)(rng) ? 1 : 0);
    }
    row.history_end = static_cast<int32_t>(b.history_tokens.size());
    b.row_params.push_back(row);
  }
  return b;
}

struct Output {
  std::vector<int32_t> tokens, top_tokens;
  std::vector<float> logprobs, top_logprobs;
};

SampleParams ParamsFor(const Batch& b, Output& out) {
  out.tokens.assign(static_cast<size_t>(b.rows), -7);
  out.logprobs.assign(static_cast<size_t>(b.rows), 7.0f);
  out.top_tokens.assign(static_cast<size_t>(b.rows * kMaxTop), -7);
  out.top_logprobs.assign(static_cast<size_t>(b.rows * kMaxTop), 7.0f);
  SampleParams p;
  p.logits = b.logits.data();
  p.row_params = b.row_params.data();
  p.history_tokens = b.history_tokens.data();
  p.history_output_counts = b.history_counts.data();
  p.history_in_prompt = b.history_in_prompt.data();
  p.num_history = static_cast<int64_t>(b.history_tokens.size());
  p.out_tokens = out.tokens.data();
  p.out_logprobs = out.logprobs.data();
  p.out_top_tokens = out.top_tokens.data();
  p.out_top_logprobs = out.top_logprobs.data();
  p.rows = b.rows;
  p.vocab = b.vocab;
  p.max_top_logprobs = kMaxTop;
  return p;
}

Output RunCpu(const Batch& b) {
  Output out;
  const SampleParams p = ParamsFor(b, out);
  EXPECT_TRUE(Validate(p).ok()) << Validate(p);
  cpu::Sample(p);
  return out;
}

// Device copies of the inputs, cuda::Sample, outputs back. Frees everything it allocates.
Output RunCuda(const Batch& b) {
  Output out;
  const SampleParams host = ParamsFor(b, out);
  std::vector<void*> allocations;
  auto upload = [&](const void* src, size_t bytes) -> void* {
    void* dst = nullptr;
    EXPECT_EQ(cudaMalloc(&dst, std::max<size_t>(bytes, 1)), cudaSuccess);
    if (bytes > 0) {
      EXPECT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    allocations.push_back(dst);
    return dst;
  };
  const size_t rows = static_cast<size_t>(b.rows), tops = rows * kMaxTop;
  SampleParams p = host;
  p.logits = static_cast<const float*>(upload(b.logits.data(), b.logits.size() * sizeof(float)));
  p.row_params = static_cast<const SampleRow*>(
      upload(b.row_params.data(), b.row_params.size() * sizeof(SampleRow)));
  p.history_tokens = static_cast<const int32_t*>(
      upload(b.history_tokens.data(), b.history_tokens.size() * sizeof(int32_t)));
  p.history_output_counts = static_cast<const int32_t*>(
      upload(b.history_counts.data(), b.history_counts.size() * sizeof(int32_t)));
  p.history_in_prompt =
      static_cast<const uint8_t*>(upload(b.history_in_prompt.data(), b.history_in_prompt.size()));
  auto alloc = [&](size_t bytes) {
    void* dst = nullptr;
    EXPECT_EQ(cudaMalloc(&dst, std::max<size_t>(bytes, 1)), cudaSuccess);
    allocations.push_back(dst);
    return dst;
  };
  p.out_tokens = static_cast<int32_t*>(alloc(rows * sizeof(int32_t)));
  p.out_logprobs = static_cast<float*>(alloc(rows * sizeof(float)));
  p.out_top_tokens = static_cast<int32_t*>(alloc(tops * sizeof(int32_t)));
  p.out_top_logprobs = static_cast<float*>(alloc(tops * sizeof(float)));
  p.workspace_bytes = SampleWorkspaceBytes(b.rows, b.vocab);
  p.workspace = alloc(p.workspace_bytes);
  EXPECT_TRUE(Validate(p).ok()) << Validate(p);
  EXPECT_EQ(cuda::Sample(p, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(
      cudaMemcpy(out.tokens.data(), p.out_tokens, rows * sizeof(int32_t), cudaMemcpyDeviceToHost),
      cudaSuccess);
  EXPECT_EQ(
      cudaMemcpy(out.logprobs.data(), p.out_logprobs, rows * sizeof(float), cudaMemcpyDeviceToHost),
      cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.top_tokens.data(), p.out_top_tokens, tops * sizeof(int32_t),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.top_logprobs.data(), p.out_top_logprobs, tops * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (void* a : allocations) cudaFree(a);
  return out;
}

bool LogprobsAgree(float a, float b) {
  if (a == kSampleImpossibleLogprob || b == kSampleImpossibleLogprob) return a == b;
  return std::fabs(a - b) <= 1e-6f * std::max(1.0f, std::fabs(a));
}

class SamplingCudaTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::DescribeDevice(0);
  }
};

TEST_P(SamplingCudaTest, MatchesCpuTwin) {
  const int64_t vocab = GetParam();
  const int64_t rows = vocab >= 32000 ? 300 : 2000;
  std::mt19937_64 rng(static_cast<uint64_t>(vocab));
  const Batch b = RandomBatch(rng, rows, vocab);
  const Output want = RunCpu(b);
  const Output got = RunCuda(b);
  int mismatches = 0;
  for (int64_t r = 0; r < rows && mismatches < 20; ++r) {
    const SampleRow& row = b.row_params[static_cast<size_t>(r)];
    const bool ok_token = got.tokens[r] == want.tokens[r];
    const bool ok_logprob = LogprobsAgree(got.logprobs[r], want.logprobs[r]);
    bool ok_top = true;
    for (int64_t j = 0; j < kMaxTop; ++j) {
      const size_t at = static_cast<size_t>(r * kMaxTop + j);
      ok_top = ok_top && got.top_tokens[at] == want.top_tokens[at] &&
               LogprobsAgree(got.top_logprobs[at], want.top_logprobs[at]);
    }
    if (!(ok_token && ok_logprob && ok_top)) ++mismatches;
    EXPECT_TRUE(ok_token && ok_logprob && ok_top)
        << "row " << r << ": token " << got.tokens[r] << " vs cpu " << want.tokens[r]
        << ", logprob " << got.logprobs[r] << " vs " << want.logprobs[r] << ", top ok " << ok_top
        << " (T=" << row.temperature << " top_k=" << row.top_k << " top_p=" << row.top_p
        << " min_p=" << row.min_p << " history " << row.history_end - row.history_begin << ")";
  }
}

// A row sampled alone gives bit for bit what it gives in the batch, and a batch repeats exactly.
TEST_P(SamplingCudaTest, RowsAreIndependentOfTheBatchAndRepeat) {
  const int64_t vocab = GetParam();
  std::mt19937_64 rng(static_cast<uint64_t>(vocab) + 1);
  const Batch b = RandomBatch(rng, 24, vocab);
  const Output batch = RunCuda(b);
  const Output again = RunCuda(b);
  EXPECT_EQ(std::memcmp(batch.logprobs.data(), again.logprobs.data(), batch.logprobs.size() * 4),
            0);
  EXPECT_EQ(batch.tokens, again.tokens);
  for (int64_t r = 0; r < b.rows; r += 5) {
    Batch one;
    one.rows = 1;
    one.vocab = vocab;
    one.logits.assign(b.logits.begin() + r * vocab, b.logits.begin() + (r + 1) * vocab);
    SampleRow row = b.row_params[static_cast<size_t>(r)];
    for (int32_t e = row.history_begin; e < row.history_end; ++e) {
      one.history_tokens.push_back(b.history_tokens[static_cast<size_t>(e)]);
      one.history_counts.push_back(b.history_counts[static_cast<size_t>(e)]);
      one.history_in_prompt.push_back(b.history_in_prompt[static_cast<size_t>(e)]);
    }
    row.history_end -= row.history_begin;
    row.history_begin = 0;
    one.row_params.push_back(row);
    const Output alone = RunCuda(one);
    EXPECT_EQ(alone.tokens[0], batch.tokens[static_cast<size_t>(r)]) << "row " << r;
    EXPECT_EQ(std::memcmp(&alone.logprobs[0], &batch.logprobs[static_cast<size_t>(r)], 4), 0);
    for (int64_t j = 0; j < kMaxTop; ++j) {
      EXPECT_EQ(alone.top_tokens[static_cast<size_t>(j)],
                batch.top_tokens[static_cast<size_t>(r * kMaxTop + j)]);
    }
  }
}

TEST_P(SamplingCudaTest, EmptyCallAndMissingWorkspace) {
  SampleParams p;
  p.vocab = GetParam();
  EXPECT_EQ(cuda::Sample(p, nullptr), cudaSuccess);  // 0 rows: nothing launched
  const float logits = 0.0f;
  SampleRow row;
  int32_t token = 0;
  p.logits = &logits;
  p.row_params = &row;
  p.out_tokens = &token;
  p.rows = 1;
  EXPECT_EQ(cuda::Sample(p, nullptr), cudaErrorInvalidValue);  // checked on the host
}

INSTANTIATE_TEST_SUITE_P(Vocab, SamplingCudaTest, ::testing::Values(1, 37, 1000, 32000));

}  // namespace
}  // namespace moeserve::kernels
