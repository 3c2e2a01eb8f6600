// Backend-ops harness, MoE ops: RouterTopK, MoeAlign, GatherRows, GroupedMatmul (plain and fused
// SwiGLU), MoeCombine on every backend present, against double-precision oracles and (for CUDA)
// the CPU reference. Grids: top_k 1/2, empty batches, one token, experts with zero tokens (and
// their weights absent: nullptr), every token on one expert, ties between logits, a logit bias,
// fp32 and bf16 activations, bf16/fp32 weights, and large-ish cases (T 512, hidden 4096).
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "tests/gpu/backend_ops_harness.h"

namespace moeserve::kernels::testing {
namespace {

using ::testing::Combine;
using ::testing::ValuesIn;

// How tokens are routed in MoeAlign / GroupedMatmul cases.
enum class Routing { kRandom, kAllOnOne, kSkipSome };

// expert_ids [T, k], ascending within each token, distinct, per `routing`.
std::vector<int32_t> Route(int64_t num_tokens, int64_t top_k, int64_t num_experts, Routing routing,
                           uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(num_tokens * top_k));
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::vector<int32_t> experts(static_cast<size_t>(num_experts));
    std::iota(experts.begin(), experts.end(), 0);
    if (routing == Routing::kSkipSome) {  // experts 1 and 3 never chosen
      experts.erase(std::remove_if(experts.begin(), experts.end(),
                                   [](int32_t e) { return e == 1 || e == 3; }),
                    experts.end());
    }
    if (routing != Routing::kAllOnOne) std::shuffle(experts.begin(), experts.end(), rng);
    // kAllOnOne: the first choice of every token is expert 0 (and the second expert 1).
    std::sort(experts.begin(), experts.begin() + top_k);
    for (int64_t j = 0; j < top_k; ++j) ids[t * top_k + j] = experts[j];
  }
  return ids;
}

// ---------------------------------------------------------------------------------- Router

struct RouterCase {
  std::string name;
  int64_t num_tokens, num_experts, top_k;
  bool bias = false;
  bool tied_rows = false;  // every third row has all logits equal
};

std::vector<RouterCase> RouterCases() {
  std::vector<RouterCase> cases;
  for (int64_t k : {1, 2}) {
    const std::string ks = absl::StrCat("top", k);
    cases.push_back({"empty_" + ks, 0, 8, k});
    cases.push_back({"one_" + ks, 1, 8, k});
    cases.push_back({"t37_e8_" + ks, 37, 8, k});
    cases.push_back({"t37_e8_bias_" + ks, 37, 8, k, true});
    cases.push_back({"t20_e8_ties_" + ks, 20, 8, k, false, true});
    cases.push_back({"t9_e64_" + ks, 9, 64, k});
  }
  cases.push_back({"large_T512_e8_top2", 512, 8, 2});
  return cases;
}

class RouterTopKTest : public ::testing::TestWithParam<BackendAndCase<RouterCase>> {};

TEST_P(RouterTopKTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  std::vector<float> logits = RandomValues(static_cast<size_t>(c.num_tokens * c.num_experts), 40);
  if (c.tied_rows) {
    for (int64_t t = 0; t < c.num_tokens; t += 3) {
      for (int64_t e = 0; e < c.num_experts; ++e) logits[t * c.num_experts + e] = 0.5f;
    }
  }
  const std::vector<float> bias = RandomValues(static_cast<size_t>(c.num_experts), 41, 2.0f);

  // Output: ids (exact), then weights (1e-6 absolute).
  const size_t n = static_cast<size_t>(c.num_tokens * c.top_k);
  Expected want(2 * n);
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    std::vector<float> biased(static_cast<size_t>(c.num_experts));
    for (int64_t e = 0; e < c.num_experts; ++e) {
      biased[e] = logits[t * c.num_experts + e] + (c.bias ? bias[e] : 0.0f);
    }
    std::vector<int32_t> chosen;
    std::vector<bool> taken(static_cast<size_t>(c.num_experts), false);
    for (int64_t j = 0; j < c.top_k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < c.num_experts; ++e) {
        if (!taken[e] && (best < 0 || biased[e] > biased[best])) best = e;  // ties: lower id
      }
      taken[best] = true;
      chosen.push_back(static_cast<int32_t>(best));
    }
    std::sort(chosen.begin(), chosen.end());
    double denom = 0.0;
    for (int32_t e : chosen) denom += std::exp(static_cast<double>(biased[e]));
    for (int64_t j = 0; j < c.top_k; ++j) {
      want.value[t * c.top_k + j] = chosen[j];
      want.value[n + t * c.top_k + j] = std::exp(static_cast<double>(biased[chosen[j]])) / denom;
      want.magnitude[n + t * c.top_k + j] = 1.0;
    }
  }
  CheckOp(*b, want, Tolerance{0.0, 1e-6}, [&](Backend& be) {
    DeviceArena arena(be);
    RouterTopKParams p{.logits = arena.Upload(logits),
                       .logit_bias = c.bias ? arena.Upload(bias) : nullptr,
                       .expert_ids = static_cast<int32_t*>(arena.Alloc(n * sizeof(int32_t))),
                       .weights = static_cast<float*>(arena.Alloc(n * sizeof(float))),
                       .num_tokens = c.num_tokens,
                       .num_experts = c.num_experts,
                       .top_k = c.top_k};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.RouterTopK(p);
    const std::vector<int32_t> ids = arena.Download(p.expert_ids, n);
    std::vector<float> out(ids.begin(), ids.end());
    const std::vector<float> w = arena.Download(p.weights, n);
    out.insert(out.end(), w.begin(), w.end());
    return out;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, RouterTopKTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(RouterCases())), ParamName());

// ---------------------------------------------------------------------------------- MoeAlign

struct AlignCase {
  std::string name;
  int64_t num_tokens, top_k, num_experts;
  Routing routing;
  bool counts = true;
};

std::vector<AlignCase> AlignCases() {
  std::vector<AlignCase> cases;
  for (int64_t k : {1, 2}) {
    const std::string ks = absl::StrCat("top", k);
    cases.push_back({"empty_" + ks, 0, k, 8, Routing::kRandom});
    cases.push_back({"one_" + ks, 1, k, 8, Routing::kRandom});
    cases.push_back({"t37_" + ks, 37, k, 8, Routing::kRandom, false});
    cases.push_back({"t37_all_on_one_" + ks, 37, k, 8, Routing::kAllOnOne});
    cases.push_back({"t37_zero_token_experts_" + ks, 37, k, 8, Routing::kSkipSome});
    cases.push_back({"t100_e64_" + ks, 100, k, 64, Routing::kRandom});
  }
  cases.push_back({"large_T4096_e8_top2", 4096, 2, 8, Routing::kRandom});
  return cases;
}

class MoeAlignTest : public ::testing::TestWithParam<BackendAndCase<AlignCase>> {};

TEST_P(MoeAlignTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<int32_t> ids = Route(c.num_tokens, c.top_k, c.num_experts, c.routing, 42);
  std::vector<int64_t> counts_init(static_cast<size_t>(c.num_experts));
  for (int64_t e = 0; e < c.num_experts; ++e) counts_init[e] = 1000 + e;  // += must keep these

  // Stable counting sort: rows of expert e in ascending (t, j).
  const int64_t rows = c.num_tokens * c.top_k;
  std::vector<int64_t> offsets(static_cast<size_t>(c.num_experts + 1), 0);
  for (int32_t e : ids) ++offsets[e + 1];
  for (int64_t e = 0; e < c.num_experts; ++e) offsets[e + 1] += offsets[e];
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  std::vector<int64_t> permuted(static_cast<size_t>(rows));
  std::vector<int64_t> combine(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = fill[ids[i]]++;
    permuted[row] = i / c.top_k;
    combine[i] = row;
  }
  // Output: offsets, permuted_token, combine_rows, (counts): all exact.
  Expected want(static_cast<size_t>(c.num_experts + 1 + 2 * rows + (c.counts ? c.num_experts : 0)));
  size_t o = 0;
  for (int64_t v : offsets) want.value[o++] = static_cast<double>(v);
  for (int64_t v : permuted) want.value[o++] = static_cast<double>(v);
  for (int64_t v : combine) want.value[o++] = static_cast<double>(v);
  if (c.counts) {
    for (int64_t e = 0; e < c.num_experts; ++e) {
      want.value[o++] = static_cast<double>(counts_init[e] + offsets[e + 1] - offsets[e]);
    }
  }
  CheckOp(*b, want, Tolerance{0.0, 0.0}, [&](Backend& be) {
    DeviceArena arena(be);
    MoeAlignParams p{
        .expert_ids = arena.Upload(ids),
        .expert_offsets =
            static_cast<int32_t*>(arena.Alloc(static_cast<size_t>(c.num_experts + 1) * 4)),
        .permuted_token = static_cast<int32_t*>(arena.Alloc(static_cast<size_t>(rows) * 4)),
        .combine_rows = static_cast<int32_t*>(arena.Alloc(static_cast<size_t>(rows) * 4)),
        .expert_counts = c.counts ? arena.Upload(counts_init) : nullptr,
        .num_tokens = c.num_tokens,
        .top_k = c.top_k,
        .num_experts = c.num_experts};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.MoeAlign(p);
    std::vector<float> out;
    for (int32_t v : arena.Download(p.expert_offsets, static_cast<size_t>(c.num_experts + 1))) {
      out.push_back(static_cast<float>(v));
    }
    for (int32_t v : arena.Download(p.permuted_token, static_cast<size_t>(rows))) {
      out.push_back(static_cast<float>(v));
    }
    for (int32_t v : arena.Download(p.combine_rows, static_cast<size_t>(rows))) {
      out.push_back(static_cast<float>(v));
    }
    if (c.counts) {
      for (int64_t v : arena.Download(p.expert_counts, static_cast<size_t>(c.num_experts))) {
        out.push_back(static_cast<float>(v));
      }
    }
    return out;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, MoeAlignTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(AlignCases())), ParamName());

// ---------------------------------------------------------------------------------- GatherRows

struct GatherCase {
  std::string name;
  int64_t num_rows, num_src_rows, hidden;
  DType act;
};

std::vector<GatherCase> GatherCases() {
  std::vector<GatherCase> cases;
  for (DType act : {DType::kF32, DType::kBF16}) {
    const std::string dt = DTypeLabel(act);
    cases.push_back({"empty_" + dt, 0, 5, 20, act});
    cases.push_back({"one_" + dt, 1, 5, 37, act});
    cases.push_back({"dups_rows74_src37_h20_" + dt, 74, 37, 20, act});
  }
  cases.push_back({"large_rows1024_h4096_bf16", 1024, 512, 4096, DType::kBF16});
  return cases;
}

class GatherRowsTest : public ::testing::TestWithParam<BackendAndCase<GatherCase>> {};

TEST_P(GatherRowsTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<float> src = RandomValues(static_cast<size_t>(c.num_src_rows * c.hidden), 50);
  std::vector<int32_t> rows(static_cast<size_t>(c.num_rows));
  std::mt19937 rng(51);
  for (auto& r : rows) r = static_cast<int32_t>(rng() % c.num_src_rows);
  Expected want(static_cast<size_t>(c.num_rows * c.hidden));
  for (int64_t i = 0; i < c.num_rows; ++i) {
    for (int64_t h = 0; h < c.hidden; ++h)
      want.value[i * c.hidden + h] = src[rows[i] * c.hidden + h];
  }
  GatherRowsParams host{.num_rows = c.num_rows,
                        .num_src_rows = c.num_src_rows,
                        .hidden = c.hidden,
                        .act_dtype = c.act};
  ASSERT_TRUE(ValidateIndices(host, rows.data()).ok());
  CheckOp(*b, want, Tolerance{0.0, 0.0}, [&](Backend& be) {
    DeviceArena arena(be);
    GatherRowsParams p = host;
    p.src = arena.UploadAs(src, c.act);
    p.rows = arena.Upload(rows);
    p.dst = arena.Alloc(static_cast<size_t>(c.num_rows * c.hidden) * DTypeSize(c.act));
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.GatherRows(p);
    return arena.DownloadAs(p.dst, static_cast<size_t>(c.num_rows * c.hidden), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, GatherRowsTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(GatherCases())), ParamName());

// ---------------------------------------------------------------------------------- GroupedMatmul

struct GroupedCase {
  std::string name;
  int64_t num_tokens, top_k, num_experts, n, k;
  DType act, w;
  bool swiglu;
  Routing routing;
  int64_t spare_rows = 0;  // max_rows exceeds the routed rows by this much
};

std::vector<GroupedCase> GroupedCases() {
  std::vector<GroupedCase> cases;
  for (bool swiglu : {false, true}) {
    const std::string f = swiglu ? "swiglu_" : "plain_";
    for (DType act : {DType::kF32, DType::kBF16}) {
      for (DType w : {DType::kBF16, DType::kF32}) {
        const std::string dt = absl::StrCat(DTypeLabel(act), "_w", DTypeLabel(w));
        cases.push_back({f + "empty_" + dt, 0, 2, 8, 20, 37, act, w, swiglu, Routing::kRandom});
        cases.push_back({f + "one_top1_" + dt, 1, 1, 8, 37, 20, act, w, swiglu, Routing::kRandom});
        cases.push_back(
            {f + "t37_top2_" + dt, 37, 2, 8, 20, 37, act, w, swiglu, Routing::kRandom, 5});
      }
    }
    cases.push_back({f + "all_on_one_bf16", 37, 2, 8, 64, 96, DType::kBF16, DType::kBF16, swiglu,
                     Routing::kAllOnOne});
    cases.push_back({f + "zero_token_experts_bf16", 37, 2, 8, 64, 96, DType::kBF16, DType::kBF16,
                     swiglu, Routing::kSkipSome});
    cases.push_back({f + "large_T512_top2_h4096_n256", 512, 2, 8, 256, 4096, DType::kBF16,
                     DType::kBF16, swiglu, Routing::kRandom});
  }
  return cases;
}

class GroupedMatmulTest : public ::testing::TestWithParam<BackendAndCase<GroupedCase>> {};

TEST_P(GroupedMatmulTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<int32_t> ids = Route(c.num_tokens, c.top_k, c.num_experts, c.routing, 60);
  std::vector<int32_t> offsets(static_cast<size_t>(c.num_experts + 1), 0);
  for (int32_t e : ids) ++offsets[e + 1];
  for (int64_t e = 0; e < c.num_experts; ++e) offsets[e + 1] += offsets[e];
  const int64_t rows = offsets[c.num_experts];
  const int64_t max_rows = rows + c.spare_rows;
  const std::vector<float> x = RandomValues(static_cast<size_t>(max_rows * c.k), 61);
  std::vector<std::vector<float>> w(static_cast<size_t>(c.num_experts));
  std::vector<std::vector<float>> w_up(static_cast<size_t>(c.num_experts));
  for (int64_t e = 0; e < c.num_experts; ++e) {
    w[e] = RandomValues(static_cast<size_t>(c.n * c.k), 62 + static_cast<uint32_t>(e), 0.05f);
    w_up[e] = RandomValues(static_cast<size_t>(c.n * c.k), 162 + static_cast<uint32_t>(e), 0.05f);
  }

  Expected want(static_cast<size_t>(rows * c.n));
  for (int64_t e = 0; e < c.num_experts; ++e) {
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int64_t j = 0; j < c.n; ++j) {
        double g = 0.0, gm = 0.0, u = 0.0, um = 0.0;
        for (int64_t kk = 0; kk < c.k; ++kk) {
          const double xv = x[r * c.k + kk];
          g += xv * w[e][j * c.k + kk];
          gm += std::fabs(xv * w[e][j * c.k + kk]);
          u += xv * w_up[e][j * c.k + kk];
          um += std::fabs(xv * w_up[e][j * c.k + kk]);
        }
        const size_t o = static_cast<size_t>(r * c.n + j);
        if (c.swiglu) {
          want.value[o] = Silu(g) * u;
          // The error bound itself (acc = 1 below): fp32 sums of g and u propagated through
          // silu (silu' <= 1.1), plus a possible rounding of g and u to act_dtype in between.
          const double sum_acc = Fp32SumAcc(c.k);
          want.magnitude[o] = sum_acc * (1.1 * gm * std::fabs(u) + std::fabs(Silu(g)) * um) +
                              OutputRel(c.act) * (1.1 * std::fabs(g * u) + std::fabs(Silu(g) * u));
        } else {
          want.value[o] = g;
          want.magnitude[o] = gm;
        }
      }
    }
  }
  const Tolerance tol{OutputRel(c.act), c.swiglu ? 1.0 : Fp32SumAcc(c.k)};
  CheckOp(*b, want, tol, [&](Backend& be) {
    DeviceArena arena(be);
    // Weights of experts that get no rows are absent (nullptr), as on a rank that does
    // not hold them.
    std::vector<const void*> wp(static_cast<size_t>(c.num_experts), nullptr);
    std::vector<const void*> up(static_cast<size_t>(c.num_experts), nullptr);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      if (offsets[e + 1] == offsets[e]) continue;
      wp[e] = arena.UploadAs(w[e], c.w);
      up[e] = arena.UploadAs(w_up[e], c.w);
    }
    GroupedMatmulParams p{
        .x = arena.UploadAs(x, c.act),
        .w = static_cast<const void* const*>(arena.Upload(wp)),
        .w_up = c.swiglu ? static_cast<const void* const*>(arena.Upload(up)) : nullptr,
        .w_dtype = c.w,
        .y = arena.Alloc(static_cast<size_t>(max_rows * c.n) * DTypeSize(c.act)),
        .expert_offsets = arena.Upload(offsets),
        .num_experts = c.num_experts,
        .max_rows = max_rows,
        .n = c.n,
        .k = c.k,
        .act_dtype = c.act};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.GroupedMatmul(p);
    return arena.DownloadAs(p.y, static_cast<size_t>(rows * c.n), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, GroupedMatmulTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(GroupedCases())), ParamName());

// ---------------------------------------------------------------------------------- MoeCombine

struct CombineCase {
  std::string name;
  int64_t num_tokens, top_k, hidden;
  DType act;
};

std::vector<CombineCase> CombineCases() {
  std::vector<CombineCase> cases;
  for (DType act : {DType::kF32, DType::kBF16}) {
    for (int64_t k : {1, 2}) {
      const std::string s = absl::StrCat("top", k, "_", DTypeLabel(act));
      cases.push_back({"empty_" + s, 0, k, 20, act});
      cases.push_back({"one_h37_" + s, 1, k, 37, act});
      cases.push_back({"t37_h20_" + s, 37, k, 20, act});
    }
  }
  cases.push_back({"large_T512_top2_h4096_bf16", 512, 2, 4096, DType::kBF16});
  return cases;
}

class MoeCombineTest : public ::testing::TestWithParam<BackendAndCase<CombineCase>> {};

TEST_P(MoeCombineTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const int64_t num_rows = c.num_tokens * c.top_k + 3;  // a few rows nobody reads
  const std::vector<float> expert_out = RandomValues(static_cast<size_t>(num_rows * c.hidden), 70);
  std::vector<int32_t> src(static_cast<size_t>(c.num_tokens * c.top_k));
  std::iota(src.begin(), src.end(), 0);
  std::shuffle(src.begin(), src.end(), std::mt19937(71));
  std::vector<float> weights(src.size());
  std::mt19937 rng(72);
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    float sum = 0.0f;
    for (int64_t j = 0; j < c.top_k; ++j)
      sum += (weights[t * c.top_k + j] = 0.1f + (rng() % 90) / 100.0f);
    for (int64_t j = 0; j < c.top_k; ++j) weights[t * c.top_k + j] /= sum;
  }
  Expected want(static_cast<size_t>(c.num_tokens * c.hidden));
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    for (int64_t h = 0; h < c.hidden; ++h) {
      double acc = 0.0, mag = 0.0;
      for (int64_t j = 0; j < c.top_k; ++j) {
        const double term = static_cast<double>(weights[t * c.top_k + j]) *
                            expert_out[src[t * c.top_k + j] * c.hidden + h];
        acc += term;
        mag += std::fabs(term);
      }
      want.value[t * c.hidden + h] = acc;
      want.magnitude[t * c.hidden + h] = mag;
    }
  }
  MoeCombineParams host{.num_tokens = c.num_tokens,
                        .top_k = c.top_k,
                        .hidden = c.hidden,
                        .num_expert_rows = num_rows,
                        .act_dtype = c.act};
  ASSERT_TRUE(ValidateIndices(host, src.data()).ok());
  CheckOp(*b, want, Tolerance{OutputRel(c.act), 4 * 5.96e-8}, [&](Backend& be) {
    DeviceArena arena(be);
    MoeCombineParams p = host;
    p.expert_out = arena.UploadAs(expert_out, c.act);
    p.src_rows = arena.Upload(src);
    p.weights = arena.Upload(weights);
    p.out = arena.Alloc(static_cast<size_t>(c.num_tokens * c.hidden) * DTypeSize(c.act));
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.MoeCombine(p);
    return arena.DownloadAs(p.out, static_cast<size_t>(c.num_tokens * c.hidden), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, MoeCombineTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(CombineCases())), ParamName());

}  // namespace
}  // namespace moeserve::kernels::testing
