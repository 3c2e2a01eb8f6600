// TEMPORARY: greedy argmax only (ties to the lowest id), no penalties, no random draws, no
// logprobs. Replaced by the sampling engineer's cpu::Sample on merge.
#include "kernels/cpu/sampling.h"

namespace moeserve::kernels::cpu {

void Sample(const SampleParams& p) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* row = p.logits + r * p.vocab;
    int64_t best = 0;
    for (int64_t v = 1; v < p.vocab; ++v) {
      if (row[v] > row[best]) best = v;
    }
    p.out_tokens[r] = static_cast<int32_t>(best);
  }
}

}  // namespace moeserve::kernels::cpu
