// Named router-skew profiles (parallel/moe/skew_profile.h): parsing and errors, the biases
// against their definitions computed here, and on a random model: a zero-strength profile of
// every kind is bitwise the same as no profile, a decisive profile routes exactly where its
// definition says (counts computed here from the definition), and a per-request profile in a
// mixed batch leaves the other sequences bitwise as they are alone.
#include "parallel/moe/skew_profile.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/random_model.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

using parallel::ParseSkewProfile;
using parallel::SkewKind;
using parallel::SkewProfile;

TEST(SkewProfileTest, ParsesEveryForm) {
  auto hot = ParseSkewProfile("hot:2");
  ASSERT_TRUE(hot.ok()) << hot.status();
  EXPECT_EQ(hot->kind, SkewKind::kHot);
  EXPECT_EQ(hot->k, 2);
  EXPECT_EQ(hot->bias, 4.0f);
  EXPECT_EQ(ParseSkewProfile("hot:3:1.5")->bias, 1.5f);
  EXPECT_EQ(ParseSkewProfile("zipf:1.2")->zipf_s, 1.2);
  auto plh = ParseSkewProfile("per-layer-hot:2:3:7");
  ASSERT_TRUE(plh.ok()) << plh.status();
  EXPECT_EQ(plh->kind, SkewKind::kPerLayerHot);
  EXPECT_EQ(plh->bias, 3.0f);
  EXPECT_EQ(plh->seed, 7u);
  auto drift = ParseSkewProfile("drift:2:16");
  ASSERT_TRUE(drift.ok()) << drift.status();
  EXPECT_EQ(drift->period, 16);
  auto expl = ParseSkewProfile("0,5:2.5");
  ASSERT_TRUE(expl.ok()) << expl.status();
  EXPECT_EQ(expl->kind, SkewKind::kExplicit);
  EXPECT_EQ(expl->experts, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(expl->bias, 2.5f);
}

TEST(SkewProfileTest, RefusesBadProfilesWithTheSyntax) {
  for (const char* bad : {"", "hot", "hot:x", "hot:0", "hot:2:nan", "zipf", "zipf:-1", "zipf:1:2",
                          "drift:2", "drift:2:0", "per-layer-hot:2:1:-3", "cold:2", "0,x:1"}) {
    auto p = ParseSkewProfile(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("expected one of"), std::string::npos) << bad;
  }
  // Model-dependent: K and expert ids against the number of experts.
  EXPECT_FALSE(parallel::ValidateSkewProfile(*ParseSkewProfile("hot:9"), 8).ok());
  EXPECT_FALSE(parallel::ValidateSkewProfile(*ParseSkewProfile("8:1"), 8).ok());
  EXPECT_TRUE(parallel::ValidateSkewProfile(*ParseSkewProfile("hot:8"), 8).ok());
}

TEST(SkewProfileTest, ZipfBiasMakesSoftmaxRoutingZipf) {
  const double s = 1.3;
  const SkewProfile p = *ParseSkewProfile("zipf:1.3");
  std::vector<float> bias(8);
  p.BiasFor(0, 0, absl::MakeSpan(bias));
  // softmax(bias) against zipf(s) probabilities 1/(e+1)^s / H, in float64 here.
  double h = 0, z = 0;
  for (int e = 0; e < 8; ++e) h += 1.0 / std::pow(e + 1, s);
  for (int e = 0; e < 8; ++e) z += std::exp(static_cast<double>(bias[e]));
  for (int e = 0; e < 8; ++e) {
    EXPECT_NEAR(std::exp(static_cast<double>(bias[e])) / z, 1.0 / std::pow(e + 1, s) / h, 1e-6);
  }
}

TEST(SkewProfileTest, PerLayerHotAndDriftFollowTheirDefinitions) {
  const SkewProfile plh = *ParseSkewProfile("per-layer-hot:2:5");
  std::set<std::vector<int64_t>> sets;
  for (int64_t l = 0; l < 8; ++l) {
    std::vector<float> bias(8);
    plh.BiasFor(l, 0, absl::MakeSpan(bias));
    std::vector<int64_t> hot;
    for (int64_t e = 0; e < 8; ++e) {
      if (bias[e] != 0) {
        EXPECT_EQ(bias[e], 5.0f);
        hot.push_back(e);
      }
    }
    EXPECT_EQ(hot.size(), 2u) << "layer " << l;
    EXPECT_EQ(hot, parallel::PerLayerHotExperts(l, 2, 8, 0));  // deterministic
    sets.insert(hot);
  }
  EXPECT_GT(sets.size(), 1u) << "every layer got the same hot experts";
  // A different seed moves them.
  bool moved = false;
  for (int64_t l = 0; l < 8; ++l) {
    moved = moved ||
            parallel::PerLayerHotExperts(l, 2, 8, 1) != parallel::PerLayerHotExperts(l, 2, 8, 0);
  }
  EXPECT_TRUE(moved);

  const SkewProfile drift = *ParseSkewProfile("drift:3:4:2");
  for (int64_t pos = 0; pos < 40; ++pos) {
    std::vector<float> bias(8);
    drift.BiasFor(1, pos, absl::MakeSpan(bias));
    const int64_t w = pos / 4;
    for (int64_t e = 0; e < 8; ++e) {
      // e is hot when e == (3w + i) mod 8 for some i < 3.
      const bool hot = ((e - 3 * w) % 8 + 8) % 8 < 3;
      EXPECT_EQ(bias[e], hot ? 2.0f : 0.0f) << "pos " << pos << " expert " << e;
    }
  }
}

// --- On a random model ---

using ep_test::SmallConfig;  // 4 layers, 8 experts top-2, hidden 64

struct Seq {
  std::vector<int32_t> prompt;
  std::shared_ptr<const SkewProfile> skew;
};

struct SeqResult {
  std::vector<float> logits;  // prefill logits of every prompt token, then each decode step's
};

struct BatchRun {
  std::vector<SeqResult> seqs;
  parallel::EpRankStats prefill_stats;  // the counters after the prefill step
};

// One prefill step of all sequences, then `decode` steps feeding each sequence's argmax.
BatchRun RunBatch(MixtralModel& model, kernels::Backend& backend, const std::vector<Seq>& seqs,
                  int decode = 3) {
  auto pool = KvBlockPool::Create(backend, model.KvShape(8, 64));
  EXPECT_TRUE(pool.ok());
  std::vector<SequenceKv> kv(seqs.size());
  BatchRun run;
  run.seqs.resize(seqs.size());
  std::vector<int32_t> next(seqs.size());
  for (int step = 0; step <= decode; ++step) {
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
      SequenceStep s;
      s.new_tokens = step == 0 ? seqs[i].prompt : std::vector<int32_t>{next[i]};
      s.kv = &kv[i];
      s.all_logits = true;
      s.skew = seqs[i].skew;
      batch.push_back(std::move(s));
    }
    StepOutput out;
    const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    if (step == 0) run.prefill_stats = model.ep_stats();
    for (size_t i = 0; i < seqs.size(); ++i) {
      const float* begin = out.row(out.row_offsets[i]);
      const float* end = out.row(out.row_offsets[i + 1]);
      run.seqs[i].logits.insert(run.seqs[i].logits.end(), begin, end);
      const float* last = out.last_row(static_cast<int64_t>(i));
      next[i] = static_cast<int32_t>(std::max_element(last, last + out.vocab) - last);
    }
  }
  return run;
}

bool Bitwise(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::shared_ptr<const SkewProfile> Profile(const std::string& text) {
  auto p = ParseSkewProfile(text);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::make_shared<const SkewProfile>(*p);
}

std::vector<int32_t> Prompt(int64_t len, int salt) {
  std::vector<int32_t> p;
  for (int64_t t = 0; t < len; ++t)
    p.push_back(static_cast<int32_t>((salt * 131 + t * 17 + 5) % 300));
  return p;
}

class SkewModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = kernels::MakeCpuBackend(1);
    auto loaded = LoadRandomModel(SmallConfig(), 11, backend_.get());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    loaded_ = *std::move(loaded);
  }
  MixtralModel& model() { return *loaded_->model; }
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<LoadedModel> loaded_;
};

TEST_F(SkewModelTest, ZeroStrengthProfilesAreBitwiseNoProfile) {
  const std::vector<Seq> plain = {{Prompt(20, 1), nullptr}, {Prompt(7, 2), nullptr}};
  const BatchRun want = RunBatch(model(), *backend_, plain);
  for (const char* zero : {"0,3:0", "hot:2:0", "zipf:0", "per-layer-hot:2:0", "drift:2:4:0"}) {
    // As a per-request profile on every sequence, and as the model's default.
    std::vector<Seq> seqs = plain;
    for (Seq& s : seqs) s.skew = Profile(zero);
    const BatchRun per_request = RunBatch(model(), *backend_, seqs);
    ASSERT_TRUE(model().SetSkewProfile(*Profile(zero)).ok());
    const BatchRun as_default = RunBatch(model(), *backend_, plain);
    ASSERT_TRUE(model().SetSkewProfile(std::nullopt).ok());
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_TRUE(Bitwise(per_request.seqs[i].logits, want.seqs[i].logits)) << zero << " " << i;
      EXPECT_TRUE(Bitwise(as_default.seqs[i].logits, want.seqs[i].logits)) << zero << " " << i;
    }
  }
  // And a real profile does change the output (the comparison above can fail).
  std::vector<Seq> seqs = plain;
  seqs[0].skew = Profile("hot:2:8");
  EXPECT_FALSE(Bitwise(RunBatch(model(), *backend_, seqs).seqs[0].logits, want.seqs[0].logits));
}

// A request's "off" opts out of the model's default skew: bitwise the unskewed run, while the
// sequence without its own profile in the same batch still gets the default.
TEST_F(SkewModelTest, OffOptsARequestOutOfTheDefaultSkew) {
  const std::vector<Seq> plain = {{Prompt(20, 1), nullptr}, {Prompt(7, 2), nullptr}};
  const BatchRun want = RunBatch(model(), *backend_, plain);
  ASSERT_TRUE(model().SetSkewProfile(*Profile("hot:2:8")).ok());
  std::vector<Seq> seqs = plain;
  seqs[0].skew = Profile("off");
  const BatchRun got = RunBatch(model(), *backend_, seqs);
  ASSERT_TRUE(model().SetSkewProfile(std::nullopt).ok());
  EXPECT_TRUE(Bitwise(got.seqs[0].logits, want.seqs[0].logits));
  EXPECT_FALSE(Bitwise(got.seqs[1].logits, want.seqs[1].logits));  // the default applied
}

// Expected prefill counts [layers][experts] for a decisive (huge-bias) profile with K = top_k:
// every token's top 2 is exactly its hot set, so each hot expert gets one row per token.
std::vector<std::vector<int64_t>> DecisiveCounts(const std::string& kind, int64_t layers,
                                                 int64_t len) {
  std::vector<std::vector<int64_t>> want(layers, std::vector<int64_t>(8, 0));
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t pos = 0; pos < len; ++pos) {
      if (kind == "hot") {
        ++want[l][0], ++want[l][1];
      } else if (kind == "drift") {  // drift:2:4: window w = pos / 4 -> experts 2w, 2w+1 mod 8
        const int64_t w = pos / 4;
        ++want[l][(2 * w) % 8], ++want[l][(2 * w + 1) % 8];
      } else {  // per-layer-hot: the two experts PerLayerHotExperts names for the layer
        for (int64_t e : parallel::PerLayerHotExperts(l, 2, 8, 0)) ++want[l][e];
      }
    }
  }
  return want;
}

TEST_F(SkewModelTest, DecisiveProfilesRouteWhereTheirDefinitionSays) {
  const int64_t len = 20, layers = SmallConfig().num_hidden_layers;
  for (const std::string kind : {"hot", "drift", "per-layer-hot"}) {
    const std::string text = kind == "hot"     ? "hot:2:1000"
                             : kind == "drift" ? "drift:2:4:1000"
                                               : "per-layer-hot:2:1000";
    const BatchRun run = RunBatch(model(), *backend_, {{Prompt(len, 3), Profile(text)}}, 0);
    EXPECT_EQ(run.prefill_stats.routed_last_step, DecisiveCounts(kind, layers, len)) << text;
  }
  // zipf with a huge exponent: experts 0 and 1 dominate every token.
  const BatchRun run = RunBatch(model(), *backend_, {{Prompt(len, 3), Profile("zipf:60")}}, 0);
  EXPECT_EQ(run.prefill_stats.routed_last_step, DecisiveCounts("hot", layers, len));
}

TEST_F(SkewModelTest, PerRequestSkewLeavesTheOtherSequencesBitwiseAsAlone) {
  const Seq a{Prompt(13, 4), nullptr}, c{Prompt(5, 6), nullptr};
  const Seq b{Prompt(9, 5), Profile("hot:2:1000")};
  const BatchRun a_alone = RunBatch(model(), *backend_, {a});
  const BatchRun c_alone = RunBatch(model(), *backend_, {c});
  const BatchRun b_alone = RunBatch(model(), *backend_, {b});
  const BatchRun mixed = RunBatch(model(), *backend_, {a, b, c});
  EXPECT_TRUE(Bitwise(mixed.seqs[0].logits, a_alone.seqs[0].logits));
  EXPECT_TRUE(Bitwise(mixed.seqs[2].logits, c_alone.seqs[0].logits));
  EXPECT_TRUE(Bitwise(mixed.seqs[1].logits, b_alone.seqs[0].logits));
  Seq b_plain = b;
  b_plain.skew = nullptr;
  EXPECT_FALSE(
      Bitwise(RunBatch(model(), *backend_, {b_plain}).seqs[0].logits, b_alone.seqs[0].logits));
  // Counts: the unskewed sequences' routing as alone, plus the skewed one's 9 tokens on 0 and 1.
  const auto& ra = a_alone.prefill_stats.routed_last_step;
  const auto& rc = c_alone.prefill_stats.routed_last_step;
  const auto& got = mixed.prefill_stats.routed_last_step;
  for (size_t l = 0; l < got.size(); ++l) {
    for (size_t e = 0; e < 8; ++e) {
      EXPECT_EQ(got[l][e], ra[l][e] + rc[l][e] + (e < 2 ? 9 : 0)) << l << " " << e;
    }
  }
}

TEST_F(SkewModelTest, ModelRefusesProfilesThatDoNotFit) {
  EXPECT_EQ(model().SetSkewProfile(*Profile("hot:9")).code(), absl::StatusCode::kInvalidArgument);
  auto pool = KvBlockPool::Create(*backend_, model().KvShape(8, 8));
  ASSERT_TRUE(pool.ok());
  SequenceKv kv;
  std::vector<SequenceStep> batch(1);
  batch[0].new_tokens = {1, 2};
  batch[0].kv = &kv;
  batch[0].skew = Profile("per-layer-hot:9");
  StepOutput out;
  EXPECT_EQ(model().Forward(absl::MakeSpan(batch), *pool, &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.num_tokens, 0);
}

}  // namespace
}  // namespace moeserve::runtime
