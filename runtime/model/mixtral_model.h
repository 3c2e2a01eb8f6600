// The Mixtral forward pass for a batch of sequences of different lengths (prefill and decode in
// one call), over a paged KV cache.
//
// Per step the new tokens of all sequences are flattened into one [num_tokens, hidden] activation:
//   embed -> for each layer:
//     x += o_proj(attention(rope(q_proj(norm(x))), rope(k_proj(..)), v_proj(..)))
//     x += moe(norm(x))            (router top-k -> dispatch -> experts -> combine)
//   -> final norm -> lm_head on the rows whose logits are wanted.
// Activations are fp32; weights stay in their stored dtype (bf16 for Mixtral).
//
// Threading: one thread drives a model (the rank's worker); Forward is not reentrant.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "runtime/config/model_config.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/mixtral_weights.h"

namespace moeserve::runtime {

// One sequence's share of a step.
struct SequenceStep {
  std::vector<int32_t> new_tokens;  // tokens to process now (prompt chunk or the last sample)
  SequenceKv* kv = nullptr;         // its cache; kv->num_tokens positions are already cached
  bool all_logits = false;          // logits for every new token, else only for the last one
};

struct StepOutput {
  // Logits rows [num_rows, vocab], fp32 on the host; sequence s owns rows
  // row_offsets[s] .. row_offsets[s+1]-1 (one row, or one per new token with all_logits).
  std::vector<float> logits;
  std::vector<int64_t> row_offsets;
  int64_t vocab = 0;

  const float* row(int64_t r) const { return logits.data() + r * vocab; }
  // The row of sequence s's last new token.
  const float* last_row(int64_t s) const { return row(row_offsets[s + 1] - 1); }
};

// Cumulative tokens routed to each expert of each layer (expert-load statistics).
struct ExpertLoad {
  std::vector<std::vector<int64_t>> tokens;  // [num_layers][num_experts]
};

class MixtralModel {
 public:
  // `weights` must stay valid (e.g. its Checkpoint alive) for the model's lifetime.
  MixtralModel(ModelConfig config, MixtralWeights weights, kernels::Backend* backend);

  const ModelConfig& config() const { return config_; }
  kernels::Backend& backend() { return *backend_; }

  // Shape of a KV cache for this model with the given block size and count.
  KvCacheShape KvShape(int64_t block_size, int64_t num_blocks) const;

  // Runs one step. Reserves KV blocks for the new tokens in `pool`: if they do not fit,
  // returns ResourceExhausted and changes nothing. Bad token ids or positions past
  // max_position_embeddings are InvalidArgument. On success every kv->num_tokens advances.
  absl::Status Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool, StepOutput* out);

  // Optional router logit bias [num_experts], applied in every layer (load-test skew).
  void SetRouterBias(std::vector<float> bias) { router_bias_ = std::move(bias); }
  const ExpertLoad& expert_load() const { return expert_load_; }

 private:
  ModelConfig config_;
  MixtralWeights weights_;
  kernels::Backend* backend_;
  std::vector<float> router_bias_;
  ExpertLoad expert_load_;
};

}  // namespace moeserve::runtime
