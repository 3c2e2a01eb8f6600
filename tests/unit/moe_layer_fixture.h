// A small random MoE layer (hidden 24, intermediate 20, top-2) for the expert-parallel tests,
// deterministic from its seed so that separate processes build the same one.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/tensor.h"
#include "parallel/moe/moe_layer.h"

namespace moeserve::parallel::test {

// A random MoE layer whose tensors this fixture owns.
struct Layer {
  MoeLayerShape shape;
  std::vector<std::vector<uint8_t>> storage;
  MoeLayerWeights weights;
};

inline uint64_t Next(uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return s >> 33;
}
inline float Uniform(uint64_t& s, float scale) {
  return scale * (static_cast<float>(Next(s) % 20001) / 10000.0f - 1.0f);
}

inline kernels::TensorView MakeTensor(Layer& layer, std::vector<int64_t> shape,
                                      kernels::DType dtype, uint64_t seed, float scale) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * kernels::DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) {
    const float v = Uniform(seed, scale);
    if (dtype == kernels::DType::kBF16) {
      const uint16_t b = kernels::F32ToBf16(v);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    }
  }
  layer.storage.push_back(std::move(bytes));
  return {layer.storage.back().data(), dtype, kernels::Device::kCpu, shape};
}

inline std::unique_ptr<Layer> MakeLayer(int64_t experts, kernels::DType dtype, uint64_t seed) {
  auto layer = std::make_unique<Layer>();
  layer->shape = {24, 20, experts, 2};
  layer->storage.reserve(static_cast<size_t>(1 + 3 * experts));  // views point into it
  layer->weights.gate = MakeTensor(*layer, {experts, 24}, dtype, seed, 0.8f);
  for (int64_t e = 0; e < experts; ++e) {
    layer->weights.experts.push_back(
        {MakeTensor(*layer, {20, 24}, dtype, seed + 10 * e + 1, 0.2f),
         MakeTensor(*layer, {20, 24}, dtype, seed + 10 * e + 2, 0.2f),
         MakeTensor(*layer, {24, 20}, dtype, seed + 10 * e + 3, 0.2f)});
  }
  return layer;
}

}  // namespace moeserve::parallel::test
