// The model step with device sampling (runtime/model/step_sampling.h), on the CPU backend through
// a counting wrapper: the step downloads only the sampled ids (plus logprobs when a row asks),
// never the logits, and the tokens and logprobs are bitwise those of the host Sampler
// (Sampler::SampleWithLogprobs on the logits of Forward without sampling, the oracle) for a mixed
// batch of greedy, seeded temperature / top-k / top-p / min-p, penalty and logprobs requests.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/decode_graphs.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/step_sampling.h"
#include "runtime/sampling/sampler.h"
#include "tests/golden/ep_harness.h"
#include "tests/unit/counting_backend.h"

namespace moeserve::runtime {
namespace {

using counting_test::CountingBackend;
using counting_test::Counts;

ModelConfig Config() { return ep_test::SmallConfig(/*layers=*/2); }

// The batch: one sequence per kind of request. Sequence kPrefillChunk runs a prompt chunk that
// does not end its prompt in the first step (no sampling row), then samples greedily.
std::vector<SamplingParams> Requests(bool with_logprobs) {
  std::vector<SamplingParams> r(8);
  // 0: greedy (defaults).
  r[1].temperature = 0.8f;
  r[1].seed = 11;
  r[2].temperature = 1.0f;
  r[2].top_k = 5;
  r[2].seed = 12;
  r[3].temperature = 1.2f;
  r[3].top_p = 0.7f;
  r[3].seed = 13;
  r[4].temperature = 0.9f;
  r[4].min_p = 0.2f;
  r[4].seed = 14;
  r[5].temperature = 1.0f;
  r[5].repetition_penalty = 1.3f;
  r[5].frequency_penalty = 0.5f;
  r[5].presence_penalty = 0.4f;
  r[5].seed = 15;
  r[6].repetition_penalty = 0.8f;  // greedy with penalties
  r[6].frequency_penalty = -0.3f;
  // 7: the prefill chunk, greedy.
  if (with_logprobs) {
    r[1].logprobs = true;
    r[1].top_logprobs = 3;
    r[5].logprobs = true;
    r[5].top_logprobs = 20;
    r[6].logprobs = true;  // logprob of the sampled token only
  }
  return r;
}
constexpr int kPrefillChunk = 7;

std::vector<std::vector<int32_t>> Prompts() {
  return {{5, 17, 3, 99, 42},       {7, 7, 300},     {1, 2, 3, 4, 5, 6, 7, 8}, {400}, {9, 9, 9, 9},
          {11, 12, 11, 13, 11, 14}, {200, 201, 200}, {60, 61, 62, 63, 64, 65}};
}

// A run of `steps` steps over the batch; the per-sequence outputs and each step's counts.
struct SamplingRun {
  std::vector<std::vector<SampledToken>> sampled;  // [sequence][token]
  std::vector<Counts> per_step;
};

// use_device: Forward with StepSampling; else Forward without sampling and the host Samplers on
// the downloaded logits (the oracle).
// With `graph_sizes`, decode-only steps run padded to those buckets (decode_graphs.h; eager on
// the CPU).
SamplingRun Generate(bool use_device, bool with_logprobs, int steps,
                     std::vector<int64_t> graph_sizes = {}) {
  SamplingRun run;
  CountingBackend backend;
  auto loaded = LoadRandomModel(Config(), 3, &backend);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  MixtralModel& model = *(*loaded)->model;
  if (!graph_sizes.empty()) {
    model.SetDecodeGraphs(DecodeGraphOptions{.enabled = true, .sizes = std::move(graph_sizes)});
  }
  auto pool = KvBlockPool::Create(backend, model.KvShape(16, 64));
  EXPECT_TRUE(pool.ok()) << pool.status();
  const std::vector<SamplingParams> params = Requests(with_logprobs);
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  const size_t n = params.size();
  std::vector<Sampler> samplers;
  for (size_t i = 0; i < n; ++i) samplers.emplace_back(params[i], prompts[i], /*choice_index=*/0);
  std::vector<SequenceKv> kv(n);
  std::vector<std::vector<int32_t>> next = prompts;
  // The chunked sequence: first half of its prompt now, the rest in step 1.
  next[kPrefillChunk].resize(3);
  run.sampled.resize(n);
  StepSampling sampling;
  for (int step = 0; step < steps; ++step) {
    std::vector<SequenceStep> batch(n);
    std::vector<bool> samples(n, true);
    for (size_t i = 0; i < n; ++i) {
      batch[i].new_tokens = next[i];
      batch[i].kv = &kv[i];
    }
    if (step == 0) samples[kPrefillChunk] = false;
    sampling.Clear();
    for (size_t i = 0; i < n; ++i) {
      if (samples[i]) sampling.Add(static_cast<int64_t>(i), samplers[i]);
    }
    const Counts before = backend.counts;
    StepOutput out;
    const absl::Status st = use_device ? model.Forward(absl::MakeSpan(batch), *pool, sampling, &out)
                                       : model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    run.per_step.push_back(backend.counts - before);
    int64_t row = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!samples[i]) {
        if (step == 0) {
          next[i].assign(prompts[i].begin() + 3, prompts[i].end());
        }
        continue;
      }
      SampledToken t;
      if (use_device) {
        EXPECT_TRUE(out.logits.empty());
        t = out.sampled.row(row++);
        samplers[i].RecordSampled(t.token);
      } else {
        t = samplers[i].SampleWithLogprobs(out.last_row(static_cast<int64_t>(i)), out.vocab);
      }
      next[i] = {t.token};
      run.sampled[i].push_back(t);
    }
  }
  return run;
}

void ExpectSameBits(const SamplingRun& got, const SamplingRun& want) {
  ASSERT_EQ(got.sampled.size(), want.sampled.size());
  for (size_t s = 0; s < got.sampled.size(); ++s) {
    ASSERT_EQ(got.sampled[s].size(), want.sampled[s].size()) << "sequence " << s;
    for (size_t k = 0; k < got.sampled[s].size(); ++k) {
      const SampledToken& a = got.sampled[s][k];
      const SampledToken& b = want.sampled[s][k];
      EXPECT_EQ(a.token, b.token) << "sequence " << s << " token " << k;
      EXPECT_EQ(0, std::memcmp(&a.logprob, &b.logprob, sizeof(float)))
          << "sequence " << s << " token " << k << ": " << a.logprob << " vs " << b.logprob;
      EXPECT_EQ(a.top_logprobs, b.top_logprobs) << "sequence " << s << " token " << k;
    }
  }
}

TEST(StepSamplingTest, MixedBatchSamplesTheHostSamplersTokensAndDownloadsOnlyIds) {
  constexpr int kSteps = 10;
  const SamplingRun want = Generate(/*use_device=*/false, /*with_logprobs=*/false, kSteps);
  const SamplingRun got = Generate(/*use_device=*/true, /*with_logprobs=*/false, kSteps);
  ExpectSameBits(got, want);
  // The sampled streams really differ from greedy (the test covers the draws, not only argmax).
  EXPECT_NE(got.sampled[1].front().token, got.sampled[0].front().token);

  const ModelConfig c = Config();
  const size_t counters = sizeof(int64_t) * c.num_hidden_layers * c.num_local_experts;
  // Step 0 also builds the device state (expert tables, counters): counted from step 1.
  int64_t steps_without_allocation = 0;
  for (size_t s = 0; s < got.per_step.size(); ++s) {
    const int64_t rows = s == 0 ? 7 : 8;
    const Counts& d = got.per_step[s];
    EXPECT_EQ(d.to_host, 2) << "step " << s;  // the ids + the expert-load counters
    EXPECT_EQ(d.to_host_bytes, sizeof(int32_t) * rows + counters) << "step " << s;
    if (s == 0) continue;
    EXPECT_EQ(d.to_device, 1) << "step " << s;  // indices + sampling rows + histories
    EXPECT_EQ(d.synchronize, 1) << "step " << s;
    // Only the penalty histories still grow (by powers of two): at most the staging twins.
    EXPECT_LE(d.allocations(), 2) << "step " << s;
    if (d.allocations() == 0) ++steps_without_allocation;
  }
  EXPECT_GT(steps_without_allocation, 0);
  // The oracle downloads the logits.
  EXPECT_GT(want.per_step[1].to_host_bytes, sizeof(float) * 8 * c.vocab_size);
}

TEST(StepSamplingTest, LogprobsAreTheHostSamplersBitsAndStillNoLogits) {
  constexpr int kSteps = 5;
  const SamplingRun want = Generate(/*use_device=*/false, /*with_logprobs=*/true, kSteps);
  const SamplingRun got = Generate(/*use_device=*/true, /*with_logprobs=*/true, kSteps);
  ExpectSameBits(got, want);
  ASSERT_EQ(got.sampled[5].front().top_logprobs.size(), 20u);
  ASSERT_EQ(got.sampled[1].front().top_logprobs.size(), 3u);
  EXPECT_TRUE(got.sampled[6].front().top_logprobs.empty());
  const ModelConfig c = Config();
  const size_t counters = sizeof(int64_t) * c.num_hidden_layers * c.num_local_experts;
  for (size_t s = 1; s < got.per_step.size(); ++s) {
    const Counts& d = got.per_step[s];
    EXPECT_EQ(d.to_host, 2) << "step " << s;  // one packed results copy + the counters
    EXPECT_EQ(d.synchronize, 1) << "step " << s;
    // ids, logprobs and [rows, 20] top ids / logprobs (each part 256-byte aligned): far less
    // than even one logits row per sequence.
    EXPECT_LE(d.to_host_bytes, counters + 4 * 256 + 8 * (4 + 4 + 20 * 8)) << "step " << s;
    EXPECT_LT(d.to_host_bytes, counters + sizeof(float) * 8 * c.vocab_size) << "step " << s;
  }
}

// Padded decode steps (8 sequences in a bucket of 16, the padding rows' logits computed but
// never sampled) sample the same tokens and logprobs as unpadded ones.
TEST(StepSamplingTest, PaddedDecodeStepsSampleTheSameBits) {
  const SamplingRun want = Generate(/*use_device=*/true, /*with_logprobs=*/true, 5);
  const SamplingRun got = Generate(/*use_device=*/true, /*with_logprobs=*/true, 5, {16});
  ExpectSameBits(got, want);
  ASSERT_EQ(got.per_step.size(), want.per_step.size());
  // Steps 2.. are decode-only: the same one upload, download pair and synchronisation.
  for (size_t s = 2; s < got.per_step.size(); ++s) {
    EXPECT_EQ(got.per_step[s].to_device, want.per_step[s].to_device) << "step " << s;
    EXPECT_EQ(got.per_step[s].to_host, want.per_step[s].to_host) << "step " << s;
    EXPECT_EQ(got.per_step[s].synchronize, want.per_step[s].synchronize) << "step " << s;
  }
}

TEST(StepSamplingTest, KeepLogitsGivesTheSameLogitsAsTheLogitsPath) {
  CountingBackend backend;
  auto loaded = LoadRandomModel(Config(), 3, &backend);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  MixtralModel& model = *(*loaded)->model;
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 3}, {7, 7, 300, 8}, {400}};
  auto run = [&](bool with_sampling, StepOutput* out) {
    auto pool = KvBlockPool::Create(backend, model.KvShape(16, 8));
    ASSERT_TRUE(pool.ok());
    std::vector<SequenceKv> kv(prompts.size());
    std::vector<SequenceStep> batch(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) batch[i] = {prompts[i], &kv[i], i == 1};
    StepSampling sampling;
    sampling.keep_logits = true;
    SamplingParams greedy;
    sampling.Add(0, Sampler(greedy));
    sampling.Add(2, Sampler(greedy));
    const absl::Status st = with_sampling
                                ? model.Forward(absl::MakeSpan(batch), *pool, sampling, out)
                                : model.Forward(absl::MakeSpan(batch), *pool, out);
    ASSERT_TRUE(st.ok()) << st;
  };
  StepOutput plain, sampled;
  run(false, &plain);
  run(true, &sampled);
  EXPECT_EQ(sampled.row_offsets, plain.row_offsets);
  EXPECT_EQ(sampled.row_offsets.back(), 1 + 4 + 1);  // all_logits for sequence 1
  ASSERT_EQ(sampled.logits.size(), plain.logits.size());
  EXPECT_EQ(0, std::memcmp(sampled.logits.data(), plain.logits.data(),
                           sizeof(float) * plain.logits.size()));
  ASSERT_EQ(sampled.sampled.size(), 2);
  EXPECT_EQ(sampled.sampled.tokens[0], ArgMax(plain.last_row(0), plain.vocab));
  EXPECT_EQ(sampled.sampled.tokens[1], ArgMax(plain.last_row(2), plain.vocab));
}

TEST(StepSamplingTest, InconsistentRequestsAreInvalidArgumentBeforeAnyKvChange) {
  CountingBackend backend;
  auto loaded = LoadRandomModel(Config(), 3, &backend);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  MixtralModel& model = *(*loaded)->model;
  auto pool = KvBlockPool::Create(backend, model.KvShape(16, 8));
  ASSERT_TRUE(pool.ok());
  SequenceKv kv;
  std::vector<SequenceStep> batch = {{{5, 6}, &kv, false}};
  StepSampling sampling;
  sampling.Add(1, Sampler(SamplingParams{}));  // no sequence 1
  StepOutput out;
  const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, sampling, &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(kv.num_tokens, 0);
  EXPECT_TRUE(kv.block_table.empty());
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

}  // namespace
}  // namespace moeserve::runtime
