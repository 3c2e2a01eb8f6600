#include "kernels/ops/rope.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const RopeParams& p) {
  MOESERVE_PARAM_CHECK("rope", p.q && p.k && p.positions);
  MOESERVE_PARAM_CHECK("rope", p.head_dim > 0 && p.head_dim % 2 == 0, "(head_dim=", p.head_dim,
                       ")");
  MOESERVE_PARAM_CHECK("rope", p.num_tokens >= 0 && p.num_q_heads > 0 && p.num_kv_heads > 0);
  MOESERVE_PARAM_CHECK("rope", p.theta > 0.0f);
  MOESERVE_ACT_DTYPE_CHECK("rope", "act_dtype", p.act_dtype);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
