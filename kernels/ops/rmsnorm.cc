#include "kernels/ops/rmsnorm.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const RmsNormParams& p) {
  MOESERVE_PARAM_CHECK("rmsnorm", p.x && p.weight && p.out);
  MOESERVE_PARAM_CHECK("rmsnorm", p.rows >= 0 && p.hidden > 0, "(hidden=", p.hidden, ")");
  MOESERVE_PARAM_CHECK("rmsnorm", IsFloat(p.weight_dtype));
  MOESERVE_PARAM_CHECK("rmsnorm", p.eps > 0.0f);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
