// Sampling on the device: one token per logits row, with the OpenAI / vLLM parameters, the same
// pipeline and the same counter-based random stream as the CPU Sampler
// (runtime/sampling/sampler.h, the oracle), so a seeded request draws the same tokens on every
// backend. Only the sampled ids (and logprobs when asked) go back to the host.
//
// Per row: penalties (repetition / frequency / presence, from the row's token history) ->
// greedy argmax when temperature < 1e-5 (ties to the lowest id) -> else logits / temperature,
// softmax, min_p, top_k, top_p, renormalise, inverse-CDF draw in id order with
// u = SplitMix64(stream_key + golden * (draw_index + 1)). Logprobs are of the RAW logits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

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
  // Penalty history: entries history_begin .. history_end-1 of the history arrays.
  int32_t history_begin = 0;
  int32_t history_end = 0;
};

struct SampleParams {
  const float* logits = nullptr;       // [rows, vocab] fp32, raw model output
  const SampleRow* row_params = nullptr;  // [rows]
  // Distinct tokens of each row's history (penalties only), with how often each occurs in the
  // output so far and whether it occurs in the prompt.
  const int32_t* history_tokens = nullptr;         // [num_history]
  const int32_t* history_output_counts = nullptr;  // [num_history]
  const uint8_t* history_in_prompt = nullptr;      // [num_history]
  int64_t num_history = 0;
  int32_t* out_tokens = nullptr;       // [rows]
  float* out_logprobs = nullptr;       // optional [rows]: logprob of the sampled token
  int32_t* out_top_tokens = nullptr;   // optional [rows, max_top_logprobs]
  float* out_top_logprobs = nullptr;   // optional [rows, max_top_logprobs]
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t max_top_logprobs = 0;
  void* workspace = nullptr;  // SampleWorkspaceBytes(rows, vocab) bytes of device memory
  size_t workspace_bytes = 0;
};

// Device scratch the CUDA sampler needs for `rows` x `vocab` (0 on CPU).
size_t SampleWorkspaceBytes(int64_t rows, int64_t vocab);

absl::Status Validate(const SampleParams& p);

}  // namespace moeserve::kernels
