// Choosing the next token from a row of logits.
//
// temperature == 0 is greedy (argmax; ties go to the lowest id). Otherwise: logits / temperature,
// keep the top_k largest (top_k <= 0: all), keep the smallest set whose probability reaches top_p,
// renormalise and draw with the request's own generator, so the same seed gives the same tokens
// whatever else is in the batch. (Penalties, min_p, logprobs and stop strings arrive with the
// serving issue.)
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace moeserve::runtime {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = -1;        // <= 0: no limit
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;

  absl::Status Validate() const;
};

int32_t ArgMax(const float* logits, int64_t vocab);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  // REQUIRES: params.Validate().ok().
  int32_t Sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;  // mt19937_64's output sequence is fixed by the C++ standard
};

}  // namespace moeserve::runtime
