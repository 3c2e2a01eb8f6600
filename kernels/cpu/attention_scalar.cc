// The attention tile for any x86-64 (and non-x86) CPU. Built with the baseline flags.
#include "kernels/cpu/attention_tile_impl.h"

namespace moeserve::kernels::cpu {

void AttentionTileScalar(const AttentionTile& tile) { ComputeAttentionTile<ScalarIsa>(tile); }

float AttentionExpForTest(float x) { return AttentionExp<ScalarIsa>(x); }

}  // namespace moeserve::kernels::cpu
