// Backend-ops harness, dense ops: Embedding, RmsNorm, Rope, Matmul, AddInPlace, SwiGlu, on every
// backend present, against the double-precision oracles below and (for CUDA) the CPU reference.
// See backend_ops_harness.h; attention is in backend_ops_attention_test.cc, the MoE ops in
// backend_ops_moe_test.cc, batch invariance / memory / graphs in backend_contract_test.cc.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/gpu/backend_ops_harness.h"

namespace moeserve::kernels::testing {
namespace {

using ::testing::Combine;
using ::testing::ValuesIn;

// ---------------------------------------------------------------------------------- Embedding

struct EmbeddingCase {
  std::string name;
  int64_t num_tokens, vocab, hidden;
  DType table_dtype, out_dtype;
  bool bad_ids = false;  // include ids outside [0, vocab): they must give zero rows
};

std::vector<EmbeddingCase> EmbeddingCases() {
  std::vector<EmbeddingCase> cases;
  for (DType table : {DType::kBF16, DType::kF32}) {
    for (DType out : {DType::kBF16, DType::kF32}) {
      const std::string dt = absl::StrCat(DTypeLabel(table), "_to_", DTypeLabel(out));
      cases.push_back({"empty_" + dt, 0, 50, 20, table, out});
      cases.push_back({"one_" + dt, 1, 50, 37, table, out});
      cases.push_back({"seven_badids_" + dt, 7, 100, 20, table, out, true});
    }
  }
  cases.push_back({"large_T512_h4096", 512, 1000, 4096, DType::kBF16, DType::kBF16});
  return cases;
}

class EmbeddingTest : public ::testing::TestWithParam<BackendAndCase<EmbeddingCase>> {};

TEST_P(EmbeddingTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<float> table = RandomValues(static_cast<size_t>(c.vocab * c.hidden), 1);
  std::vector<int32_t> ids(static_cast<size_t>(c.num_tokens));
  std::mt19937 rng(2);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % c.vocab);
  if (c.bad_ids) {
    ids[1] = -1;
    ids[3] = static_cast<int32_t>(c.vocab);
  }
  Expected want(static_cast<size_t>(c.num_tokens * c.hidden));
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    for (int64_t h = 0; h < c.hidden; ++h) {
      const bool valid = ids[t] >= 0 && ids[t] < c.vocab;
      const double v = valid ? table[ids[t] * c.hidden + h] : 0.0;
      want.value[t * c.hidden + h] = v;
      want.magnitude[t * c.hidden + h] = std::fabs(v);
    }
  }
  CheckOp(*b, want, Tolerance{0.0, 0.0}, [&](Backend& be) {
    DeviceArena arena(be);
    EmbeddingParams p{
        .ids = arena.Upload(ids),
        .table = arena.UploadAs(table, c.table_dtype),
        .table_dtype = c.table_dtype,
        .out = arena.Alloc(static_cast<size_t>(c.num_tokens * c.hidden) * DTypeSize(c.out_dtype)),
        .out_dtype = c.out_dtype,
        .num_tokens = c.num_tokens,
        .vocab = c.vocab,
        .hidden = c.hidden};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.Embedding(p);
    return arena.DownloadAs(p.out, static_cast<size_t>(c.num_tokens * c.hidden), c.out_dtype);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, EmbeddingTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(EmbeddingCases())),
                         ParamName());

// ---------------------------------------------------------------------------------- RmsNorm

struct RmsNormCase {
  std::string name;
  int64_t rows, hidden;
  DType act, weight;
  bool residual = false;
  bool out_aliases_x = false;
};

std::vector<RmsNormCase> RmsNormCases() {
  std::vector<RmsNormCase> cases;
  for (int64_t rows : {0, 1, 7}) {
    for (int64_t hidden : {20, 37, 4096}) {
      for (DType act : {DType::kF32, DType::kBF16}) {
        for (bool residual : {false, true}) {
          const DType weight = hidden == 37 ? DType::kF32 : DType::kBF16;
          cases.push_back({absl::StrCat("rows", rows, "_h", hidden, "_", DTypeLabel(act), "_w",
                                        DTypeLabel(weight), residual ? "_residual" : ""),
                           rows, hidden, act, weight, residual});
        }
      }
    }
  }
  cases.push_back({"alias_rows7_h37_bf16", 7, 37, DType::kBF16, DType::kBF16, false, true});
  cases.push_back({"alias_residual_rows3_h20_f32", 3, 20, DType::kF32, DType::kBF16, true, true});
  cases.push_back({"large_T512_h4096_bf16_residual", 512, 4096, DType::kBF16, DType::kBF16, true});
  return cases;
}

class RmsNormTest : public ::testing::TestWithParam<BackendAndCase<RmsNormCase>> {};

TEST_P(RmsNormTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const size_t n = static_cast<size_t>(c.rows * c.hidden);
  const std::vector<float> x = RandomValues(n, 3, 2.0f);
  const std::vector<float> res = RandomValues(n, 4, 2.0f);
  std::vector<float> w = RandomValues(static_cast<size_t>(c.hidden), 5, 0.2f);
  for (float& v : w) v = RoundTo(1.0f + v, DType::kBF16);
  const float eps = 1e-5f;

  // Output rows first, then (with a residual) the updated residual rows.
  Expected want(c.residual ? 2 * n : n);
  for (int64_t r = 0; r < c.rows; ++r) {
    std::vector<double> s(static_cast<size_t>(c.hidden));
    double sum_sq = 0.0;
    for (int64_t h = 0; h < c.hidden; ++h) {
      const size_t i = static_cast<size_t>(r * c.hidden + h);
      // The contract: the sum is rounded to act_dtype, as the unfused add would store it.
      s[h] = c.residual ? RoundTo(res[i] + x[i], c.act) : x[i];
      sum_sq += s[h] * s[h];
      if (c.residual) {
        want.value[n + i] = s[h];
        want.magnitude[n + i] = std::fabs(s[h]);
      }
    }
    const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(c.hidden) + eps);
    for (int64_t h = 0; h < c.hidden; ++h) {
      const size_t i = static_cast<size_t>(r * c.hidden + h);
      want.value[i] = s[h] * inv * w[h];
      want.magnitude[i] = std::fabs(want.value[i]);
    }
  }
  const Tolerance tol{OutputRel(c.act) + Fp32SumAcc(c.hidden), 0.0};
  CheckOp(*b, want, tol, [&](Backend& be) {
    DeviceArena arena(be);
    void* dx = arena.UploadAs(x, c.act);
    void* dres = c.residual ? arena.UploadAs(res, c.act) : nullptr;
    RmsNormParams p{.x = dx,
                    .weight = arena.UploadAs(w, c.weight),
                    .weight_dtype = c.weight,
                    .out = c.out_aliases_x ? dx : arena.Alloc(n * DTypeSize(c.act)),
                    .rows = c.rows,
                    .hidden = c.hidden,
                    .eps = eps,
                    .act_dtype = c.act,
                    .residual = dres};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.RmsNorm(p);
    std::vector<float> out = arena.DownloadAs(p.out, n, c.act);
    if (c.residual) {
      const std::vector<float> r = arena.DownloadAs(dres, n, c.act);
      out.insert(out.end(), r.begin(), r.end());
    }
    return out;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, RmsNormTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(RmsNormCases())), ParamName());

// ---------------------------------------------------------------------------------- Rope

struct RopeCase {
  std::string name;
  int64_t num_tokens, num_q_heads, num_kv_heads, head_dim;
  int32_t max_pos;
  DType act;
  float theta = 1e6f;
};

std::vector<RopeCase> RopeCases() {
  std::vector<RopeCase> cases;
  for (DType act : {DType::kF32, DType::kBF16}) {
    const std::string dt = DTypeLabel(act);
    cases.push_back({"empty_" + dt, 0, 4, 1, 64, 10, act});
    cases.push_back({"one_" + dt, 1, 4, 1, 64, 10, act});
    cases.push_back({"gqa8_hd128_" + dt, 9, 32, 4, 128, 64, act});
    cases.push_back({"mha_hd8_theta1e4_" + dt, 5, 2, 2, 8, 20, act, 1e4f});
    cases.push_back({"positions32k_hd128_" + dt, 33, 8, 2, 128, 32767, act});
  }
  cases.push_back({"large_T512_32x8x128_bf16", 512, 32, 8, 128, 4096, DType::kBF16});
  return cases;
}

class RopeTest : public ::testing::TestWithParam<BackendAndCase<RopeCase>> {};

TEST_P(RopeTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const size_t nq = static_cast<size_t>(c.num_tokens * c.num_q_heads * c.head_dim);
  const size_t nk = static_cast<size_t>(c.num_tokens * c.num_kv_heads * c.head_dim);
  const std::vector<float> q = RandomValues(nq, 6);
  const std::vector<float> k = RandomValues(nk, 7);
  std::vector<int32_t> pos(static_cast<size_t>(c.num_tokens));
  std::mt19937 rng(8);
  for (auto& v : pos) v = static_cast<int32_t>(rng() % (c.max_pos + 1));
  if (!pos.empty()) pos[0] = c.max_pos;

  Expected want(nq + nk);
  const int64_t half = c.head_dim / 2;
  auto rotate = [&](const std::vector<float>& x, int64_t heads, size_t offset) {
    for (int64_t t = 0; t < c.num_tokens; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const size_t base = static_cast<size_t>((t * heads + h) * c.head_dim);
        for (int64_t i = 0; i < half; ++i) {
          // As the contract says: f_i and the angle in fp32, then exact trigonometry.
          const float f =
              std::pow(c.theta, -2.0f * static_cast<float>(i) / static_cast<float>(c.head_dim));
          const double a = static_cast<float>(static_cast<float>(pos[t]) * f);
          const double x0 = x[base + i];
          const double x1 = x[base + i + half];
          want.value[offset + base + i] = x0 * std::cos(a) - x1 * std::sin(a);
          want.value[offset + base + i + half] = x1 * std::cos(a) + x0 * std::sin(a);
          want.magnitude[offset + base + i] = std::fabs(x0) + std::fabs(x1);
          want.magnitude[offset + base + i + half] = std::fabs(x0) + std::fabs(x1);
        }
      }
    }
  };
  rotate(q, c.num_q_heads, 0);
  rotate(k, c.num_kv_heads, nq);
  // theta^(-2i/d) may differ by an ulp between libms; at position p that moves the angle by
  // about p * 2^-23 radians.
  const Tolerance tol{OutputRel(c.act), 1e-6 + 2.4e-7 * c.max_pos};
  CheckOp(*b, want, tol, [&](Backend& be) {
    DeviceArena arena(be);
    RopeParams p{.q = arena.UploadAs(q, c.act),
                 .k = arena.UploadAs(k, c.act),
                 .positions = arena.Upload(pos),
                 .num_tokens = c.num_tokens,
                 .num_q_heads = c.num_q_heads,
                 .num_kv_heads = c.num_kv_heads,
                 .head_dim = c.head_dim,
                 .theta = c.theta,
                 .act_dtype = c.act};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.Rope(p);
    std::vector<float> out = arena.DownloadAs(p.q, nq, c.act);
    const std::vector<float> ko = arena.DownloadAs(p.k, nk, c.act);
    out.insert(out.end(), ko.begin(), ko.end());
    return out;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, RopeTest, Combine(ValuesIn(BackendNames()), ValuesIn(RopeCases())),
                         ParamName());

// ---------------------------------------------------------------------------------- Matmul

struct MatmulCase {
  std::string name;
  int64_t m, n, k;
  DType x, w, y;
};

std::vector<MatmulCase> MatmulCases() {
  struct Dt {
    DType x, w, y;
  };
  const Dt dtypes[] = {
      {DType::kBF16, DType::kBF16, DType::kBF16},  // the CUDA product path
      {DType::kBF16, DType::kBF16, DType::kF32},   // router / LM-head logits
      {DType::kF32, DType::kF32, DType::kF32},     // the CPU reference path
      {DType::kF32, DType::kBF16, DType::kF32},    // CPU with bf16 weights
      {DType::kBF16, DType::kF32, DType::kBF16},   // fp32 test weights, bf16 activations
      {DType::kBF16, DType::kF16, DType::kBF16},   // fp16 weights
  };
  struct Shape {
    int64_t m, n, k;
  };
  const Shape shapes[] = {{0, 20, 37}, {1, 20, 37}, {7, 37, 20}, {3, 64, 4096}, {17, 130, 96}};
  std::vector<MatmulCase> cases;
  for (const Dt& d : dtypes) {
    for (const Shape& s : shapes) {
      cases.push_back({absl::StrCat("m", s.m, "_n", s.n, "_k", s.k, "_x", DTypeLabel(d.x), "_w",
                                    DTypeLabel(d.w), "_y", DTypeLabel(d.y)),
                       s.m, s.n, s.k, d.x, d.w, d.y});
    }
  }
  cases.push_back(
      {"large_m512_n256_k4096_bf16", 512, 256, 4096, DType::kBF16, DType::kBF16, DType::kBF16});
  cases.push_back(
      {"large_m512_n256_k4096_f32", 512, 256, 4096, DType::kF32, DType::kF32, DType::kF32});
  return cases;
}

class MatmulTest : public ::testing::TestWithParam<BackendAndCase<MatmulCase>> {};

TEST_P(MatmulTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<float> x = RandomValues(static_cast<size_t>(c.m * c.k), 9);
  const std::vector<float> w = RandomValues(static_cast<size_t>(c.n * c.k), 10, 0.05f);
  // The oracle checks every row of small cases and 9 rows of large ones (budget: the CPU
  // reference already computes every row and is compared in full).
  std::vector<int64_t> rows;
  if (c.m <= 64) {
    for (int64_t r = 0; r < c.m; ++r) rows.push_back(r);
  } else {
    for (int64_t r : {int64_t{0}, int64_t{1}, c.m / 3, c.m / 2, c.m - 2, c.m - 1})
      rows.push_back(r);
    for (int64_t r : {int64_t{37}, int64_t{101}, int64_t{255}}) rows.push_back(r % c.m);
  }
  Expected want(rows.size() * static_cast<size_t>(c.n));
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double sum = 0.0;
      double mag = 0.0;
      for (int64_t kk = 0; kk < c.k; ++kk) {
        const double term = static_cast<double>(x[rows[i] * c.k + kk]) * w[j * c.k + kk];
        sum += term;
        mag += std::fabs(term);
      }
      want.value[i * c.n + j] = sum;
      want.magnitude[i * c.n + j] = mag;
    }
  }
  const Tolerance tol{OutputRel(c.y), Fp32SumAcc(c.k)};
  CheckOp(*b, want, tol, [&](Backend& be) {
    DeviceArena arena(be);
    MatmulParams p{.x = arena.UploadAs(x, c.x),
                   .w = arena.UploadAs(w, c.w),
                   .w_dtype = c.w,
                   .y = arena.Alloc(static_cast<size_t>(c.m * c.n) * DTypeSize(c.y)),
                   .m_rows = c.m,
                   .n = c.n,
                   .k = c.k,
                   .x_dtype = c.x,
                   .y_dtype = c.y};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.Matmul(p);
    const std::vector<float> y = arena.DownloadAs(p.y, static_cast<size_t>(c.m * c.n), c.y);
    std::vector<float> picked;
    for (int64_t r : rows)
      picked.insert(picked.end(), y.begin() + r * c.n, y.begin() + (r + 1) * c.n);
    return picked;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, MatmulTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(MatmulCases())), ParamName());

// ------------------------------------------------------------------------ AddInPlace, SwiGlu

struct ElementwiseCase {
  std::string name;
  int64_t n;
  DType act;
  bool out_aliases_gate = false;  // SwiGlu only
};

std::vector<ElementwiseCase> ElementwiseCases() {
  std::vector<ElementwiseCase> cases;
  for (DType act : {DType::kF32, DType::kBF16}) {
    for (int64_t n : {0, 1, 37, 4096 * 7 + 3}) {
      cases.push_back({absl::StrCat("n", n, "_", DTypeLabel(act)), n, act});
    }
    cases.push_back({absl::StrCat("alias_n37_", DTypeLabel(act)), 37, act, true});
  }
  cases.push_back({"large_T512_x_14336_bf16", 512 * 14336, DType::kBF16});
  return cases;
}

class AddInPlaceTest : public ::testing::TestWithParam<BackendAndCase<ElementwiseCase>> {};

TEST_P(AddInPlaceTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<float> y = RandomValues(static_cast<size_t>(c.n), 11);
  const std::vector<float> x = RandomValues(static_cast<size_t>(c.n), 12);
  Expected want(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) {
    want.value[i] = static_cast<double>(y[i]) + x[i];
    want.magnitude[i] = std::fabs(y[i]) + std::fabs(x[i]);
  }
  // An fp32 sum of two exact bf16 values, rounded once to act_dtype.
  CheckOp(*b, want, Tolerance{OutputRel(c.act), 1e-7}, [&](Backend& be) {
    DeviceArena arena(be);
    AddInPlaceParams p{
        .y = arena.UploadAs(y, c.act), .x = arena.UploadAs(x, c.act), .n = c.n, .act_dtype = c.act};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.AddInPlace(p);
    return arena.DownloadAs(p.y, static_cast<size_t>(c.n), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, AddInPlaceTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(ElementwiseCases())),
                         ParamName());

class SwiGluTest : public ::testing::TestWithParam<BackendAndCase<ElementwiseCase>> {};

TEST_P(SwiGluTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const std::vector<float> gate = RandomValues(static_cast<size_t>(c.n), 13, 3.0f);
  const std::vector<float> up = RandomValues(static_cast<size_t>(c.n), 14);
  Expected want(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) {
    want.value[i] = Silu(gate[i]) * up[i];
    want.magnitude[i] = std::fabs(want.value[i]);
  }
  // fp32 exp/division: a few ulps of fp32 on top of the output rounding.
  CheckOp(*b, want, Tolerance{OutputRel(c.act) + 1e-6, 1e-30}, [&](Backend& be) {
    DeviceArena arena(be);
    void* dgate = arena.UploadAs(gate, c.act);
    SwiGluParams p{.gate = dgate,
                   .up = arena.UploadAs(up, c.act),
                   .out = c.out_aliases_gate
                              ? dgate
                              : arena.Alloc(static_cast<size_t>(c.n) * DTypeSize(c.act)),
                   .n = c.n,
                   .act_dtype = c.act};
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.SwiGlu(p);
    return arena.DownloadAs(p.out, static_cast<size_t>(c.n), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, SwiGluTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(ElementwiseCases())),
                         ParamName());

}  // namespace
}  // namespace moeserve::kernels::testing
