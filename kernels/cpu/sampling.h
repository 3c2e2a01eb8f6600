// CPU sampling: cpu::Sample, the reference for cuda::Sample, and the per-row math it is built
// from, which runtime::Sampler calls too (one implementation of the pipeline on the CPU; see
// kernels/ops/sampling.h and runtime/sampling/sampler.h for the semantics).
//
// Threading: every function is reentrant; the per-row helpers use thread-local scratch.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops/sampling.h"

namespace moeserve::kernels::cpu {

// Samples every row of p (rows in parallel; each row's result depends on that row alone).
// REQUIRES: Validate(p).ok(). Ignores p.workspace.
void Sample(const SampleParams& p);

// ---- One row's math.

// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t Mix64(uint64_t z);
// The random stream of choice `choice_index` of a request with `seed` (SampleRow::stream_key).
uint64_t SampleStreamKey(uint64_t seed, uint64_t choice_index);
// Draw `draw_index` of the stream: 64 random bits, a function of (stream_key, draw_index) only.
uint64_t SampleDrawBits(uint64_t stream_key, uint64_t draw_index);

// Index of the largest logit; ties go to the lowest id; NaN never wins unless it is logits[0].
// REQUIRES: vocab >= 1.
int32_t ArgMax(const float* logits, int64_t vocab);

struct SamplePenalties {
  float repetition = 1.0f;
  float frequency = 0.0f;
  float presence = 0.0f;
};
// The logit of a token after the penalties, for a token seen in the prompt or the output
// (in_prompt || output_count > 0; unseen tokens keep their logit). fp32 arithmetic, in this
// order (the CUDA kernel repeats it with round-to-nearest intrinsics, no contraction).
float PenalisedLogit(float logit, const SamplePenalties& penalties, int32_t output_count);

struct SampleFilter {
  float temperature = 1.0f;  // >= kSampleGreedyTemperature
  int32_t top_k = -1;        // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
};
// [vocab] unnormalised probabilities (double) after temperature, min_p, top_k and top_p (0 for
// the tokens filtered out); returns their sum (> 0). When the logits have no finite maximum, the
// argmax gets weight 1 and every other token 0.
double FilteredWeights(const float* logits, int64_t vocab, const SampleFilter& filter,
                       std::vector<double>* weights);
// Inverse CDF over the ids in id order: the first id whose cumulative weight exceeds
// u * total, u = (bits >> 11) * 2^-53 in [0, 1); the last id with weight > 0 if rounding leaves
// none.
int32_t DrawFromWeights(const std::vector<double>& weights, double total, uint64_t bits);
// The token for one row of penalised logits: ArgMax when filter.temperature <
// kSampleGreedyTemperature (no draw), else FilteredWeights + DrawFromWeights.
int32_t SampleToken(const float* logits, int64_t vocab, const SampleFilter& filter, uint64_t bits);

// log(sum_i exp(l_i)) of raw logits in double: max + log(sum exp(l_i - max)).
double LogNormaliser(const float* logits, int64_t vocab);
// l_id - log_normaliser rounded to fp32, or kSampleImpossibleLogprob when not finite.
float Logprob(const float* logits, int32_t id, double log_normaliser);
// The min(n, vocab) most likely ids, most likely first: higher logit first, ties (including
// -0 == +0) to the lower id, NaN after -inf.
std::vector<int32_t> TopTokens(const float* logits, int64_t vocab, int64_t n);

}  // namespace moeserve::kernels::cpu
