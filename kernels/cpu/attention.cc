#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/act.h"
#include "kernels/cpu/attention_tile.h"

namespace moeserve::kernels::cpu {
namespace {

template <typename A, typename K>
void KvWriteTyped(const KvWriteParams& p) {
  const int64_t row = p.num_kv_heads * p.head_dim;
  const A* k = static_cast<const A*>(p.k);
  const A* v = static_cast<const A*>(p.v);
  K* k_cache = static_cast<K*>(p.k_cache);
  K* v_cache = static_cast<K*>(p.v_cache);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int64_t slot = p.slots[t];
    if (slot < 0) continue;  // padding / a token whose K/V is not cached
    if constexpr (std::is_same_v<A, K>) {
      std::memcpy(k_cache + slot * row, k + t * row, sizeof(K) * static_cast<size_t>(row));
      std::memcpy(v_cache + slot * row, v + t * row, sizeof(K) * static_cast<size_t>(row));
    } else {
      for (int64_t i = 0; i < row; ++i) {
        k_cache[slot * row + i] = FromF32<K>(ToF32(k[t * row + i]));
        v_cache[slot * row + i] = FromF32<K>(ToF32(v[t * row + i]));
      }
    }
  }
}

AttentionTileFn TileFunction(CpuIsa isa) {
  switch (std::min(isa, DetectCpuIsa())) {
    case CpuIsa::kAvx512:
      return &AttentionTileAvx512;
    case CpuIsa::kAvx2:
      return &AttentionTileAvx2;
    default:
      return &AttentionTileScalar;
  }
}

// Per-thread buffers, grown on demand and kept: a steady-state step allocates nothing.
struct TileScratch {
  std::vector<float> q_t;     // [head_dim, kAttentionTileRows]
  std::vector<float> scores;  // [num_keys, kAttentionTileRows]
  std::vector<float> out;     // [kAttentionTileRows, head_dim]
  std::vector<float> kv_f32;  // [2, num_keys, head_dim]: converted K/V rows (non-fp32 cache)
  std::vector<const float*> k_rows, v_rows;
};
TileScratch& ThreadTileScratch() {
  thread_local TileScratch scratch;
  return scratch;
}

// Runs tile `tile` of (sequence s, kv head kv_h): rows tile * kAttentionTileRows ... of the
// sequence's n_q * group query rows, ordered (token, head in group).
template <typename A, typename K>
void RunTile(const PagedAttentionParams& p, AttentionTileFn tile_fn, int64_t s, int64_t kv_h,
             int64_t tile) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t head_dim = p.head_dim;
  const int64_t kv_row = p.num_kv_heads * head_dim;  // elements per cached token
  const int64_t q_begin = p.query_start[s];
  const int64_t n_q = p.query_start[s + 1] - q_begin;
  const int64_t first_pos = p.context_lens[s] - n_q;  // position of the sequence's first query
  const int64_t row0 = tile * kAttentionTileRows;
  const int64_t rows = std::min(kAttentionTileRows, n_q * group - row0);
  auto pos_of = [&](int64_t r) { return first_pos + (row0 + r) / group; };
  auto first_of = [&](int64_t r) {
    return p.sliding_window > 0 ? std::max<int64_t>(0, pos_of(r) - p.sliding_window + 1) : 0;
  };
  // The tile reads keys [key_begin, key_end): row 0 has the earliest window, the last row the
  // latest position.
  const int64_t key_begin = first_of(0);
  const int64_t num_keys = pos_of(rows - 1) + 1 - key_begin;

  TileScratch& scratch = ThreadTileScratch();
  int32_t first_key[kAttentionTileRows], last_key[kAttentionTileRows];
  scratch.q_t.resize(static_cast<size_t>(head_dim * kAttentionTileRows));
  const A* q = static_cast<const A*>(p.q);
  for (int64_t r = 0; r < kAttentionTileRows; ++r) {
    if (r >= rows) {  // padding: q = 0, no keys
      first_key[r] = 0;
      last_key[r] = -1;
      for (int64_t d = 0; d < head_dim; ++d) scratch.q_t[d * kAttentionTileRows + r] = 0.0f;
      continue;
    }
    first_key[r] = static_cast<int32_t>(first_of(r) - key_begin);
    last_key[r] = static_cast<int32_t>(pos_of(r) - key_begin);
    const int64_t token = q_begin + (row0 + r) / group;
    const int64_t head = kv_h * group + (row0 + r) % group;
    const A* src = q + (token * p.num_q_heads + head) * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) scratch.q_t[d * kAttentionTileRows + r] = ToF32(src[d]);
  }

  scratch.k_rows.resize(static_cast<size_t>(num_keys));
  scratch.v_rows.resize(static_cast<size_t>(num_keys));
  if constexpr (!std::is_same_v<K, float>) {
    scratch.kv_f32.resize(static_cast<size_t>(2 * num_keys * head_dim));
  }
  const K* k_cache = static_cast<const K*>(p.k_cache);
  const K* v_cache = static_cast<const K*>(p.v_cache);
  const int32_t* table = p.block_tables + s * p.max_blocks_per_seq;
  // Row pointers block by block: keys in one block are kv_row apart.
  for (int64_t i = 0, j = key_begin; i < num_keys;) {
    const int64_t offset = j % p.block_size;
    const int64_t run = std::min(p.block_size - offset, num_keys - i);
    const int64_t first_slot =
        static_cast<int64_t>(table[j / p.block_size]) * p.block_size + offset;
    const K* k = k_cache + first_slot * kv_row + kv_h * head_dim;
    const K* v = v_cache + first_slot * kv_row + kv_h * head_dim;
    for (int64_t m = 0; m < run; ++m, ++i, k += kv_row, v += kv_row) {
      if constexpr (std::is_same_v<K, float>) {
        scratch.k_rows[i] = k;
        scratch.v_rows[i] = v;
      } else {
        float* k32 = scratch.kv_f32.data() + i * head_dim;
        float* v32 = k32 + num_keys * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          k32[d] = ToF32(k[d]);
          v32[d] = ToF32(v[d]);
        }
        scratch.k_rows[i] = k32;
        scratch.v_rows[i] = v32;
      }
    }
    j += run;
  }
  scratch.scores.resize(static_cast<size_t>(num_keys * kAttentionTileRows));
  scratch.out.resize(static_cast<size_t>(kAttentionTileRows * head_dim));

  AttentionTile t;
  t.rows = rows;
  t.head_dim = head_dim;
  t.num_keys = num_keys;
  t.k_rows = scratch.k_rows.data();
  t.v_rows = scratch.v_rows.data();
  t.first_key = first_key;
  t.last_key = last_key;
  t.q_t = scratch.q_t.data();
  t.scale = p.scale;
  t.scores = scratch.scores.data();
  t.out = scratch.out.data();
  tile_fn(t);

  A* out = static_cast<A*>(p.out);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = q_begin + (row0 + r) / group;
    const int64_t head = kv_h * group + (row0 + r) % group;
    A* dst = out + (token * p.num_q_heads + head) * head_dim;
    const float* src = scratch.out.data() + r * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) dst[d] = FromF32<A>(src[d]);
  }
}

template <typename A, typename K>
void PagedAttentionTyped(const PagedAttentionParams& p, AttentionTileFn tile_fn) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  // Work items: (sequence, kv head, tile). Each query row is computed by one tile with the same
  // arithmetic whatever else shares the tile (attention_tile.h), so splitting the rows into
  // tiles, and the tiles over threads, never changes a result. Dynamic scheduling: tiles differ
  // in length, and a core shared with another process must not hold up the step.
  std::vector<int64_t> item_begin(static_cast<size_t>(p.num_seqs + 1), 0);
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t rows = (p.query_start[s + 1] - p.query_start[s]) * group;
    const int64_t tiles = (rows + kAttentionTileRows - 1) / kAttentionTileRows;
    item_begin[s + 1] = item_begin[s] + tiles * p.num_kv_heads;
  }
  const int64_t num_items = item_begin[p.num_seqs];
#pragma omp parallel for schedule(dynamic, 1) if (num_items > 1)
  for (int64_t item = 0; item < num_items; ++item) {
    const int64_t s =
        std::upper_bound(item_begin.begin(), item_begin.end(), item) - item_begin.begin() - 1;
    const int64_t local = item - item_begin[s];
    const int64_t tiles = (item_begin[s + 1] - item_begin[s]) / p.num_kv_heads;
    // A sequence's last tiles see the most keys: hand them out first.
    RunTile<A, K>(p, tile_fn, s, local / tiles, tiles - 1 - local % tiles);
  }
}

}  // namespace

void KvWrite(const KvWriteParams& p) {
  DispatchAct(p.act_dtype, [&](auto a) {
    DispatchAct(p.kv_dtype, [&](auto k) { KvWriteTyped<decltype(a), decltype(k)>(p); });
  });
}

void PagedAttention(const PagedAttentionParams& p, CpuIsa isa) {
  const AttentionTileFn tile_fn = TileFunction(isa);
  DispatchAct(p.act_dtype, [&](auto a) {
    DispatchAct(p.kv_dtype,
                [&](auto k) { PagedAttentionTyped<decltype(a), decltype(k)>(p, tile_fn); });
  });
}

void PagedAttention(const PagedAttentionParams& p) { PagedAttention(p, ActiveCpuIsa()); }

}  // namespace moeserve::kernels::cpu
