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
#include <type_traits>

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

// The 16-bit storage types from and to raw bits (no address-taking, so vectors stay in
// registers).
template <typename T>
__device__ __forceinline__ T FromBits16(unsigned short bits) {
  if constexpr (std::is_same_v<T, __half>) {
    return __ushort_as_half(bits);
  } else {
    return __ushort_as_bfloat16(bits);
  }
}
template <typename T>
__device__ __forceinline__ uint32_t ToBits16(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half_as_ushort(v);
  } else {
    return __bfloat16_as_ushort(v);
  }
}

// The elements of T packed in one 32-bit word (1 fp32 or 2 bf16/fp16, low half first), as fp32.
template <typename T>
__device__ __forceinline__ void WordToF32(uint32_t word, float* out) {
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(word);
  } else {
    out[0] = ToF32(FromBits16<T>(static_cast<unsigned short>(word & 0xffffu)));
    out[1] = ToF32(FromBits16<T>(static_cast<unsigned short>(word >> 16)));
  }
}
template <typename T>
__device__ __forceinline__ uint32_t F32ToWord(const float* in) {
  if constexpr (sizeof(T) == 4) {
    return __float_as_uint(in[0]);
  } else {
    return ToBits16(FromF32<T>(in[0])) | (ToBits16(FromF32<T>(in[1])) << 16);
  }
}

// N consecutive elements at p as fp32 (N a multiple of kVec16<T>, p 16-byte aligned).
template <int N, typename T>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[N]) {
  static_assert(N % kVec16<T> == 0, "whole 16-byte vectors only");
  constexpr int kPerWord = static_cast<int>(4 / sizeof(T));
#pragma unroll
  for (int c = 0; c < N / kVec16<T>; ++c) {
    const uint4 raw = reinterpret_cast<const uint4*>(p)[c];
    float* o = out + c * kVec16<T>;
    WordToF32<T>(raw.x, o);
    WordToF32<T>(raw.y, o + kPerWord);
    WordToF32<T>(raw.z, o + 2 * kPerWord);
    WordToF32<T>(raw.w, o + 3 * kPerWord);
  }
}

// Stores N fp32 values, each rounded to T, at p (N a multiple of kVec16<T>, p 16-byte aligned).
template <int N, typename T>
__device__ __forceinline__ void StoreVec(T* p, const float (&in)[N]) {
  static_assert(N % kVec16<T> == 0, "whole 16-byte vectors only");
  constexpr int kPerWord = static_cast<int>(4 / sizeof(T));
#pragma unroll
  for (int c = 0; c < N / kVec16<T>; ++c) {
    const float* i = in + c * kVec16<T>;
    reinterpret_cast<uint4*>(p)[c] =
        make_uint4(F32ToWord<T>(i), F32ToWord<T>(i + kPerWord), F32ToWord<T>(i + 2 * kPerWord),
                   F32ToWord<T>(i + 3 * kPerWord));
  }
}

// Loads kVec16<T> elements at p (16-byte aligned) as fp32.
template <typename T>
__device__ __forceinline__ void LoadVec16(const T* p, float (&out)[kVec16<T>]) {
  LoadVec<kVec16<T>>(p, out);
}

// Stores kVec16<T> fp32 values, each rounded to T, at p (16-byte aligned).
template <typename T>
__device__ __forceinline__ void StoreVec16(T* p, const float (&in)[kVec16<T>]) {
  StoreVec<kVec16<T>>(p, in);
}

// Chunk c (elements c*N .. c*N+N-1) of a row of n elements, as fp32. kVec: one 16-byte access
// per kVec16<T> elements (REQUIRES n % N == 0 and a 16-byte aligned row); otherwise scalar
// accesses, and elements at or past n read as 0. Both forms give the same values, so a kernel's
// result never depends on which one the launcher picked.
template <int N, bool kVec, typename T>
__device__ __forceinline__ void LoadChunk(const T* row, int64_t c, int64_t n, float (&out)[N]) {
  if constexpr (kVec) {
    LoadVec<N>(row + c * N, out);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int64_t idx = c * N + i;
      out[i] = idx < n ? ToF32(row[idx]) : 0.0f;
    }
  }
}

// Stores chunk c of a row of n elements (elements at or past n are not written).
template <int N, bool kVec, typename T>
__device__ __forceinline__ void StoreChunk(T* row, int64_t c, int64_t n, const float (&in)[N]) {
  if constexpr (kVec) {
    StoreVec<N>(row + c * N, in);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int64_t idx = c * N + i;
      if (idx < n) row[idx] = FromF32<T>(in[i]);
    }
  }
}

// True when every pointer is 16-byte aligned (host side; null counts as aligned).
inline bool Aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
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

// The same for activation dtypes, which are fp32 or bf16 only (as in the CPU reference's
// kernels/cpu/act.h); cudaErrorInvalidValue for anything else. Halves the instantiations of
// kernels templated on both an activation and a weight type.
template <typename Fn>
cudaError_t DispatchActDType(DType t, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<__nv_bfloat16>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace moeserve::kernels::cuda
