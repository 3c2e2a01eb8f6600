#include "kernels/backend.h"

#include "kernels/base/status_macros.h"

namespace moeserve::kernels {

absl::Status Backend::CopyToDevice(void* dst, const void* src, size_t bytes) {
  MOESERVE_RETURN_IF_ERROR(CopyToDeviceAsync(dst, src, bytes));
  return Synchronize();
}

absl::Status Backend::CopyToHost(void* dst, const void* src, size_t bytes) {
  MOESERVE_RETURN_IF_ERROR(CopyToHostAsync(dst, src, bytes));
  return Synchronize();
}

}  // namespace moeserve::kernels
