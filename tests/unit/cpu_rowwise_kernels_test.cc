// The vectorised, threaded row kernels of the CPU backend (rmsnorm, moe combine, gather, rope,
// greedy argmax): a row's bits do not depend on how many rows share the call or on the thread
// count, and they match float64 oracles / the sequential definition.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cpu/swiglu.h"
#include "tests/unit/test_vectors.h"

namespace moeserve::kernels {
namespace {

using test::RandomVector;
using test::SameBits;

TEST(CpuRowKernelsTest, RmsNormRowsAreTheSameAloneInABatchAndOnTwoThreads) {
  // 300 x 256 is above the threading threshold; hidden 250 leaves a lane tail.
  for (int64_t hidden : {256, 250}) {
    const int64_t rows = 300;
    const auto x = RandomVector(rows * hidden, 1, 3.0f);
    const auto res = RandomVector(rows * hidden, 2);
    const auto w = RandomVector(hidden, 3);
    std::vector<std::vector<float>> outs, sums;
    for (int threads : {1, 2}) {
      auto backend = MakeCpuBackend(threads);
      std::vector<float> out(x.size()), residual = res;
      backend->RmsNorm({x.data(), w.data(), DType::kF32, out.data(), rows, hidden, 1e-5f,
                        DType::kF32, residual.data()});
      outs.push_back(out);
      sums.push_back(residual);
    }
    EXPECT_TRUE(SameBits(outs[0].data(), outs[1].data(), outs[0].size()));
    EXPECT_TRUE(SameBits(sums[0].data(), sums[1].data(), sums[0].size()));
    double worst = 0;
    for (int64_t r : {int64_t{0}, int64_t{177}, rows - 1}) {
      // Alone, unfused.
      std::vector<float> s(hidden), out(hidden);
      for (int64_t h = 0; h < hidden; ++h) s[h] = res[r * hidden + h] + x[r * hidden + h];
      cpu::RmsNorm({s.data(), w.data(), DType::kF32, out.data(), 1, hidden, 1e-5f});
      EXPECT_TRUE(SameBits(out.data(), outs[0].data() + r * hidden, hidden)) << r;
      EXPECT_TRUE(SameBits(s.data(), sums[0].data() + r * hidden, hidden)) << r;
      double ss = 0;
      for (float v : s) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / hidden + 1e-5);
      for (int64_t h = 0; h < hidden; ++h) {
        worst = std::max(worst, std::fabs(out[h] - s[h] * inv * w[h]));
      }
    }
    EXPECT_LT(worst, 1e-5);
  }
}

// silu(g) * u with our exp: within a few ulp of float64 over the whole range (large gates of
// both signs, zeros, infinities), NaN propagated, and the vectorised row (every length, so every
// vector tail) bit for bit the scalar element function.
TEST(CpuRowKernelsTest, SwiGluMatchesFloat64AndTheScalarElementBitwise) {
  std::vector<float> gate, up;
  for (float g = -120.0f; g <= 120.0f; g += 0.0625f) {
    gate.push_back(g);
    up.push_back(1.0f - g / 64.0f);
  }
  const std::vector<float> random = RandomVector(1000, 3, 20.0f);
  for (float g : random) {
    gate.push_back(g);
    up.push_back(g / 3.0f);
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float g : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.5f, -88.5f, 1e30f, -1e30f}) {
    gate.push_back(g);
    up.push_back(1.5f);
  }
  std::vector<float> out(gate.size());
  cpu::SiluMulRow(gate.data(), up.data(), out.data(), static_cast<int64_t>(gate.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    // exp's ~2 ulp, then one rounding each for the add, divide and multiply; a gate below -88
    // gives -0 where the exact value is below 1e-35 in magnitude.
    const double tolerance = 8.0 * 0x1p-24 * std::fabs(want) + (g < -88.0 ? 1e-35 : 1e-45);
    EXPECT_NEAR(out[i], want, tolerance) << "gate " << gate[i] << " up " << up[i];
    const float one = cpu::SiluMul(gate[i], up[i]);
    EXPECT_TRUE(SameBits(&out[i], &one, 1)) << "gate " << gate[i];
  }
  // Every row length: the vector body and its tail give the element function's bits.
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<float> row(static_cast<size_t>(n));
    cpu::SiluMulRow(random.data(), random.data() + 100, row.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const float one =
          cpu::SiluMul(random[static_cast<size_t>(i)], random[static_cast<size_t>(100 + i)]);
      ASSERT_TRUE(SameBits(&row[static_cast<size_t>(i)], &one, 1)) << "n " << n << " i " << i;
    }
  }
  EXPECT_EQ(cpu::SiluMul(inf, 2.0f), inf);
  EXPECT_TRUE(std::isnan(cpu::SiluMul(-inf, 2.0f)));  // -inf / inf, as torch.nn.SiLU gives
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(cpu::SiluMul(nan, 1.0f)));
  EXPECT_TRUE(std::isnan(cpu::SiluMul(1.0f, nan)));
}

TEST(CpuRowKernelsTest, MoeCombineAndGatherMatchTheDefinitionOnAnyThreadCount) {
  const int64_t tokens = 800, top_k = 2, hidden = 200, expert_rows = tokens * top_k;
  const auto expert_out = RandomVector(expert_rows * hidden, 4);
  const auto weights = RandomVector(tokens * top_k, 5);
  std::vector<int32_t> src_rows(tokens * top_k);
  std::mt19937 rng(6);
  for (auto& r : src_rows) r = static_cast<int32_t>(rng() % expert_rows);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2}) {
    auto backend = MakeCpuBackend(threads);
    std::vector<float> out(tokens * hidden, NAN);
    backend->MoeCombine({expert_out.data(), src_rows.data(), weights.data(), out.data(), tokens,
                         top_k, hidden, expert_rows});
    outs.push_back(out);
  }
  EXPECT_TRUE(SameBits(outs[0].data(), outs[1].data(), outs[0].size()));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < hidden; ++h) {
      // fp32, slot order: w0 * x0 + w1 * x1, each product rounded.
      const float want = weights[t * 2] * expert_out[src_rows[t * 2] * hidden + h] +
                         weights[t * 2 + 1] * expert_out[src_rows[t * 2 + 1] * hidden + h];
      ASSERT_EQ(outs[0][t * hidden + h], want) << t << " " << h;
    }
  }
  // GatherRows (threaded above 2^18 elements): row i of dst is row rows[i] of src.
  std::vector<float> gathered(expert_rows * hidden);
  auto backend = MakeCpuBackend(2);
  backend->GatherRows({expert_out.data(), src_rows.data(), gathered.data(), tokens * top_k,
                       expert_rows, hidden, DType::kF32});
  for (int64_t i = 0; i < tokens * top_k; ++i) {
    ASSERT_TRUE(
        SameBits(gathered.data() + i * hidden, expert_out.data() + src_rows[i] * hidden, hidden));
  }
}

TEST(CpuRowKernelsTest, RopeTokensAreTheSameAloneAndInAThreadedBatch) {
  const int64_t tokens = 100, hq = 4, hkv = 2, d = 32;
  const auto q0 = RandomVector(tokens * hq * d, 7), k0 = RandomVector(tokens * hkv * d, 8);
  std::vector<int32_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<int32_t>(t * 37 % 5000);
  auto q = q0, k = k0;
  MakeCpuBackend(2)->Rope({q.data(), k.data(), pos.data(), tokens, hq, hkv, d, 1e6f});
  for (int64_t t : {int64_t{0}, int64_t{63}, tokens - 1}) {
    std::vector<float> q1(q0.begin() + t * hq * d, q0.begin() + (t + 1) * hq * d);
    std::vector<float> k1(k0.begin() + t * hkv * d, k0.begin() + (t + 1) * hkv * d);
    cpu::Rope({q1.data(), k1.data(), &pos[t], 1, hq, hkv, d, 1e6f});
    EXPECT_TRUE(SameBits(q1.data(), q.data() + t * hq * d, hq * d)) << t;
    EXPECT_TRUE(SameBits(k1.data(), k.data() + t * hkv * d, hkv * d)) << t;
  }
}

// The definition ArgMax keeps: the first index whose logit is larger than all before it.
int32_t ScanArgMax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

TEST(CpuRowKernelsTest, ArgMaxIsTheSequentialScanWithTiesNanAndInfinities) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::mt19937 rng(9);
  for (int64_t vocab : {1, 17, 64, 100, 32000}) {
    for (int trial = 0; trial < 40; ++trial) {
      // Few distinct values, so ties across lanes are common.
      std::vector<float> logits(vocab);
      for (float& x : logits) x = static_cast<float>(static_cast<int>(rng() % 7) - 3);
      const int kind = trial % 8;
      if (kind == 1) logits[rng() % vocab] = nan;
      if (kind == 2) logits[0] = nan;
      if (kind == 3) std::fill(logits.begin(), logits.end(), -inf);
      if (kind == 4) logits[rng() % vocab] = inf;
      if (kind == 5) {  // only zeros of both signs: the first zero wins
        for (float& x : logits) x = (rng() % 2) ? 0.0f : -0.0f;
      }
      if (kind == 6) {
        std::fill(logits.begin(), logits.end(), nan);
        logits[vocab - 1] = -inf;
      }
      if (kind == 7) logits[0] = -inf;
      ASSERT_EQ(cpu::ArgMax(logits.data(), vocab), ScanArgMax(logits.data(), vocab))
          << "vocab " << vocab << " trial " << trial;
    }
  }
}

}  // namespace
}  // namespace moeserve::kernels
