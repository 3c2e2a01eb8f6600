// Sampling on the device: one token per logits row, with the OpenAI / vLLM parameters, the same
// pipeline and the same counter-based random stream as the CPU Sampler
// (runtime/sampling/sampler.h, the oracle), so a seeded request draws the same tokens on every
// backend. Only the sampled ids (and logprobs when asked) go back to the host.
//
// Per row: penalties (repetition / frequency / presence, from the row's token history) ->
// greedy argmax when temperature < 1e-5 (ties to the lowest id) -> else logits / temperature,
// softmax, min_p, top_k, top_p, renormalise, inverse-CDF draw in id order with
// u = SplitMix64(stream_key + golden * (draw_index + 1)). Logprobs are of the RAW logits.
//
// Implementations: kernels/cpu/sampling.cc (the reference; runtime::Sampler runs the same
// per-row code) and kernels/cuda/sampling.cu.
//
// Agreement between backends (what the backend-ops harness may assert):
//  - Greedy rows (temperature < 1e-5), and rows whose penalised logits have no finite maximum:
//    identical tokens, always (integer/ordered comparisons on identically rounded fp32 values).
//  - min_p and top_k select exactly the same candidates (top_k is an exact rank under the total
//    order "higher logit first, ties to the lower id"), except when a logit lies within one
//    double ulp of the min_p threshold (max + T * log(min_p): log may differ by 1 ulp).
//  - Sampled rows: the probabilities are computed in double on both; only the summation order
//    (sequential on the CPU, a fixed tree on the GPU) and exp/log (<= 1 ulp apart) differ. The
//    tokens are identical unless the draw u * total, or a top_p cut (mass before a token vs
//    top_p * total), lies within a relative ~1e-12 of a boundary: probability ~1e-12 per row
//    for random data, never hit by the tests' grids.
//  - Logprobs: log_softmax in double on both, then rounded to fp32. The doubles differ by
//    ~1e-14 absolute (summation order, exp/log ulps), which is 0-1 fp32 ulp for |logprob| >~ 1e-6
//    but can be many ulps of a tiny logprob (-2.3e-10 vs -2.3e-10 + 7e-15): check
//    |a - b| <= 1e-6 * max(1, |a|). kSampleImpossibleLogprob exactly where the other backend has
//    it. top_logprobs ids identical (an exact selection on fp32 values).
//  - NaN logits: never sampled, except that the argmax (greedy rows, or rows without a finite
//    maximum) is id 0 when logits[0] is NaN, as cpu::ArgMax; a raw row with a NaN reports
//    kSampleImpossibleLogprob for every logprob; NaN ranks after -inf in top_logprobs.
//  - Row parameters outside runtime::SamplingParams::Validate's ranges (NaN temperature,
//    top_p <= 0, ...) are not supported: the device cannot report them, and backends may differ.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

inline constexpr float kSampleGreedyTemperature = 1e-5f;     // below: greedy (vLLM's epsilon)
inline constexpr float kSampleImpossibleLogprob = -9999.0f;  // reported for p = 0 (OpenAI)

// One row's parameters (runtime::SamplingParams flattened; filled by the host each step).
struct SampleRow {
  float temperature = 0.0f;
  int32_t top_k = -1;  // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int32_t num_top_logprobs = 0;  // [0, max_top_logprobs]
  uint64_t stream_key = 0;       // the Sampler's SplitMix64 stream for (seed, choice index)
  uint64_t draw_index = 0;       // tokens this sequence has sampled so far
  // Penalty history: entries history_begin .. history_end-1 of the history arrays, DISTINCT
  // tokens (the CUDA kernel writes each entry's token independently). An entry penalises its
  // token when in_prompt or output_count > 0: repetition_penalty (when != 1) for both,
  // frequency / presence only for output_count > 0. Tokens outside [0, vocab) are ignored.
  int32_t history_begin = 0;
  int32_t history_end = 0;
};

struct SampleParams {
  const float* logits = nullptr;          // [rows, vocab] fp32, raw model output
  const SampleRow* row_params = nullptr;  // [rows]
  // Distinct tokens of each row's history (penalties only), with how often each occurs in the
  // output so far and whether it occurs in the prompt.
  const int32_t* history_tokens = nullptr;         // [num_history]
  const int32_t* history_output_counts = nullptr;  // [num_history]
  const uint8_t* history_in_prompt = nullptr;      // [num_history]
  int64_t num_history = 0;
  int32_t* out_tokens = nullptr;  // [rows]
  float* out_logprobs = nullptr;  // optional [rows]: logprob of the sampled token
  // optional [rows, max_top_logprobs], both or neither: row r's min(num_top_logprobs, vocab)
  // most likely raw tokens, most likely first (ties to the lower id); the slots after them hold
  // token -1 and logprob 0.
  int32_t* out_top_tokens = nullptr;
  float* out_top_logprobs = nullptr;
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t max_top_logprobs = 0;
  // Device scratch of >= SampleWorkspaceBytes(rows, vocab) bytes, 256-byte aligned. Required by
  // the CUDA backend (cuda::Sample returns cudaErrorInvalidValue without it); the CPU ignores it
  // (nullptr is fine there).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Device scratch the CUDA sampler needs for `rows` x `vocab`: a penalised copy of the logits
// ([rows, vocab] fp32) then the filtered weights ([rows, vocab] double, at
// SampleWorkspaceWeightsOffset). 12 bytes per logit: 98 MB for 256 rows of 32000.
size_t SampleWorkspaceBytes(int64_t rows, int64_t vocab);
size_t SampleWorkspaceWeightsOffset(int64_t rows, int64_t vocab);

absl::Status Validate(const SampleParams& p);

}  // namespace moeserve::kernels
