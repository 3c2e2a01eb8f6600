// The Mixtral forward pass for a batch of sequences of different lengths (prefill and decode in
// one call), over a paged KV cache.
//
// Per step the new tokens of all sequences are flattened into one [num_tokens, hidden] activation:
//   embed -> for each layer:
//     x += o_proj(attention(rope(q_proj(norm(x))), rope(k_proj(..)), v_proj(..)))
//     x += moe(norm(x))            (router top-k -> dispatch -> experts -> combine)
//   -> final norm -> lm_head on the rows whose logits are wanted.
// Activations are in backend.activation_dtype() (fp32 on CPU, the bitwise reference; bf16 on
// CUDA); router and LM-head logits are fp32; weights stay in their stored dtype (bf16 for
// Mixtral). Each residual add is fused into the RmsNorm that follows it.
//
// Device residency: a step is enqueued on the backend with persistent buffers. The host fills one
// pinned staging buffer with the step's index arrays (token ids, positions, KV slots, logit rows,
// query starts, context lengths, block tables, and with sampling the SampleRows and penalty
// histories, each at a fixed offset for the current capacity) and uploads it with ONE copy;
// activations live in a workspace sized by the token capacity (grown by powers of two, never
// shrunk), so a steady-state step allocates nothing. The logits, or with sampling only the
// sampled ids (+ logprobs when asked), (and, at world size 1, the [layers, experts] expert-load
// counters kept on the device) come back with one Synchronize at the end of the step.
//
// Expert parallelism (EnableExpertParallel): the model is one rank of a group; attention runs on
// this rank's own sequences (data-parallel attention) and each MoE layer exchanges token states
// with the ranks holding the routed experts (parallel/moe/ep_moe_layer.h). Logits are bitwise
// identical to world size 1. Without it (the default) the MoE layers run every expert locally,
// exactly as before.
//
// Threading: one thread drives a model (the rank's worker); Forward is not reentrant.
// ep_stats() may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "parallel/moe/ep_moe_layer.h"
#include "parallel/moe/ep_stats.h"
#include "parallel/moe/router_skew.h"
#include "parallel/moe/skew_profile.h"
#include "runtime/config/model_config.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/decode_graphs.h"
#include "runtime/model/mixtral_weights.h"
#include "runtime/model/routing_capture.h"
#include "runtime/model/routing_trace.h"
#include "runtime/model/step_sampling.h"

namespace moeserve::runtime {

// One sequence's share of a step.
struct SequenceStep {
  std::vector<int32_t> new_tokens;  // tokens to process now (prompt chunk or the last sample)
  SequenceKv* kv = nullptr;         // its cache; kv->num_tokens positions are already cached
  bool all_logits = false;          // logits for every new token, else only for the last one
  // Router skew for this sequence's tokens (per-request `router_skew`); null: the model's
  // default profile (SetSkewProfile), or no bias at all when it has none.
  std::shared_ptr<const parallel::SkewProfile> skew;
  // When set, the step writes the router's top-k experts and weights of every new token in every
  // layer here (routing_trace.h). Such a step runs unpadded (no decode graph).
  RoutingTrace* routing = nullptr;
};

struct StepOutput {
  // Logits rows [num_rows, vocab], fp32 on the host; sequence s owns rows
  // row_offsets[s] .. row_offsets[s+1]-1 (one row, or one per new token with all_logits).
  // Only when the step keeps the logits (Forward without sampling, or StepSampling::keep_logits);
  // otherwise both are empty.
  std::vector<float> logits;
  std::vector<int64_t> row_offsets;
  int64_t vocab = 0;

  const float* row(int64_t r) const { return logits.data() + r * vocab; }
  // The row of sequence s's last new token.
  const float* last_row(int64_t s) const { return row(row_offsets[s + 1] - 1); }

  // Forward with sampling: row i of the StepSampling's draws.
  SampledRows sampled;
};

// Cumulative tokens routed to each expert of each layer (expert-load statistics).
struct ExpertLoad {
  std::vector<std::vector<int64_t>> tokens;  // [num_layers][num_experts]
};

class MixtralModel {
 public:
  // `weights` must stay valid (e.g. its Checkpoint alive) for the model's lifetime.
  MixtralModel(ModelConfig config, MixtralWeights weights, kernels::Backend* backend);
  ~MixtralModel();

  const ModelConfig& config() const { return config_; }
  kernels::Backend& backend() { return *backend_; }

  // Shape of a KV cache for this model with the given block size and count.
  KvCacheShape KvShape(int64_t block_size, int64_t num_blocks) const;

  // Runs one step. Reserves KV blocks for the new tokens in `pool`: if they do not fit,
  // returns ResourceExhausted and changes nothing. Bad token ids or positions past
  // max_position_embeddings are InvalidArgument. On success every kv->num_tokens advances.
  // An empty batch is a no-op step (with expert parallelism it still serves the peers).
  //
  // With expert parallelism every rank must call Forward the same number of times (lockstep);
  // a rank with no sequences calls it with an empty batch. A call that fails validation or KV
  // reservation still takes part in every layer's exchange with zero tokens before returning
  // its error, so the peers' step completes. Collective failures (a peer aborted) are returned.
  absl::Status Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool, StepOutput* out);
  // The same step, sampling on the device right after the LM head (step_sampling.h): the LM head
  // runs only on the sampled rows (plus every logits row when sampling.keep_logits), and the step
  // downloads the sampled ids (+ logprobs when asked) into out->sampled instead of the logits.
  // Bad requests (sampling.Validate) are InvalidArgument, checked before the KV reservation.
  absl::Status Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                       const StepSampling& sampling, StepOutput* out);

  // Makes this model rank ep.comm->rank() of an expert-parallel group. Checks that the
  // placement fits the config and the communicator and that the weights hold every expert the
  // placement gives this rank (load them with ModelLoadOptions::placement). Call before the first
  // Forward; resets the statistics.
  absl::Status EnableExpertParallel(const parallel::ExpertParallelContext& ep);
  bool expert_parallel() const { return ep_.comm != nullptr; }
  // EPLB (issue 12): switches this rank to `placement` (same shape and world size; it must
  // outlive its use) between two steps. `added`: the weights of every expert the new placement
  // gives this rank that it does not hold now (packed like the loaded ones; they must outlive
  // their use). Experts this rank held and the new placement does not give it are dropped from
  // the tables (their views cleared; the caller frees what backs them afterwards). Rebuilds the
  // expert pointer tables. Call from the thread that drives the model, between steps, on every
  // rank at the same step. On error nothing changed.
  absl::Status SwapExpertPlacement(
      const parallel::ExpertPlacement* placement,
      const std::vector<std::pair<std::pair<int64_t, int64_t>, parallel::ExpertWeights>>& added);
  // Whether this rank holds the weights of (layer, expert).
  bool HoldsExpertWeights(int64_t layer, int64_t expert) const {
    return weights_.layers[layer].moe.experts[expert].held();
  }

  // Optional router logit bias [num_experts], applied in every layer (load-test skew). A bias of
  // another size makes Forward fail with InvalidArgument. Empty: no bias. Uploaded to the device
  // by the next Forward (call from the thread that drives the model).
  void SetRouterBias(std::vector<float> bias) {
    router_bias_ = std::move(bias);
    router_bias_dirty_ = true;
  }
  // Skew injection: `skew.bias` added to the chosen experts' logits in every layer (off when
  // !skew.enabled()). With expert parallelism, set the same skew on every rank.
  absl::Status SetRouterSkew(const parallel::RouterSkew& skew);
  // Default skew profile for sequences without their own (--router-skew); nullopt: none. With no
  // profile in a step, the router gets no per-token bias and outputs are unchanged bit for bit.
  // InvalidArgument when the profile does not fit the model. Same on every rank.
  absl::Status SetSkewProfile(std::optional<parallel::SkewProfile> profile);
  const ExpertLoad& expert_load() const { return expert_load_; }
  // Decode steps padded to batch-size buckets and replayed as CUDA graphs (decode_graphs.h);
  // off by default. On a backend without graphs the padded steps run eagerly (CPU tests).
  void SetDecodeGraphs(DecodeGraphOptions options) { graph_options_ = std::move(options); }
  const DecodeGraphOptions& decode_graph_options() const { return graph_options_; }
  const DecodeGraphCache& decode_graphs() const { return graphs_; }
  // This rank's expert-load and all-to-all counters (world size 1 without expert parallelism);
  // combine the ranks' snapshots with parallel::AggregateEpStats. Any thread.
  parallel::EpRankStats ep_stats() const { return stats_->Snapshot(); }
  // Steps in the statistics' sliding window (>= 1; default parallel::kDefaultWindowSteps).
  // Resets the statistics; call before serving, from the thread that drives the model.
  void SetStatsWindowSteps(int64_t steps);

 private:
  ModelConfig config_;
  MixtralWeights weights_;
  kernels::Backend* backend_;
  // Forward after validation and KV reservation: the layers over a non-empty batch.
  // `sampling` == nullptr: the logits path (every logits row downloaded, nothing sampled).
  absl::Status RunBatch(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                        const StepSampling* sampling, StepOutput* out);
  absl::Status ForwardImpl(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                           const StepSampling* sampling, StepOutput* out);
  // Runs the MoE block of layer l on h [T, hidden] into out. Expert parallelism records the
  // layer's statistics at once; world size 1 counts on the device (ReadBackExpertLoad).
  absl::Status MoeBlock(int64_t l, const void* h, int64_t num_tokens, void* out);
  // First Forward: expert pointer tables, device expert-load counters, the router bias.
  absl::Status PrepareDevice();
  // After the step's Synchronize: the counters' growth since the last step, into the statistics,
  // less the routing of `padding_rows` padding rows of a bucketed decode step (decode_graphs.h).
  void RecordDeviceExpertLoad(int64_t num_tokens, int64_t padding_rows);
  // The device part of a step (embedding to LM-head logits), enqueued; capturable.
  struct StepPlan;
  absl::Status EnqueueDeviceStep(const StepPlan& plan, KvBlockPool& pool);
  // A bucketed decode step: replays the bucket's graph, capturing it first when there is none
  // (or running eagerly when the backend has no graphs).
  absl::Status RunDecodeBucket(int64_t bucket, const StepPlan& plan, KvBlockPool& pool);
  // Expert parallelism: every layer's exchange with zero tokens of our own (a rank with nothing
  // to run, or whose step failed before the first layer).
  absl::Status JoinLayersIdle();

  // Fills and uploads the step's per-token router bias [layers, T, experts] when a sequence of
  // the batch has a skew profile; step_token_bias_ stays null otherwise.
  absl::Status PrepareTokenBias(absl::Span<const SequenceStep> batch, int64_t num_tokens);

  std::vector<float> router_bias_;
  bool router_bias_dirty_ = true;
  std::optional<parallel::SkewProfile> skew_profile_;
  kernels::DeviceBuffer token_bias_host_, token_bias_device_;  // [layers, T, experts] fp32
  const float* step_token_bias_ = nullptr;                     // this step's device bias, or null
  RoutingCapture routing_capture_;  // this step's routing for sequences that asked for it
  ExpertLoad expert_load_;
  // Device state, built by PrepareDevice and reused by every step.
  bool device_ready_ = false;
  kernels::DeviceBuffer expert_tables_;          // GroupedMatmul pointer tables of every layer
  kernels::DeviceBuffer router_bias_device_;     // [num_experts] fp32, when a bias is set
  kernels::DeviceBuffer expert_counts_;          // [layers, experts] int64 on the device
  kernels::DeviceBuffer expert_counts_host_;     // its pinned host copy, read at the end of a step
  std::vector<int64_t> expert_counts_recorded_;  // [layers * experts]: already in the stats
  parallel::MoeWorkspace moe_workspace_;
  struct StepBuffers;  // persistent index staging + activations (mixtral_model.cc)
  std::unique_ptr<StepBuffers> step_;
  DeviceSampler sampler_;  // the step tail's sampling workspace and results
  DecodeGraphOptions graph_options_;
  DecodeGraphCache graphs_;
  parallel::ExpertParallelContext ep_;  // comm == nullptr: world size 1, local experts
  std::unique_ptr<parallel::EpStatsRecorder> stats_;
  int64_t stats_window_steps_ = parallel::kDefaultWindowSteps;
};

}  // namespace moeserve::runtime
