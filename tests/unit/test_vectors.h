// Inputs and bitwise comparisons shared by the CPU kernel tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace moeserve::test {

// n floats uniform in [-scale, scale), from `rng` (advanced) or from a fresh generator seeded
// with `seed`.
inline std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}
inline std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  return RandomVector(n, rng, scale);
}

inline bool SameBits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

}  // namespace moeserve::test
