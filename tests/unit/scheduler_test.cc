// The continuous-batching scheduler driven without a model. A fake model step advances each
// scheduled sequence's KV by its new tokens and, when the scheduler says the step samples, appends
// a token that is a hash of the sequence's whole prefix, as a deterministic model would. The oracle
// for "preemption does not change output" is the same workload run with a pool big enough that no
// preemption happens.
#include "runtime/scheduler/scheduler.h"

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace moeserve::runtime {
namespace {

int32_t NextToken(const std::vector<int32_t>& prefix) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : prefix) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return static_cast<int32_t>(h % 32000);
}

struct Workload {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> max_new;    // tokens to generate per sequence
  std::vector<int64_t> arrive_at;  // step at which it is submitted
};

Workload RandomWorkload(int n, uint32_t seed, int64_t max_prompt, int64_t max_new) {
  std::mt19937 rng(seed);
  Workload w;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> prompt(1 + rng() % max_prompt);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % 32000);
    w.prompts.push_back(prompt);
    w.max_new.push_back(1 + rng() % max_new);
    w.arrive_at.push_back(rng() % 20);
  }
  return w;
}

struct RunResult {
  std::vector<std::vector<int32_t>> outputs;  // generated tokens per sequence
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t max_tokens_in_step = 0;
  int64_t max_running = 0;
  int64_t max_live_blocks_per_seq = 0;
};

RunResult RunWorkload(const Workload& w, const SchedulerConfig& config, int64_t num_blocks,
                      int64_t block_size) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, block_size, num_blocks});
  EXPECT_TRUE(pool.ok());
  Scheduler scheduler(config, &*pool);
  std::vector<std::unique_ptr<Sequence>> seqs;
  RunResult r;
  r.outputs.resize(w.prompts.size());
  size_t finished = 0;
  for (int64_t step = 0; finished < w.prompts.size(); ++step) {
    for (size_t i = 0; i < w.prompts.size(); ++i) {
      if (w.arrive_at[i] == step) {
        auto seq = std::make_unique<Sequence>();
        seq->id = static_cast<int64_t>(i);
        seq->tokens = w.prompts[i];
        seq->num_prompt_tokens = static_cast<int64_t>(w.prompts[i].size());
        scheduler.Add(seq.get());
        seqs.push_back(std::move(seq));
      }
    }
    SchedulerOutput out = scheduler.Schedule();
    EXPECT_LE(out.num_tokens, config.max_num_batched_tokens);
    EXPECT_LE(scheduler.num_running(), config.max_num_seqs);
    r.max_tokens_in_step = std::max(r.max_tokens_in_step, out.num_tokens);
    r.max_running = std::max(r.max_running, scheduler.num_running());
    if (out.empty()) {
      EXPECT_LT(step, 100) << "idle scheduler with work left and nothing arriving";
      if (step >= 100) break;
      continue;
    }
    ++r.steps;
    for (const ScheduledSequence& s : out.scheduled) {
      Sequence* seq = s.seq;
      EXPECT_GT(s.num_new_tokens, 0);
      // The blocks for the new tokens are reserved.
      const int64_t end = seq->num_computed_tokens() + s.num_new_tokens;
      EXPECT_GE(static_cast<int64_t>(seq->kv.block_table.size()) * block_size, end);
      seq->kv.num_tokens = end;  // what MixtralModel::Forward does
    }
    scheduler.OnStepDone(out);
    for (const ScheduledSequence& s : out.scheduled) {
      Sequence* seq = s.seq;
      r.max_live_blocks_per_seq =
          std::max(r.max_live_blocks_per_seq, KvBlockPool::LiveBlocks(seq->kv));
      if (!s.samples) continue;
      // Sampling happens only once every known token is in the cache.
      EXPECT_EQ(seq->num_computed_tokens(), seq->num_tokens());
      seq->tokens.push_back(NextToken(seq->tokens));
      if (seq->num_generated_tokens() >= w.max_new[seq->id]) {
        r.outputs[seq->id].assign(seq->tokens.begin() + seq->num_prompt_tokens, seq->tokens.end());
        scheduler.Finish(seq);
        ++finished;
      }
    }
  }
  EXPECT_EQ(finished, w.prompts.size()) << "a sequence was lost";
  EXPECT_FALSE(scheduler.has_work());
  EXPECT_EQ(pool->num_used_blocks(), 0) << "blocks leaked";
  r.preemptions = scheduler.num_preemptions();
  return r;
}

TEST(SchedulerTest, ChunkedPrefillRespectsTokenBudgetAndSeqCap) {
  Workload w = RandomWorkload(40, 1, 100, 20);
  SchedulerConfig config{.max_num_seqs = 5, .max_num_batched_tokens = 32};
  RunResult r = RunWorkload(w, config, /*num_blocks=*/1000, /*block_size=*/4);
  EXPECT_EQ(r.max_tokens_in_step, 32);  // budget is filled but never exceeded
  EXPECT_EQ(r.max_running, 5);
  EXPECT_EQ(r.preemptions, 0);
}

TEST(SchedulerTest, NewRequestsJoinTheRunningBatch) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, 4, 100});
  ASSERT_TRUE(pool.ok());
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 64}, &*pool);
  Sequence a{.id = 0, .tokens = {1, 2, 3}, .num_prompt_tokens = 3};
  scheduler.Add(&a);
  SchedulerOutput s1 = scheduler.Schedule();
  ASSERT_EQ(s1.scheduled.size(), 1u);
  EXPECT_TRUE(s1.scheduled[0].samples);
  a.kv.num_tokens = 3;
  a.tokens.push_back(7);
  // b arrives while a decodes: the next step runs a's decode token and b's whole prompt together.
  Sequence b{.id = 1, .tokens = {4, 5, 6, 7, 8}, .num_prompt_tokens = 5};
  scheduler.Add(&b);
  SchedulerOutput s2 = scheduler.Schedule();
  ASSERT_EQ(s2.scheduled.size(), 2u);
  EXPECT_EQ(s2.scheduled[0].seq, &a);
  EXPECT_EQ(s2.scheduled[0].num_new_tokens, 1);
  EXPECT_EQ(s2.scheduled[1].seq, &b);
  EXPECT_EQ(s2.scheduled[1].num_new_tokens, 5);
  EXPECT_EQ(s2.num_tokens, 6);
  scheduler.Finish(&a);
  scheduler.Finish(&b);
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

TEST(SchedulerTest, LongPromptIsSplitIntoChunksAndSamplesOnlyAtTheEnd) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, 4, 100});
  ASSERT_TRUE(pool.ok());
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 10}, &*pool);
  Sequence a{.id = 0, .tokens = std::vector<int32_t>(25, 3), .num_prompt_tokens = 25};
  scheduler.Add(&a);
  std::vector<int64_t> chunks;
  std::vector<bool> samples;
  for (int i = 0; i < 3; ++i) {
    SchedulerOutput s = scheduler.Schedule();
    ASSERT_EQ(s.scheduled.size(), 1u);
    chunks.push_back(s.scheduled[0].num_new_tokens);
    samples.push_back(s.scheduled[0].samples);
    a.kv.num_tokens += s.scheduled[0].num_new_tokens;
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{10, 10, 5}));
  EXPECT_EQ(samples, (std::vector<bool>{false, false, true}));
  scheduler.Finish(&a);
}

TEST(SchedulerTest, PreemptsTheYoungestAndOutputIsUnchanged) {
  Workload w = RandomWorkload(30, 7, 40, 30);
  SchedulerConfig config{.max_num_seqs = 16, .max_num_batched_tokens = 64};
  RunResult roomy = RunWorkload(w, config, /*num_blocks=*/10000, /*block_size=*/4);
  ASSERT_EQ(roomy.preemptions, 0);
  // 20 blocks of 4 tokens: the longest sequence (40 + 30 tokens) fits alone, many do not fit
  // together, so sequences are preempted and recomputed.
  RunResult tight = RunWorkload(w, config, /*num_blocks=*/20, /*block_size=*/4);
  EXPECT_GT(tight.preemptions, 0);
  EXPECT_EQ(tight.outputs, roomy.outputs);
}

TEST(SchedulerTest, PreemptionVictimIsTheYoungestRunningSequence) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, /*block_size=*/2, /*num_blocks=*/4});
  ASSERT_TRUE(pool.ok());
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 64}, &*pool);
  Sequence a{.id = 0, .tokens = {1, 2}, .num_prompt_tokens = 2};
  Sequence b{.id = 1, .tokens = {1, 2}, .num_prompt_tokens = 2};
  Sequence c{.id = 2, .tokens = {1, 2}, .num_prompt_tokens = 2};
  for (Sequence* s : {&a, &b, &c}) scheduler.Add(s);
  SchedulerOutput s1 = scheduler.Schedule();
  ASSERT_EQ(s1.scheduled.size(), 3u);  // 3 of 4 blocks
  for (Sequence* s : {&a, &b, &c}) {
    s->kv.num_tokens = 2;
    s->tokens.push_back(9);
  }
  // Each now needs a second block; one is free. a gets it, b's reservation preempts c (youngest).
  SchedulerOutput s2 = scheduler.Schedule();
  ASSERT_EQ(s2.preempted.size(), 1u);
  EXPECT_EQ(s2.preempted[0], &c);
  EXPECT_EQ(c.status, SequenceStatus::kWaiting);
  EXPECT_EQ(c.num_computed_tokens(), 0);
  EXPECT_EQ(c.tokens.size(), 3u);  // generated tokens are kept for the recompute
  ASSERT_EQ(s2.scheduled.size(), 2u);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  for (Sequence* s : {&a, &b, &c}) scheduler.Finish(s);
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

TEST(SchedulerTest, SlidingWindowBoundsBlocksPerSequence) {
  Workload w = RandomWorkload(10, 3, 120, 60);
  const int64_t window = 16, block = 4;
  SchedulerConfig config{.max_num_seqs = 4, .max_num_batched_tokens = 8, .sliding_window = window};
  RunResult r = RunWorkload(w, config, /*num_blocks=*/40, /*block_size=*/block);
  // A sequence holds the window plus at most one step's chunk, rounded out to blocks.
  EXPECT_LE(r.max_live_blocks_per_seq, (window + config.max_num_batched_tokens) / block + 2);
  SchedulerConfig no_window = config;
  no_window.sliding_window = 0;
  RunResult full = RunWorkload(w, no_window, /*num_blocks=*/1000, /*block_size=*/block);
  EXPECT_GT(full.max_live_blocks_per_seq, r.max_live_blocks_per_seq);
  EXPECT_EQ(full.outputs, r.outputs);
}

TEST(SchedulerTest, FinishRemovesWaitingSequences) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, 4, 10});
  ASSERT_TRUE(pool.ok());
  Scheduler scheduler({.max_num_seqs = 1, .max_num_batched_tokens = 64}, &*pool);
  Sequence a{.id = 0, .tokens = {1}, .num_prompt_tokens = 1};
  Sequence b{.id = 1, .tokens = {1}, .num_prompt_tokens = 1};
  scheduler.Add(&a);
  scheduler.Add(&b);
  EXPECT_EQ(scheduler.Schedule().scheduled.size(), 1u);  // max_num_seqs = 1
  scheduler.Finish(&b);                                  // cancelled while waiting
  EXPECT_EQ(scheduler.num_waiting(), 0);
  scheduler.Finish(&a);
  EXPECT_FALSE(scheduler.has_work());
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

}  // namespace
}  // namespace moeserve::runtime
