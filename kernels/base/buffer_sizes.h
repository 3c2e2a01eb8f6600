// Sizing of persistent buffers that are carved into sub-buffers and grown, never shrunk (step
// buffers, MoE workspace, sampler workspace).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace moeserve::kernels {

// Bytes of `count` elements of `elem` bytes, rounded up to 256: every sub-buffer carved from one
// allocation at such offsets stays 256-byte aligned.
inline size_t AlignedBytes(int64_t count, size_t elem) {
  return (static_cast<size_t>(count) * elem + 255) / 256 * 256;
}

// The smallest power of two >= n, and >= current (capacities only grow).
inline int64_t GrowCapacity(int64_t current, int64_t n) {
  int64_t c = std::max<int64_t>(current, 1);
  while (c < n) c *= 2;
  return c;
}

}  // namespace moeserve::kernels
