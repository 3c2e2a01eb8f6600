// TEMPORARY: minimal validation; replaced by the sampling engineer's ops/sampling.cc on merge.
#include "kernels/ops/sampling.h"

#include "kernels/ops/check.h"

namespace moeserve::kernels {

size_t SampleWorkspaceBytes(int64_t rows, int64_t vocab) {
  (void)rows;
  (void)vocab;
  return 0;
}

absl::Status Validate(const SampleParams& p) {
  MOESERVE_PARAM_CHECK("sample", p.logits && p.row_params && p.out_tokens);
  MOESERVE_PARAM_CHECK("sample", p.rows >= 0 && p.vocab > 0 && p.max_top_logprobs >= 0);
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
