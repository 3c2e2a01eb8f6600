// Sampler vs oracles: a naive reimplementation of the whole filtering pipeline (penalties,
// temperature, min_p, top_k, top_p) in double on random logits; sampled frequencies vs the
// oracle's probabilities (chi-square); logprobs vs log_softmax in double; determinism per seed
// and choice whatever the batch order; Validate messages for every bad field.
#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The oracle: the pipeline of sampler.h written out step by step over the whole vocabulary.
std::map<int32_t, double> NaiveDistribution(const std::vector<float>& raw, const SamplingParams& p,
                                            const std::vector<int32_t>& prompt,
                                            const std::vector<int32_t>& output) {
  const int vocab = static_cast<int>(raw.size());
  std::vector<double> logits(raw.begin(), raw.end());
  std::vector<int> count(static_cast<size_t>(vocab), 0);
  std::vector<bool> seen(static_cast<size_t>(vocab), false);
  for (int32_t t : prompt) seen[static_cast<size_t>(t)] = true;
  for (int32_t t : output) {
    seen[static_cast<size_t>(t)] = true;
    ++count[static_cast<size_t>(t)];
  }
  for (int i = 0; i < vocab; ++i) {
    if (seen[i]) {
      logits[i] =
          logits[i] > 0 ? logits[i] / p.repetition_penalty : logits[i] * p.repetition_penalty;
    }
    logits[i] -= p.frequency_penalty * count[i] + (count[i] > 0 ? p.presence_penalty : 0.0);
  }
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (p.temperature < kGreedyTemperature) return {{order[0], 1.0}};

  std::vector<double> prob(static_cast<size_t>(vocab));
  double z = 0;
  for (int i = 0; i < vocab; ++i)
    z += prob[i] = std::exp((logits[i] - logits[order[0]]) / p.temperature);
  for (double& q : prob) q /= z;
  const double max_prob = prob[order[0]];
  std::vector<int32_t> kept;
  for (int32_t id : order) {
    if (prob[id] > 0 && prob[id] >= p.min_p * max_prob) kept.push_back(id);
  }
  if (p.top_k > 0 && kept.size() > static_cast<size_t>(p.top_k)) kept.resize(p.top_k);
  double mass = 0;
  for (int32_t id : kept) mass += prob[id];
  std::vector<int32_t> nucleus;
  double before = 0;
  for (int32_t id : kept) {
    if (p.top_p < 1 && !(before < p.top_p * mass)) break;  // top_p = 1 is off, not a sum test
    nucleus.push_back(id);
    before += prob[id];
  }
  double total = 0;
  for (int32_t id : nucleus) total += prob[id];
  std::map<int32_t, double> out;
  for (int32_t id : nucleus) out[id] = prob[id] / total;
  return out;
}

std::map<int32_t, double> AsMap(const std::vector<TokenProbability>& d) {
  std::map<int32_t, double> out;
  for (const TokenProbability& t : d) {
    if (t.probability > 0) out[t.token] = t.probability;
  }
  return out;
}

std::vector<float> RandomLogits(std::mt19937_64& rng, int vocab, double scale) {
  std::normal_distribution<float> normal(0.0f, static_cast<float>(scale));
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& l : logits) l = normal(rng);
  return logits;
}

TEST(SamplerTest, GreedyTakesLowestIdOnTies) {
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(ArgMax(logits.data(), 4), 1);
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample(logits.data(), 4), 1);
  // The old aggregate form keeps compiling: {temperature, top_k, top_p, seed}.
  Sampler tiny_temperature(SamplingParams{1e-6f, -1, 1.0f, 7});
  EXPECT_EQ(tiny_temperature.Sample(logits.data(), 4), 1);
}

TEST(SamplerTest, PenaltiesFollowVllmAndOpenAiFormulas) {
  // Prompt {0, 1}; output so far {2, 2, 3}. repetition 2: positive / 2, negative * 2, for tokens
  // in prompt or output; then frequency 0.5 * count and presence 1 for output tokens only.
  const std::vector<float> logits = {4.0f, -1.0f, 3.0f, 0.5f, 1.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 1.0f;
  const std::vector<int32_t> prompt = {0, 1};
  Sampler s(p, prompt, 0);
  // Record the output by sampling from rows that force each token.
  for (int32_t forced : {2, 2, 3}) {
    std::vector<float> row(5, -kInf);
    row[static_cast<size_t>(forced)] = 0.0f;
    ASSERT_EQ(s.Sample(row.data(), 5), forced);
  }
  const std::vector<double> expected = {2.0, -2.0, 3.0 / 2 - 0.5 * 2 - 1, 0.5 / 2 - 0.5 - 1, 1.0};
  double z = 0;
  for (double l : expected) z += std::exp(l);
  const std::map<int32_t, double> got = AsMap(s.Distribution(logits.data(), 5));
  ASSERT_EQ(got.size(), 5u);
  for (int32_t t = 0; t < 5; ++t) EXPECT_NEAR(got.at(t), std::exp(expected[t]) / z, 1e-6);

  // Greedy sees the penalised logits too: token 0 wins raw (4.0) but not after a repetition
  // penalty of 5 for being in the prompt (0.8 < 3.0 of token 2).
  p.temperature = 0.0f;
  p.repetition_penalty = 5.0f;
  Sampler greedy(p, prompt, 0);
  EXPECT_EQ(ArgMax(logits.data(), 5), 0);
  EXPECT_EQ(greedy.Sample(logits.data(), 5), 2);
}

TEST(SamplerTest, DistributionMatchesNaiveOracleOnRandomLogits) {
  std::mt19937_64 rng(2024);
  const std::vector<int> vocabs = {1, 2, 7, 50, 1000};
  const std::vector<float> temperatures = {0.0f, 0.3f, 1.0f, 1.7f};
  const std::vector<int32_t> top_ks = {-1, 0, 1, 3, 40};
  const std::vector<float> top_ps = {1.0f, 0.93f, 0.55f, 0.05f};
  const std::vector<float> min_ps = {0.0f, 0.02f, 0.3f};
  const std::vector<float> repetitions = {1.0f, 1.3f, 0.8f};
  const std::vector<float> frequencies = {0.0f, 0.4f, -1.1f};
  const std::vector<float> presences = {0.0f, 1.5f, -0.6f};
  auto pick = [&](const auto& v) { return v[rng() % v.size()]; };
  int compared = 0, multi_token = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    SamplingParams p;
    p.temperature = pick(temperatures);
    p.top_k = pick(top_ks);
    p.top_p = pick(top_ps);
    p.min_p = pick(min_ps);
    p.repetition_penalty = pick(repetitions);
    p.frequency_penalty = pick(frequencies);
    p.presence_penalty = pick(presences);
    p.seed = trial;
    ASSERT_TRUE(p.Validate().ok()) << p.Validate();
    const int vocab = pick(vocabs);
    std::vector<int32_t> prompt(rng() % 6);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);

    Sampler sampler(p, prompt, 0);
    std::vector<int32_t> output;
    const int history = static_cast<int>(rng() % 5);
    for (int step = 0; step < history; ++step) {
      const std::vector<float> row = RandomLogits(rng, vocab, 2.0);
      output.push_back(sampler.Sample(row.data(), vocab));
    }
    std::vector<float> logits = RandomLogits(rng, vocab, 3.0);
    if (trial % 3 == 0) {  // ties (ordering must fall to the lower id) and masked logits
      for (float& l : logits) l = std::round(l * 2) / 2;
      logits[rng() % vocab] = -std::numeric_limits<float>::infinity();
    }
    if (std::all_of(logits.begin(), logits.end(), [](float l) { return std::isinf(l); })) continue;
    const std::map<int32_t, double> expected = NaiveDistribution(logits, p, prompt, output);
    const std::map<int32_t, double> got = AsMap(sampler.Distribution(logits.data(), vocab));
    ASSERT_EQ(got.size(), expected.size())
        << "trial " << trial << " T=" << p.temperature << " k=" << p.top_k << " p=" << p.top_p
        << " min_p=" << p.min_p << " rep=" << p.repetition_penalty;
    for (const auto& [token, prob] : expected) {
      ASSERT_TRUE(got.count(token)) << "trial " << trial << " token " << token;
      EXPECT_NEAR(got.at(token), prob, 1e-5 * std::max(1.0, prob)) << "trial " << trial;
    }
    ++compared;
    multi_token += expected.size() > 1;
  }
  EXPECT_GT(compared, 2700);    // vocab 1 with its one logit masked is skipped
  EXPECT_GT(multi_token, 400);  // the grid exercises real distributions, not just greedy
}

// Pearson's chi-square of `draws` samples against the oracle distribution; tokens expected
// fewer than 5 times are pooled into one cell.
double ChiSquare(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& expected,
                 int draws, int* degrees_of_freedom) {
  double chi2 = 0, pooled_expected = 0;
  int pooled_count = 0, cells = 0;
  for (const auto& [token, prob] : expected) {
    const auto it = counts.find(token);
    const int observed = it == counts.end() ? 0 : it->second;
    if (prob * draws < 5) {
      pooled_expected += prob * draws;
      pooled_count += observed;
      continue;
    }
    chi2 += (observed - prob * draws) * (observed - prob * draws) / (prob * draws);
    ++cells;
  }
  if (pooled_expected > 0) {
    chi2 += (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected;
    ++cells;
  }
  *degrees_of_freedom = cells - 1;
  return chi2;
}

TEST(SamplerTest, FrequenciesFollowTheFilteredSoftmax) {
  std::mt19937_64 rng(7);
  const int vocab = 60;
  const std::vector<float> logits = RandomLogits(rng, vocab, 1.5);
  struct Case {
    float temperature, top_p, min_p;
    int32_t top_k;
  };
  for (const Case& c : {Case{1.0f, 1.0f, 0.0f, -1}, Case{0.7f, 0.9f, 0.0f, -1},
                        Case{1.3f, 1.0f, 0.05f, 20}, Case{2.0f, 0.8f, 0.1f, 10}}) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.seed = 1234;
    const std::map<int32_t, double> expected = NaiveDistribution(logits, p, {}, {});
    Sampler sampler(p);
    std::map<int32_t, int> counts;
    const int draws = 40000;
    for (int i = 0; i < draws; ++i) {
      const int32_t t = sampler.Sample(logits.data(), vocab);
      ASSERT_TRUE(expected.count(t)) << "drew filtered-out token " << t;
      ++counts[t];
    }
    int df = 0;
    const double chi2 = ChiSquare(counts, expected, draws, &df);
    ASSERT_GT(df, 0);
    // Mean df, sd sqrt(2 df): 6 sd is far beyond chance (the seed is fixed, so this is
    // deterministic) yet far below what a wrong distribution produces with 40000 draws.
    EXPECT_LT(chi2, df + 6 * std::sqrt(2.0 * df)) << "temperature " << c.temperature;
  }
}

TEST(SamplerTest, SameSeedSameTokensWhateverTheBatchOrder) {
  std::mt19937_64 rng(99);
  const int vocab = 200, steps = 40, num_seqs = 8;
  // Step s of every sequence sees the same logits row (as if all had the same history).
  std::vector<std::vector<float>> rows;
  for (int s = 0; s < steps; ++s) rows.push_back(RandomLogits(rng, vocab, 2.0));
  auto params_for = [](int seq) {
    SamplingParams p;
    p.temperature = 0.8f + 0.1f * static_cast<float>(seq % 3);
    p.top_p = 0.95f;
    p.frequency_penalty = 0.3f;
    p.seed = 1000 + seq;
    return p;
  };
  // Reference: each sequence alone.
  std::vector<std::vector<int32_t>> alone(num_seqs);
  for (int q = 0; q < num_seqs; ++q) {
    Sampler s(params_for(q));
    for (int step = 0; step < steps; ++step) alone[q].push_back(s.Sample(rows[step].data(), vocab));
  }
  // Batched: every step samples the live sequences in a shuffled order, sequence q joins the
  // batch at step q (continuous batching), and unseeded neighbours come and go.
  std::vector<Sampler> batch;
  for (int q = 0; q < num_seqs; ++q) batch.emplace_back(params_for(q));
  std::vector<std::vector<int32_t>> batched(num_seqs);
  std::vector<int> order(num_seqs);
  std::iota(order.begin(), order.end(), 0);
  for (int tick = 0; tick < steps + num_seqs; ++tick) {
    std::shuffle(order.begin(), order.end(), rng);
    SamplingParams noisy;
    noisy.temperature = 1.0f;
    Sampler neighbour(noisy);
    for (int q : order) {
      const int step = tick - q;
      if (step < 0 || step >= steps) continue;
      neighbour.Sample(rows[step].data(), vocab);
      batched[q].push_back(batch[q].Sample(rows[step].data(), vocab));
    }
  }
  EXPECT_EQ(batched, alone);
  // And on other threads at once (the scratch buffers are per thread).
  std::vector<std::vector<int32_t>> threaded(num_seqs);
  std::vector<std::thread> threads;
  for (int q = 0; q < num_seqs; ++q) {
    threads.emplace_back([&, q] {
      Sampler s(params_for(q));
      for (int step = 0; step < steps; ++step) {
        threaded[q].push_back(s.Sample(rows[step].data(), vocab));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(threaded, alone);
  EXPECT_NE(alone[0], alone[1]);  // different seeds, different streams
}

TEST(SamplerTest, ChoicesGetTheirOwnStreamsAndUnseededRequestsDiffer) {
  std::mt19937_64 rng(5);
  const int vocab = 500;
  const std::vector<float> logits = RandomLogits(rng, vocab, 0.5);  // flat: draws differ
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  p.n = 3;
  auto run = [&](const SamplingParams& params, int32_t choice) {
    Sampler s(params, {}, choice);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 30; ++i) tokens.push_back(s.Sample(logits.data(), vocab));
    return tokens;
  };
  EXPECT_EQ(run(p, 0), run(p, 0));
  EXPECT_EQ(run(p, 2), run(p, 2));
  EXPECT_NE(run(p, 0), run(p, 1));
  EXPECT_NE(run(p, 1), run(p, 2));
  SamplingParams other = p;
  other.seed = 43;
  EXPECT_NE(run(p, 0), run(other, 0));

  SamplingParams unseeded = p;
  unseeded.seed.reset();
  Sampler a(unseeded), b(unseeded);
  EXPECT_NE(a.seed(), b.seed());
  EXPECT_NE(run(unseeded, 0), run(unseeded, 0));
  EXPECT_EQ(Sampler(p).seed(), 42u);
}

TEST(SamplerTest, LogprobsAreTheRawLogSoftmax) {
  std::mt19937_64 rng(11);
  const int vocab = 300;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits = RandomLogits(rng, vocab, 4.0);
    logits[7] = logits[8];  // a tie among candidates for the top list
    SamplingParams p;
    p.temperature = 0.5f + static_cast<float>(trial % 4);
    p.top_p = 0.9f;
    p.repetition_penalty = 1.4f;  // neither penalties nor temperature touch the logprobs
    p.presence_penalty = 1.0f;
    p.logprobs = true;
    p.top_logprobs = trial % (kMaxTopLogprobs + 1);
    p.seed = trial;
    Sampler sampler(p, {1, 2, 3}, 0);
    sampler.Sample(logits.data(), vocab);  // some output history for the penalties
    const SampledToken got = sampler.SampleWithLogprobs(logits.data(), vocab);

    double max = -kInf;
    for (float l : logits) max = std::max<double>(max, l);
    double sum = 0;
    for (float l : logits) sum += std::exp(l - max);
    auto log_softmax = [&](int32_t id) { return logits[id] - max - std::log(sum); };
    EXPECT_NEAR(got.logprob, log_softmax(got.token), 1e-5);
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    ASSERT_EQ(got.top_logprobs.size(), static_cast<size_t>(p.top_logprobs));
    for (size_t i = 0; i < got.top_logprobs.size(); ++i) {
      EXPECT_EQ(got.top_logprobs[i].first, order[i]) << "rank " << i;
      EXPECT_NEAR(got.top_logprobs[i].second, log_softmax(order[i]), 1e-5);
    }
  }
  // Without logprobs nothing is computed; a masked (-inf) token reports OpenAI's -9999.
  std::vector<float> logits = {0.0f, -std::numeric_limits<float>::infinity(), 1.0f};
  SamplingParams quiet;
  EXPECT_TRUE(Sampler(quiet).SampleWithLogprobs(logits.data(), 3).top_logprobs.empty());
  SamplingParams all;
  all.logprobs = true;
  all.top_logprobs = 3;
  const SampledToken masked = Sampler(all).SampleWithLogprobs(logits.data(), 3);
  EXPECT_EQ(masked.token, 2);
  ASSERT_EQ(masked.top_logprobs.size(), 3u);
  EXPECT_EQ(masked.top_logprobs[2].first, 1);
  EXPECT_EQ(masked.top_logprobs[2].second, kImpossibleLogprob);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  const std::vector<float> logits = {0.1f, 0.3f, 3.0f, 0.2f};
  SamplingParams k1;
  k1.temperature = 5.0f;
  k1.top_k = 1;
  SamplingParams p_small;
  p_small.temperature = 5.0f;
  p_small.top_p = 1e-6f;
  SamplingParams min_p_one;
  min_p_one.temperature = 5.0f;
  min_p_one.min_p = 1.0f;
  Sampler a(k1), b(p_small), c(min_p_one);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.Sample(logits.data(), 4), 2);
    EXPECT_EQ(b.Sample(logits.data(), 4), 2);
    EXPECT_EQ(c.Sample(logits.data(), 4), 2);
  }
}

TEST(SamplerTest, ValidateNamesEveryBadField) {
  struct BadCase {
    void (*mutate)(SamplingParams&);
    std::string message;
  };
  const std::vector<BadCase> cases = {
      {[](SamplingParams& p) { p.temperature = -1; },
       "temperature must be a finite number >= 0, got -1"},
      {[](SamplingParams& p) { p.temperature = std::numeric_limits<float>::infinity(); },
       "temperature must be a finite number >= 0, got inf"},
      {[](SamplingParams& p) { p.top_k = -2; }, "top_k must be -1 or 0 (no limit) or >= 1, got -2"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5"},
      {[](SamplingParams& p) { p.top_p = 0; }, "top_p must be in (0, 1], got 0"},
      {[](SamplingParams& p) { p.top_p = std::numeric_limits<float>::quiet_NaN(); },
       "top_p must be in (0, 1], got nan"},
      {[](SamplingParams& p) { p.min_p = -0.1f; }, "min_p must be in [0, 1], got -0.1"},
      {[](SamplingParams& p) { p.min_p = 1.5f; }, "min_p must be in [0, 1], got 1.5"},
      {[](SamplingParams& p) { p.repetition_penalty = 0; },
       "repetition_penalty must be a finite number > 0, got 0"},
      {[](SamplingParams& p) { p.frequency_penalty = 2.5f; },
       "frequency_penalty must be in [-2, 2], got 2.5"},
      {[](SamplingParams& p) { p.presence_penalty = -3; },
       "presence_penalty must be in [-2, 2], got -3"},
      {[](SamplingParams& p) { p.n = 0; }, "n must be in [1, 128], got 0"},
      {[](SamplingParams& p) { p.n = 129; }, "n must be in [1, 128], got 129"},
      {[](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens must be >= 1, got 0"},
      {[](SamplingParams& p) { p.stop = std::vector<std::string>(17, "x"); },
       "stop may hold at most 16 strings, got 17"},
      {[](SamplingParams& p) {
         p.stop = {"ok", ""};
       },
       "stop[1] must not be empty"},
      {[](SamplingParams& p) { p.stop = {"\xC3"}; }, "stop[0] is not valid UTF-8"},
      {[](SamplingParams& p) {
         p.stop_token_ids = {2, -5};
       },
       "stop_token_ids[1] must be a token id >= 0, got -5"},
      {[](SamplingParams& p) {
         p.logprobs = true;
         p.top_logprobs = 21;
       },
       "top_logprobs must be in [0, 20], got 21"},
      {[](SamplingParams& p) { p.top_logprobs = 2; }, "top_logprobs=2 needs logprobs to be true"},
  };
  for (const BadCase& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status status = p.Validate();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << c.message;
    EXPECT_EQ(status.message(), c.message);
  }
  SamplingParams edges;  // the ends of every range are valid
  edges.top_k = 0;
  edges.top_p = 1.0f;
  edges.min_p = 1.0f;
  edges.frequency_penalty = -2.0f;
  edges.presence_penalty = 2.0f;
  edges.n = kMaxChoices;
  edges.max_tokens = 1;
  edges.stop = std::vector<std::string>(kMaxStopStrings, "é");
  edges.logprobs = true;
  edges.top_logprobs = kMaxTopLogprobs;
  EXPECT_TRUE(edges.Validate().ok()) << edges.Validate();
}

TEST(SamplerTest, ResolveMaxTokensFillsOrChecksTheContext) {
  SamplingParams p;
  EXPECT_EQ(*p.ResolveMaxTokens(10, 32), 22);
  p.max_tokens = 22;
  EXPECT_EQ(*p.ResolveMaxTokens(10, 32), 22);
  p.max_tokens = 23;
  EXPECT_THAT(p.ResolveMaxTokens(10, 32).status().message(),
              HasSubstr("max_tokens=23 plus the prompt's 10 tokens exceeds the context length 32"));
  EXPECT_THAT(p.ResolveMaxTokens(32, 32).status().message(), HasSubstr("leaves no room"));
}

}  // namespace
}  // namespace moeserve::runtime
