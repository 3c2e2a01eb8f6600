// CUDA errors become absl::Status at the boundary (library code never aborts on them).
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve::kernels::cuda {

inline absl::Status ToStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

}  // namespace moeserve::kernels::cuda

#define MOESERVE_CUDA_RETURN_IF_ERROR(expr)                                  \
  do {                                                                       \
    ::absl::Status _st = ::moeserve::kernels::cuda::ToStatus((expr), #expr); \
    if (!_st.ok()) return _st;                                               \
  } while (0)
