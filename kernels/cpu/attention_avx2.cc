// The attention tile for AVX2 + FMA (x86-64-v3). kernels/CMakeLists.txt builds this file with
// -march=x86-64-v3; attention.cc calls it only where the CPU has those instructions.
#include "kernels/cpu/attention_tile_impl.h"

namespace moeserve::kernels::cpu {

#if defined(__AVX2__) && defined(__FMA__)
void AttentionTileAvx2(const AttentionTile& tile) { ComputeAttentionTile<Avx2Isa>(tile); }
#else
// Built without the flags (a non-x86 target): never selected; same bits anyway.
void AttentionTileAvx2(const AttentionTile& tile) { ComputeAttentionTile<ScalarIsa>(tile); }
#endif

}  // namespace moeserve::kernels::cpu
