// One tile of paged attention: up to kAttentionTileRows query rows of one (sequence, kv head)
// against that sequence's keys, in fp32. kernels/cpu/attention.cc builds the tiles (paging,
// dtype conversion, threads); attention_{scalar,avx2,avx512}.cc compute them, each built with
// its own instruction set and picked at run time (cpu_features.h).
//
// Every float the tile produces is one sequential chain, never a tree whose shape depends on the
// vector width, so the three paths give identical bits and a row's result does not depend on
// which other rows share its tile (the determinism contract in kernels/ops/attention.h):
//   score[r][i] = (fma chain over d = 0..head_dim-1 of q[r][d] * k[i][d]) * scale
//   m[r]        = max of score[r][i] over the row's visible keys (exact)
//   e[r][i]     = AttentionExp(score[r][i] - m[r])      (the polynomial in attention_tile_impl.h)
//   sum[r]      = e[r][first_r] + ... + e[r][last_r], added in key order
//   out[r][d]   = (fma chain over visible i, in key order, of e[r][i] * v[i][d]) * (1 / sum[r])
// Vectors only run independent chains side by side: lanes over rows for the scores and the
// softmax, lanes over d for P·V.
#pragma once

#include <cstdint>

namespace moeserve::kernels::cpu {

// Rows per tile (the query rows sit in the lanes of one AVX-512 vector for the scores).
inline constexpr int64_t kAttentionTileRows = 16;

struct AttentionTile {
  int64_t rows = 0;  // valid rows, <= kAttentionTileRows
  int64_t head_dim = 0;
  int64_t num_keys = 0;  // keys 0 .. num_keys-1 of the tile (the union of the rows' ranges)
  const float* const* k_rows = nullptr;  // [num_keys] -> head_dim fp32 values
  const float* const* v_rows = nullptr;  // [num_keys] -> head_dim fp32 values
  // [kAttentionTileRows] visible keys of row r: first_key[r] .. last_key[r] (tile-relative);
  // padding rows have an empty range (first 0, last -1).
  const int32_t* first_key = nullptr;
  const int32_t* last_key = nullptr;
  const float* q_t = nullptr;  // [head_dim, kAttentionTileRows]: transposed queries, padding 0
  float scale = 1.0f;
  float* scores = nullptr;  // scratch [num_keys, kAttentionTileRows]
  float* out = nullptr;     // [rows, head_dim] fp32
};

using AttentionTileFn = void (*)(const AttentionTile& tile);

void AttentionTileScalar(const AttentionTile& tile);
// Only call these where DetectCpuIsa() allows them.
void AttentionTileAvx2(const AttentionTile& tile);
void AttentionTileAvx512(const AttentionTile& tile);

// The exp the tiles use, scalar path (for tests: it must stay within a few ulp of std::exp).
float AttentionExpForTest(float x);

}  // namespace moeserve::kernels::cpu
