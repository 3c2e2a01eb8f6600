// Timings of the CUDA backend's main ops at Mixtral 8x7B shapes (hidden 4096, 32 query / 8 KV
// heads of 128, 8 experts of 14336, vocab 32000), bf16, through the Backend interface. Run by
// tools/gpu-check.sh on the GPU machine; prints one line per case:
//   op shape: time per call, TFLOP/s, GB/s (the bytes every call must at least read or write)
// Times are host wall-clock over back-to-back enqueued calls ending in one Synchronize, so small
// cases include launch overhead (as eager decode does). Data are constant bytes (memset): fine for
// timing, meaningless as numbers. Without a GPU it prints why and exits 0 (the tests report that).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace moeserve::kernels {
namespace {

constexpr int64_t kHidden = 4096, kFfn = 14336, kExperts = 8, kTopK = 2, kVocab = 32000;
constexpr int64_t kQHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

class Bench {
 public:
  explicit Bench(Backend& b) : b_(b) {}

  // Device memory filled with the byte 0x3c (bf16 0x3c3c = 0.0115; fp32 0.0115 too).
  void* Buffer(size_t bytes) {
    absl::StatusOr<DeviceBuffer> buf = b_.Allocate(std::max<size_t>(bytes, 256));
    if (!buf.ok()) {
      std::fprintf(stderr, "allocation failed: %s\n", buf.status().ToString().c_str());
      std::exit(1);
    }
    (void)b_.MemsetAsync(buf->data(), 0x3c, bytes);
    buffers_.push_back(std::move(*buf));
    return buffers_.back().data();
  }
  template <typename T>
  T* Upload(const std::vector<T>& v) {
    void* p = Buffer(v.size() * sizeof(T));
    (void)b_.CopyToDevice(p, v.data(), v.size() * sizeof(T));
    return static_cast<T*>(p);
  }
  void Release() {
    (void)b_.Synchronize();
    buffers_.clear();
  }

  // Times `op` (enqueues one call): one warm-up call, then enough calls for ~0.2 s.
  void Time(const std::string& name, double flops, double bytes, const std::function<void()>& op) {
    op();
    absl::Status st = b_.Synchronize();
    auto now = [] { return std::chrono::steady_clock::now(); };
    auto t0 = now();
    op();
    st.Update(b_.Synchronize());
    const double once = std::chrono::duration<double>(now() - t0).count();
    const int iters = static_cast<int>(std::clamp(0.2 / std::max(once, 1e-7), 3.0, 500.0));
    t0 = now();
    for (int i = 0; i < iters; ++i) op();
    st.Update(b_.Synchronize());
    const double secs = std::chrono::duration<double>(now() - t0).count() / iters;
    if (!st.ok()) {
      std::printf("%-58s ERROR %s\n", name.c_str(), st.ToString().c_str());
      ok_ = false;
      return;
    }
    std::printf("%-58s %10.1f us %8.1f TFLOP/s %8.1f GB/s\n", name.c_str(), secs * 1e6,
                flops / secs / 1e12, bytes / secs / 1e9);
    std::fflush(stdout);
  }
  bool ok() const { return ok_; }

 private:
  Backend& b_;
  std::vector<DeviceBuffer> buffers_;
  bool ok_ = true;
};

void BenchMatmul(Backend& b, Bench& bench) {
  struct Shape {
    const char* what;
    int64_t n, k;
    DType y;
  };
  for (const Shape& s : {Shape{"qkv", kHidden + 2 * kKvHeads * kHeadDim, kHidden, DType::kBF16},
                         Shape{"o_proj", kHidden, kHidden, DType::kBF16},
                         Shape{"router", kExperts, kHidden, DType::kF32},
                         Shape{"lm_head", kVocab, kHidden, DType::kF32}}) {
    void* w = bench.Buffer(static_cast<size_t>(s.n * s.k) * 2);
    for (int64_t m : {1, 16, 128, 1024, 4096}) {
      void* x = bench.Buffer(static_cast<size_t>(m * s.k) * 2);
      void* y = bench.Buffer(static_cast<size_t>(m * s.n) * DTypeSize(s.y));
      const MatmulParams p{.x = x,
                           .w = w,
                           .w_dtype = DType::kBF16,
                           .y = y,
                           .m_rows = m,
                           .n = s.n,
                           .k = s.k,
                           .x_dtype = DType::kBF16,
                           .y_dtype = s.y};
      bench.Time(absl::StrCat("matmul ", s.what, " m=", m, " n=", s.n, " k=", s.k),
                 2.0 * m * s.n * s.k, 2.0 * (s.n * s.k + m * s.k) + DTypeSize(s.y) * m * s.n,
                 [&] { b.Matmul(p); });
    }
  }
  bench.Release();
}

void BenchExperts(Backend& b, Bench& bench) {
  // Weights of all 8 experts (w1, w3: [14336, 4096]; w2: [4096, 14336]): 2.8 GB.
  std::vector<const void*> w1(kExperts), w3(kExperts), w2(kExperts);
  for (int64_t e = 0; e < kExperts; ++e) {
    w1[e] = bench.Buffer(static_cast<size_t>(kFfn * kHidden) * 2);
    w3[e] = bench.Buffer(static_cast<size_t>(kFfn * kHidden) * 2);
    w2[e] = bench.Buffer(static_cast<size_t>(kFfn * kHidden) * 2);
  }
  const auto* dw1 = static_cast<const void* const*>(bench.Upload(w1));
  const auto* dw3 = static_cast<const void* const*>(bench.Upload(w3));
  const auto* dw2 = static_cast<const void* const*>(bench.Upload(w2));
  std::mt19937 rng(1);
  for (int64_t tokens : {1, 16, 128, 1024, 4096}) {
    const int64_t rows = tokens * kTopK;
    std::vector<int32_t> offsets(kExperts + 1, 0);  // random routing, as counts per expert
    for (int64_t r = 0; r < rows; ++r) ++offsets[1 + rng() % kExperts];
    for (int64_t e = 0; e < kExperts; ++e) offsets[e + 1] += offsets[e];
    int64_t active = 0;
    for (int64_t e = 0; e < kExperts; ++e) active += offsets[e + 1] > offsets[e];
    const int32_t* doff = bench.Upload(offsets);
    void* x = bench.Buffer(static_cast<size_t>(rows * kHidden) * 2);
    void* h = bench.Buffer(static_cast<size_t>(rows * kFfn) * 2);
    void* y = bench.Buffer(static_cast<size_t>(rows * kHidden) * 2);
    const GroupedMatmulParams up{.x = x,
                                 .w = dw1,
                                 .w_up = dw3,
                                 .w_dtype = DType::kBF16,
                                 .y = h,
                                 .expert_offsets = doff,
                                 .num_experts = kExperts,
                                 .max_rows = rows,
                                 .n = kFfn,
                                 .k = kHidden,
                                 .act_dtype = DType::kBF16};
    const GroupedMatmulParams down{.x = h,
                                   .w = dw2,
                                   .w_dtype = DType::kBF16,
                                   .y = y,
                                   .expert_offsets = doff,
                                   .num_experts = kExperts,
                                   .max_rows = rows,
                                   .n = kHidden,
                                   .k = kFfn,
                                   .act_dtype = DType::kBF16};
    const double wbytes = 2.0 * active * kFfn * kHidden;
    bench.Time(absl::StrCat("grouped swiglu w1,w3 T=", tokens, " rows=", rows),
               4.0 * rows * kFfn * kHidden, 2 * wbytes, [&] { b.GroupedMatmul(up); });
    bench.Time(absl::StrCat("grouped w2 T=", tokens, " rows=", rows), 2.0 * rows * kFfn * kHidden,
               wbytes, [&] { b.GroupedMatmul(down); });
  }
  bench.Release();
}

void BenchAttention(Backend& b, Bench& bench) {
  struct Case {
    const char* what;
    int64_t seqs, ctx, queries;  // per sequence
  };
  for (const Case& c : {Case{"decode", 1, 4096, 1}, Case{"decode", 32, 4096, 1},
                        Case{"decode", 256, 4096, 1}, Case{"decode", 64, 32768, 1},
                        Case{"prefill", 1, 4096, 4096}, Case{"prefill", 8, 512, 512}}) {
    const int64_t blocks_per_seq = (c.ctx + kBlock - 1) / kBlock;
    const int64_t num_blocks = c.seqs * blocks_per_seq;
    std::vector<int32_t> tables(static_cast<size_t>(num_blocks));
    for (int64_t i = 0; i < num_blocks; ++i) tables[i] = static_cast<int32_t>(i);
    std::vector<int32_t> query_start(c.seqs + 1), context_lens(c.seqs, static_cast<int32_t>(c.ctx));
    for (int64_t s = 0; s <= c.seqs; ++s) query_start[s] = static_cast<int32_t>(s * c.queries);
    const int64_t tokens = c.seqs * c.queries;
    const size_t cache = static_cast<size_t>(num_blocks * kBlock * kKvHeads * kHeadDim) * 2;
    const PagedAttentionParams p{
        .q = bench.Buffer(static_cast<size_t>(tokens * kQHeads * kHeadDim) * 2),
        .out = bench.Buffer(static_cast<size_t>(tokens * kQHeads * kHeadDim) * 2),
        .k_cache = bench.Buffer(cache),
        .v_cache = bench.Buffer(cache),
        .block_tables = bench.Upload(tables),
        .query_start = bench.Upload(query_start),
        .context_lens = bench.Upload(context_lens),
        .num_seqs = c.seqs,
        .num_tokens = tokens,
        .num_q_heads = kQHeads,
        .num_kv_heads = kKvHeads,
        .head_dim = kHeadDim,
        .block_size = kBlock,
        .max_blocks_per_seq = blocks_per_seq,
        .num_blocks = num_blocks,
        .scale = 0.08838834764f,
        .act_dtype = DType::kBF16,
        .kv_dtype = DType::kBF16};
    // Keys seen: decode ctx per query; causal prefill about ctx/2 per query.
    const double keys = c.queries == 1 ? c.ctx : c.ctx / 2.0;
    bench.Time(absl::StrCat("attention ", c.what, " seqs=", c.seqs, " ctx=", c.ctx),
               4.0 * tokens * kQHeads * kHeadDim * keys, 2.0 * cache, [&] { b.PagedAttention(p); });
    bench.Release();
  }
}

void BenchSmall(Backend& b, Bench& bench) {
  for (int64_t rows : {1, 128, 4096}) {
    void* x = bench.Buffer(static_cast<size_t>(rows * kHidden) * 2);
    void* res = bench.Buffer(static_cast<size_t>(rows * kHidden) * 2);
    const RmsNormParams p{.x = x,
                          .weight = bench.Buffer(kHidden * 2),
                          .out = x,
                          .rows = rows,
                          .hidden = kHidden,
                          .act_dtype = DType::kBF16,
                          .residual = res};
    bench.Time(absl::StrCat("rmsnorm+residual rows=", rows), 0, 6.0 * rows * kHidden,
               [&] { b.RmsNorm(p); });
  }
  for (int64_t rows : {1, 64, 256}) {
    for (bool greedy : {true, false}) {
      std::vector<SampleRow> params(rows);
      for (SampleRow& r : params) {
        r.temperature = greedy ? 0.0f : 0.8f;
        r.top_p = greedy ? 1.0f : 0.95f;
        r.top_k = greedy ? -1 : 50;
      }
      const size_t ws = SampleWorkspaceBytes(rows, kVocab);
      const SampleParams p{.logits = static_cast<float*>(bench.Buffer(rows * kVocab * 4)),
                           .row_params = bench.Upload(params),
                           .history_tokens = static_cast<int32_t*>(bench.Buffer(4)),
                           .history_output_counts = static_cast<int32_t*>(bench.Buffer(4)),
                           .history_in_prompt = static_cast<uint8_t*>(bench.Buffer(4)),
                           .out_tokens = static_cast<int32_t*>(bench.Buffer(rows * 4)),
                           .rows = rows,
                           .vocab = kVocab,
                           .workspace = bench.Buffer(ws),
                           .workspace_bytes = ws};
      bench.Time(absl::StrCat("sample ", greedy ? "greedy" : "top_k50,top_p0.95", " rows=", rows),
                 0, 4.0 * rows * kVocab, [&] { b.Sample(p); });
    }
  }
  bench.Release();
}

}  // namespace
}  // namespace moeserve::kernels

int main() {
  using namespace moeserve::kernels;
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
  if (!cuda.ok()) {
    std::printf("backend_ops_bench: SKIPPED, no CUDA backend: %s\n",
                cuda.status().ToString().c_str());
    return 0;
  }
  Backend& b = **cuda;
  std::printf("backend_ops_bench on %s (bf16, Mixtral 8x7B shapes)\n", b.Describe().c_str());
  Bench bench(b);
  BenchMatmul(b, bench);
  BenchExperts(b, bench);
  BenchAttention(b, bench);
  BenchSmall(b, bench);
  return bench.ok() ? 0 : 1;
}
