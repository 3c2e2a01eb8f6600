#include "kernels/ops/embedding.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const EmbeddingParams& p) {
  MOESERVE_PARAM_CHECK("embedding", p.ids && p.table && p.out);
  MOESERVE_PARAM_CHECK("embedding", p.num_tokens >= 0 && p.vocab > 0 && p.hidden > 0);
  MOESERVE_PARAM_CHECK("embedding", IsFloat(p.table_dtype));
  MOESERVE_ACT_DTYPE_CHECK("embedding", "out_dtype", p.out_dtype);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
