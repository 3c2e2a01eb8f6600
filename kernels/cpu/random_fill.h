// Random fill: out[i] = center + half_range * (2u - 1), u in [0, 1) a pure function of (seed, i)
// (a counter-based splitmix64 hash, so every element is independent and any device computes it
// in any order). Used to initialise benchmark weights directly in device memory (`moeserve
// bench --preset`): a Mixtral 8x7B's 93 GB never exist on the host.
//
// CPU twin here; CUDA in kernels/cuda/random_fill.cu. Both compute the value in fp32 with
// exactly two rounded operations (no FMA) and round to the storage dtype to nearest even, so
// the CPU and CUDA fills of the same params are bitwise equal.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct RandomFillParams {
  void* out = nullptr;  // [numel] of dtype, memory of the backend's device
  DType dtype = DType::kBF16;
  int64_t numel = 0;
  uint64_t seed = 0;
  float center = 0.0f;      // values are uniform in [center - half_range, center + half_range)
  float half_range = 1.0f;  // std = half_range / sqrt(3)
};

absl::Status Validate(const RandomFillParams& p);  // dtype fp32 / bf16 / fp16, numel >= 0

// The element hash both twins use: 24 random bits as a float in [0, 1).
inline float RandomFillUniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;
}

// Validates p and fills on `backend`'s device. On CUDA the fill runs on its own stream after a
// backend.Synchronize() and is waited for before returning (a load-time operation, not for a hot
// path). Unimplemented for a CUDA backend in a build without CUDA.
absl::Status RandomFillOnBackend(Backend& backend, const RandomFillParams& p);

namespace cpu {
void RandomFill(const RandomFillParams& p);  // REQUIRES: Validate(p).ok(); host memory
}  // namespace cpu

namespace cuda {
// Defined in kernels/cuda/random_fill.cu (CUDA builds only): launches on a fresh stream and
// synchronises it. REQUIRES: Validate(p).ok(); p.out is device memory of the current device.
absl::Status RandomFillSync(const RandomFillParams& p);
}  // namespace cuda

}  // namespace moeserve::kernels
