// Token embedding lookup: out[t, :] = table[ids[t], :] in out_dtype.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [num_tokens] device; callers check the range on the host
  const void* table = nullptr;   // [vocab, hidden] of table_dtype
  DType table_dtype = DType::kBF16;
  void* out = nullptr;  // [num_tokens, hidden] of out_dtype
  DType out_dtype = DType::kF32;
  int64_t num_tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
};

// Sizes, dtypes and pointers only (ids live on the device). Kernels write a zero row for an id
// outside [0, vocab) rather than reading out of bounds.
absl::Status Validate(const EmbeddingParams& p);

}  // namespace moeserve::kernels
