// Small helpers for parameter validation: each failed check becomes an InvalidArgument naming the
// op and the condition, e.g. "rmsnorm: hidden > 0 (hidden=0)".
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/dtype.h"

#define MOESERVE_PARAM_CHECK(op, cond, ...)                               \
  do {                                                                    \
    if (!(cond)) {                                                        \
      return absl::InvalidArgumentError(                                  \
          absl::StrCat(op, ": ", #cond, " " __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                     \
  } while (0)

namespace moeserve::kernels {

// Activations and the KV cache are fp32 or bf16 on every backend.
constexpr bool IsActivationDType(DType t) { return t == DType::kF32 || t == DType::kBF16; }

}  // namespace moeserve::kernels

// "<op>: act_dtype F16 is not an activation dtype (F32 or BF16)".
#define MOESERVE_ACT_DTYPE_CHECK(op, field, dtype)                                       \
  MOESERVE_PARAM_CHECK(op, ::moeserve::kernels::IsActivationDType(dtype), "(" field "=", \
                       std::string(::moeserve::kernels::DTypeName(dtype)),               \
                       ", must be F32 or BF16)")
