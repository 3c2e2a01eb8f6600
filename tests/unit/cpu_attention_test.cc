// CPU paged attention (kernels/cpu/attention.cc) on every SIMD path this CPU runs: against a
// float64 oracle written from the op definition (prefill, decode, mixed batches, GQA, sliding
// window, scattered blocks, head sizes with vector tails), and bitwise: a query token gives the
// same bits in a batch, alone, in a chunked prefill and in a decode step, on 1 or 2 threads, and
// on the scalar, AVX2 and AVX-512 paths.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/attention_tile.h"
#include "kernels/cpu/cpu_features.h"
#include "tests/unit/test_vectors.h"

namespace moeserve::kernels {
namespace {

using test::RandomVector;
using test::SameBits;

using cpu::CpuIsa;

std::vector<CpuIsa> IsasPresent() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (isa <= cpu::DetectCpuIsa()) isas.push_back(isa);
  }
  return isas;
}

struct Shape {
  int64_t hq, hkv, d, block, window;
};

// One sequence's keys, values and the queries of all its positions: [len, heads, d].
struct SeqData {
  int64_t len = 0;
  std::vector<float> k, v, q;
  std::vector<int32_t> table;  // block ids, scattered over the pool
};

// A KV pool holding several sequences in shuffled blocks.
struct Pool {
  Shape shape;
  int64_t num_blocks = 0, max_blocks = 0;
  std::vector<float> k_cache, v_cache;
  std::vector<SeqData> seqs;

  Pool(const Shape& s, const std::vector<int64_t>& lens, uint32_t seed) : shape(s) {
    std::mt19937 rng(seed);
    for (int64_t len : lens) {
      const int64_t blocks = (len + s.block - 1) / s.block;
      num_blocks += blocks + 1;  // a spare block per sequence keeps ids non-contiguous
      max_blocks = std::max(max_blocks, blocks + 1);
    }
    std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    const int64_t row = s.hkv * s.d;
    // NaN everywhere no sequence writes: a read outside the visible keys poisons the output.
    k_cache.assign(static_cast<size_t>(num_blocks * s.block * row), NAN);
    v_cache = k_cache;
    size_t next_id = 0;
    for (int64_t len : lens) {
      SeqData seq;
      seq.len = len;
      seq.k = RandomVector(static_cast<size_t>(len * row), rng);
      seq.v = RandomVector(static_cast<size_t>(len * row), rng);
      seq.q = RandomVector(static_cast<size_t>(len * s.hq * s.d), rng, 2.0f);
      for (int64_t b = 0; b < (len + s.block - 1) / s.block; ++b) {
        seq.table.push_back(ids[next_id++]);
      }
      ++next_id;  // the spare
      for (int64_t j = 0; j < len; ++j) {
        const int64_t slot = seq.table[j / s.block] * s.block + j % s.block;
        std::copy_n(seq.k.begin() + j * row, row, k_cache.begin() + slot * row);
        std::copy_n(seq.v.begin() + j * row, row, v_cache.begin() + slot * row);
      }
      seqs.push_back(std::move(seq));
    }
  }
};

// A batch entry: queries for positions [ctx - n_q, ctx) of pool sequence `seq`.
struct Entry {
  int seq;
  int64_t ctx, n_q;
};

// The op's inputs for a batch, kept alive together.
struct Batch {
  std::vector<float> q;
  std::vector<int32_t> tables, query_start, context_lens;
  PagedAttentionParams p;
};

Batch MakeBatch(const Pool& pool, const std::vector<Entry>& entries) {
  const Shape& s = pool.shape;
  Batch b;
  b.query_start.push_back(0);
  for (const Entry& e : entries) {
    const SeqData& seq = pool.seqs[e.seq];
    const int64_t q_row = s.hq * s.d;
    b.q.insert(b.q.end(), seq.q.begin() + (e.ctx - e.n_q) * q_row, seq.q.begin() + e.ctx * q_row);
    b.query_start.push_back(static_cast<int32_t>(b.query_start.back() + e.n_q));
    b.context_lens.push_back(static_cast<int32_t>(e.ctx));
    std::vector<int32_t> t = seq.table;
    if (s.window > 0) {
      // Blocks wholly before every query's window may already be released.
      const int64_t first_key = std::max<int64_t>(0, e.ctx - e.n_q - s.window + 1);
      for (int64_t blk = 0; blk < first_key / s.block; ++blk) t[blk] = -1;
    }
    t.resize(static_cast<size_t>(pool.max_blocks), -1);
    b.tables.insert(b.tables.end(), t.begin(), t.end());
  }
  PagedAttentionParams& p = b.p;
  p.q = b.q.data();
  p.k_cache = pool.k_cache.data();
  p.v_cache = pool.v_cache.data();
  p.block_tables = b.tables.data();
  p.query_start = b.query_start.data();
  p.context_lens = b.context_lens.data();
  p.num_seqs = static_cast<int64_t>(entries.size());
  p.num_tokens = b.query_start.back();
  p.num_q_heads = s.hq;
  p.num_kv_heads = s.hkv;
  p.head_dim = s.d;
  p.block_size = s.block;
  p.max_blocks_per_seq = pool.max_blocks;
  p.num_blocks = pool.num_blocks;
  p.sliding_window = s.window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(s.d));
  return b;
}

std::vector<float> RunAttention(const Batch& b, CpuIsa isa) {
  std::vector<float> out(static_cast<size_t>(b.p.num_tokens * b.p.num_q_heads * b.p.head_dim), NAN);
  PagedAttentionParams p = b.p;
  p.out = out.data();
  EXPECT_TRUE(Validate(p).ok());
  EXPECT_TRUE(
      ValidateIndices(p, b.tables.data(), b.query_start.data(), b.context_lens.data()).ok());
  cpu::PagedAttention(p, isa);
  return out;
}

// Float64 attention of one query (position pos, head h) of a pool sequence, from the op's
// definition: softmax over keys j <= pos inside the window, times V.
std::vector<double> Oracle(const Pool& pool, int seq, int64_t pos, int64_t h) {
  const Shape& s = pool.shape;
  const SeqData& sd = pool.seqs[seq];
  const int64_t g = h / (s.hq / s.hkv);
  std::vector<double> scores;
  std::vector<int64_t> keys;
  for (int64_t j = 0; j <= pos; ++j) {
    if (s.window > 0 && pos - j >= s.window) continue;
    double dot = 0;
    for (int64_t t = 0; t < s.d; ++t) {
      dot += double(sd.q[(pos * s.hq + h) * s.d + t]) * sd.k[(j * s.hkv + g) * s.d + t];
    }
    scores.push_back(dot / std::sqrt(double(s.d)));
    keys.push_back(j);
  }
  const double mx = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  for (double& x : scores) sum += (x = std::exp(x - mx));
  std::vector<double> out(static_cast<size_t>(s.d), 0.0);
  for (size_t a = 0; a < keys.size(); ++a) {
    for (int64_t t = 0; t < s.d; ++t) {
      out[t] += scores[a] / sum * sd.v[(keys[a] * s.hkv + g) * s.d + t];
    }
  }
  return out;
}

// Shapes: tiny (group 4, d 32), Mixtral's heads (group 4, d 128), a group of 16, a group of 3
// (tiles end mid-token), d 40 and 8 (vector tails), block sizes that do not divide anything.
const Shape kShapes[] = {
    {8, 2, 32, 16, 0}, {32, 8, 128, 16, 0}, {16, 1, 8, 5, 0},
    {6, 2, 40, 3, 0},  {8, 2, 32, 4, 7},    {6, 2, 64, 16, 20},
};

TEST(CpuAttentionTest, MatchesFloat64OracleOnEveryPath) {
  for (const Shape& s : kShapes) {
    const Pool pool(s, {33, 50, 29, 1, 5, 70}, 100 + static_cast<uint32_t>(s.d + s.window));
    // A full prefill, a decode, a prefill chunk, a one-token sequence, a sequence with no queries
    // this step, and a long chunk whose tiles span many keys.
    const std::vector<Entry> entries = {{0, 33, 33}, {1, 50, 1}, {2, 29, 7},
                                        {3, 1, 1},   {4, 5, 0},  {5, 70, 20}};
    const Batch b = MakeBatch(pool, entries);
    for (CpuIsa isa : IsasPresent()) {
      const std::vector<float> out = RunAttention(b, isa);
      int64_t token = 0;
      double worst = 0;
      for (const Entry& e : entries) {
        for (int64_t i = 0; i < e.n_q; ++i, ++token) {
          for (int64_t h = 0; h < s.hq; ++h) {
            const std::vector<double> want = Oracle(pool, e.seq, e.ctx - e.n_q + i, h);
            for (int64_t t = 0; t < s.d; ++t) {
              const double got = out[(token * s.hq + h) * s.d + t];
              worst = std::max(worst, std::fabs(got - want[t]));
            }
          }
        }
      }
      // |v| <= 1: the output is a convex combination of V rows.
      EXPECT_LT(worst, 2e-6) << "isa " << cpu::CpuIsaName(isa) << " hq " << s.hq << " d " << s.d
                             << " window " << s.window;
    }
  }
}

// A token's rows from a result laid out as MakeBatch(entries) lays them out.
const float* TokenRows(const std::vector<float>& out, const std::vector<Entry>& entries, int seq,
                       int64_t pos, const Shape& s) {
  int64_t token = 0;
  for (const Entry& e : entries) {
    if (e.seq == seq && pos >= e.ctx - e.n_q && pos < e.ctx) {
      return out.data() + (token + pos - (e.ctx - e.n_q)) * s.hq * s.d;
    }
    token += e.n_q;
  }
  ADD_FAILURE() << "position " << pos << " not in batch";
  return nullptr;
}

TEST(CpuAttentionTest, TokenBitsDoNotDependOnBatchChunkingDecodeOrPath) {
  for (const Shape& s : {kShapes[0], kShapes[2], kShapes[3], kShapes[4]}) {
    // Sequence 0 is the one we follow; 1 and 2 share the batch.
    const int64_t len = 37;
    const Pool pool(s, {len, 20, 12}, 7);
    const std::vector<float> alone =
        RunAttention(MakeBatch(pool, {{0, len, len}}), CpuIsa::kScalar);
    const size_t token_floats = static_cast<size_t>(s.hq * s.d);
    auto expect_same = [&](const std::vector<float>& out, const std::vector<Entry>& entries,
                           int64_t pos, const char* what) {
      const float* got = TokenRows(out, entries, 0, pos, s);
      ASSERT_NE(got, nullptr);
      EXPECT_TRUE(SameBits(got, alone.data() + pos * token_floats, token_floats))
          << what << " position " << pos << " hq " << s.hq << " d " << s.d << " window "
          << s.window;
    };
    for (CpuIsa isa : IsasPresent()) {
      // In a mixed batch, behind a decode and before a chunk.
      const std::vector<Entry> mixed = {{1, 20, 1}, {0, len, len}, {2, 12, 5}};
      const std::vector<float> mixed_out = RunAttention(MakeBatch(pool, mixed), isa);
      for (int64_t pos = 0; pos < len; ++pos) expect_same(mixed_out, mixed, pos, "mixed batch");
      // As a chunked prefill (chunks that split GQA tiles differently).
      for (int64_t begin : {int64_t{0}, int64_t{16}, int64_t{30}}) {
        const int64_t end = begin == 0 ? 16 : begin == 16 ? 30 : len;
        const std::vector<Entry> chunk = {{0, end, end - begin}, {2, 12, 12}};
        const std::vector<float> out = RunAttention(MakeBatch(pool, chunk), isa);
        for (int64_t pos = begin; pos < end; ++pos) expect_same(out, chunk, pos, "chunk");
      }
      // As decode steps, alone and next to other sequences.
      for (int64_t pos = 0; pos < len; ++pos) {
        const std::vector<Entry> decode = {{2, 12, 3}, {0, pos + 1, 1}, {1, 20, 1}};
        expect_same(RunAttention(MakeBatch(pool, decode), isa), decode, pos, "decode");
      }
    }
  }
}

TEST(CpuAttentionTest, OneAndTwoThreadsGiveTheSameBits) {
  const Shape s = kShapes[0];
  const Pool pool(s, {200, 64, 9}, 11);
  const Batch b = MakeBatch(pool, {{0, 200, 200}, {1, 64, 1}, {2, 9, 9}});
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2}) {
    auto backend = MakeCpuBackend(threads);
    std::vector<float> out(static_cast<size_t>(b.p.num_tokens * s.hq * s.d), NAN);
    PagedAttentionParams p = b.p;
    p.out = out.data();
    backend->PagedAttention(p);
    outs.push_back(std::move(out));
  }
  EXPECT_TRUE(SameBits(outs[0].data(), outs[1].data(), outs[0].size()));
  // And the same bits as the scalar path.
  const std::vector<float> scalar = RunAttention(b, CpuIsa::kScalar);
  EXPECT_TRUE(SameBits(outs[0].data(), scalar.data(), scalar.size()));
}

TEST(CpuAttentionTest, Bf16CacheAndActivationsAreTheFp32PathOnRoundedValues) {
  const Shape s = kShapes[4];
  Pool pool(s, {40, 10}, 3);
  // Round every stored value to bf16 so that the fp32 run sees exactly what the bf16 run loads.
  auto round_all = [](std::vector<float>& v) {
    for (float& x : v) x = std::isnan(x) ? x : Bf16ToF32(F32ToBf16(x));
  };
  round_all(pool.k_cache);
  round_all(pool.v_cache);
  for (SeqData& seq : pool.seqs) round_all(seq.q);
  const Batch b = MakeBatch(pool, {{0, 40, 13}, {1, 10, 1}});
  std::vector<uint16_t> k16(pool.k_cache.size()), v16(pool.v_cache.size()), q16(b.q.size());
  for (size_t i = 0; i < k16.size(); ++i) k16[i] = F32ToBf16(pool.k_cache[i]);
  for (size_t i = 0; i < v16.size(); ++i) v16[i] = F32ToBf16(pool.v_cache[i]);
  for (size_t i = 0; i < q16.size(); ++i) q16[i] = F32ToBf16(b.q[i]);
  for (CpuIsa isa : IsasPresent()) {
    const std::vector<float> want = RunAttention(b, isa);
    std::vector<uint16_t> out16(want.size());
    PagedAttentionParams p = b.p;
    p.q = q16.data();
    p.k_cache = k16.data();
    p.v_cache = v16.data();
    p.out = out16.data();
    p.act_dtype = DType::kBF16;
    p.kv_dtype = DType::kBF16;
    ASSERT_TRUE(Validate(p).ok());
    cpu::PagedAttention(p, isa);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(out16[i], F32ToBf16(want[i])) << i << " isa " << cpu::CpuIsaName(isa);
    }
  }
}

TEST(CpuAttentionTest, ExpIsWithinThreeUlpOfStdExpAndZeroBelowTheNormalRange) {
  double worst_ulps = 0;
  for (float x = -87.3f; x <= 0.0f; x += 0.00731f) {
    const double want = std::exp(static_cast<double>(x));
    const double got = cpu::AttentionExpForTest(x);
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
    worst_ulps = std::max(worst_ulps, std::fabs(got - want) / ulp);
  }
  EXPECT_LT(worst_ulps, 3.0);
  EXPECT_EQ(cpu::AttentionExpForTest(0.0f), 1.0f);
  EXPECT_EQ(cpu::AttentionExpForTest(-88.0f), 0.0f);
  EXPECT_EQ(cpu::AttentionExpForTest(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(cpu::AttentionExpForTest(std::numeric_limits<float>::quiet_NaN()), 0.0f);
}

TEST(CpuIsaTest, RequestsAreClampedToTheCpu) {
  EXPECT_EQ(cpu::ClampCpuIsa("avx512", CpuIsa::kAvx2), CpuIsa::kAvx2);
  EXPECT_EQ(cpu::ClampCpuIsa("avx2", CpuIsa::kAvx512), CpuIsa::kAvx2);
  EXPECT_EQ(cpu::ClampCpuIsa("scalar", CpuIsa::kAvx512), CpuIsa::kScalar);
  EXPECT_EQ(cpu::ClampCpuIsa("auto", CpuIsa::kAvx2), CpuIsa::kAvx2);
  EXPECT_EQ(cpu::ClampCpuIsa("sse9", CpuIsa::kAvx512), CpuIsa::kAvx512);
  EXPECT_LE(cpu::ActiveCpuIsa(), cpu::DetectCpuIsa());
}

}  // namespace
}  // namespace moeserve::kernels
