// CPU reference kernels against naive float64 implementations written from the op definitions,
// on random inputs (fresh per shape) and on edge cases. These are the oracle the CUDA twins are
// compared with, so they must be right on their own.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"

namespace moeserve::kernels {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

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
  EXPECT_FALSE(Validate(p).ok());
  table[1] = 1;
  EXPECT_TRUE(Validate(p).ok());
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
  EXPECT_FALSE(Validate(GatherRowsParams{src.data(), bad.data(), dst.data(), 1, 3, 2}).ok());

  const std::vector<int32_t> src_rows = {0, 2, 1, 1};  // 2 tokens x top-2
  const std::vector<float> weights = {0.25f, 0.75f, 0.5f, 0.5f};
  std::vector<float> combined(4, NAN);
  MoeCombineParams cp{src.data(), src_rows.data(), weights.data(), combined.data(), 2, 2, 2, 3};
  ASSERT_TRUE(Validate(cp).ok());
  cpu::MoeCombine(cp);
  EXPECT_EQ(combined, (std::vector<float>{0.25f * 1 + 0.75f * 5, 0.25f * 2 + 0.75f * 6, 3, 4}));
}

}  // namespace
}  // namespace moeserve::kernels
