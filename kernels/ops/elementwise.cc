#include "kernels/ops/elementwise.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const AddInPlaceParams& p) {
  MOESERVE_PARAM_CHECK("add", p.y && p.x && p.n >= 0);
  MOESERVE_ACT_DTYPE_CHECK("add", "act_dtype", p.act_dtype);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
