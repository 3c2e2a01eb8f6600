#include "kernels/ops/sampling.h"

#include <limits>

#include "kernels/ops/check.h"

namespace moeserve::kernels {
namespace {

size_t AlignUp(size_t bytes, size_t alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

}  // namespace

size_t SampleWorkspaceWeightsOffset(int64_t rows, int64_t vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return AlignUp(static_cast<size_t>(rows) * static_cast<size_t>(vocab) * sizeof(float), 256);
}

size_t SampleWorkspaceBytes(int64_t rows, int64_t vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return SampleWorkspaceWeightsOffset(rows, vocab) +
         static_cast<size_t>(rows) * static_cast<size_t>(vocab) * sizeof(double);
}

absl::Status Validate(const SampleParams& p) {
  MOESERVE_PARAM_CHECK("sample", p.rows >= 0, "(rows=", p.rows, ")");
  MOESERVE_PARAM_CHECK("sample", p.vocab > 0 && p.vocab <= std::numeric_limits<int32_t>::max(),
                       "(vocab=", p.vocab, ")");
  MOESERVE_PARAM_CHECK("sample", p.max_top_logprobs >= 0, "(max_top_logprobs=", p.max_top_logprobs,
                       ")");
  MOESERVE_PARAM_CHECK("sample", p.num_history >= 0, "(num_history=", p.num_history, ")");
  MOESERVE_PARAM_CHECK("sample", (p.out_top_tokens == nullptr) == (p.out_top_logprobs == nullptr));
  if (p.rows == 0) return absl::OkStatus();
  MOESERVE_PARAM_CHECK("sample", p.logits && p.row_params && p.out_tokens);
  if (p.num_history > 0) {
    MOESERVE_PARAM_CHECK("sample",
                         p.history_tokens && p.history_output_counts && p.history_in_prompt);
  }
  if (p.workspace != nullptr) {
    MOESERVE_PARAM_CHECK("sample", p.workspace_bytes >= SampleWorkspaceBytes(p.rows, p.vocab),
                         "(workspace_bytes=", p.workspace_bytes,
                         ", need=", SampleWorkspaceBytes(p.rows, p.vocab), ")");
  }
  return absl::OkStatus();
}

}  // namespace moeserve::kernels
