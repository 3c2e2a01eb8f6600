// Token embedding lookup: out[t, :] = table[ids[t], :] as fp32.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::kernels {

struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [num_tokens], each in [0, vocab)
  const void* table = nullptr;   // [vocab, hidden] of table_dtype
  DType table_dtype = DType::kBF16;
  float* out = nullptr;  // [num_tokens, hidden]
  int64_t num_tokens = 0;
  int64_t vocab = 0;
  int64_t hidden = 0;
};

// Checks sizes and that every id is in range (ids must be host-readable here).
absl::Status Validate(const EmbeddingParams& p);

}  // namespace moeserve::kernels
