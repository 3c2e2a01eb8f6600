// Writes safetensors files: `moeserve make-model` (random test models) and the tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace moeserve::runtime {

struct NamedTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * DTypeSize(dtype) bytes, little-endian; may be null if 0
};

// Writes one safetensors file: header JSON padded with spaces to a multiple of 8 bytes (so the
// data section starts 8-byte aligned in the file and in its mmap), then the tensors in the given
// order, contiguous, as Hugging Face's writer does. Names must be unique, non-empty and not
// "__metadata__"; dims non-negative.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace moeserve::runtime
