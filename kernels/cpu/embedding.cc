#include "kernels/cpu/embedding.h"

namespace moeserve::kernels::cpu {

void Embedding(const EmbeddingParams& p) {
  const size_t elem = DTypeSize(p.table_dtype);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const void* row = static_cast<const char*>(p.table) +
                      static_cast<size_t>(p.ids[t]) * static_cast<size_t>(p.hidden) * elem;
    float* out = p.out + t * p.hidden;
    for (int64_t h = 0; h < p.hidden; ++h) out[h] = LoadAsF32(row, p.table_dtype, h);
  }
}

}  // namespace moeserve::kernels::cpu
