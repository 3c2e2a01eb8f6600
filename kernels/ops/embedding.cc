#include "kernels/ops/embedding.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

absl::Status Validate(const EmbeddingParams& p) {
  MOESERVE_PARAM_CHECK("embedding", p.ids && p.table && p.out);
  MOESERVE_PARAM_CHECK("embedding", p.num_tokens >= 0 && p.vocab > 0 && p.hidden > 0);
  MOESERVE_PARAM_CHECK("embedding", IsFloat(p.table_dtype));
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    if (p.ids[t] < 0 || p.ids[t] >= p.vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedding: token id ", p.ids[t], " at position ", t, " is outside [0, ", p.vocab, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
