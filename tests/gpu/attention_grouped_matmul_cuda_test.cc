// CUDA PagedAttention and GroupedMatmul against naive fp64 references on small shape grids, plus
// bitwise batch-invariance checks (a sequence / expert group computed alone gives the same bits
// as inside a mixed batch or with another tile height). Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/grouped_matmul.cuh"
#include "kernels/dtype.h"

namespace moeserve::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Host tensor in a float dtype: values rounded to the dtype, kept both as fp32 and raw bytes.
struct HostTensor {
  DType dtype;
  std::vector<float> values;  // already rounded to dtype
  std::vector<uint8_t> bytes;
};

HostTensor MakeTensor(DType dtype, size_t n, std::mt19937& rng, float stddev) {
  std::normal_distribution<float> dist(0.0f, stddev);
  HostTensor t{dtype, std::vector<float>(n), std::vector<uint8_t>(n * DTypeSize(dtype))};
  for (size_t i = 0; i < n; ++i) {
    const float v = dist(rng);
    if (dtype == DType::kF32) {
      t.values[i] = v;
      std::memcpy(t.bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
      t.values[i] = dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

// Device buffer freed at scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), 0); }
  DeviceBuffer(const void* host, size_t bytes) : DeviceBuffer(bytes) {
    EXPECT_EQ(cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice), 0);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

std::vector<float> ReadBack(const DeviceBuffer& buf, DType dtype, size_t n) {
  std::vector<uint8_t> bytes(n * DTypeSize(dtype));
  EXPECT_EQ(cudaMemcpy(bytes.data(), buf.ptr, bytes.size(), cudaMemcpyDeviceToHost), 0);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = LoadAsF32(bytes.data(), dtype, i);
  return out;
}

// ---- PagedAttention ------------------------------------------------------------------------

struct AttnCase {
  int64_t num_q_heads, num_kv_heads, head_dim, block_size, window;
  DType act, kv;
};

class PagedAttentionCudaTest : public ::testing::TestWithParam<AttnCase> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(PagedAttentionCudaTest, MatchesReferenceAndIsBatchInvariant) {
  const AttnCase c = GetParam();
  // (context length, queries): prefill, decode, chunk of a long prefill, short decode pair.
  const std::vector<std::pair<int, int>> seqs = {{37, 37}, {90, 1}, {150, 13}, {5, 2}, {64, 1}};
  const int64_t num_seqs = static_cast<int64_t>(seqs.size());
  const int64_t max_blocks = (150 + c.block_size - 1) / c.block_size;
  const int64_t num_blocks = num_seqs * max_blocks;
  std::mt19937 rng(static_cast<uint32_t>(c.head_dim * 131 + c.num_q_heads));

  std::vector<int32_t> query_start = {0}, context_lens, tables(num_seqs * max_blocks, -1);
  std::vector<int32_t> block_ids(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) block_ids[i] = static_cast<int32_t>(i);
  std::shuffle(block_ids.begin(), block_ids.end(), rng);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const auto [ctx, n_q] = seqs[s];
    query_start.push_back(query_start.back() + n_q);
    context_lens.push_back(ctx);
    const int64_t first_key = c.window > 0 ? std::max<int64_t>(0, ctx - n_q - c.window + 1) : 0;
    for (int64_t b = first_key / c.block_size; b * c.block_size < ctx; ++b) {
      tables[s * max_blocks + b] = block_ids[s * max_blocks + b];  // earlier blocks stay -1
    }
  }
  const int64_t num_tokens = query_start.back();
  const int64_t kv_row = c.num_kv_heads * c.head_dim;
  HostTensor q = MakeTensor(c.act, num_tokens * c.num_q_heads * c.head_dim, rng, 1.0f);
  HostTensor k = MakeTensor(c.kv, num_blocks * c.block_size * kv_row, rng, 1.0f);
  HostTensor v = MakeTensor(c.kv, num_blocks * c.block_size * kv_row, rng, 1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // fp64 reference.
  const int64_t out_elems = num_tokens * c.num_q_heads * c.head_dim;
  std::vector<double> expect(out_elems);
  const int64_t group = c.num_q_heads / c.num_kv_heads;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t n_q = query_start[s + 1] - query_start[s];
    for (int64_t t = query_start[s]; t < query_start[s + 1]; ++t) {
      const int64_t pos = context_lens[s] - n_q + (t - query_start[s]);
      const int64_t first = c.window > 0 ? std::max<int64_t>(0, pos - c.window + 1) : 0;
      for (int64_t h = 0; h < c.num_q_heads; ++h) {
        const float* qv = &q.values[(t * c.num_q_heads + h) * c.head_dim];
        std::vector<double> w;
        double mx = -INFINITY;
        for (int64_t j = first; j <= pos; ++j) {
          const int64_t slot =
              int64_t{tables[s * max_blocks + j / c.block_size]} * c.block_size + j % c.block_size;
          const float* kv = &k.values[slot * kv_row + (h / group) * c.head_dim];
          double dot = 0;
          for (int64_t d = 0; d < c.head_dim; ++d) dot += double{qv[d]} * kv[d];
          w.push_back(dot * scale);
          mx = std::max(mx, w.back());
        }
        double denom = 0;
        for (double& x : w) denom += (x = std::exp(x - mx));
        for (int64_t d = 0; d < c.head_dim; ++d) {
          double acc = 0;
          for (int64_t j = first; j <= pos; ++j) {
            const int64_t slot = int64_t{tables[s * max_blocks + j / c.block_size]} * c.block_size +
                                 j % c.block_size;
            acc += w[j - first] * v.values[slot * kv_row + (h / group) * c.head_dim + d];
          }
          expect[(t * c.num_q_heads + h) * c.head_dim + d] = acc / denom;
        }
      }
    }
  }

  DeviceBuffer dq(q.bytes.data(), q.bytes.size()), dk(k.bytes.data(), k.bytes.size()),
      dv(v.bytes.data(), v.bytes.size()), dout(out_elems * DTypeSize(c.act)),
      dtables(tables.data(), tables.size() * 4), dqs(query_start.data(), query_start.size() * 4),
      dctx(context_lens.data(), context_lens.size() * 4);
  PagedAttentionParams p;
  p.q = dq.ptr;
  p.out = dout.ptr;
  p.k_cache = dk.ptr;
  p.v_cache = dv.ptr;
  p.block_tables = static_cast<const int32_t*>(dtables.ptr);
  p.query_start = static_cast<const int32_t*>(dqs.ptr);
  p.context_lens = static_cast<const int32_t*>(dctx.ptr);
  p.num_seqs = num_seqs;
  p.num_tokens = num_tokens;
  p.num_q_heads = c.num_q_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.head_dim = c.head_dim;
  p.block_size = c.block_size;
  p.max_blocks_per_seq = max_blocks;
  p.num_blocks = num_blocks;
  p.sliding_window = c.window;
  p.scale = scale;
  p.act_dtype = c.act;
  p.kv_dtype = c.kv;
  ASSERT_EQ(cuda::PagedAttention(p, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = ReadBack(dout, c.act, out_elems);
  const double tol = c.act == DType::kF32 ? 2e-5 : 1e-2;
  for (int64_t i = 0; i < out_elems; ++i) {
    ASSERT_NEAR(got[i], expect[i], tol * (1.0 + std::abs(expect[i]))) << "element " << i;
  }

  // Each sequence alone (its rows at offset 0, one-sequence tables) must give the same bits.
  const size_t row_bytes = c.num_q_heads * c.head_dim * DTypeSize(c.act);
  std::vector<uint8_t> batch_bytes(out_elems * DTypeSize(c.act));
  ASSERT_EQ(cudaMemcpy(batch_bytes.data(), dout.ptr, batch_bytes.size(), cudaMemcpyDeviceToHost),
            0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int32_t qs_alone[2] = {0, query_start[s + 1] - query_start[s]};
    DeviceBuffer dqs1(qs_alone, 8), dout1(qs_alone[1] * row_bytes);
    PagedAttentionParams p1 = p;
    p1.q = static_cast<const uint8_t*>(dq.ptr) + query_start[s] * row_bytes;
    p1.out = dout1.ptr;
    p1.block_tables = static_cast<const int32_t*>(dtables.ptr) + s * max_blocks;
    p1.query_start = static_cast<const int32_t*>(dqs1.ptr);
    p1.context_lens = static_cast<const int32_t*>(dctx.ptr) + s;
    p1.num_seqs = 1;
    p1.num_tokens = qs_alone[1];
    ASSERT_EQ(cuda::PagedAttention(p1, nullptr), cudaSuccess);
    std::vector<uint8_t> alone(qs_alone[1] * row_bytes);
    ASSERT_EQ(cudaMemcpy(alone.data(), dout1.ptr, alone.size(), cudaMemcpyDeviceToHost), 0);
    EXPECT_EQ(
        std::memcmp(alone.data(), batch_bytes.data() + query_start[s] * row_bytes, alone.size()), 0)
        << "sequence " << s << " differs when computed alone";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttentionCudaTest,
                         ::testing::Values(AttnCase{4, 1, 20, 16, 0, DType::kF32, DType::kF32},
                                           AttnCase{8, 2, 64, 16, 0, DType::kBF16, DType::kBF16},
                                           AttnCase{8, 2, 128, 16, 24, DType::kBF16, DType::kBF16},
                                           AttnCase{4, 4, 128, 5, 0, DType::kF32, DType::kBF16},
                                           AttnCase{3, 1, 36, 7, 17, DType::kF32, DType::kF32},
                                           AttnCase{40, 2, 256, 16, 40, DType::kBF16, DType::kF32},
                                           AttnCase{2, 1, 256, 16, 0, DType::kF32, DType::kF16}));

// ---- GroupedMatmul -------------------------------------------------------------------------

struct GemmCase {
  int64_t n, k;
  bool swiglu;
  DType act, w;
};

class GroupedMatmulCudaTest : public ::testing::TestWithParam<GemmCase> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

// Runs GroupedMatmul with the given offsets / max_rows over x (device) and returns y's bytes.
std::vector<uint8_t> RunGemm(GroupedMatmulParams p, const std::vector<int32_t>& offsets,
                             int64_t max_rows) {
  DeviceBuffer doff(offsets.data(), offsets.size() * 4);
  const size_t y_bytes = max_rows * p.n * DTypeSize(p.act_dtype);
  DeviceBuffer dy(y_bytes);
  EXPECT_EQ(cudaMemset(dy.ptr, 0, y_bytes), 0);
  p.expert_offsets = static_cast<const int32_t*>(doff.ptr);
  p.max_rows = max_rows;
  p.y = dy.ptr;
  EXPECT_EQ(cuda::GroupedMatmul(p, nullptr), cudaSuccess);
  std::vector<uint8_t> y(y_bytes);
  EXPECT_EQ(cudaMemcpy(y.data(), dy.ptr, y_bytes, cudaMemcpyDeviceToHost), 0);
  return y;
}

TEST_P(GroupedMatmulCudaTest, MatchesReferenceAndIsBatchInvariant) {
  const GemmCase c = GetParam();
  // Rows per expert; max_rows 66 over 5 experts selects 16-row tiles on the tensor-core path.
  const std::vector<int32_t> counts = {3, 0, 40, 1, 17};
  const int64_t num_experts = static_cast<int64_t>(counts.size());
  std::vector<int32_t> offsets = {0};
  for (int32_t n : counts) offsets.push_back(offsets.back() + n);
  const int64_t total = offsets.back(), max_rows = total + 5;
  std::mt19937 rng(static_cast<uint32_t>(c.n * 7 + c.k));
  HostTensor x = MakeTensor(c.act, total * c.k, rng, 1.0f);
  std::vector<HostTensor> w, w_up;
  std::vector<std::unique_ptr<DeviceBuffer>> dw;
  std::vector<const void*> w_ptrs, w_up_ptrs;
  for (int64_t e = 0; e < num_experts; ++e) {
    w.push_back(MakeTensor(c.w, c.n * c.k, rng, 0.1f));
    w_up.push_back(MakeTensor(c.w, c.n * c.k, rng, 0.1f));
    dw.push_back(std::make_unique<DeviceBuffer>(w[e].bytes.data(), w[e].bytes.size()));
    w_ptrs.push_back(dw.back()->ptr);
    dw.push_back(std::make_unique<DeviceBuffer>(w_up[e].bytes.data(), w_up[e].bytes.size()));
    w_up_ptrs.push_back(dw.back()->ptr);
  }
  DeviceBuffer dx(x.bytes.data(), x.bytes.size()), dwp(w_ptrs.data(), w_ptrs.size() * 8),
      dwup(w_up_ptrs.data(), w_up_ptrs.size() * 8);
  GroupedMatmulParams p;
  p.x = dx.ptr;
  p.w = static_cast<const void* const*>(dwp.ptr);
  p.w_up = c.swiglu ? static_cast<const void* const*>(dwup.ptr) : nullptr;
  p.w_dtype = c.w;
  p.num_experts = num_experts;
  p.n = c.n;
  p.k = c.k;
  p.act_dtype = c.act;

  const std::vector<uint8_t> y = RunGemm(p, offsets, max_rows);
  const double tol = c.act == DType::kF32 ? 1e-4 : 1e-2;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      for (int64_t col = 0; col < c.n; ++col) {
        double g = 0, u = 0;
        for (int64_t kk = 0; kk < c.k; ++kk) {
          g += double{x.values[r * c.k + kk]} * w[e].values[col * c.k + kk];
          u += double{x.values[r * c.k + kk]} * w_up[e].values[col * c.k + kk];
        }
        const double want = c.swiglu ? g / (1.0 + std::exp(-g)) * u : g;
        const double got = LoadAsF32(y.data(), c.act, r * c.n + col);
        ASSERT_NEAR(got, want, tol * (1.0 + std::abs(want))) << "expert " << e << " row " << r;
      }
    }
  }

  // Batch invariance: expert e's rows computed with the other experts' rows removed (expert e
  // then owns rows [0, offsets[e+1]), so its rows sit at other tile positions next to other
  // rows), and with max_rows bounds that select tile heights 16, 32 and 64, give the same bits.
  const size_t row_bytes = c.n * DTypeSize(c.act);
  for (int64_t bound : {max_rows, int64_t{150}, int64_t{1000}}) {
    for (int64_t e = 0; e < num_experts; ++e) {
      std::vector<int32_t> alone(num_experts + 1);
      for (int64_t i = 0; i <= num_experts; ++i) alone[i] = i <= e ? 0 : offsets[e + 1];
      const std::vector<uint8_t> y1 = RunGemm(p, alone, bound);
      for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
        EXPECT_EQ(std::memcmp(y1.data() + r * row_bytes, y.data() + r * row_bytes, row_bytes), 0)
            << "expert " << e << " row " << r << " max_rows " << bound;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupedMatmulCudaTest,
                         ::testing::Values(GemmCase{72, 64, false, DType::kBF16, DType::kBF16},
                                           GemmCase{128, 200, true, DType::kBF16, DType::kBF16},
                                           GemmCase{72, 20, true, DType::kBF16, DType::kBF16},
                                           GemmCase{64, 48, false, DType::kF32, DType::kF32},
                                           GemmCase{100, 40, true, DType::kF32, DType::kBF16},
                                           GemmCase{33, 24, false, DType::kBF16, DType::kF16}));

}  // namespace
}  // namespace moeserve::kernels
