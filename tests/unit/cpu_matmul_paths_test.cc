// The CPU matmul on every instruction-set path this machine has (scalar, AVX2, AVX-512; see
// kernels/cpu/cpu_features.h): each against a float64 oracle, each bit for bit against the
// arithmetic matmul_tile.h defines (written out again here from that definition), hence against
// each other; and the determinism contract of ops/matmul.h on each path: a row's bits do not
// depend on the batch it is in or on the thread count.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_pack.h"
#include "kernels/cpu/moe.h"
#include "kernels/dtype.h"
#include "tests/unit/test_vectors.h"

namespace moeserve::kernels {
namespace {

using test::RandomVector;

using cpu::CpuIsa;

// Weights [n, k] stored as dtype: the bytes, and the values they hold as fp32.
struct Weights {
  DType dtype;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  Weights(DType t, int64_t n, int64_t k, uint32_t seed) : dtype(t) {
    values = RandomVector(static_cast<size_t>(n * k), seed);
    bytes.resize(values.size() * DTypeSize(t));
    for (size_t i = 0; i < values.size(); ++i) {
      if (t == DType::kF32) {
        std::memcpy(bytes.data() + 4 * i, &values[i], 4);
        continue;
      }
      const uint16_t h = t == DType::kBF16 ? F32ToBf16(values[i]) : F32ToF16(values[i]);
      values[i] = t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
};

// The per-element arithmetic of kernels/cpu/matmul_tile.h, from its comment: one fma chain over
// k in order, starting at +0.
float SpecDot(const float* x, const float* w, int64_t k) {
  float acc = 0.0f;
  for (int64_t i = 0; i < k; ++i) acc = std::fma(x[i], w[i], acc);
  return acc;
}

std::vector<float> RunMatmul(const std::vector<float>& x, int64_t m, const Weights& w, int64_t n,
                             int64_t k) {
  std::vector<float> y(static_cast<size_t>(m * n), -1.0f);
  cpu::Matmul({x.data(), w.bytes.data(), w.dtype, y.data(), m, n, k});
  return y;
}

// w packed as the model loader packs it (kernels/cpu/matmul_pack.h).
std::vector<uint8_t> Pack(const Weights& w, int64_t n, int64_t k) {
  std::vector<uint8_t> packed(cpu::PackedBytes(w.dtype, n, k));
  cpu::PackWeight(w.bytes.data(), w.dtype, n, k, packed.data());
  return packed;
}

std::vector<float> RunPacked(const std::vector<float>& x, int64_t m, const Weights& w,
                             const std::vector<uint8_t>& packed, int64_t n, int64_t k) {
  std::vector<float> y(static_cast<size_t>(m * n), -1.0f);
  MatmulParams p{x.data(), packed.data(), w.dtype, y.data(), m, n, k};
  p.w_layout = WeightLayout::kCpuPanels;
  cpu::Matmul(p);
  return y;
}

// Restores the default path (and thread count) after each test.
class CpuMatmulPathsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    cpu::SetActiveCpuIsa(cpu::DetectCpuIsa());
    omp_set_num_threads(threads_);
  }
  const int threads_ = omp_get_max_threads();
};

struct Shape {
  int64_t m, n, k;
};
// Odd n and k (k % 16 != 0, n not a multiple of any register block or tile), tiny n (blocks wider
// than the matrix), several 64-row tiles, and the tiny model's shapes.
const Shape kShapes[] = {{1, 1, 1},      {3, 5, 15},    {1, 17, 16},    {2, 33, 17},
                         {5, 131, 37},   {9, 70, 100},  {67, 131, 45},  {150, 200, 300},
                         {1, 1000, 256}, {8, 300, 256}, {130, 64, 512}, {4, 7, 1000}};

TEST_F(CpuMatmulPathsTest, EveryPathMatchesFloat64AndTheDefinedOrderBitwise) {
  // y of the first path (scalar) per dtype and shape, which every other path must equal.
  std::vector<std::vector<float>> first_path;
  for (CpuIsa isa : cpu::AvailableCpuIsas()) {
    ASSERT_EQ(cpu::SetActiveCpuIsa(isa), isa);
    size_t case_index = 0;
    for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
      for (const Shape& s : kShapes) {
        SCOPED_TRACE(std::string(cpu::CpuIsaName(isa)) + " " + std::string(DTypeName(dtype)) +
                     " m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k));
        const Weights w(dtype, s.n, s.k, 11 + static_cast<uint32_t>(s.k));
        const std::vector<float> x = RandomVector(static_cast<size_t>(s.m * s.k), 7, 2.0f);
        const std::vector<float> y = RunMatmul(x, s.m, w, s.n, s.k);
        if (isa == CpuIsa::kScalar) {
          first_path.push_back(y);
        } else {
          EXPECT_EQ(
              std::memcmp(y.data(), first_path.at(case_index).data(), sizeof(float) * y.size()), 0)
              << "differs from the scalar path";
        }
        ++case_index;
        int bit_mismatches = 0;
        for (int64_t r = 0; r < s.m; ++r) {
          for (int64_t c = 0; c < s.n; ++c) {
            const float* xr = x.data() + r * s.k;
            const float* wr = w.values.data() + c * s.k;
            double exact = 0.0, magnitude = 0.0;
            for (int64_t i = 0; i < s.k; ++i) {
              exact += static_cast<double>(xr[i]) * wr[i];
              magnitude += std::fabs(static_cast<double>(xr[i]) * wr[i]);
            }
            // fp32 rounding: the chain rounds k times (|error| <= k u sum |x w| / (1 - k u)).
            const double bound = (static_cast<double>(s.k) + 1.0) * 0x1p-24 * magnitude;
            const float got = y[static_cast<size_t>(r * s.n + c)];
            ASSERT_LE(std::fabs(got - exact), bound + 1e-30) << "r=" << r << " c=" << c;
            const float want = SpecDot(xr, wr, s.k);
            if (std::memcmp(&got, &want, sizeof(float)) != 0) ++bit_mismatches;
          }
        }
        EXPECT_EQ(bit_mismatches, 0);
        // Weights packed at load give the bits of weights packed for the call.
        const std::vector<float> y_packed = RunPacked(x, s.m, w, Pack(w, s.n, s.k), s.n, s.k);
        EXPECT_EQ(std::memcmp(y.data(), y_packed.data(), sizeof(float) * y.size()), 0)
            << "packed weights differ from row weights";
      }
    }
  }
}

TEST_F(CpuMatmulPathsTest, RowBitsDoNotDependOnBatchOrThreads) {
  const int64_t n = 131, max_rows = 67;
  for (CpuIsa isa : cpu::AvailableCpuIsas()) {
    cpu::SetActiveCpuIsa(isa);
    for (int64_t k : {45, 256}) {
      SCOPED_TRACE(std::string(cpu::CpuIsaName(isa)) + " k=" + std::to_string(k));
      const Weights w(DType::kBF16, n, k, 5);
      const std::vector<float> x = RandomVector(static_cast<size_t>(max_rows * k), 6);
      omp_set_num_threads(1);
      std::vector<std::vector<float>> alone;
      for (int64_t r = 0; r < max_rows; ++r) {
        const std::vector<float> row(x.begin() + r * k, x.begin() + (r + 1) * k);
        alone.push_back(RunMatmul(row, 1, w, n, k));
      }
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        for (int64_t batch = 1; batch <= max_rows; ++batch) {
          // Rows [first, first + batch) of x, a window that moves so each row sits at several
          // positions of the register blocks and tiles.
          const int64_t first = (batch * 7) % (max_rows - batch + 1);
          const std::vector<float> xb(x.begin() + first * k, x.begin() + (first + batch) * k);
          const std::vector<float> y = RunMatmul(xb, batch, w, n, k);
          for (int64_t r = 0; r < batch; ++r) {
            ASSERT_EQ(std::memcmp(y.data() + r * n, alone[static_cast<size_t>(first + r)].data(),
                                  sizeof(float) * n),
                      0)
                << "threads=" << threads << " batch=" << batch << " row=" << first + r;
          }
        }
      }
    }
  }
}

TEST_F(CpuMatmulPathsTest, Bf16ActivationsAndOutputsAreTheFp32PathRounded) {
  const int64_t m = 9, n = 40, k = 70;
  const Weights w(DType::kBF16, n, k, 3);
  std::vector<float> x = RandomVector(static_cast<size_t>(m * k), 4);
  std::vector<uint16_t> x_bf(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x_bf[i] = F32ToBf16(x[i]);
    x[i] = Bf16ToF32(x_bf[i]);
  }
  for (CpuIsa isa : cpu::AvailableCpuIsas()) {
    SCOPED_TRACE(std::string(cpu::CpuIsaName(isa)));
    cpu::SetActiveCpuIsa(isa);
    const std::vector<float> want = RunMatmul(x, m, w, n, k);
    std::vector<float> y32(static_cast<size_t>(m * n));
    std::vector<uint16_t> y16(static_cast<size_t>(m * n));
    cpu::Matmul({x_bf.data(), w.bytes.data(), DType::kBF16, y32.data(), m, n, k, DType::kBF16,
                 DType::kF32});
    cpu::Matmul({x_bf.data(), w.bytes.data(), DType::kBF16, y16.data(), m, n, k, DType::kBF16,
                 DType::kBF16});
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(y32[i], want[i]) << i;
      ASSERT_EQ(y16[i], F32ToBf16(want[i])) << i;
    }
  }
}

TEST_F(CpuMatmulPathsTest, GroupedSwiGluIsMatmulMatmulSwiGluOnEveryPath) {
  const int64_t n = 75, k = 50, experts = 5;
  // Expert 1 has no rows, expert 3 more than one tile of rows.
  const std::vector<int32_t> offsets = {0, 3, 3, 12, 90, 91};
  const int64_t rows = offsets.back();
  std::vector<Weights> w, w_up;
  std::vector<const void*> w_ptrs, w_up_ptrs;
  for (int64_t e = 0; e < experts; ++e) {
    w.emplace_back(DType::kBF16, n, k, 100 + static_cast<uint32_t>(e));
    w_up.emplace_back(DType::kBF16, n, k, 200 + static_cast<uint32_t>(e));
  }
  std::vector<std::vector<uint8_t>> packed;
  std::vector<const void*> packed_ptrs, packed_up_ptrs;
  for (int64_t e = 0; e < experts; ++e) {
    w_ptrs.push_back(w[e].bytes.data());
    w_up_ptrs.push_back(w_up[e].bytes.data());
    packed.push_back(Pack(w[e], n, k));
    packed_ptrs.push_back(packed.back().data());
  }
  for (int64_t e = 0; e < experts; ++e) {
    packed.push_back(Pack(w_up[e], n, k));
    packed_up_ptrs.push_back(packed.back().data());
  }
  const std::vector<float> x = RandomVector(static_cast<size_t>(rows * k), 8);
  for (CpuIsa isa : cpu::AvailableCpuIsas()) {
    SCOPED_TRACE(std::string(cpu::CpuIsaName(isa)));
    cpu::SetActiveCpuIsa(isa);
    for (int variant = 0; variant < 4; ++variant) {
      const bool swiglu = variant % 2 == 1, load_packed = variant >= 2;
      GroupedMatmulParams p;
      p.x = x.data();
      p.w = load_packed ? packed_ptrs.data() : w_ptrs.data();
      p.w_up = swiglu ? (load_packed ? packed_up_ptrs.data() : w_up_ptrs.data()) : nullptr;
      p.w_layout = load_packed ? WeightLayout::kCpuPanels : WeightLayout::kRows;
      p.w_dtype = DType::kBF16;
      std::vector<float> y(static_cast<size_t>(rows * n), -1.0f);
      p.y = y.data();
      p.expert_offsets = offsets.data();
      p.num_experts = experts;
      p.max_rows = rows;
      p.n = n;
      p.k = k;
      cpu::GroupedMatmul(p);
      for (int64_t e = 0; e < experts; ++e) {
        const int64_t r0 = offsets[e], count = offsets[e + 1] - r0;
        if (count == 0) continue;
        const std::vector<float> xe(x.begin() + r0 * k, x.begin() + (r0 + count) * k);
        std::vector<float> want = RunMatmul(xe, count, w[e], n, k);
        if (swiglu) {
          const std::vector<float> up = RunMatmul(xe, count, w_up[e], n, k);
          cpu::SwiGlu({want.data(), up.data(), want.data(), count * n, DType::kF32});
        }
        ASSERT_EQ(std::memcmp(y.data() + r0 * n, want.data(), sizeof(float) * want.size()), 0)
            << "expert " << e << " swiglu " << swiglu << " packed " << load_packed;
      }
    }
  }
}

// The packed layout, element by element, as matmul_pack.h writes it down.
TEST(CpuMatmulPackTest, PanelsHoldTheDocumentedElements) {
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (const Shape& s : {Shape{0, 1, 1}, Shape{0, 33, 7}, Shape{0, 64, 5}, Shape{0, 70, 3}}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(s.n));
      const Weights w(dtype, s.n, s.k, 9);
      const std::vector<uint8_t> packed = Pack(w, s.n, s.k);
      const int64_t panels = (s.n + 31) / 32;
      ASSERT_EQ(packed.size(),
                static_cast<size_t>(panels * 32 * s.k) * (dtype == DType::kBF16 ? 2 : 4));
      for (int64_t p = 0; p < panels; ++p) {
        for (int64_t i = 0; i < s.k; ++i) {
          for (int64_t j = 0; j < 32; ++j) {
            const int64_t row = p * 32 + j;
            const float want = row < s.n ? w.values[static_cast<size_t>(row * s.k + i)] : 0.0f;
            float got = 0.0f;
            if (dtype == DType::kBF16) {
              // Word j % 16 of step i; low half for columns 0..15.
              uint32_t word = 0;
              std::memcpy(&word, packed.data() + 2 * (p * 32 * s.k + i * 32) + 4 * (j % 16), 4);
              got = Bf16ToF32(static_cast<uint16_t>(j < 16 ? word & 0xFFFF : word >> 16));
            } else {
              std::memcpy(&got, packed.data() + 4 * (p * 32 * s.k + i * 32 + j), 4);
            }
            ASSERT_EQ(got, want) << "panel " << p << " step " << i << " column " << j;
          }
        }
      }
    }
  }
}

TEST_F(CpuMatmulPathsTest, ForcingAPathIsClampedToTheCpu) {
  const CpuIsa best = cpu::DetectCpuIsa();
  EXPECT_EQ(cpu::SetActiveCpuIsa(CpuIsa::kAvx512), best);
  EXPECT_EQ(cpu::ActiveCpuIsa(), best);
  EXPECT_EQ(cpu::SetActiveCpuIsa(CpuIsa::kScalar), CpuIsa::kScalar);
  EXPECT_EQ(cpu::ActiveCpuIsa(), CpuIsa::kScalar);
  EXPECT_EQ(cpu::AvailableCpuIsas().back(), best);
}

}  // namespace
}  // namespace moeserve::kernels
