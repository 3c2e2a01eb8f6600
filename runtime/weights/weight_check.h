// Finding NaN and Inf in weights at load time. A checkpoint with a non-finite weight produces
// NaN logits (and then arbitrary tokens) for every request that touches it, so the loader looks
// for them: by default in the tensors every token uses (cheap), on request in all of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace moeserve::runtime {

// What the loader scans for NaN / Inf (flag --check-weights; docs/checkpoints.md).
enum class WeightCheck {
  kOff,  // nothing
  // Default. Every tensor except the expert weights (embeddings, attention, norms, router,
  // lm_head: ~3.5% of Mixtral-8x7B's 93 GB, and pages the first forward reads anyway); a
  // non-finite value is a warning naming the tensor. On expert-parallel ranks only rank 0
  // scans them (the ranks map the same files).
  kWarn,
  // Every tensor a rank loads, experts included (reads every byte of the checkpoint once); a
  // non-finite value is an error naming the tensor and its file.
  kFull,
};

// "off" / "warn" / "full".
absl::StatusOr<WeightCheck> ParseWeightCheck(std::string_view name);
std::string_view WeightCheckName(WeightCheck check);

// Number of NaN or +-Inf elements of a CPU float tensor (F32, BF16, F16); 0 for other dtypes.
// Reads every byte of the view (bit tests, no float arithmetic).
int64_t CountNonFinite(const kernels::TensorView& view);

}  // namespace moeserve::runtime
