// MakeCudaBackend for builds without CUDA (compiled only then): callers fall back to the CPU.
#include "kernels/backend.h"

namespace moeserve::kernels {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_index) {
  (void)device_index;
  return absl::UnimplementedError("built without CUDA");
}

}  // namespace moeserve::kernels
