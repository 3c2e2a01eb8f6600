// Backend-ops harness, attention: KvWrite and PagedAttention on every backend present, against
// double-precision oracles and (for CUDA) the CPU reference. Grids: decode, prefill and chunked
// prefill; context lengths at block boundaries (bs-1, bs, bs+1, 2bs, 2bs+1); sliding windows 1,
// bs-1, bs+1 (with the blocks before the window released, -1 in the table); GQA ratios 1/4/8;
// head_dim 64/128; fp32 and bf16 activations and KV; an empty batch; a sequence with no queries;
// and "poisoned" caches (NaN in every slot no query may see).
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "tests/gpu/backend_ops_harness.h"

namespace moeserve::kernels::testing {
namespace {

using ::testing::Combine;
using ::testing::ValuesIn;

constexpr int64_t kBs = 16;  // block size of every case

// ---------------------------------------------------------------------------------- KvWrite

struct KvWriteCase {
  std::string name;
  int64_t num_tokens, num_kv_heads, head_dim, num_blocks;
  DType act, kv;
};

std::vector<KvWriteCase> KvWriteCases() {
  std::vector<KvWriteCase> cases;
  for (DType act : {DType::kF32, DType::kBF16}) {
    for (DType kv : {DType::kF32, DType::kBF16}) {
      const std::string dt = absl::StrCat(DTypeLabel(act), "_kv", DTypeLabel(kv));
      cases.push_back({"empty_" + dt, 0, 2, 64, 4, act, kv});
      cases.push_back({"one_" + dt, 1, 1, 64, 2, act, kv});
      cases.push_back({"t37_kv8_hd128_" + dt, 37, 8, 128, 5, act, kv});
    }
  }
  cases.push_back({"large_T512_kv8_hd128_bf16", 512, 8, 128, 40, DType::kBF16, DType::kBF16});
  return cases;
}

class KvWriteTest : public ::testing::TestWithParam<BackendAndCase<KvWriteCase>> {};

TEST_P(KvWriteTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const int64_t row = c.num_kv_heads * c.head_dim;
  const int64_t num_slots = c.num_blocks * kBs;
  const std::vector<float> k = RandomValues(static_cast<size_t>(c.num_tokens * row), 20);
  const std::vector<float> v = RandomValues(static_cast<size_t>(c.num_tokens * row), 21);
  const std::vector<float> k_init = RandomValues(static_cast<size_t>(num_slots * row), 22);
  const std::vector<float> v_init = RandomValues(static_cast<size_t>(num_slots * row), 23);
  // Distinct slots in a scrambled order; every 5th token is skipped (slot -1).
  std::vector<int64_t> slots(static_cast<size_t>(num_slots));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), std::mt19937(24));
  slots.resize(static_cast<size_t>(c.num_tokens));
  for (size_t t = 3; t < slots.size(); t += 5) slots[t] = -1;

  Expected want(static_cast<size_t>(2 * num_slots * row));
  for (int64_t i = 0; i < num_slots * row; ++i) {
    want.value[i] = k_init[i];
    want.value[num_slots * row + i] = v_init[i];
  }
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    if (slots[t] < 0) continue;
    for (int64_t i = 0; i < row; ++i) {
      want.value[slots[t] * row + i] = k[t * row + i];
      want.value[num_slots * row + slots[t] * row + i] = v[t * row + i];
    }
  }
  KvWriteParams host{.num_tokens = c.num_tokens,
                     .num_kv_heads = c.num_kv_heads,
                     .head_dim = c.head_dim,
                     .num_slots = num_slots,
                     .act_dtype = c.act,
                     .kv_dtype = c.kv};
  ASSERT_TRUE(ValidateIndices(host, slots.data()).ok()) << ValidateIndices(host, slots.data());
  // bf16-representable values: the copy into the cache is exact in every dtype.
  CheckOp(*b, want, Tolerance{0.0, 0.0}, [&](Backend& be) {
    DeviceArena arena(be);
    KvWriteParams p = host;
    p.k = arena.UploadAs(k, c.act);
    p.v = arena.UploadAs(v, c.act);
    p.k_cache = arena.UploadAs(k_init, c.kv);
    p.v_cache = arena.UploadAs(v_init, c.kv);
    p.slots = arena.Upload(slots);
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.KvWrite(p);
    std::vector<float> out =
        arena.DownloadAs(p.k_cache, static_cast<size_t>(num_slots * row), c.kv);
    const std::vector<float> vo =
        arena.DownloadAs(p.v_cache, static_cast<size_t>(num_slots * row), c.kv);
    out.insert(out.end(), vo.begin(), vo.end());
    return out;
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, KvWriteTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(KvWriteCases())), ParamName());

// ---------------------------------------------------------------------------------- Attention

struct SeqShape {
  int32_t context_len;
  int32_t num_queries;  // the last num_queries positions
};

struct AttentionCase {
  std::string name;
  int64_t num_q_heads, num_kv_heads, head_dim;
  int64_t sliding_window;
  DType act, kv;
  std::vector<SeqShape> seqs;
  bool poison = false;  // NaN in every cache slot no query may read; released blocks are -1
};

std::vector<AttentionCase> AttentionCases() {
  struct Dt {
    DType act, kv;
  };
  const Dt dtypes[] = {
      {DType::kF32, DType::kF32}, {DType::kBF16, DType::kBF16}, {DType::kF32, DType::kBF16}};
  const std::vector<SeqShape> decode = {{1, 1},  {15, 1}, {16, 1}, {17, 1},
                                        {32, 1}, {33, 1}, {70, 1}};
  const std::vector<SeqShape> prefill = {{1, 1}, {16, 16}, {17, 17}, {40, 40}};
  const std::vector<SeqShape> mixed = {{40, 7}, {10, 0}, {1, 1}, {33, 33}, {48, 1}};
  struct Heads {
    int64_t q, kv;
  };
  const Heads heads[] = {{4, 4}, {8, 2}, {8, 1}};  // GQA ratios 1, 4, 8
  std::vector<AttentionCase> cases;
  for (const Dt& d : dtypes) {
    const std::string dt = absl::StrCat(DTypeLabel(d.act), "_kv", DTypeLabel(d.kv));
    for (const Heads& h : heads) {
      const std::string hs = absl::StrCat("q", h.q, "kv", h.kv);
      cases.push_back({"decode_" + hs + "_" + dt, h.q, h.kv, 128, 0, d.act, d.kv, decode});
      cases.push_back({"prefill_" + hs + "_" + dt, h.q, h.kv, 64, 0, d.act, d.kv, prefill});
      cases.push_back({"mixed_" + hs + "_" + dt, h.q, h.kv, 128, 0, d.act, d.kv, mixed});
    }
    for (int64_t window : {int64_t{1}, kBs - 1, kBs + 1}) {
      const std::string ws = absl::StrCat("window", window, "_");
      cases.push_back({ws + "decode_" + dt, 8, 2, 128, window, d.act, d.kv, decode, true});
      cases.push_back({ws + "mixed_" + dt, 8, 2, 64, window, d.act, d.kv, mixed, true});
    }
    cases.push_back({"empty_" + dt, 8, 2, 128, 0, d.act, d.kv, {}});
    cases.push_back({"poison_mixed_" + dt, 8, 1, 128, 0, d.act, d.kv, mixed, true});
  }
  cases.push_back(
      {"large_prefill_T512_q32kv8_bf16", 32, 8, 128, 0, DType::kBF16, DType::kBF16, {{512, 512}}});
  cases.push_back({"large_decode_ctx4096_q32kv8_window4096_bf16",
                   32,
                   8,
                   128,
                   4096,
                   DType::kBF16,
                   DType::kBF16,
                   {{4100, 1}, {4096, 1}, {1000, 1}},
                   true});
  return cases;
}

class PagedAttentionTest : public ::testing::TestWithParam<BackendAndCase<AttentionCase>> {};

TEST_P(PagedAttentionTest, MatchesOracleAndReference) {
  const auto& [backend_name, c] = GetParam();
  MOESERVE_GET_BACKEND_OR_SKIP(b, backend_name);
  const int64_t num_seqs = static_cast<int64_t>(c.seqs.size());
  const int64_t kv_row = c.num_kv_heads * c.head_dim;
  const int64_t q_row = c.num_q_heads * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // Sequence layout: query_start, block tables over a shuffled pool with two spare blocks.
  std::vector<int32_t> query_start(static_cast<size_t>(num_seqs + 1), 0);
  std::vector<int32_t> context_lens(static_cast<size_t>(num_seqs));
  int64_t max_blocks = 1;
  int64_t total_blocks = 2;
  for (int64_t s = 0; s < num_seqs; ++s) {
    query_start[s + 1] = query_start[s] + c.seqs[s].num_queries;
    context_lens[s] = c.seqs[s].context_len;
    const int64_t blocks = (c.seqs[s].context_len + kBs - 1) / kBs;
    max_blocks = std::max(max_blocks, blocks + 1);  // + 1: an unused -1 entry at the end
    total_blocks += blocks;
  }
  const int64_t num_tokens = query_start[num_seqs];
  std::vector<int32_t> pool(static_cast<size_t>(total_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(30));
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs * max_blocks), -1);
  size_t next = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t j = 0; j < (context_lens[s] + kBs - 1) / kBs; ++j) {
      tables[s * max_blocks + j] = pool[next++];
    }
  }

  // Cache contents: random at every key position of every sequence; elsewhere zero, or NaN for
  // poisoned cases (slots past a context, spare blocks, and keys before a sliding window).
  const size_t cache_elems = static_cast<size_t>(total_blocks * kBs * kv_row);
  const float fill = c.poison ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  std::vector<float> k_cache(cache_elems, fill);
  std::vector<float> v_cache(cache_elems, fill);
  const std::vector<float> k_vals = RandomValues(cache_elems, 31);
  const std::vector<float> v_vals = RandomValues(cache_elems, 32);
  auto slot_of = [&](int64_t s, int64_t j) {
    return static_cast<int64_t>(tables[s * max_blocks + j / kBs]) * kBs + j % kBs;
  };
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t n_q = c.seqs[s].num_queries;
    const int64_t first_pos = context_lens[s] - n_q;
    // The first key any query of s can see.
    const int64_t first_key =
        c.sliding_window > 0 ? std::max<int64_t>(0, first_pos - c.sliding_window + 1) : 0;
    for (int64_t j = c.poison ? first_key : 0; j < context_lens[s]; ++j) {
      const int64_t base = slot_of(s, j) * kv_row;
      for (int64_t i = 0; i < kv_row; ++i) {
        k_cache[base + i] = k_vals[base + i];
        v_cache[base + i] = v_vals[base + i];
      }
    }
    if (c.poison) {  // release the blocks wholly before the window, as the scheduler may
      for (int64_t blk = 0; blk < first_key / kBs; ++blk) tables[s * max_blocks + blk] = -1;
    }
  }
  const std::vector<float> q = RandomValues(static_cast<size_t>(num_tokens * q_row), 33);

  // The oracle, in double.
  Expected want(static_cast<size_t>(num_tokens * q_row));
  const int64_t group = c.num_q_heads / c.num_kv_heads;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t n_q = c.seqs[s].num_queries;
    for (int64_t i = 0; i < n_q; ++i) {
      const int64_t t = query_start[s] + i;
      const int64_t pos = context_lens[s] - n_q + i;
      const int64_t first =
          c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
      for (int64_t h = 0; h < c.num_q_heads; ++h) {
        const int64_t kvh = h / group;
        std::vector<double> score(static_cast<size_t>(pos - first + 1));
        double max_score = -1e300;
        for (int64_t j = first; j <= pos; ++j) {
          double dot = 0.0;
          const int64_t kb = slot_of(s, j) * kv_row + kvh * c.head_dim;
          for (int64_t d = 0; d < c.head_dim; ++d) {
            dot +=
                static_cast<double>(q[(t * c.num_q_heads + h) * c.head_dim + d]) * k_cache[kb + d];
          }
          score[j - first] = dot * scale;
          max_score = std::max(max_score, score[j - first]);
        }
        double denom = 0.0;
        for (double& sc : score) denom += (sc = std::exp(sc - max_score));
        for (int64_t d = 0; d < c.head_dim; ++d) {
          double acc = 0.0;
          double mag = 0.0;
          for (int64_t j = first; j <= pos; ++j) {
            const double pv =
                score[j - first] / denom * v_cache[slot_of(s, j) * kv_row + kvh * c.head_dim + d];
            acc += pv;
            mag += std::fabs(pv);
          }
          const size_t o = static_cast<size_t>((t * c.num_q_heads + h) * c.head_dim + d);
          want.value[o] = acc;
          // An error in a score moves its weight relatively: sum_j p_j |v_j| bounds the effect.
          want.magnitude[o] = mag;
        }
      }
    }
  }

  PagedAttentionParams host{.num_seqs = num_seqs,
                            .num_tokens = num_tokens,
                            .num_q_heads = c.num_q_heads,
                            .num_kv_heads = c.num_kv_heads,
                            .head_dim = c.head_dim,
                            .block_size = kBs,
                            .max_blocks_per_seq = max_blocks,
                            .num_blocks = total_blocks,
                            .sliding_window = c.sliding_window,
                            .scale = scale,
                            .act_dtype = c.act,
                            .kv_dtype = c.kv};
  if (num_seqs > 0) {  // (an empty batch has no host arrays to check)
    const absl::Status valid =
        ValidateIndices(host, tables.data(), query_start.data(), context_lens.data());
    ASSERT_TRUE(valid.ok()) << valid;
  }
  // bf16 q/out (and a kernel may round P to bf16 for the P.V product): 2^-6 of the magnitude.
  const bool low = c.act == DType::kBF16 || c.kv == DType::kBF16;
  const Tolerance tol{OutputRel(c.act), low ? 1.0 / 64 : 1e-4};
  CheckOp(*b, want, tol, [&](Backend& be) {
    DeviceArena arena(be);
    PagedAttentionParams p = host;
    p.q = arena.UploadAs(q, c.act);
    p.out = arena.Alloc(static_cast<size_t>(num_tokens * q_row) * DTypeSize(c.act));
    p.k_cache = arena.UploadAs(k_cache, c.kv);
    p.v_cache = arena.UploadAs(v_cache, c.kv);
    p.block_tables = arena.Upload(tables);
    p.query_start = arena.Upload(query_start);
    p.context_lens = arena.Upload(context_lens);
    EXPECT_TRUE(Validate(p).ok()) << Validate(p);
    be.PagedAttention(p);
    return arena.DownloadAs(p.out, static_cast<size_t>(num_tokens * q_row), c.act);
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, PagedAttentionTest,
                         Combine(ValuesIn(BackendNames()), ValuesIn(AttentionCases())),
                         ParamName());

}  // namespace
}  // namespace moeserve::kernels::testing
