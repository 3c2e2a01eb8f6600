// CPU reference kernels against naive float64 implementations written from the op definitions,
// on random inputs (fresh per shape) and on edge cases. These are the oracle the CUDA twins are
// compared with, so they must be right on their own.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"
#include "parallel/moe/dispatch_plan.h"
#include "tests/unit/test_vectors.h"

namespace moeserve::kernels {
namespace {

using test::RandomVector;

// Stores `v` as dtype t; returns the bytes and (through `rounded`) the values actually stored.
std::vector<uint16_t> ToHalf(const std::vector<float>& v, DType t, std::vector<float>* rounded) {
  std::vector<uint16_t> out(v.size());
  rounded->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = t == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
    (*rounded)[i] = t == DType::kBF16 ? Bf16ToF32(out[i]) : F16ToF32(out[i]);
  }
  return out;
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down to 1.0).
  EXPECT_EQ(F32ToBf16(1.0f + 0x1.0p-8f), 0x3f80);
  EXPECT_EQ(F32ToBf16(1.0f + 0x1.8p-8f), 0x3f81);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
}

TEST(DTypeTest, F16ConversionsAreExactOnRepresentableValues) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0x1.0p-14f, 0x1.0p-24f, 1000.5f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(v)), v) << v;
  }
  EXPECT_EQ(F16ToF32(F32ToF16(1000.25f)), 1000.0f);  // halfway: ties to even
  EXPECT_EQ(F16ToF32(F32ToF16(1000.75f)), 1001.0f);
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);  // overflow -> inf
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
}

class MatmulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulTest, MatchesFloat64Reference) {
  const DType dtype = GetParam();
  struct Shape {
    int64_t m, n, k;
  };
  uint32_t seed = 1;
  for (Shape s : {Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{4, 33, 64}, Shape{17, 9, 131}}) {
    const auto x = RandomVector(s.m * s.k, seed++);
    const auto w_f32 = RandomVector(s.n * s.k, seed++);
    std::vector<float> w_vals = w_f32;
    std::vector<uint16_t> w_half;
    const void* w = w_f32.data();
    if (dtype != DType::kF32) {
      w_half = ToHalf(w_f32, dtype, &w_vals);
      w = w_half.data();
    }
    std::vector<float> y(s.m * s.n, NAN);
    MatmulParams p{x.data(), w, dtype, y.data(), s.m, s.n, s.k};
    ASSERT_TRUE(Validate(p).ok());
    cpu::Matmul(p);
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double ref = 0;
        for (int64_t t = 0; t < s.k; ++t) ref += double(x[i * s.k + t]) * w_vals[j * s.k + t];
        EXPECT_NEAR(y[i * s.n + j], ref, 1e-5 * (1 + std::sqrt(double(s.k))));
      }
    }
  }
}

TEST_P(MatmulTest, RowResultDoesNotDependOnBatch) {
  const DType dtype = GetParam();
  const int64_t n = 19, k = 77;
  const auto x = RandomVector(8 * k, 11);
  std::vector<float> w_vals;
  const auto w_f32 = RandomVector(n * k, 12);
  std::vector<uint16_t> w_half;
  const void* w = w_f32.data();
  if (dtype != DType::kF32) {
    w_half = ToHalf(w_f32, dtype, &w_vals);
    w = w_half.data();
  }
  std::vector<float> all(8 * n), one(n);
  cpu::Matmul({x.data(), w, dtype, all.data(), 8, n, k});
  for (int64_t r = 0; r < 8; ++r) {
    cpu::Matmul({x.data() + r * k, w, dtype, one.data(), 1, n, k});
    EXPECT_EQ(std::vector<float>(all.begin() + r * n, all.begin() + (r + 1) * n), one);
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, MatmulTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16));

TEST(MatmulTest, ValidateRejectsBadShapes) {
  float x = 0, y = 0;
  EXPECT_FALSE(Validate(MatmulParams{&x, &x, DType::kF32, &y, 1, 0, 1}).ok());
  EXPECT_FALSE(Validate(MatmulParams{&x, &x, DType::kI32, &y, 1, 1, 1}).ok());
  EXPECT_FALSE(Validate(MatmulParams{&x, &x, DType::kF32, &x, 1, 1, 1}).ok());  // y aliases x
}

TEST(RmsNormTest, MatchesFloat64Reference) {
  const int64_t rows = 5, hidden = 72;
  const auto x = RandomVector(rows * hidden, 3, 4.0f);
  const auto w_f32 = RandomVector(hidden, 4);
  std::vector<float> w_vals;
  const auto w = ToHalf(w_f32, DType::kBF16, &w_vals);
  std::vector<float> out(rows * hidden);
  RmsNormParams p{x.data(), w.data(), DType::kBF16, out.data(), rows, hidden, 1e-6f};
  ASSERT_TRUE(Validate(p).ok());
  cpu::RmsNorm(p);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t h = 0; h < hidden; ++h) ss += double(x[r * hidden + h]) * x[r * hidden + h];
    const double inv = 1.0 / std::sqrt(ss / hidden + 1e-6);
    for (int64_t h = 0; h < hidden; ++h) {
      EXPECT_NEAR(out[r * hidden + h], x[r * hidden + h] * inv * w_vals[h], 1e-5);
    }
  }
}

TEST(RopeTest, MatchesRotateHalfReference) {
  const int64_t tokens = 4, hq = 3, hkv = 1, d = 20;
  const double theta = 10000.0;
  auto q = RandomVector(tokens * hq * d, 5), k = RandomVector(tokens * hkv * d, 6);
  const auto q0 = q, k0 = k;
  const std::vector<int32_t> pos = {0, 1, 17, 4095};
  RopeParams p{q.data(), k.data(), pos.data(), tokens, hq, hkv, d, float(theta)};
  ASSERT_TRUE(Validate(p).ok());
  cpu::Rope(p);
  auto check = [&](const std::vector<float>& in, const std::vector<float>& out, int64_t heads) {
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* a = in.data() + (t * heads + h) * d;
        const float* b = out.data() + (t * heads + h) * d;
        for (int64_t i = 0; i < d / 2; ++i) {
          const double ang = pos[t] / std::pow(theta, 2.0 * i / d);
          EXPECT_NEAR(b[i], a[i] * std::cos(ang) - a[i + d / 2] * std::sin(ang), 2e-4);
          EXPECT_NEAR(b[i + d / 2], a[i + d / 2] * std::cos(ang) + a[i] * std::sin(ang), 2e-4);
        }
      }
    }
  };
  check(q0, q, hq);
  check(k0, k, hkv);
  // Position 0 is the identity.
  for (int64_t i = 0; i < hq * d; ++i) EXPECT_EQ(q[i], q0[i]);
}

// Dense causal attention with optional window, float64, over contiguous K/V [ctx, hkv, d].
std::vector<double> DenseAttention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, int64_t n_q, int64_t ctx,
                                   int64_t hq, int64_t hkv, int64_t d, int64_t window) {
  std::vector<double> out(n_q * hq * d, 0.0);
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t pos = ctx - n_q + i;
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t g = h / (hq / hkv);
      std::vector<double> s;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j <= pos; ++j) {
        if (window > 0 && pos - j >= window) continue;
        double dot = 0;
        for (int64_t t = 0; t < d; ++t)
          dot += double(q[(i * hq + h) * d + t]) * k[(j * hkv + g) * d + t];
        s.push_back(dot / std::sqrt(double(d)));
        keys.push_back(j);
      }
      double mx = -1e300, sum = 0;
      for (double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (size_t a = 0; a < keys.size(); ++a) {
        for (int64_t t = 0; t < d; ++t)
          out[(i * hq + h) * d + t] += s[a] / sum * v[(keys[a] * hkv + g) * d + t];
      }
    }
  }
  return out;
}

TEST(PagedAttentionTest, MatchesDenseReferenceWithScatteredBlocksGqaAndWindow) {
  const int64_t hq = 4, hkv = 2, d = 8, block = 3, num_blocks = 16;
  // Two sequences: 5 new tokens on 2 cached (prefill chunk) and 1 new on 9 cached (decode).
  const std::vector<int64_t> ctx = {7, 10}, n_new = {5, 1};
  for (int64_t window : {0, 4}) {
    std::vector<float> k_cache(num_blocks * block * hkv * d, NAN), v_cache = k_cache;
    // Blocks are handed out in a scrambled order to exercise the table lookups.
    const std::vector<std::vector<int32_t>> tables = {{9, 2, 14}, {5, 0, 11, 7}};
    std::vector<int32_t> table_flat;
    std::vector<float> q_all;
    std::vector<std::vector<double>> expected;
    for (int s = 0; s < 2; ++s) {
      const auto k = RandomVector(ctx[s] * hkv * d, 20 + s),
                 v = RandomVector(ctx[s] * hkv * d, 30 + s);
      const auto q = RandomVector(n_new[s] * hq * d, 40 + s);
      for (int64_t j = 0; j < ctx[s]; ++j) {
        const int64_t slot = tables[s][j / block] * block + j % block;
        std::copy(k.begin() + j * hkv * d, k.begin() + (j + 1) * hkv * d,
                  k_cache.begin() + slot * hkv * d);
        std::copy(v.begin() + j * hkv * d, v.begin() + (j + 1) * hkv * d,
                  v_cache.begin() + slot * hkv * d);
      }
      std::vector<int32_t> t = tables[s];
      t.resize(4, -1);
      table_flat.insert(table_flat.end(), t.begin(), t.end());
      q_all.insert(q_all.end(), q.begin(), q.end());
      expected.push_back(DenseAttention(q, k, v, n_new[s], ctx[s], hq, hkv, d, window));
    }
    const std::vector<int32_t> query_start = {0, 5, 6}, context_lens = {7, 10};
    std::vector<float> out(6 * hq * d, NAN);
    PagedAttentionParams p;
    p.q = q_all.data();
    p.out = out.data();
    p.k_cache = k_cache.data();
    p.v_cache = v_cache.data();
    p.block_tables = table_flat.data();
    p.query_start = query_start.data();
    p.context_lens = context_lens.data();
    p.num_seqs = 2;
    p.num_tokens = 6;
    p.num_q_heads = hq;
    p.num_kv_heads = hkv;
    p.head_dim = d;
    p.block_size = block;
    p.max_blocks_per_seq = 4;
    p.num_blocks = num_blocks;
    p.sliding_window = window;
    p.scale = 1.0f / std::sqrt(float(d));
    ASSERT_TRUE(Validate(p).ok());
    ASSERT_TRUE(
        ValidateIndices(p, table_flat.data(), query_start.data(), context_lens.data()).ok());
    cpu::PagedAttention(p);
    for (int64_t i = 0; i < 5 * hq * d; ++i) EXPECT_NEAR(out[i], expected[0][i], 1e-5) << window;
    for (int64_t i = 0; i < hq * d; ++i) EXPECT_NEAR(out[5 * hq * d + i], expected[1][i], 1e-5);
  }
}

TEST(PagedAttentionTest, ValidateRejectsBadTables) {
  float buf[64] = {};
  const std::vector<int32_t> query_start = {0, 1}, context_lens = {5};
  std::vector<int32_t> table = {0, 99};  // block 99 does not exist
  PagedAttentionParams p;
  p.q = p.out = buf;
  p.k_cache = p.v_cache = buf;
  p.block_tables = table.data();
  p.query_start = query_start.data();
  p.context_lens = context_lens.data();
  p.num_seqs = 1;
  p.num_tokens = 1;
  p.num_q_heads = p.num_kv_heads = 1;
  p.head_dim = 2;
  p.block_size = 4;
  p.max_blocks_per_seq = 2;
  p.num_blocks = 4;
  ASSERT_TRUE(Validate(p).ok());  // sizes and pointers; the tables are checked on host copies
  auto indices = [&] {
    return ValidateIndices(p, table.data(), query_start.data(), context_lens.data());
  };
  EXPECT_FALSE(indices().ok());
  table[1] = 1;
  EXPECT_TRUE(indices().ok());
  p.max_context_len = 4;  // an upper bound below the real context length
  EXPECT_FALSE(indices().ok());
  p.max_context_len = 0;
  p.num_q_heads = 3;
  p.num_kv_heads = 2;
  EXPECT_FALSE(Validate(p).ok());
}

TEST(RouterTest, MatchesSoftmaxOverAllThenTopKRenormalised) {
  const int64_t tokens = 6, experts = 8, top_k = 2;
  const auto logits = RandomVector(tokens * experts, 7, 3.0f);
  std::vector<int32_t> ids(tokens * top_k);
  std::vector<float> w(tokens * top_k);
  RouterTopKParams p{logits.data(), nullptr, ids.data(), w.data(), tokens, experts, top_k};
  ASSERT_TRUE(Validate(p).ok());
  cpu::RouterTopK(p);
  for (int64_t t = 0; t < tokens; ++t) {
    // Hugging Face: probs = softmax(all logits); top-2 of probs; divide by their sum.
    std::vector<double> prob(experts);
    double mx = -1e300, sum = 0;
    for (int64_t e = 0; e < experts; ++e) mx = std::max(mx, double(logits[t * experts + e]));
    for (int64_t e = 0; e < experts; ++e) sum += prob[e] = std::exp(logits[t * experts + e] - mx);
    std::vector<int64_t> order(experts);
    for (int64_t e = 0; e < experts; ++e) order[e] = e;
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
    const int64_t lo = std::min(order[0], order[1]), hi = std::max(order[0], order[1]);
    EXPECT_EQ(ids[t * 2], lo);  // ascending expert order
    EXPECT_EQ(ids[t * 2 + 1], hi);
    const double denom = prob[order[0]] + prob[order[1]];
    EXPECT_NEAR(w[t * 2], prob[lo] / denom, 1e-6);
    EXPECT_NEAR(w[t * 2 + 1], prob[hi] / denom, 1e-6);
  }
}

TEST(RouterTest, TiesGoToLowerIndexAndBiasShiftsChoice) {
  const std::vector<float> logits = {1, 5, 5, 5};
  std::vector<int32_t> ids(2);
  std::vector<float> w(2);
  cpu::RouterTopK({logits.data(), nullptr, ids.data(), w.data(), 1, 4, 2});
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2}));
  EXPECT_FLOAT_EQ(w[0], 0.5f);
  const std::vector<float> bias = {10, 0, 0, 0};
  cpu::RouterTopK({logits.data(), bias.data(), ids.data(), w.data(), 1, 4, 2});
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1}));
  EXPECT_GT(w[0], w[1]);
}

TEST(MoeOpsTest, SwiGluGatherAndCombine) {
  const std::vector<float> gate = {-2, 0, 3}, up = {1, 2, -1};
  std::vector<float> out(3);
  cpu::SwiGlu({gate.data(), up.data(), out.data(), 3});
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(out[i], gate[i] / (1 + std::exp(-double(gate[i]))) * up[i], 1e-6);
  }
  const std::vector<float> src = {1, 2, 3, 4, 5, 6};  // 3 rows of 2
  const std::vector<int32_t> rows = {2, 0, 2};
  std::vector<float> dst(6);
  GatherRowsParams gp{src.data(), rows.data(), dst.data(), 3, 3, 2};
  ASSERT_TRUE(Validate(gp).ok());
  cpu::GatherRows(gp);
  EXPECT_EQ(dst, (std::vector<float>{5, 6, 1, 2, 5, 6}));
  const std::vector<int32_t> bad = {3};
  const GatherRowsParams bad_gather{src.data(), bad.data(), dst.data(), 1, 3, 2};
  EXPECT_TRUE(Validate(bad_gather).ok());  // sizes only: the index lives on the device
  EXPECT_FALSE(ValidateIndices(bad_gather, bad.data()).ok());

  const std::vector<int32_t> src_rows = {0, 2, 1, 1};  // 2 tokens x top-2
  const std::vector<float> weights = {0.25f, 0.75f, 0.5f, 0.5f};
  std::vector<float> combined(4, NAN);
  MoeCombineParams cp{src.data(), src_rows.data(), weights.data(), combined.data(), 2, 2, 2, 3};
  ASSERT_TRUE(Validate(cp).ok());
  ASSERT_TRUE(ValidateIndices(cp, src_rows.data()).ok());
  const std::vector<int32_t> bad_rows = {0, 3, 1, 1};
  EXPECT_FALSE(ValidateIndices(cp, bad_rows.data()).ok());
  cpu::MoeCombine(cp);
  EXPECT_EQ(combined, (std::vector<float>{0.25f * 1 + 0.75f * 5, 0.25f * 2 + 0.75f * 6, 3, 4}));
}

// ---- Device-sized MoE ops, the fused residual norm, bf16 activations and the bf16 KV cache.

// Bitwise equality of float vectors (NaN-safe, distinguishes -0).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return out;
}
std::vector<float> FromBf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToF32(v[i]);
  return out;
}
std::vector<float> RoundedToBf16(const std::vector<float>& v) { return FromBf16(ToBf16(v)); }

// Router-like choices: top_k distinct experts per token, ascending, skewed towards low ids.
std::vector<int32_t> RandomChoices(int64_t tokens, int64_t top_k, int64_t experts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> all(experts);
    for (int64_t e = 0; e < experts; ++e) all[e] = static_cast<int32_t>(e);
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int32_t> chosen(all.begin(), all.begin() + top_k);
    std::sort(chosen.begin(), chosen.end());
    ids.insert(ids.end(), chosen.begin(), chosen.end());
  }
  return ids;
}

TEST(MoeAlignTest, MatchesDispatchPlanAndAccumulatesCounts) {
  for (int64_t tokens : {0, 1, 7, 33}) {
    const int64_t top_k = 2, experts = 8;
    const auto ids = RandomChoices(tokens, top_k, experts, 100 + tokens);
    const parallel::DispatchPlan plan = parallel::BuildDispatchPlan(ids, tokens, top_k, experts);
    std::vector<int32_t> offsets(experts + 1, -1), permuted(tokens * top_k, -1),
        combine(tokens * top_k, -1);
    std::vector<int64_t> counts(experts, 5);  // accumulated into, not overwritten
    MoeAlignParams p{ids.data(),    offsets.data(), permuted.data(), combine.data(),
                     counts.data(), tokens,         top_k,           experts};
    ASSERT_TRUE(Validate(p).ok());
    cpu::MoeAlign(p);
    EXPECT_EQ(offsets, plan.expert_offsets);
    EXPECT_EQ(permuted, plan.permuted_token);
    EXPECT_EQ(combine, plan.combine_rows);
    for (int64_t e = 0; e < experts; ++e) EXPECT_EQ(counts[e], 5 + plan.tokens_for_expert(e));
  }
  int32_t dummy = 0;
  EXPECT_FALSE(Validate(MoeAlignParams{&dummy, &dummy, &dummy, &dummy, nullptr, 1, 3, 2}).ok());
}

// Rows grouped by expert for GroupedMatmul: weights [experts] of [n, k] bf16, x [rows, k].
struct GroupedCase {
  int64_t n = 24, k = 40, experts = 4;
  std::vector<int32_t> offsets = {0, 3, 3, 10, 11};  // expert 1 has no rows
  std::vector<std::vector<uint16_t>> w, w_up;
  std::vector<const void*> w_ptrs, w_up_ptrs;
  std::vector<float> x;

  GroupedCase() {
    for (int64_t e = 0; e < experts; ++e) {
      w.push_back(ToBf16(RandomVector(n * k, 200 + e)));
      w_up.push_back(ToBf16(RandomVector(n * k, 300 + e)));
    }
    for (int64_t e = 0; e < experts; ++e) {
      w_ptrs.push_back(w[e].data());
      w_up_ptrs.push_back(w_up[e].data());
    }
    x = RandomVector(rows() * k, 400);
  }
  int64_t rows() const { return offsets.back(); }
  GroupedMatmulParams Params(const void* xp, void* y, DType act, bool swiglu) const {
    GroupedMatmulParams p;
    p.x = xp;
    p.w = w_ptrs.data();
    p.w_up = swiglu ? w_up_ptrs.data() : nullptr;
    p.w_dtype = DType::kBF16;
    p.y = y;
    p.expert_offsets = offsets.data();
    p.num_experts = experts;
    p.max_rows = rows();
    p.n = n;
    p.k = k;
    p.act_dtype = act;
    return p;
  }
};

TEST(GroupedMatmulTest, PlainAndSwiGluAreBitwiseThePerExpertOps) {
  const GroupedCase c;
  std::vector<float> plain(c.rows() * c.n, NAN), fused(c.rows() * c.n, NAN);
  ASSERT_TRUE(Validate(c.Params(c.x.data(), plain.data(), DType::kF32, false)).ok());
  cpu::GroupedMatmul(c.Params(c.x.data(), plain.data(), DType::kF32, false));
  cpu::GroupedMatmul(c.Params(c.x.data(), fused.data(), DType::kF32, true));
  std::vector<float> want_plain(c.rows() * c.n), want_fused(c.rows() * c.n);
  for (int64_t e = 0; e < c.experts; ++e) {
    const int64_t r0 = c.offsets[e], rows = c.offsets[e + 1] - r0;
    if (rows == 0) continue;
    const float* xe = c.x.data() + r0 * c.k;
    cpu::Matmul({xe, c.w[e].data(), DType::kBF16, want_plain.data() + r0 * c.n, rows, c.n, c.k});
    std::vector<float> gate(rows * c.n), up(rows * c.n);
    cpu::Matmul({xe, c.w[e].data(), DType::kBF16, gate.data(), rows, c.n, c.k});
    cpu::Matmul({xe, c.w_up[e].data(), DType::kBF16, up.data(), rows, c.n, c.k});
    cpu::SwiGlu({gate.data(), up.data(), gate.data(), rows * c.n});
    std::copy(gate.begin(), gate.end(), want_fused.begin() + r0 * c.n);
  }
  EXPECT_TRUE(SameBits(plain, want_plain));
  EXPECT_TRUE(SameBits(fused, want_fused));
}

TEST(GroupedMatmulTest, AnExpertWithoutWeightsWritesNothing) {
  GroupedCase c;
  c.w_ptrs[1] = nullptr;  // no rows: fine
  c.w_ptrs[2] = nullptr;  // rows 3..9: a caller error; the kernel must not touch them
  std::vector<float> y(c.rows() * c.n, NAN);
  cpu::GroupedMatmul(c.Params(c.x.data(), y.data(), DType::kF32, false));
  for (int64_t i = 3 * c.n; i < 10 * c.n; ++i) ASSERT_TRUE(std::isnan(y[i])) << i;
  for (int64_t i = 0; i < 3 * c.n; ++i) ASSERT_FALSE(std::isnan(y[i])) << i;
}

TEST(RmsNormTest, FusedResidualIsBitwiseAddThenNorm) {
  const int64_t rows = 3, hidden = 50;
  const auto w = ToBf16(RandomVector(hidden, 8));
  for (DType act : {DType::kF32, DType::kBF16}) {
    const auto x_f = RandomVector(rows * hidden, 9, 2.0f), r_f = RandomVector(rows * hidden, 10);
    // The same values in the activation dtype's storage.
    auto store = [&](const std::vector<float>& v) {
      std::vector<uint8_t> b(v.size() * DTypeSize(act));
      if (act == DType::kF32) {
        std::memcpy(b.data(), v.data(), b.size());
      } else {
        const auto h = ToBf16(v);
        std::memcpy(b.data(), h.data(), b.size());
      }
      return b;
    };
    auto x = store(x_f), residual = store(r_f);
    auto x2 = x, residual2 = residual;
    std::vector<uint8_t> out(x.size()), out2(x.size());
    RmsNormParams fused{x.data(), w.data(), DType::kBF16, out.data(),     rows,
                        hidden,   1e-5f,    act,          residual.data()};
    ASSERT_TRUE(Validate(fused).ok());
    cpu::RmsNorm(fused);
    cpu::AddInPlace({residual2.data(), x2.data(), rows * hidden, act});
    cpu::RmsNorm({residual2.data(), w.data(), DType::kBF16, out2.data(), rows, hidden, 1e-5f, act});
    EXPECT_EQ(residual, residual2) << DTypeName(act);
    EXPECT_EQ(out, out2) << DTypeName(act);
    fused.residual = fused.out;  // aliasing the output is refused
    EXPECT_FALSE(Validate(fused).ok());
  }
}

// bf16 activations compute in fp32 and round once: each op on bf16 inputs is the fp32 op on the
// same (bf16-representable) values, rounded, within a couple of bf16 ulps.
void ExpectNearBf16(const std::vector<uint16_t>& got, const std::vector<float>& want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(Bf16ToF32(got[i]), want[i], tol * (1.0f + std::fabs(want[i]))) << i;
  }
}

TEST(Bf16ActivationTest, OpsMatchTheFp32PathRounded) {
  const int64_t m = 5, n = 13, k = 48;
  const auto x = RoundedToBf16(RandomVector(m * k, 50));
  const auto x_bf = ToBf16(x);
  const auto w = ToBf16(RandomVector(n * k, 51));
  // Matmul, bf16 in and out; and fp32 logits from bf16 activations.
  std::vector<float> y32(m * n);
  cpu::Matmul({x.data(), w.data(), DType::kBF16, y32.data(), m, n, k});
  std::vector<uint16_t> y_bf(m * n);
  cpu::Matmul(
      {x_bf.data(), w.data(), DType::kBF16, y_bf.data(), m, n, k, DType::kBF16, DType::kBF16});
  EXPECT_EQ(y_bf, ToBf16(y32));  // exactly the fp32 result rounded once
  std::vector<float> logits(m * n);
  cpu::Matmul(
      {x_bf.data(), w.data(), DType::kBF16, logits.data(), m, n, k, DType::kBF16, DType::kF32});
  EXPECT_TRUE(SameBits(logits, y32));

  // RmsNorm, Rope, SwiGlu, MoeCombine, Embedding, GatherRows, GroupedMatmul on bf16.
  std::vector<float> norm32(m * k);
  cpu::RmsNorm({x.data(), w.data(), DType::kBF16, norm32.data(), m, k, 1e-5f});
  std::vector<uint16_t> norm_bf(m * k);
  cpu::RmsNorm({x_bf.data(), w.data(), DType::kBF16, norm_bf.data(), m, k, 1e-5f, DType::kBF16});
  EXPECT_EQ(norm_bf, ToBf16(norm32));

  auto q32 = x, k32 = x;
  auto q_bf = x_bf, k_bf = x_bf;
  const std::vector<int32_t> pos = {0, 3, 9, 100, 7000};
  cpu::Rope({q32.data(), k32.data(), pos.data(), m, 2, 2, k / 2, 1e6f});
  cpu::Rope({q_bf.data(), k_bf.data(), pos.data(), m, 2, 2, k / 2, 1e6f, DType::kBF16});
  EXPECT_EQ(q_bf, ToBf16(q32));

  std::vector<float> act32(m * k);
  cpu::SwiGlu({x.data(), norm32.data(), act32.data(), m * k});
  const auto norm_r = FromBf16(norm_bf);
  std::vector<float> act_ref(m * k);
  cpu::SwiGlu({x.data(), norm_r.data(), act_ref.data(), m * k});
  std::vector<uint16_t> act_bf(m * k);
  cpu::SwiGlu({x_bf.data(), norm_bf.data(), act_bf.data(), m * k, DType::kBF16});
  EXPECT_EQ(act_bf, ToBf16(act_ref));

  const std::vector<int32_t> src_rows = {4, 1, 0, 2};
  const std::vector<float> cw = {0.3f, 0.7f, 0.6f, 0.4f};
  std::vector<float> comb32(2 * k);
  cpu::MoeCombine({x.data(), src_rows.data(), cw.data(), comb32.data(), 2, 2, k, m});
  std::vector<uint16_t> comb_bf(2 * k);
  cpu::MoeCombine(
      {x_bf.data(), src_rows.data(), cw.data(), comb_bf.data(), 2, 2, k, m, DType::kBF16});
  EXPECT_EQ(comb_bf, ToBf16(comb32));

  const std::vector<int32_t> ids = {2, 0, 99};  // 99: out of range -> zero row
  std::vector<uint16_t> emb(3 * k, 0xffff);
  EmbeddingParams ep{ids.data(), w.data(), DType::kBF16, emb.data(), DType::kBF16, 3, n, k};
  ASSERT_TRUE(Validate(ep).ok());
  cpu::Embedding(ep);
  EXPECT_EQ(std::vector<uint16_t>(emb.begin(), emb.begin() + k),
            std::vector<uint16_t>(w.begin() + 2 * k, w.begin() + 3 * k));
  for (int64_t h = 0; h < k; ++h) EXPECT_EQ(Bf16ToF32(emb[2 * k + h]), 0.0f);

  const GroupedCase c;
  const auto gx = RoundedToBf16(c.x);
  const auto gx_bf = ToBf16(gx);
  std::vector<float> g32(c.rows() * c.n);
  std::vector<uint16_t> g_bf(c.rows() * c.n);
  cpu::GroupedMatmul(c.Params(gx.data(), g32.data(), DType::kF32, true));
  cpu::GroupedMatmul(c.Params(gx_bf.data(), g_bf.data(), DType::kBF16, true));
  EXPECT_EQ(g_bf, ToBf16(g32));  // fused: silu(gate) * up in fp32, one rounding
  ExpectNearBf16(g_bf, g32, 1.0f / 128);

  EXPECT_FALSE(Validate(SwiGluParams{x.data(), x.data(), act32.data(), 1, DType::kF16}).ok());
}

TEST(KvCacheDTypeTest, Bf16CacheIsTheFp32CacheOfRoundedValuesAndNegativeSlotsAreSkipped) {
  const int64_t hq = 4, hkv = 2, d = 8, block = 4, num_blocks = 4, tokens = 6;
  const int64_t row = hkv * d;
  const auto k = RandomVector(tokens * row, 60), v = RandomVector(tokens * row, 61);
  const std::vector<int64_t> slots = {5, 6, -1, 7, 8, 9};  // token 2 is padding
  std::vector<float> k32(num_blocks * block * row, 0.0f), v32 = k32;
  std::vector<uint16_t> k16(k32.size(), 0), v16(k32.size(), 0);
  KvWriteParams w32{k.data(), v.data(), k32.data(), v32.data(),        slots.data(),
                    tokens,   hkv,      d,          num_blocks * block};
  ASSERT_TRUE(Validate(w32).ok());
  ASSERT_TRUE(ValidateIndices(w32, slots.data()).ok());
  cpu::KvWrite(w32);
  KvWriteParams w16 = w32;
  w16.k_cache = k16.data();
  w16.v_cache = v16.data();
  w16.kv_dtype = DType::kBF16;
  cpu::KvWrite(w16);
  EXPECT_EQ(k16, ToBf16(k32));
  EXPECT_EQ(v16, ToBf16(v32));
  for (int64_t i = 0; i < row; ++i) EXPECT_EQ(k32[4 * row + i], 0.0f);  // slot 4 untouched
  const std::vector<int64_t> past_end = {16};
  EXPECT_FALSE(ValidateIndices(w32, past_end.data()).ok());

  // Attention over the bf16 cache == attention over an fp32 cache of the rounded values.
  const auto k32r = RoundedToBf16(k32), v32r = RoundedToBf16(v32);
  const auto q = RandomVector(2 * hq * d, 62);
  const std::vector<int32_t> table = {1, 2, 3, 0}, query_start = {0, 2}, context_lens = {5};
  PagedAttentionParams p;
  p.q = q.data();
  p.k_cache = k32r.data();
  p.v_cache = v32r.data();
  p.block_tables = table.data();
  p.query_start = query_start.data();
  p.context_lens = context_lens.data();
  p.num_seqs = 1;
  p.num_tokens = 2;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.head_dim = d;
  p.block_size = block;
  p.max_blocks_per_seq = 4;
  p.num_blocks = num_blocks;
  p.scale = 0.3f;
  std::vector<float> out32(2 * hq * d), out16(2 * hq * d);
  p.out = out32.data();
  cpu::PagedAttention(p);
  p.k_cache = k16.data();
  p.v_cache = v16.data();
  p.kv_dtype = DType::kBF16;
  p.out = out16.data();
  ASSERT_TRUE(Validate(p).ok());
  cpu::PagedAttention(p);
  EXPECT_TRUE(SameBits(out32, out16));
}

TEST(CpuBackendTest, MemoryCopiesEventsAndNoCuda) {
  auto backend = MakeCpuBackend(1);
  EXPECT_EQ(backend->activation_dtype(), DType::kF32);
  EXPECT_EQ(backend->kv_dtype(), DType::kF32);
  EXPECT_NE(backend->Describe().find("cpu"), std::string::npos);
  auto a = backend->Allocate(64);
  auto b = backend->AllocateScratch(64);
  auto h = backend->AllocateHost(64);
  ASSERT_TRUE(a.ok() && b.ok() && h.ok());
  std::memset(h->data(), 7, 64);
  ASSERT_TRUE(backend->CopyToDevice(a->data(), h->data(), 64).ok());
  ASSERT_TRUE(backend->CopyOnDeviceAsync(b->data(), a->data(), 64).ok());
  ASSERT_TRUE(backend->MemsetAsync(a->data(), 0, 64).ok());
  std::vector<uint8_t> back(64);
  ASSERT_TRUE(backend->CopyToHost(back.data(), b->data(), 64).ok());
  EXPECT_EQ(back, std::vector<uint8_t>(64, 7));
  auto event = backend->CreateEvent();
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE(backend->RecordEvent(**event).ok());
  EXPECT_TRUE(backend->WaitEvent(**event).ok());
  auto info = backend->MemoryInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_GT(info->total_bytes, 0u);
  EXPECT_LE(info->free_bytes, info->total_bytes);
  EXPECT_FALSE(backend->SupportsGraphs());
  EXPECT_EQ(backend->BeginCapture().code(), absl::StatusCode::kUnimplemented);
  // A CPU-only build links a MakeCudaBackend that says so.
  if (!MakeCudaBackend(0).ok()) SUCCEED();
}

}  // namespace
}  // namespace moeserve::kernels
