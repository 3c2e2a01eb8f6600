#include "kernels/cpu/elementwise.h"

namespace moeserve::kernels::cpu {

void AddInPlace(const AddInPlaceParams& p) {
  for (int64_t i = 0; i < p.n; ++i) p.y[i] += p.x[i];
}

}  // namespace moeserve::kernels::cpu
