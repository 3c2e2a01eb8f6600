// The attention tile for AVX-512 (x86-64-v4). kernels/CMakeLists.txt builds this file with
// -march=x86-64-v4; attention.cc calls it only where the CPU has those instructions.
// GCC 12 warns that _mm512_slli_epi32's _mm512_undefined_epi32() "may be used uninitialized"
// inside its own header (a false positive: the all-ones mask never reads it).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels/cpu/attention_tile_impl.h"

namespace moeserve::kernels::cpu {

#if defined(__AVX512F__)
void AttentionTileAvx512(const AttentionTile& tile) { ComputeAttentionTile<Avx512Isa>(tile); }
#else
// Built without the flags (a non-x86 target): never selected; same bits anyway.
void AttentionTileAvx512(const AttentionTile& tile) { ComputeAttentionTile<ScalarIsa>(tile); }
#endif

}  // namespace moeserve::kernels::cpu
