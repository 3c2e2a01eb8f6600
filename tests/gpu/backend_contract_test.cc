// Backend-ops harness, the contract beyond single ops, on every backend present:
//  - batch invariance: one row alone vs the same row inside batches of 1/7/64/257 rows gives
//    bitwise-identical output (Matmul, GroupedMatmul, PagedAttention, RmsNorm);
//  - memory: an impossible request is ResourceExhausted (never a crash); on CUDA a second step's
//    scratch allocations after a free come from the pool (reserved memory does not grow);
//  - events and graphs (capture + replay equal eager execution bitwise);
//  - Sample: greedy rows and logprobs vs a double oracle; seeded draws equal to the CPU's.
#include <cuda_runtime.h>

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

struct InvarianceCase {
  std::string name;
  int64_t batch;
};

std::vector<InvarianceCase> InvarianceCases() {
  return {{"batch1", 1}, {"batch7", 7}, {"batch64", 64}, {"batch257", 257}};
}

class BatchInvarianceTest : public ::testing::TestWithParam<BackendAndCase<InvarianceCase>> {};

// The target row sits first and last in the batch; both copies must equal the row computed alone.
std::vector<float> PlantRow(const std::vector<float>& target, int64_t batch, uint32_t seed) {
  const size_t width = target.size();
  std::vector<float> x = RandomValues(width * static_cast<size_t>(batch), seed);
  std::copy(target.begin(), target.end(), x.begin());
  std::copy(target.begin(), target.end(), x.end() - static_cast<std::ptrdiff_t>(width));
  return x;
}

std::vector<uint8_t> RowBytes(const std::vector<uint8_t>& all, int64_t row, size_t row_bytes) {
  return {all.begin() + row * row_bytes, all.begin() + (row + 1) * row_bytes};
}

TEST_P(BatchInvarianceTest, Matmul) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  struct Shape {
    int64_t n, k;
    DType act, y;
  };
  for (const Shape& s :
       {Shape{256, 4096, DType::kBF16, DType::kBF16}, Shape{512, 4096, DType::kBF16, DType::kF32},
        Shape{37, 20, DType::kBF16, DType::kBF16}, Shape{256, 1024, DType::kF32, DType::kF32}}) {
    SCOPED_TRACE(absl::StrCat("n=", s.n, " k=", s.k, " ", DTypeLabel(s.act)));
    DeviceArena arena(*b);
    const std::vector<float> target = RandomValues(static_cast<size_t>(s.k), 80);
    const std::vector<float> x = PlantRow(target, c.batch, 81);
    const void* w = arena.UploadAs(RandomValues(static_cast<size_t>(s.n * s.k), 82, 0.05f), s.act);
    const size_t row_bytes = static_cast<size_t>(s.n) * DTypeSize(s.y);
    auto run = [&](const std::vector<float>& in, int64_t m) {
      MatmulParams p{.x = arena.UploadAs(in, s.act),
                     .w = w,
                     .w_dtype = s.act,
                     .y = arena.Alloc(row_bytes * static_cast<size_t>(m)),
                     .m_rows = m,
                     .n = s.n,
                     .k = s.k,
                     .x_dtype = s.act,
                     .y_dtype = s.y};
      b->Matmul(p);
      return arena.DownloadBytes(p.y, row_bytes * static_cast<size_t>(m));
    };
    const std::vector<uint8_t> alone = run(target, 1);
    const std::vector<uint8_t> batched = run(x, c.batch);
    EXPECT_TRUE(BitwiseEqual(alone, RowBytes(batched, 0, row_bytes))) << "first row";
    EXPECT_TRUE(BitwiseEqual(alone, RowBytes(batched, c.batch - 1, row_bytes))) << "last row";
  }
}

TEST_P(BatchInvarianceTest, RmsNorm) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  for (int64_t hidden : {int64_t{4096}, int64_t{37}}) {
    SCOPED_TRACE(absl::StrCat("hidden=", hidden));
    DeviceArena arena(*b);
    const DType act = DType::kBF16;
    const std::vector<float> target = RandomValues(static_cast<size_t>(hidden), 83, 2.0f);
    const std::vector<float> x = PlantRow(target, c.batch, 84);
    const void* w = arena.UploadAs(RandomValues(static_cast<size_t>(hidden), 85), DType::kBF16);
    const size_t row_bytes = static_cast<size_t>(hidden) * DTypeSize(act);
    auto run = [&](const std::vector<float>& in, int64_t rows) {
      RmsNormParams p{.x = arena.UploadAs(in, act),
                      .weight = w,
                      .weight_dtype = DType::kBF16,
                      .out = arena.Alloc(row_bytes * static_cast<size_t>(rows)),
                      .rows = rows,
                      .hidden = hidden,
                      .eps = 1e-5f,
                      .act_dtype = act};
      b->RmsNorm(p);
      return arena.DownloadBytes(p.out, row_bytes * static_cast<size_t>(rows));
    };
    const std::vector<uint8_t> alone = run(target, 1);
    const std::vector<uint8_t> batched = run(x, c.batch);
    EXPECT_TRUE(BitwiseEqual(alone, RowBytes(batched, 0, row_bytes))) << "first row";
    EXPECT_TRUE(BitwiseEqual(alone, RowBytes(batched, c.batch - 1, row_bytes))) << "last row";
  }
}

TEST_P(BatchInvarianceTest, GroupedMatmul) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const int64_t num_experts = 8, n = 256, k = 1024, target_expert = 2;
  const DType act = DType::kBF16;
  for (bool swiglu : {false, true}) {
    SCOPED_TRACE(swiglu ? "swiglu" : "plain");
    DeviceArena arena(*b);
    std::vector<const void*> w(num_experts), w_up(num_experts);
    for (int64_t e = 0; e < num_experts; ++e) {
      w[e] = arena.UploadAs(RandomValues(static_cast<size_t>(n * k), 90 + e, 0.05f), act);
      w_up[e] = arena.UploadAs(RandomValues(static_cast<size_t>(n * k), 190 + e, 0.05f), act);
    }
    const auto* dw = static_cast<const void* const*>(arena.Upload(w));
    const auto* dup = static_cast<const void* const*>(arena.Upload(w_up));
    const std::vector<float> target = RandomValues(static_cast<size_t>(k), 86);
    const size_t row_bytes = static_cast<size_t>(n) * DTypeSize(act);
    auto run = [&](const std::vector<float>& x, const std::vector<int32_t>& offsets) {
      const int64_t rows = offsets.back();
      GroupedMatmulParams p{.x = arena.UploadAs(x, act),
                            .w = dw,
                            .w_up = swiglu ? dup : nullptr,
                            .w_dtype = act,
                            .y = arena.Alloc(row_bytes * static_cast<size_t>(rows)),
                            .expert_offsets = arena.Upload(offsets),
                            .num_experts = num_experts,
                            .max_rows = rows,
                            .n = n,
                            .k = k,
                            .act_dtype = act};
      b->GroupedMatmul(p);
      return arena.DownloadBytes(p.y, row_bytes * static_cast<size_t>(rows));
    };
    // Alone: one row, on the target expert.
    std::vector<int32_t> alone_offsets(num_experts + 1, 0);
    for (int64_t e = target_expert + 1; e <= num_experts; ++e) alone_offsets[e] = 1;
    const std::vector<uint8_t> alone = run(target, alone_offsets);
    // Batched: `batch` rows spread over the experts; the target is the last row of its group.
    std::vector<int32_t> counts(num_experts, 0);
    std::mt19937 rng(87);
    for (int64_t r = 0; r + 1 < c.batch; ++r) ++counts[rng() % num_experts];
    ++counts[target_expert];
    std::vector<int32_t> offsets(num_experts + 1, 0);
    for (int64_t e = 0; e < num_experts; ++e) offsets[e + 1] = offsets[e] + counts[e];
    std::vector<float> x = RandomValues(static_cast<size_t>(c.batch * k), 88);
    const int64_t target_row = offsets[target_expert + 1] - 1;
    std::copy(target.begin(), target.end(), x.begin() + target_row * k);
    const std::vector<uint8_t> batched = run(x, offsets);
    EXPECT_TRUE(BitwiseEqual(alone, RowBytes(batched, target_row, row_bytes)));
  }
}

TEST_P(BatchInvarianceTest, PagedAttention) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const int64_t bs = 16, q_heads = 8, kv_heads = 2, hd = 64;
  const DType act = DType::kBF16, kv = DType::kBF16;
  // Sequences: the target (context 100, a chunk of 7 queries) in the middle; the others decode
  // with contexts in [1, 200].
  std::mt19937 rng(89);
  std::vector<int32_t> ctx(c.batch), nq(c.batch);
  const int64_t target = c.batch / 2;
  for (int64_t s = 0; s < c.batch; ++s) {
    ctx[s] = s == target ? 100 : static_cast<int32_t>(1 + rng() % 200);
    nq[s] = s == target ? 7 : 1;
  }
  const int64_t max_blocks = (200 + bs - 1) / bs;
  std::vector<int32_t> tables(static_cast<size_t>(c.batch * max_blocks), -1);
  int32_t next = 0;
  for (int64_t s = 0; s < c.batch; ++s) {
    for (int64_t j = 0; j < (ctx[s] + bs - 1) / bs; ++j) tables[s * max_blocks + j] = next++;
  }
  const int64_t num_blocks = next;
  DeviceArena arena(*b);
  const size_t cache_elems = static_cast<size_t>(num_blocks * bs * kv_heads * hd);
  const void* k_cache = arena.UploadAs(RandomValues(cache_elems, 90), kv);
  const void* v_cache = arena.UploadAs(RandomValues(cache_elems, 91), kv);
  const size_t q_row = static_cast<size_t>(q_heads * hd);
  const size_t row_bytes = q_row * DTypeSize(act);
  auto run = [&](int64_t first_seq, int64_t num_seqs) {
    std::vector<int32_t> qs(num_seqs + 1, 0), cl(num_seqs);
    for (int64_t s = 0; s < num_seqs; ++s) {
      qs[s + 1] = qs[s] + nq[first_seq + s];
      cl[s] = ctx[first_seq + s];
    }
    // Queries: the target's are the same values in both runs; others random.
    std::vector<float> q = RandomValues(q_row * static_cast<size_t>(qs[num_seqs]), 92);
    const std::vector<float> tq = RandomValues(q_row * 7, 93);
    const int64_t t0 = qs[target - first_seq];
    std::copy(tq.begin(), tq.end(), q.begin() + t0 * static_cast<int64_t>(q_row));
    const std::vector<int32_t> bt(tables.begin() + first_seq * max_blocks,
                                  tables.begin() + (first_seq + num_seqs) * max_blocks);
    PagedAttentionParams p{.q = arena.UploadAs(q, act),
                           .out = arena.Alloc(row_bytes * static_cast<size_t>(qs[num_seqs])),
                           .k_cache = k_cache,
                           .v_cache = v_cache,
                           .block_tables = arena.Upload(bt),
                           .query_start = arena.Upload(qs),
                           .context_lens = arena.Upload(cl),
                           .num_seqs = num_seqs,
                           .num_tokens = qs[num_seqs],
                           .num_q_heads = q_heads,
                           .num_kv_heads = kv_heads,
                           .head_dim = hd,
                           .block_size = bs,
                           .max_blocks_per_seq = max_blocks,
                           .num_blocks = num_blocks,
                           .scale = 0.125f,
                           .act_dtype = act,
                           .kv_dtype = kv};
    b->PagedAttention(p);
    const std::vector<uint8_t> out =
        arena.DownloadBytes(p.out, row_bytes * static_cast<size_t>(qs[num_seqs]));
    return std::vector<uint8_t>(out.begin() + t0 * row_bytes, out.begin() + (t0 + 7) * row_bytes);
  };
  EXPECT_TRUE(BitwiseEqual(run(target, 1), run(0, c.batch)));
}

INSTANTIATE_TEST_SUITE_P(Sizes, BatchInvarianceTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(InvarianceCases())),
                         ParamName());

// ---------------------------------------------------------------------------------- Memory

class BackendContractTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BackendContractTest, ImpossibleAllocationIsResourceExhausted) {
  MOESERVE_GET_BACKEND_OR_SKIP(b, GetParam());
  const size_t huge = size_t{1} << 50;  // 1 PiB
  absl::StatusOr<DeviceBuffer> a = b->Allocate(huge);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kResourceExhausted) << a.status();
  absl::StatusOr<DeviceBuffer> s = b->AllocateScratch(huge);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted) << s.status();
  // The backend still works afterwards.
  absl::StatusOr<DeviceBuffer> small = b->Allocate(1024);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_TRUE(b->MemsetAsync(small->data(), 0, 1024).ok());
  EXPECT_TRUE(b->Synchronize().ok());
  absl::StatusOr<DeviceMemoryInfo> info = b->MemoryInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_GT(info->total_bytes, 0u);
}

TEST_P(BackendContractTest, EventsAndCopies) {
  MOESERVE_GET_BACKEND_OR_SKIP(b, GetParam());
  absl::StatusOr<DeviceBuffer> host = b->AllocateHost(4096);
  ASSERT_TRUE(host.ok()) << host.status();
  absl::StatusOr<DeviceBuffer> dev = b->Allocate(4096);
  ASSERT_TRUE(dev.ok()) << dev.status();
  std::iota(host->as<uint8_t>(), host->as<uint8_t>() + 4096, 0);
  ASSERT_TRUE(b->CopyToDeviceAsync(dev->data(), host->data(), 4096).ok());
  ASSERT_TRUE(b->MemsetAsync(host->data(), 0, 0).ok());  // zero bytes: a no-op
  absl::StatusOr<DeviceBuffer> dev2 = b->AllocateScratch(4096);
  ASSERT_TRUE(dev2.ok()) << dev2.status();
  ASSERT_TRUE(b->CopyOnDeviceAsync(dev2->data(), dev->data(), 4096).ok());
  std::vector<uint8_t> back(4096, 0xff);
  ASSERT_TRUE(b->CopyToHostAsync(back.data(), dev2->data(), 4096).ok());
  absl::StatusOr<std::unique_ptr<Event>> ev = b->CreateEvent();
  ASSERT_TRUE(ev.ok()) << ev.status();
  ASSERT_TRUE(b->RecordEvent(**ev).ok());
  ASSERT_TRUE(b->WaitEvent(**ev).ok());
  for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(back[i], static_cast<uint8_t>(i));
  EXPECT_TRUE(b->Synchronize().ok());
}

// A step allocates and frees the same scratch sizes; from the second step on the pool serves
// them, so the memory the pool reserved from the driver does not grow.
TEST_P(BackendContractTest, ScratchReusesMemoryAcrossSteps) {
  MOESERVE_GET_BACKEND_OR_SKIP(b, GetParam());
  if (b->device() != Device::kCuda) GTEST_SKIP() << "pool statistics are CUDA's";
  cudaMemPool_t pool = nullptr;
  ASSERT_EQ(cudaDeviceGetDefaultMemPool(&pool, 0), cudaSuccess);
  auto step = [&] {
    std::vector<DeviceBuffer> bufs;
    for (size_t bytes : {size_t{1} << 20, size_t{37} << 20, size_t{200} << 10, size_t{64} << 20}) {
      absl::StatusOr<DeviceBuffer> s = b->AllocateScratch(bytes);
      ASSERT_TRUE(s.ok()) << s.status();
      ASSERT_TRUE(b->MemsetAsync(s->data(), 1, bytes).ok());
      bufs.push_back(std::move(*s));
    }
    bufs.clear();  // cudaFreeAsync on the stream
    ASSERT_TRUE(b->Synchronize().ok());
  };
  uint64_t reserved[4] = {};
  for (uint64_t& r : reserved) {
    step();
    ASSERT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &r), cudaSuccess);
  }
  EXPECT_GE(reserved[0], uint64_t{102} << 20);
  EXPECT_EQ(reserved[1], reserved[0]);
  EXPECT_EQ(reserved[3], reserved[0]);
}

// ---------------------------------------------------------------------------------- Graphs

TEST_P(BackendContractTest, GraphReplayEqualsEagerRun) {
  MOESERVE_GET_BACKEND_OR_SKIP(b, GetParam());
  if (!b->SupportsGraphs()) {
    EXPECT_EQ(b->BeginCapture().code(), absl::StatusCode::kUnimplemented);
    GTEST_SKIP() << b->name() << " has no graphs (callers run eagerly)";
  }
  const int64_t rows = 5, hidden = 256, n = 96;
  const DType act = DType::kBF16;
  DeviceArena arena(*b);
  void* x = arena.Alloc(static_cast<size_t>(rows * hidden) * 2);  // persistent input
  void* h = arena.Alloc(static_cast<size_t>(rows * hidden) * 2);
  void* y = arena.Alloc(static_cast<size_t>(rows * n) * 2);
  const void* nw = arena.UploadAs(RandomValues(hidden, 100), DType::kBF16);
  const void* w = arena.UploadAs(RandomValues(static_cast<size_t>(n * hidden), 101, 0.05f), act);
  const RmsNormParams norm{.x = x,
                           .weight = nw,
                           .weight_dtype = DType::kBF16,
                           .out = h,
                           .rows = rows,
                           .hidden = hidden,
                           .act_dtype = act};
  const MatmulParams mm{.x = h,
                        .w = w,
                        .w_dtype = act,
                        .y = y,
                        .m_rows = rows,
                        .n = n,
                        .k = hidden,
                        .x_dtype = act,
                        .y_dtype = act};
  auto load = [&](uint32_t seed) {
    const std::vector<uint8_t> in =
        Encode(RandomValues(static_cast<size_t>(rows * hidden), seed), act);
    ASSERT_TRUE(b->CopyToDevice(x, in.data(), in.size()).ok());
  };
  // Eager reference for two inputs.
  std::vector<std::vector<uint8_t>> eager;
  for (uint32_t seed : {102u, 103u}) {
    load(seed);
    b->RmsNorm(norm);
    b->Matmul(mm);
    eager.push_back(arena.DownloadBytes(y, static_cast<size_t>(rows * n) * 2));
  }
  ASSERT_TRUE(b->BeginCapture().ok());
  b->RmsNorm(norm);
  b->Matmul(mm);
  absl::StatusOr<std::unique_ptr<Graph>> graph = b->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (int i : {0, 1, 0}) {
    load(i == 0 ? 102u : 103u);
    ASSERT_TRUE(b->Replay(**graph).ok());
    EXPECT_TRUE(BitwiseEqual(eager[i], arena.DownloadBytes(y, static_cast<size_t>(rows * n) * 2)))
        << "replay with input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendContractTest, ValuesIn(BackendNames()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

// ---------------------------------------------------------------------------------- Sample

struct SampleCase {
  std::string name;
  int64_t rows, vocab;
  bool random;  // temperature > 0 rows (else greedy)
};

std::vector<SampleCase> SampleCases() {
  return {{"empty", 0, 37, false},
          {"greedy_one_v37", 1, 37, false},
          {"greedy_rows7_v32000", 7, 32000, false},
          {"random_rows7_v37", 7, 37, true},
          {"random_rows64_v32000", 64, 32000, true}};
}

class SampleTest : public ::testing::TestWithParam<BackendAndCase<SampleCase>> {};

struct SampleOutput {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int32_t> top_tokens;
  std::vector<float> top_logprobs;
};

constexpr int64_t kTopLogprobs = 3;

SampleOutput RunSample(Backend& be, const SampleCase& c, const std::vector<float>& logits,
                       const std::vector<SampleRow>& rows, const std::vector<int32_t>& hist,
                       const std::vector<int32_t>& hist_counts,
                       const std::vector<uint8_t>& hist_prompt) {
  DeviceArena arena(be);
  const size_t r = static_cast<size_t>(c.rows);
  const size_t ws = SampleWorkspaceBytes(c.rows, c.vocab);
  SampleParams p{.logits = arena.Upload(logits),
                 .row_params = arena.Upload(rows),
                 .history_tokens = arena.Upload(hist),
                 .history_output_counts = arena.Upload(hist_counts),
                 .history_in_prompt = arena.Upload(hist_prompt),
                 .num_history = static_cast<int64_t>(hist.size()),
                 .out_tokens = static_cast<int32_t*>(arena.Alloc(r * 4)),
                 .out_logprobs = static_cast<float*>(arena.Alloc(r * 4)),
                 .out_top_tokens = static_cast<int32_t*>(arena.Alloc(r * kTopLogprobs * 4)),
                 .out_top_logprobs = static_cast<float*>(arena.Alloc(r * kTopLogprobs * 4)),
                 .rows = c.rows,
                 .vocab = c.vocab,
                 .max_top_logprobs = kTopLogprobs,
                 .workspace = ws > 0 ? arena.Alloc(ws) : nullptr,
                 .workspace_bytes = ws};
  EXPECT_TRUE(Validate(p).ok()) << Validate(p);
  be.Sample(p);
  return {arena.Download(p.out_tokens, r), arena.Download(p.out_logprobs, r),
          arena.Download(p.out_top_tokens, r * kTopLogprobs),
          arena.Download(p.out_top_logprobs, r * kTopLogprobs)};
}

TEST_P(SampleTest, GreedyMatchesOracleAndDrawsMatchReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  std::vector<float> logits = RandomValues(static_cast<size_t>(c.rows * c.vocab), 110, 3.0f);
  // A tie for the maximum in row 0 (greedy picks the lower id).
  if (c.rows > 0) logits[5] = logits[c.vocab - 2] = 50.0f;
  std::vector<SampleRow> rows(static_cast<size_t>(c.rows));
  std::vector<int32_t> hist, hist_counts;
  std::vector<uint8_t> hist_prompt;
  for (int64_t r = 0; r < c.rows; ++r) {
    SampleRow& row = rows[r];
    row.num_top_logprobs = static_cast<int32_t>(r % (kTopLogprobs + 1));
    row.stream_key = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r + 1);
    row.draw_index = static_cast<uint64_t>(r);
    if (c.random) {
      row.temperature = 0.7f + 0.1f * static_cast<float>(r % 4);
      row.top_k = r % 3 == 1 ? 5 : -1;
      row.top_p = r % 3 == 2 ? 0.9f : 1.0f;
      row.min_p = r % 5 == 3 ? 0.05f : 0.0f;
      row.repetition_penalty = r % 2 ? 1.2f : 1.0f;
      row.frequency_penalty = r % 4 == 1 ? 0.5f : 0.0f;
      row.presence_penalty = r % 4 == 2 ? 0.3f : 0.0f;
      row.history_begin = static_cast<int32_t>(hist.size());
      for (int32_t i = 0; i < 3; ++i) {
        hist.push_back(static_cast<int32_t>((r * 7 + i * 3) % c.vocab));
        hist_counts.push_back(i);
        hist_prompt.push_back(static_cast<uint8_t>(i % 2));
      }
      row.history_end = static_cast<int32_t>(hist.size());
    }
  }
  const SampleOutput got = RunSample(*b, c, logits, rows, hist, hist_counts, hist_prompt);
  for (int64_t r = 0; r < c.rows; ++r) {
    // Logprobs are of the raw logits: log_softmax in double.
    const float* row = logits.data() + r * c.vocab;
    double mx = -1e300, sum = 0.0;
    for (int64_t v = 0; v < c.vocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (int64_t v = 0; v < c.vocab; ++v) sum += std::exp(row[v] - mx);
    const double log_z = mx + std::log(sum);
    const int32_t tok = got.tokens[r];
    ASSERT_GE(tok, 0);
    ASSERT_LT(tok, c.vocab);
    EXPECT_NEAR(got.logprobs[r], row[tok] - log_z, 1e-4) << "row " << r;
    if (!c.random) {
      const int64_t argmax = std::max_element(row, row + c.vocab) - row;  // first maximum
      EXPECT_EQ(tok, argmax) << "row " << r;
    }
    for (int32_t j = 0; j < rows[r].num_top_logprobs; ++j) {
      const int32_t t = got.top_tokens[r * kTopLogprobs + j];
      ASSERT_GE(t, 0);
      ASSERT_LT(t, c.vocab);
      EXPECT_NEAR(got.top_logprobs[r * kTopLogprobs + j], row[t] - log_z, 1e-4);
      if (j > 0) {
        EXPECT_GE(row[got.top_tokens[r * kTopLogprobs + j - 1]], row[t]) << "descending";
      }
    }
  }
  if (b != &CpuBackend()) {  // the same counter-based stream: the same draws as the CPU
    const SampleOutput ref =
        RunSample(CpuBackend(), c, logits, rows, hist, hist_counts, hist_prompt);
    EXPECT_EQ(got.tokens, ref.tokens);
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int32_t j = 0; j < rows[r].num_top_logprobs; ++j) {
        EXPECT_EQ(got.top_tokens[r * kTopLogprobs + j], ref.top_tokens[r * kTopLogprobs + j])
            << "row " << r << " top " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, SampleTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(SampleCases())), ParamName());

}  // namespace
}  // namespace moeserve::kernels::testing
