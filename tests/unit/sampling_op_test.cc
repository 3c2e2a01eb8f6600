// cpu::Sample (the reference of the device sampler, kernels/ops/sampling.h) vs runtime::Sampler
// (the oracle, tests/unit/sampler_test.cc): many sequences with random parameters are sampled
// step by step, all rows of a step in one cpu::Sample call with the penalty history flattened
// into the op's arrays, and every row must give the Sampler's token, logprob and top_logprobs
// exactly. Logits cover ties, -inf masks, +inf, NaN, signed zeros, flat and peaked rows, at
// vocab 1, 37 and 32000.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/ops/sampling.h"
#include "runtime/sampling/sampler.h"

namespace moeserve::kernels {
namespace {

using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kMaxTop = runtime::kMaxTopLogprobs;

template <typename T>
T Pick(std::mt19937_64& rng, const std::vector<T>& choices) {
  return choices[std::uniform_int_distribution<size_t>(0, choices.size() - 1)(rng)];
}

runtime::SamplingParams RandomParams(std::mt19937_64& rng) {
  runtime::SamplingParams p;
  p.temperature = Pick<float>(rng, {0.0f, 0.0f, 5e-6f, 2e-5f, 0.3f, 0.7f, 1.0f, 1.0f, 1.7f});
  p.top_k = Pick<int32_t>(rng, {-1, -1, 0, 1, 2, 5, 40, 1000});
  p.top_p = Pick<float>(rng, {1.0f, 1.0f, 0.95f, 0.9f, 0.5f, 0.1f, 1e-6f});
  p.min_p = Pick<float>(rng, {0.0f, 0.0f, 0.01f, 0.2f, 0.9f, 1.0f});
  if (std::bernoulli_distribution(0.5)(rng)) {
    p.repetition_penalty = Pick<float>(rng, {1.0f, 1.3f, 0.7f, 2.0f});
    p.frequency_penalty = Pick<float>(rng, {0.0f, 0.5f, -0.5f, 2.0f, -2.0f});
    p.presence_penalty = Pick<float>(rng, {0.0f, 1.0f, -1.0f, 0.25f});
  }
  p.seed = rng();
  p.n = 4;
  p.logprobs = std::bernoulli_distribution(0.6)(rng);
  if (p.logprobs) p.top_logprobs = std::uniform_int_distribution<int32_t>(0, kMaxTop)(rng);
  return p;
}

// One row of logits of a random kind.
std::vector<float> RandomLogits(std::mt19937_64& rng, int64_t vocab) {
  std::vector<float> l(static_cast<size_t>(vocab));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> any_id(0, vocab - 1);
  const int kind = std::uniform_int_distribution<int>(0, 11)(rng);
  for (float& x : l) {
    const float z = normal(rng);
    switch (kind) {
      case 1:
        x = std::round(z * 2.0f) / 2.0f;
        break;  // many ties
      case 2:
        x = 1.5f;
        break;  // all tied
      case 3:
        x = std::bernoulli_distribution(0.3)(rng) ? -kInf : 3.0f * z;
        break;
      case 4:
        x = -kInf;
        break;
      case 5:
        x = 30.0f * z;
        break;  // peaked
      case 6:
        x = 0.01f * z;
        break;  // flat
      case 7:
        x = Pick<float>(rng, {-0.0f, 0.0f, -1.0f, 1.0f});
        break;  // signed zeros, ties
      default:
        x = 3.0f * z;
        break;
    }
  }
  if (kind == 4 && std::bernoulli_distribution(0.5)(rng))
    l[static_cast<size_t>(any_id(rng))] = 2.0f;
  if (kind == 8) l[static_cast<size_t>(any_id(rng))] = kInf;
  if (kind == 9) {
    for (int i = 0; i < 3; ++i) l[static_cast<size_t>(any_id(rng))] = kNaN;
  }
  if (kind == 10) l[0] = kNaN;  // ArgMax's special case
  return l;
}

// A sequence: the oracle Sampler and what the host would flatten into SampleRow each step.
struct Sequence {
  runtime::SamplingParams params;
  int32_t choice_index = 0;
  std::unique_ptr<runtime::Sampler> sampler;
  std::map<int32_t, bool> in_prompt;        // every prompt token (some outside the vocab)
  std::map<int32_t, int32_t> output_count;  // every sampled token
  uint64_t draw_index = 0;
};

Sequence MakeSequence(std::mt19937_64& rng, int64_t vocab) {
  Sequence s;
  s.params = RandomParams(rng);
  EXPECT_TRUE(s.params.Validate().ok()) << s.params.Validate();
  s.choice_index = std::uniform_int_distribution<int32_t>(0, s.params.n - 1)(rng);
  std::vector<int32_t> prompt(std::uniform_int_distribution<size_t>(0, 12)(rng));
  for (int32_t& t : prompt) {
    t = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(0, vocab + 2)(rng));
    s.in_prompt[t] = true;
  }
  s.sampler = std::make_unique<runtime::Sampler>(s.params, prompt, s.choice_index);
  return s;
}

// Samples `steps` steps of `num_sequences` sequences at `vocab`, all rows of a step in one
// cpu::Sample call, and compares each row with its Sampler. Returns the rows compared.
int64_t CompareWithSampler(uint64_t seed, int64_t vocab, int num_sequences, int steps) {
  std::mt19937_64 rng(seed);
  std::vector<Sequence> seqs;
  for (int i = 0; i < num_sequences; ++i) seqs.push_back(MakeSequence(rng, vocab));
  const auto rows = static_cast<int64_t>(seqs.size());
  int64_t compared = 0;
  for (int step = 0; step < steps; ++step) {
    std::vector<float> logits;
    std::vector<SampleRow> row_params(static_cast<size_t>(rows));
    std::vector<int32_t> history_tokens, history_counts;
    std::vector<uint8_t> history_in_prompt;
    for (int64_t r = 0; r < rows; ++r) {
      Sequence& s = seqs[static_cast<size_t>(r)];
      const std::vector<float> row = RandomLogits(rng, vocab);
      logits.insert(logits.end(), row.begin(), row.end());
      SampleRow& rp = row_params[static_cast<size_t>(r)];
      rp.temperature = s.params.temperature;
      rp.top_k = s.params.top_k;
      rp.top_p = s.params.top_p;
      rp.min_p = s.params.min_p;
      rp.repetition_penalty = s.params.repetition_penalty;
      rp.frequency_penalty = s.params.frequency_penalty;
      rp.presence_penalty = s.params.presence_penalty;
      rp.num_top_logprobs = s.params.top_logprobs;
      rp.stream_key =
          cpu::SampleStreamKey(s.sampler->seed(), static_cast<uint64_t>(s.choice_index));
      rp.draw_index = s.draw_index;
      // The full history whatever the penalties (entries that penalise nothing must not matter),
      // distinct tokens in a shuffled order, plus an occasional entry that is neither in the
      // prompt nor the output (ignored).
      std::map<int32_t, std::pair<bool, int32_t>> history;
      for (const auto& [t, p] : s.in_prompt) history[t].first = p;
      for (const auto& [t, c] : s.output_count) history[t].second = c;
      if (std::bernoulli_distribution(0.2)(rng)) {
        const auto t =
            static_cast<int32_t>(std::uniform_int_distribution<int64_t>(0, vocab - 1)(rng));
        history.try_emplace(t, std::pair<bool, int32_t>{false, 0});
      }
      std::vector<std::pair<int32_t, std::pair<bool, int32_t>>> entries(history.begin(),
                                                                        history.end());
      std::shuffle(entries.begin(), entries.end(), rng);
      rp.history_begin = static_cast<int32_t>(history_tokens.size());
      for (const auto& [t, e] : entries) {
        history_tokens.push_back(t);
        history_in_prompt.push_back(e.first ? 1 : 0);
        history_counts.push_back(e.second);
      }
      rp.history_end = static_cast<int32_t>(history_tokens.size());
    }
    std::vector<int32_t> out_tokens(static_cast<size_t>(rows), -7);
    std::vector<float> out_logprobs(static_cast<size_t>(rows));
    std::vector<int32_t> out_top_tokens(static_cast<size_t>(rows * kMaxTop), -7);
    std::vector<float> out_top_logprobs(static_cast<size_t>(rows * kMaxTop), 7.0f);
    SampleParams p;
    p.logits = logits.data();
    p.row_params = row_params.data();
    p.history_tokens = history_tokens.data();
    p.history_output_counts = history_counts.data();
    p.history_in_prompt = history_in_prompt.data();
    p.num_history = static_cast<int64_t>(history_tokens.size());
    p.out_tokens = out_tokens.data();
    p.out_logprobs = out_logprobs.data();
    p.out_top_tokens = out_top_tokens.data();
    p.out_top_logprobs = out_top_logprobs.data();
    p.rows = rows;
    p.vocab = vocab;
    p.max_top_logprobs = kMaxTop;
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    cpu::Sample(p);

    for (int64_t r = 0; r < rows; ++r) {
      Sequence& s = seqs[static_cast<size_t>(r)];
      const runtime::SampledToken want =
          s.sampler->SampleWithLogprobs(logits.data() + r * vocab, vocab);
      const std::string where = "seed " + std::to_string(seed) + " vocab " + std::to_string(vocab) +
                                " step " + std::to_string(step) + " row " + std::to_string(r);
      EXPECT_EQ(out_tokens[static_cast<size_t>(r)], want.token) << where;
      if (s.params.logprobs) {
        EXPECT_EQ(out_logprobs[static_cast<size_t>(r)], want.logprob) << where;
        EXPECT_EQ(want.top_logprobs.size(),
                  static_cast<size_t>(std::min<int64_t>(s.params.top_logprobs, vocab)));
      }
      for (int64_t j = 0; j < kMaxTop; ++j) {
        const size_t at = static_cast<size_t>(r * kMaxTop + j);
        if (j < static_cast<int64_t>(want.top_logprobs.size())) {
          EXPECT_EQ(out_top_tokens[at], want.top_logprobs[static_cast<size_t>(j)].first) << where;
          EXPECT_EQ(out_top_logprobs[at], want.top_logprobs[static_cast<size_t>(j)].second)
              << where;
        } else if (s.params.logprobs) {
          EXPECT_EQ(out_top_tokens[at], -1) << where << " slot " << j;
          EXPECT_EQ(out_top_logprobs[at], 0.0f) << where << " slot " << j;
        }
      }
      ++s.draw_index;
      ++s.output_count[want.token];
      ++compared;
    }
    if (::testing::Test::HasFailure()) break;
  }
  return compared;
}

TEST(SamplingOpTest, MatchesTheSamplerAtASmallVocab) {
  EXPECT_EQ(CompareWithSampler(1, 37, 250, 10), 2500);
}

TEST(SamplingOpTest, MatchesTheSamplerAtMixtralsVocab) {
  EXPECT_EQ(CompareWithSampler(2, 32000, 40, 4), 160);
}

TEST(SamplingOpTest, MatchesTheSamplerAtVocabOne) {
  EXPECT_EQ(CompareWithSampler(3, 1, 20, 3), 60);
}

// The engine's path to the device sampler: Sampler::AppendSampleRow builds the rows, the op
// samples, Sampler::RecordSampled records; it must follow the Sampler's own Sample exactly.
TEST(SamplingOpTest, AppendSampleRowFollowsTheSampler) {
  std::mt19937_64 rng(5);
  const int64_t vocab = 37, rows = 120;
  std::vector<runtime::Sampler> oracle, device;
  for (int64_t r = 0; r < rows; ++r) {
    const runtime::SamplingParams params = RandomParams(rng);  // always seeded
    std::vector<int32_t> prompt(std::uniform_int_distribution<size_t>(0, 12)(rng));
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % (vocab + 2));
    const auto choice = static_cast<int32_t>(rng() % static_cast<uint64_t>(params.n));
    oracle.emplace_back(params, prompt, choice);
    device.emplace_back(params, prompt, choice);
  }
  for (int step = 0; step < 12; ++step) {
    std::vector<float> logits;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> row = RandomLogits(rng, vocab);
      logits.insert(logits.end(), row.begin(), row.end());
    }
    std::vector<SampleRow> row_params(rows);
    std::vector<int32_t> history_tokens, history_counts;
    std::vector<uint8_t> history_in_prompt;
    for (int64_t r = 0; r < rows; ++r) {
      device[static_cast<size_t>(r)].AppendSampleRow(&row_params[static_cast<size_t>(r)],
                                                     &history_tokens, &history_counts,
                                                     &history_in_prompt);
    }
    std::vector<int32_t> tokens(rows);
    std::vector<float> logprobs(rows);
    std::vector<int32_t> top_tokens(rows * kMaxTop);
    std::vector<float> top_logprobs(rows * kMaxTop);
    SampleParams p;
    p.logits = logits.data();
    p.row_params = row_params.data();
    p.history_tokens = history_tokens.data();
    p.history_output_counts = history_counts.data();
    p.history_in_prompt = history_in_prompt.data();
    p.num_history = static_cast<int64_t>(history_tokens.size());
    p.out_tokens = tokens.data();
    p.out_logprobs = logprobs.data();
    p.out_top_tokens = top_tokens.data();
    p.out_top_logprobs = top_logprobs.data();
    p.rows = rows;
    p.vocab = vocab;
    p.max_top_logprobs = kMaxTop;
    ASSERT_TRUE(Validate(p).ok()) << Validate(p);
    cpu::Sample(p);
    for (int64_t r = 0; r < rows; ++r) {
      runtime::Sampler& s = oracle[static_cast<size_t>(r)];
      const runtime::SampledToken want = s.SampleWithLogprobs(logits.data() + r * vocab, vocab);
      ASSERT_EQ(tokens[static_cast<size_t>(r)], want.token) << "step " << step << " row " << r;
      if (s.params().logprobs) {
        EXPECT_EQ(logprobs[static_cast<size_t>(r)], want.logprob);
        for (size_t j = 0; j < want.top_logprobs.size(); ++j) {
          EXPECT_EQ(top_tokens[static_cast<size_t>(r * kMaxTop) + j], want.top_logprobs[j].first);
        }
      }
      device[static_cast<size_t>(r)].RecordSampled(tokens[static_cast<size_t>(r)]);
    }
  }
}

// A row's result depends on that row alone: sampled alone or in a batch, first or last.
TEST(SamplingOpTest, RowsAreIndependentOfTheBatch) {
  std::mt19937_64 rng(4);
  const int64_t vocab = 37, rows = 64;
  std::vector<float> logits;
  std::vector<SampleRow> row_params(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row = RandomLogits(rng, vocab);
    logits.insert(logits.end(), row.begin(), row.end());
    const runtime::SamplingParams sp = RandomParams(rng);
    SampleRow& rp = row_params[static_cast<size_t>(r)];
    rp.temperature = sp.temperature;
    rp.top_k = sp.top_k;
    rp.top_p = sp.top_p;
    rp.min_p = sp.min_p;
    rp.stream_key = rng();
    rp.draw_index = rng() % 100;
    rp.num_top_logprobs = 3;
  }
  auto run = [&](int64_t first, int64_t count, int32_t* tokens, int32_t* top) {
    std::vector<float> lp(static_cast<size_t>(count)), top_lp(static_cast<size_t>(count * 3));
    SampleParams p;
    p.logits = logits.data() + first * vocab;
    p.row_params = row_params.data() + first;
    p.out_tokens = tokens;
    p.out_logprobs = lp.data();
    p.out_top_tokens = top;
    p.out_top_logprobs = top_lp.data();
    p.rows = count;
    p.vocab = vocab;
    p.max_top_logprobs = 3;
    ASSERT_TRUE(Validate(p).ok());
    cpu::Sample(p);
  };
  std::vector<int32_t> batch(rows), batch_top(rows * 3);
  run(0, rows, batch.data(), batch_top.data());
  for (int64_t r = 0; r < rows; ++r) {
    int32_t alone = -1, alone_top[3];
    run(r, 1, &alone, alone_top);
    EXPECT_EQ(alone, batch[static_cast<size_t>(r)]) << "row " << r;
    for (int j = 0; j < 3; ++j) EXPECT_EQ(alone_top[j], batch_top[static_cast<size_t>(r * 3 + j)]);
  }
}

TEST(SamplingOpTest, EmptyCallWritesNothing) {
  SampleParams p;
  p.vocab = 32000;
  ASSERT_TRUE(Validate(p).ok()) << Validate(p);
  cpu::Sample(p);  // null pointers are fine with no rows
  EXPECT_EQ(SampleWorkspaceBytes(0, 32000), 0u);
}

TEST(SamplingOpTest, ValidateNamesTheBadField) {
  const float logits[4] = {};
  SampleRow row;
  int32_t token = 0;
  int32_t top_token = 0;
  auto valid = [&] {
    SampleParams p;
    p.logits = logits;
    p.row_params = &row;
    p.out_tokens = &token;
    p.rows = 1;
    p.vocab = 4;
    return p;
  };
  ASSERT_TRUE(Validate(valid()).ok());
  SampleParams p = valid();
  p.vocab = 0;
  EXPECT_THAT(Validate(p).message(), HasSubstr("vocab"));
  p = valid();
  p.out_tokens = nullptr;
  EXPECT_THAT(Validate(p).message(), HasSubstr("out_tokens"));
  p = valid();
  p.num_history = 3;
  EXPECT_THAT(Validate(p).message(), HasSubstr("history_tokens"));
  p = valid();
  p.out_top_tokens = &top_token;
  p.max_top_logprobs = 1;
  EXPECT_THAT(Validate(p).message(), HasSubstr("out_top_logprobs"));
  p = valid();
  p.max_top_logprobs = -1;
  EXPECT_THAT(Validate(p).message(), HasSubstr("max_top_logprobs"));
  p = valid();
  p.workspace = &top_token;
  p.workspace_bytes = 4;
  EXPECT_THAT(Validate(p).message(), HasSubstr("workspace_bytes"));
  p.workspace_bytes = SampleWorkspaceBytes(1, 4);
  EXPECT_TRUE(Validate(p).ok());
  EXPECT_GE(SampleWorkspaceBytes(1, 4), SampleWorkspaceWeightsOffset(1, 4) + 4 * sizeof(double));
  EXPECT_EQ(SampleWorkspaceWeightsOffset(1, 4) % 256, 0u);
}

}  // namespace
}  // namespace moeserve::kernels
