#include "kernels/cpu/random_fill.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve::kernels {

absl::Status Validate(const RandomFillParams& p) {
  if (p.dtype != DType::kF32 && p.dtype != DType::kBF16 && p.dtype != DType::kF16) {
    return absl::InvalidArgumentError("RandomFill: dtype must be fp32, bf16 or fp16");
  }
  if (p.numel < 0) return absl::InvalidArgumentError(absl::StrCat("RandomFill: numel ", p.numel));
  if (p.numel > 0 && p.out == nullptr) return absl::InvalidArgumentError("RandomFill: null out");
  return absl::OkStatus();
}

namespace cpu {

void RandomFill(const RandomFillParams& p) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.numel; ++i) {
    const float u = RandomFillUniform(p.seed, static_cast<uint64_t>(i));
    // Two rounded fp32 operations (the file builds with -ffp-contract=off): the CUDA twin
    // uses __fmul_rn / __fadd_rn for the same bits.
    const float scaled = p.half_range * (2.0f * u - 1.0f);
    const float v = p.center + scaled;
    switch (p.dtype) {
      case DType::kBF16:
        static_cast<uint16_t*>(p.out)[i] = F32ToBf16(v);
        break;
      case DType::kF16:
        static_cast<uint16_t*>(p.out)[i] = F32ToF16(v);
        break;
      default:
        static_cast<float*>(p.out)[i] = v;
    }
  }
}

}  // namespace cpu

absl::Status RandomFillOnBackend(Backend& backend, const RandomFillParams& p) {
  if (absl::Status st = Validate(p); !st.ok()) return st;
  if (p.numel == 0) return absl::OkStatus();
  if (backend.device() == Device::kCpu) {
    cpu::RandomFill(p);
    return absl::OkStatus();
  }
#if MOESERVE_RANDOM_FILL_CUDA
  if (absl::Status st = backend.Synchronize(); !st.ok()) return st;
  return cuda::RandomFillSync(p);
#else
  return absl::UnimplementedError("RandomFill on a device backend needs a CUDA build");
#endif
}

}  // namespace moeserve::kernels
