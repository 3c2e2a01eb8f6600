#include "kernels/cpu/elementwise.h"

#include "kernels/cpu/act.h"

namespace moeserve::kernels::cpu {

void AddInPlace(const AddInPlaceParams& p) {
  DispatchAct(p.act_dtype, [&](auto tag) {
    using T = decltype(tag);
    T* y = static_cast<T*>(p.y);
    const T* x = static_cast<const T*>(p.x);
    for (int64_t i = 0; i < p.n; ++i) y[i] = FromF32<T>(ToF32(y[i]) + ToF32(x[i]));
  });
}

}  // namespace moeserve::kernels::cpu
