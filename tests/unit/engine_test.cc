// The serving engine on real (small) models. Oracle: runtime::Generate, the single-sequence loop
// that the golden tests check against Hugging Face transformers. Continuous batching, chunked
// prefill, preemption with recompute and the sliding-window block release must not change a
// single token. Every test runs on each backend present (tests/golden/backends.h: CPU always,
// CUDA when runtime::MakeBackend("cuda") succeeds, else skipped with the reason); the oracle runs
// on the same backend.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/comm/in_process_communicator.h"
#include "runtime/engine/generate.h"
#include "runtime/model/model_loader.h"
#include "runtime/sampling/sampler.h"
#include "tests/golden/backends.h"

namespace moeserve::runtime {
namespace {

// The deadlines below are upper bounds for waits on a loaded 2-core machine. Sanitizer builds
// (tools/sanitize.sh) run the model several times slower, and a request that needs 40 s there is
// not a bug, so they wait ten times as long.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOESERVE_SANITIZED 1
#endif
#endif
#ifdef MOESERVE_SANITIZED
constexpr int64_t kSlowdown = 10;
#else
constexpr int64_t kSlowdown = 1;
#endif
absl::Duration Patience(int64_t seconds) { return absl::Seconds(seconds * kSlowdown); }

// The backend of the running test (set by EngineTest::SetUp; the tests run one at a time).
std::string& BackendName() {
  static std::string name = "cpu";
  return name;
}

class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    BackendName() = GetParam();
    MOESERVE_SKIP_UNLESS_BACKEND(GetParam());
  }
};
INSTANTIATE_TEST_SUITE_P(Backends, EngineTest, ::testing::ValuesIn(backend_test::BackendNames()),
                         backend_test::BackendParamName);

struct Fixture {
  std::unique_ptr<kernels::Backend> backend;
  std::shared_ptr<LoadedModel> loaded;
  std::unique_ptr<Tokenizer> tokenizer;
};

Fixture Load(const std::string& dir) {
  Fixture f;
  f.backend = backend_test::NewBackend(BackendName(), 1);
  auto loaded =
      dir.empty() ? LoadEmbeddedModel(f.backend.get()) : LoadModelDir(dir, f.backend.get());
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  f.loaded = std::shared_ptr<LoadedModel>(std::move(*loaded));
  auto tok = Tokenizer::LoadEmbedded();
  EXPECT_TRUE(tok.ok());
  f.tokenizer = *std::move(tok);
  return f;
}

std::unique_ptr<Engine> MakeEngine(Fixture& f, EngineOptions options) {
  std::vector<RankModel> ranks(1);
  ranks[0].keep_alive = f.loaded;
  ranks[0].model = f.loaded->model.get();
  auto engine = Engine::Create(std::move(ranks), f.tokenizer.get(), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return *std::move(engine);
}

// What a front end does: reads the stream to the end.
struct Collected {
  std::vector<std::vector<int32_t>> tokens;  // per choice
  std::vector<std::string> text;
  std::vector<std::vector<TokenLogprob>> logprobs;  // per choice, when asked
  std::vector<FinishReason> finish;
  Usage usage;
  absl::Status status;
};

Collected Collect(RequestStream& stream, int n = 1) {
  Collected c;
  c.tokens.resize(n);
  c.text.resize(n);
  c.logprobs.resize(n);
  c.finish.resize(n, FinishReason::kNone);
  while (true) {
    std::optional<RequestUpdate> u = stream.Next(absl::Now() + Patience(60));
    if (!u) {
      ADD_FAILURE() << "no update within 60 s";
      return c;
    }
    for (ChoiceDelta& d : u->choices) {
      c.tokens[d.index].insert(c.tokens[d.index].end(), d.tokens.begin(), d.tokens.end());
      c.text[d.index] += d.text;
      c.logprobs[d.index].insert(c.logprobs[d.index].end(), d.logprobs.begin(), d.logprobs.end());
      if (d.finish_reason != FinishReason::kNone) c.finish[d.index] = d.finish_reason;
    }
    c.usage = u->usage;
    if (!u->status.ok()) c.status = u->status;
    if (u->finished) return c;
  }
}

std::vector<int32_t> Oracle(Fixture& f, const std::vector<int32_t>& prompt, int64_t max_tokens) {
  auto pool = KvBlockPool::Create(*f.backend, f.loaded->model->KvShape(16, 256));
  EXPECT_TRUE(pool.ok());
  GenerateOptions options;
  options.max_tokens = max_tokens;
  options.stop_at_eos = true;
  auto r = Generate(*f.loaded->model, *pool, prompt, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r->tokens;
}

std::vector<std::vector<int32_t>> RandomPrompts(int n, int max_len, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> p(1 + rng() % max_len);
    p[0] = 1;  // BOS
    for (size_t k = 1; k < p.size(); ++k) p[k] = 3 + static_cast<int32_t>(rng() % (vocab - 3));
    prompts.push_back(p);
  }
  return prompts;
}

GenerationRequest Greedy(const std::vector<int32_t>& prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = prompt;
  r.sampling.max_tokens = max_tokens;
  return r;
}

// Submits every prompt at once and checks each output against the single-sequence oracle.
void ExpectBatchedEqualsAlone(Fixture& f, const EngineOptions& options, int num, int max_len,
                              int64_t max_tokens, bool expect_preemption) {
  const auto prompts =
      RandomPrompts(num, max_len, static_cast<int>(f.loaded->model->config().vocab_size), 11);
  // The oracle runs on the same model as the engine, and a model is driven by one thread at a time
  // (mixtral_model.h): compute it before the engine's worker starts (TSan found the two threads
  // updating the model's expert-load counters at once).
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(Oracle(f, p, max_tokens));
  auto engine = MakeEngine(f, options);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) {
    auto s = engine->Submit(Greedy(p, max_tokens));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    Collected c = Collect(*streams[i]);
    EXPECT_EQ(c.tokens[0], want[i]) << "request " << i;
    EXPECT_EQ(c.usage.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
    EXPECT_EQ(c.usage.completion_tokens, static_cast<int64_t>(c.tokens[0].size()));
  }
  ASSERT_TRUE(engine->WaitUntilIdle(Patience(10)));
  const EngineStats stats = engine->Stats();
  EXPECT_EQ(stats.requests_finished, num);
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.queue_depth, 0);
  EXPECT_EQ(stats.running_sequences, 0);
  if (expect_preemption) {
    EXPECT_GT(stats.preemptions, 0);
  }
}

TEST_P(EngineTest, ContinuousBatchingEqualsEachRequestAlone) {
  Fixture f = Load("");
  EngineOptions o;
  o.max_num_batched_tokens = 24;  // forces chunked prefill of the longer prompts
  o.max_num_seqs = 6;
  ExpectBatchedEqualsAlone(f, o, 12, 60, 12, /*expect_preemption=*/false);
}

TEST_P(EngineTest, PreemptionUnderKvPressureDoesNotChangeOutput) {
  Fixture f = Load("");
  EngineOptions o;
  o.max_num_batched_tokens = 64;
  o.kv_block_size = 4;
  o.kv_blocks = 30;  // 120 tokens for 10 sequences of up to 40 + 16
  ExpectBatchedEqualsAlone(f, o, 10, 40, 16, /*expect_preemption=*/true);
}

TEST_P(EngineTest, SlidingWindowModelUnderPressureMatchesOracle) {
  // fp32_window: a Hugging Face fixture whose sliding window is shorter than these sequences.
  Fixture f = Load(backend_test::TestDataDir() + "/golden/fp32_window");
  ASSERT_TRUE(f.loaded->model->config().sliding_window.has_value());
  EngineOptions o;
  o.max_num_batched_tokens = 16;
  o.kv_block_size = 4;
  o.kv_blocks = 40;
  ExpectBatchedEqualsAlone(f, o, 6, 40, 24, /*expect_preemption=*/false);
}

TEST_P(EngineTest, SeededSamplingIsIndependentOfBatchNeighbours) {
  Fixture f = Load("");
  const auto prompts = RandomPrompts(6, 30, 32000, 5);
  auto make = [&](size_t i) {
    GenerationRequest r = Greedy(prompts[i], 10);
    r.sampling.temperature = 0.9f;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = 1000 + i;
    return r;
  };
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = MakeEngine(f, {});
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto s = engine->Submit(make(i));
      ASSERT_TRUE(s.ok());
      alone.push_back(Collect(**s).tokens[0]);
    }
  }
  auto engine = MakeEngine(f, {});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = prompts.size(); i-- > 0;) streams.push_back(*engine->Submit(make(i)));
  for (size_t k = 0; k < streams.size(); ++k) {
    EXPECT_EQ(Collect(*streams[k]).tokens[0], alone[prompts.size() - 1 - k]);
  }
}

// The engine samples on the device (the model step's Backend::Sample, only ids and logprobs come
// back); the oracle is the host Sampler on the logits of a single-sequence loop. On the CPU both
// run the same per-row math: the tokens and logprobs must be identical, for every kind of request
// and every choice of n > 1, batched together.
// CPU only: on CUDA the device sampler's agreement with the CPU is the rule of ops/sampling.h,
// checked by tests/gpu/sampling_cuda_test.cc, not bitwise logprobs.
TEST(EngineCpuTest, DeviceSamplingEqualsTheHostSamplerOnEachRequestAlone) {
  BackendName() = "cpu";
  Fixture f = Load("");
  const ModelConfig& config = f.loaded->model->config();
  const auto prompts = RandomPrompts(5, 30, static_cast<int>(config.vocab_size), 17);
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back(Greedy(prompts[i], 9));
  requests[0].sampling.temperature = 0.8f;  // seeded temperature, 2 choices, top logprobs
  requests[0].sampling.seed = 3;
  requests[0].sampling.n = 2;
  requests[0].sampling.logprobs = true;
  requests[0].sampling.top_logprobs = 4;
  requests[1].sampling.temperature = 1.0f;  // top_k + top_p
  requests[1].sampling.top_k = 20;
  requests[1].sampling.top_p = 0.9f;
  requests[1].sampling.seed = 4;
  requests[2].sampling.temperature = 0.7f;  // min_p + every penalty (prompt history too)
  requests[2].sampling.min_p = 0.05f;
  requests[2].sampling.repetition_penalty = 1.2f;
  requests[2].sampling.frequency_penalty = 0.6f;
  requests[2].sampling.presence_penalty = 0.5f;
  requests[2].sampling.seed = 5;
  requests[2].sampling.logprobs = true;
  requests[3].sampling.logprobs = true;  // greedy with logprobs
  // requests[4]: plain greedy.
  EngineOptions o;
  o.max_num_batched_tokens = 24;  // chunked prefill: chunks that don't end a prompt sample nothing
  auto engine = MakeEngine(f, o);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& r : requests) {
    auto s = engine->Submit(r);
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  std::vector<Collected> collected;
  for (size_t i = 0; i < requests.size(); ++i) {
    collected.push_back(Collect(*streams[i], requests[i].sampling.n));
  }
  ASSERT_TRUE(engine->WaitUntilIdle(Patience(10)));
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    for (int32_t choice = 0; choice < r.sampling.n; ++choice) {
      // The oracle: one sequence, the logits path, the host Sampler of this choice.
      auto pool = KvBlockPool::Create(*f.backend, f.loaded->model->KvShape(16, 64));
      ASSERT_TRUE(pool.ok());
      Sampler sampler(r.sampling, r.prompt, choice);
      SequenceKv kv;
      std::vector<int32_t> next = r.prompt;
      std::vector<SampledToken> want;
      while (static_cast<int64_t>(want.size()) < *r.sampling.max_tokens) {
        SequenceStep step{next, &kv, false};
        StepOutput out;
        ASSERT_TRUE(f.loaded->model->Forward(absl::MakeSpan(&step, 1), *pool, &out).ok());
        want.push_back(sampler.SampleWithLogprobs(out.last_row(0), out.vocab));
        next = {want.back().token};
        if (next[0] == config.eos_token_id) break;
      }
      pool->Release(kv);
      const Collected& c = collected[i];
      ASSERT_EQ(c.tokens[choice].size(), want.size()) << "request " << i << " choice " << choice;
      ASSERT_EQ(c.logprobs[choice].size(), r.sampling.logprobs ? want.size() : 0u);
      for (size_t k = 0; k < want.size(); ++k) {
        EXPECT_EQ(c.tokens[choice][k], want[k].token) << "request " << i << " token " << k;
        if (!r.sampling.logprobs) continue;
        EXPECT_EQ(c.logprobs[choice][k].token, want[k].token);
        EXPECT_EQ(c.logprobs[choice][k].logprob, want[k].logprob) << "request " << i;
        EXPECT_EQ(c.logprobs[choice][k].top, want[k].top_logprobs) << "request " << i;
      }
    }
  }
  EXPECT_NE(collected[0].tokens[0], collected[0].tokens[1]);
}

TEST_P(EngineTest, NChoicesAreIndependentStreams) {
  Fixture f = Load("");
  auto engine = MakeEngine(f, {});
  GenerationRequest r = Greedy({1, 100, 200, 300}, 8);
  r.sampling.n = 3;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 7;
  auto s = engine->Submit(r);
  ASSERT_TRUE(s.ok());
  Collected c = Collect(**s, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.tokens[i].size(), 8u);
    EXPECT_EQ(c.finish[i], FinishReason::kLength);
  }
  EXPECT_NE(c.tokens[0], c.tokens[1]);
  EXPECT_EQ(c.usage.completion_tokens, 24);
}

TEST_P(EngineTest, StopStringCutsTheTextBeforeIt) {
  Fixture f = Load("");
  auto engine = MakeEngine(f, {});
  const std::vector<int32_t> prompt = {1, 22557, 28725, 586, 1141, 349};  // "Hello, my name is"
  Collected full = Collect(**engine->Submit(Greedy(prompt, 30)));
  ASSERT_GT(full.text[0].size(), 12u);
  // A stop string taken from the middle of the unconstrained output: the stopped output must be
  // exactly the text before its first occurrence.
  const std::string stop = full.text[0].substr(full.text[0].size() / 2, 3);
  GenerationRequest r = Greedy(prompt, 30);
  r.sampling.stop = {stop};
  Collected cut = Collect(**engine->Submit(r));
  EXPECT_EQ(cut.text[0], full.text[0].substr(0, full.text[0].find(stop)));
  EXPECT_EQ(cut.finish[0], FinishReason::kStop);
  // A stop token id ends the choice at its first occurrence, without its text.
  GenerationRequest t = Greedy(prompt, 30);
  t.sampling.stop_token_ids = {full.tokens[0][4]};
  Collected at_token = Collect(**engine->Submit(t));
  const auto first = std::find(full.tokens[0].begin(), full.tokens[0].end(), full.tokens[0][4]);
  EXPECT_EQ(at_token.tokens[0], std::vector<int32_t>(full.tokens[0].begin(), first + 1));
  EXPECT_EQ(at_token.finish[0], FinishReason::kStop);
}

TEST_P(EngineTest, CancelFreesKvBlocks) {
  Fixture f = Load("");
  auto engine = MakeEngine(f, {});
  GenerationRequest r = Greedy({1, 5, 6, 7}, 5000);
  r.sampling.ignore_eos = true;
  auto s = engine->Submit(r);
  ASSERT_TRUE(s.ok());
  // Wait for a few tokens, then cancel.
  std::optional<RequestUpdate> first = (*s)->Next(absl::Now() + Patience(30));
  ASSERT_TRUE(first.has_value());
  EXPECT_GT(engine->Stats().kv_blocks_used, 0);
  (*s)->Cancel();
  Collected c = Collect(**s);
  EXPECT_EQ(c.finish[0], FinishReason::kCancelled);
  ASSERT_TRUE(engine->WaitUntilIdle(Patience(10)));
  EXPECT_EQ(engine->Stats().kv_blocks_used, 0);
  EXPECT_EQ(engine->Stats().requests_cancelled, 1);
}

TEST_P(EngineTest, QueueBeyondMaxQueueIsResourceExhausted) {
  Fixture f = Load("");
  EngineOptions o;
  o.max_num_seqs = 1;
  o.max_queue = 2;
  auto engine = MakeEngine(f, o);
  GenerationRequest long_one = Greedy({1, 5, 6}, 3000);
  long_one.sampling.ignore_eos = true;
  auto running = engine->Submit(long_one);
  ASSERT_TRUE(running.ok());
  ASSERT_TRUE((*running)->Next(absl::Now() + Patience(30)).has_value());  // it is running
  auto q1 = engine->Submit(Greedy({1, 7}, 2));
  auto q2 = engine->Submit(Greedy({1, 8}, 2));
  ASSERT_TRUE(q1.ok());
  ASSERT_TRUE(q2.ok());
  auto q3 = engine->Submit(Greedy({1, 9}, 2));
  EXPECT_EQ(q3.status().code(), absl::StatusCode::kResourceExhausted) << q3.status();
  (*running)->Cancel();
  EXPECT_EQ(Collect(**q1).finish[0], FinishReason::kLength);
  EXPECT_EQ(Collect(**q2).finish[0], FinishReason::kLength);
  EXPECT_EQ(engine->Stats().requests_rejected, 1);
}

TEST_P(EngineTest, BadRequestsAreInvalidArgument) {
  Fixture f = Load("");
  EngineOptions o;
  o.max_model_len = 64;
  auto engine = MakeEngine(f, o);
  auto code = [&](GenerationRequest r) { return engine->Submit(std::move(r)).status().code(); };
  EXPECT_EQ(code(Greedy({}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 32000}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, -1}, 4)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy(std::vector<int32_t>(64, 5), 1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 2, 3}, 62)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 2, 3}, 0)), absl::StatusCode::kInvalidArgument);
  GenerationRequest bad_temp = Greedy({1, 2}, 4);
  bad_temp.sampling.temperature = -1.0f;
  EXPECT_EQ(code(bad_temp), absl::StatusCode::kInvalidArgument);
  // The engine still serves after all of them.
  auto ok = engine->Submit(Greedy({1, 2, 3}, 61));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(Collect(**ok).tokens[0].empty(), false);
}

TEST_P(EngineTest, StopAdmissionDrainsInFlightRequests) {
  Fixture f = Load("");
  auto engine = MakeEngine(f, {});
  auto s = engine->Submit(Greedy({1, 2, 3}, 20));
  ASSERT_TRUE(s.ok());
  engine->StopAdmission();
  EXPECT_EQ(engine->Submit(Greedy({1, 2}, 2)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->WaitUntilIdle(Patience(30)));
  EXPECT_EQ(Collect(**s).tokens[0].size(), 20u);
}

// Several ranks in lockstep (each a full model replica here; expert parallelism proper is tested
// in tests/golden/ep_*): requests spread over the ranks, idle ranks run empty steps, and every
// output still equals the single-sequence oracle.
// One embedded model per rank of an in-process group, each on its own backend (kept alive in
// *backends), connected to the group's communicators.
void EmbeddedRanks(parallel::InProcessGroup& group, int world,
                   std::vector<std::unique_ptr<kernels::Backend>>* backends,
                   std::vector<RankModel>* ranks) {
  ranks->clear();
  ranks->resize(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    backends->push_back(backend_test::NewBackend(BackendName(), 1));
    auto loaded = LoadEmbeddedModel(backends->back().get());
    ASSERT_TRUE(loaded.ok());
    std::shared_ptr<LoadedModel> shared(std::move(*loaded));
    (*ranks)[r].model = shared->model.get();
    (*ranks)[r].keep_alive = shared;
    (*ranks)[r].comm = group.comm(r);
  }
}

TEST_P(EngineTest, LockstepRanksGiveTheSameOutputs) {
  for (int world : {2, 3}) {
    Fixture f = Load("");
    parallel::InProcessGroup group(world);
    std::vector<std::unique_ptr<kernels::Backend>> backends;
    std::vector<RankModel> ranks;
    ASSERT_NO_FATAL_FAILURE(EmbeddedRanks(group, world, &backends, &ranks));
    EngineOptions o;
    o.max_num_batched_tokens = 32;
    auto engine = Engine::Create(std::move(ranks), f.tokenizer.get(), o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    const auto prompts = RandomPrompts(7, 30, 32000, 21);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompts) streams.push_back(*(*engine)->Submit(Greedy(p, 6)));
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(Collect(*streams[i]).tokens[0], Oracle(f, prompts[i], 6)) << "world " << world;
    }
    EXPECT_TRUE((*engine)->WaitUntilIdle(Patience(10)));
    // A single request later: one rank works, the others join with empty steps.
    auto lone = (*engine)->Submit(Greedy(prompts[0], 6));
    ASSERT_TRUE(lone.ok());
    EXPECT_EQ(Collect(**lone).tokens[0], Oracle(f, prompts[0], 6));
    EXPECT_EQ((*engine)->world_size(), world);
  }
}

// A lockstep group that breaks (a rank process died: here the in-process group is aborted) ends
// the requests in flight with UNAVAILABLE (HTTP 503 / gRPC UNAVAILABLE in the front ends), and
// the engine reports the failure and stops (what `moeserve serve` waits for to exit non-zero).
TEST_P(EngineTest, BrokenLockstepGroupEndsRequestsAsUnavailable) {
  Fixture f = Load("");
  parallel::InProcessGroup group(2);
  std::vector<std::unique_ptr<kernels::Backend>> backends;
  std::vector<RankModel> ranks;
  ASSERT_NO_FATAL_FAILURE(EmbeddedRanks(group, 2, &backends, &ranks));
  auto engine = Engine::Create(std::move(ranks), f.tokenizer.get(), EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_TRUE((*engine)->GroupFailure().ok());
  EXPECT_FALSE((*engine)->WaitUntilStopped(absl::ZeroDuration()));
  GenerationRequest req = Greedy(RandomPrompts(1, 8, 32000, 5)[0], 400);
  req.sampling.ignore_eos = true;
  auto stream = (*engine)->Submit(std::move(req));
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_TRUE((*stream)->Next(absl::Now() + Patience(60)).has_value());  // it runs
  group.Abort(absl::UnavailableError("rank 1 (pid 7) was killed by signal 9"));
  Collected c = Collect(**stream);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kUnavailable) << c.status;
  EXPECT_NE(c.status.message().find("expert-parallel"), std::string::npos) << c.status;
  EXPECT_LT(c.tokens[0].size(), 400u);  // not reported as finished
  EXPECT_TRUE((*engine)->WaitUntilStopped(Patience(10)));
  EXPECT_NE((*engine)->GroupFailure().message().find("killed by signal 9"), std::string::npos)
      << (*engine)->GroupFailure();
  // Nothing is admitted to a group that runs no more steps.
  auto late = (*engine)->Submit(Greedy(RandomPrompts(1, 8, 32000, 6)[0], 4));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable) << late.status();
}

TEST_P(EngineTest, ManyConcurrentRequestsAllFinish) {
  Fixture f = Load("");
  EngineOptions o;
  o.kv_blocks = 64;
  o.kv_block_size = 8;
  auto engine = MakeEngine(f, o);
  // 300 requests take over 20 minutes under a sanitizer on 2 cores; 60 still keep the 64-block
  // pool full and the queue long.
  const int num_requests = kSlowdown > 1 ? 60 : 300;
  const auto prompts = RandomPrompts(num_requests, 40, 32000, 99);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(*engine->Submit(Greedy(p, 4)));
  for (auto& s : streams) {
    Collected c = Collect(*s);
    EXPECT_TRUE(c.status.ok());
    EXPECT_NE(c.finish[0], FinishReason::kNone);
  }
  EXPECT_TRUE(engine->WaitUntilIdle(Patience(10)));
  EXPECT_EQ(engine->Stats().requests_finished, num_requests);
  EXPECT_EQ(engine->Stats().kv_blocks_used, 0);
}

}  // namespace
}  // namespace moeserve::runtime
