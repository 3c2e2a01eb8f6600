#include "kernels/ops/rmsnorm.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const RmsNormParams& p) {
  MOESERVE_PARAM_CHECK("rmsnorm", p.x && p.weight && p.out);
  MOESERVE_PARAM_CHECK("rmsnorm", p.rows >= 0 && p.hidden > 0, "(hidden=", p.hidden, ")");
  MOESERVE_PARAM_CHECK("rmsnorm", IsFloat(p.weight_dtype));
  MOESERVE_PARAM_CHECK("rmsnorm", p.eps > 0.0f);
  MOESERVE_ACT_DTYPE_CHECK("rmsnorm", "act_dtype", p.act_dtype);
  MOESERVE_PARAM_CHECK("rmsnorm",
                       p.residual == nullptr || (p.residual != p.x && p.residual != p.out),
                       "(the residual must not alias x or out)");
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
