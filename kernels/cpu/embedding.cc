#include "kernels/cpu/embedding.h"

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {

void Embedding(const EmbeddingParams& p) {
  const size_t elem = DTypeSize(p.table_dtype);
  DispatchAct(p.out_dtype, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t t = 0; t < p.num_tokens; ++t) {
      T* out = static_cast<T*>(p.out) + t * p.hidden;
      const int32_t id = p.ids[t];
      if (id < 0 || id >= p.vocab) {  // never read out of bounds (callers check ids on the host)
        for (int64_t h = 0; h < p.hidden; ++h) out[h] = FromF32<T>(0.0f);
        continue;
      }
      const void* row = static_cast<const char*>(p.table) +
                        static_cast<size_t>(id) * static_cast<size_t>(p.hidden) * elem;
      for (int64_t h = 0; h < p.hidden; ++h) out[h] = FromF32<T>(LoadAsF32(row, p.table_dtype, h));
    }
  });
}

}  // namespace moeserve::kernels::cpu
