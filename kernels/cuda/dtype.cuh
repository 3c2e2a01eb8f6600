// Device-side element conversions and the dtype switch shared by the CUDA kernels.
//
// Conversions are bit-identical to the CPU reference in kernels/dtype.h, so a CUDA kernel that
// does the same fp32 arithmetic in the same order as its CPU twin produces the same bits:
//   bf16 -> fp32 and fp16 -> fp32 are exact;
//   fp32 -> bf16 rounds to nearest even (== __float2bfloat16_rn) and keeps a NaN's sign and high
//     payload bits like F32ToBf16 (the cvt instruction would return the canonical 0x7fff);
//   fp32 -> fp16 rounds to nearest even (__float2half_rn); NaN -> sign | 0x7e00 like F32ToF16.
//
// Storage types: float, __nv_bfloat16, __half. Kernels are templated on the storage type and
// instantiated through DispatchFloatDType (three cases per dtype argument, no more).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "kernels/dtype.h"

namespace moeserve::kernels::cuda {

// ---- Scalar conversions on typed values ----------------------------------------------------

template <typename T>
__device__ __forceinline__ float ToF32(T v);

template <>
__device__ __forceinline__ float ToF32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToF32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __uint_as_float(static_cast<uint32_t>(__bfloat16_as_ushort(v)) << 16);
}
template <>
__device__ __forceinline__ float ToF32<__half>(__half v) {
  return __half2float(v);  // exact, subnormals included
}

template <typename T>
__device__ __forceinline__ T FromF32(float v);

template <>
__device__ __forceinline__ float FromF32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float v) {
  // Same integer algorithm as F32ToBf16 in kernels/dtype.h.
  const uint32_t bits = __float_as_uint(v);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return __ushort_as_bfloat16(static_cast<unsigned short>((bits >> 16) | 0x40u));
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return __ushort_as_bfloat16(static_cast<unsigned short>((bits + rounding) >> 16));
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float v) {
  if (isnan(v)) {
    const uint32_t sign = (__float_as_uint(v) >> 16) & 0x8000u;
    return __ushort_as_half(static_cast<unsigned short>(sign | 0x7e00u));
  }
  return __float2half_rn(v);
}

// ---- Untyped access (for rarely-touched operands such as norm weights) ---------------------

// Element i of a float tensor of dtype t, as fp32. t must be kF32, kBF16 or kF16.
__device__ __forceinline__ float LoadF32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16:
      return ToF32(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16:
      return ToF32(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// Stores v rounded to dtype t as element i. t must be kF32, kBF16 or kF16.
__device__ __forceinline__ void StoreF32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = FromF32<__nv_bfloat16>(v);
      break;
    case DType::kF16:
      static_cast<__half*>(p)[i] = FromF32<__half>(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
      break;
  }
}

// ---- 16-byte vector access -----------------------------------------------------------------

// Elements of T in one 16-byte load: 4 fp32 or 8 bf16/fp16.
template <typename T>
inline constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

// Loads kVec16<T> elements at p (16-byte aligned) as fp32.
template <typename T>
__device__ __forceinline__ void LoadVec16(const T* p, float (&out)[kVec16<T>]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec16<T>; ++i) out[i] = ToF32(elems[i]);
}

// Stores kVec16<T> fp32 values, each rounded to T, at p (16-byte aligned).
template <typename T>
__device__ __forceinline__ void StoreVec16(T* p, const float (&in)[kVec16<T>]) {
  uint4 raw;
  T* elems = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec16<T>; ++i) elems[i] = FromF32<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// True when rows of `row_elems` elements of T starting at every pointer in `ptrs` can be read
// with LoadVec16 (host side; a pointer that is null is ignored).
template <typename T>
inline bool CanVec16(int64_t row_elems, std::initializer_list<const void*> ptrs) {
  if (row_elems % kVec16<T> != 0) return false;
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// ---- Host-side dtype switch ----------------------------------------------------------------

// Tag carrying a storage type through a generic lambda.
template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with T the storage type of float dtype t and returns its result;
// cudaErrorInvalidValue for a non-float dtype. Usage:
//   return DispatchFloatDType(p.act_dtype, [&](auto tag) {
//     using T = typename decltype(tag)::type;
//     MyKernel<T><<<grid, block, 0, stream>>>(...);
//     return cudaGetLastError();
//   });
template <typename Fn>
cudaError_t DispatchFloatDType(DType t, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<__nv_bfloat16>{});
    case DType::kF16:
      return fn(TypeTag<__half>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace moeserve::kernels::cuda
