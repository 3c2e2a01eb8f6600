// Single-request generation loop: prefill the prompt, then decode one token per step until
// max_tokens or EOS. The serving issue replaces this with the continuous-batching scheduler;
// `moeserve generate` and the benchmarks use it until then.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/mixtral_model.h"
#include "runtime/sampling/sampler.h"

namespace moeserve::runtime {

struct GenerateOptions {
  int64_t max_tokens = 64;
  SamplingParams sampling;
  bool stop_at_eos = true;
  int64_t prefill_chunk = 0;  // > 0: prefill in chunks of this many tokens
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (without the prompt)
  bool stopped_at_eos = false;
};

// Calls on_token after each generated token (for streaming). The sequence's KV blocks are
// released before returning.
absl::StatusOr<GenerateResult> Generate(MixtralModel& model, KvBlockPool& pool,
                                        const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace moeserve::runtime
