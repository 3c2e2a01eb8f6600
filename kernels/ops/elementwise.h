// Elementwise ops on fp32 activations: residual add y[i] += x[i].
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

struct AddInPlaceParams {
  float* y = nullptr;        // [n]
  const float* x = nullptr;  // [n]
  int64_t n = 0;
};

absl::Status Validate(const AddInPlaceParams& p);

}  // namespace moeserve::kernels
