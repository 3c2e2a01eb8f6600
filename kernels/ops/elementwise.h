// Elementwise ops on activations: residual add y[i] += x[i] (fp32 sum, rounded to act_dtype).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct AddInPlaceParams {
  void* y = nullptr;        // [n] of act_dtype
  const void* x = nullptr;  // [n] of act_dtype
  int64_t n = 0;
  DType act_dtype = DType::kF32;
};

absl::Status Validate(const AddInPlaceParams& p);

}  // namespace moeserve::kernels
