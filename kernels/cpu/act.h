// Activation storage types of the CPU kernels: every kernel loads fp32 from fp32 or bf16
// storage, computes in fp32 and rounds once on store. DispatchAct picks the storage type from a
// DType with a two-way switch (fp32, bf16), so each kernel body is written once.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace moeserve::kernels::cpu {

// bf16 storage: the top 16 bits of an fp32, rounded to nearest even on store.
struct Bf16 {
  uint16_t bits;
};

inline float ToF32(float v) { return v; }
inline float ToF32(Bf16 v) { return Bf16ToF32(v.bits); }

template <typename T>
inline T FromF32(float v);
template <>
inline float FromF32<float>(float v) {
  return v;
}
template <>
inline Bf16 FromF32<Bf16>(float v) {
  return Bf16{F32ToBf16(v)};
}

// Calls fn(T{}) with T = float for kF32 and Bf16 for kBF16 (validators allow nothing else).
template <typename Fn>
inline void DispatchAct(DType t, Fn&& fn) {
  if (t == DType::kBF16) {
    fn(Bf16{});
  } else {
    fn(float{});
  }
}

}  // namespace moeserve::kernels::cpu
