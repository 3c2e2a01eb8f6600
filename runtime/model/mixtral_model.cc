#include "runtime/model/mixtral_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/base/buffer_sizes.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {

using kernels::AlignedBytes;
using kernels::GrowCapacity;
namespace {

kernels::RmsNormParams Norm(const void* x, int64_t rows, const kernels::TensorView& w, double eps,
                            void* out, kernels::DType act, void* residual = nullptr) {
  kernels::RmsNormParams p;
  p.x = x;
  p.weight = w.data;
  p.weight_dtype = w.dtype;
  p.out = out;
  p.rows = rows;
  p.hidden = w.dim(0);
  p.eps = static_cast<float>(eps);
  p.act_dtype = act;
  p.residual = residual;
  return p;
}

// Checks the batch and reserves KV blocks for its new tokens, all-or-nothing.
absl::Status ValidateAndReserve(const ModelConfig& c, const std::vector<float>& router_bias,
                                absl::Span<SequenceStep> batch, KvBlockPool& pool) {
  if (!router_bias.empty() && static_cast<int64_t>(router_bias.size()) != c.num_local_experts) {
    return absl::InvalidArgumentError(absl::StrCat("forward: router bias has ", router_bias.size(),
                                                   " entries, the model ", c.num_local_experts,
                                                   " experts"));
  }
  // Validate the inputs before touching the cache.
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceStep& step = batch[s];
    if (step.kv == nullptr || step.new_tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: sequence ", s, " has no kv state or no new tokens"));
    }
    if (step.skew != nullptr) {
      MOESERVE_RETURN_IF_ERROR(parallel::ValidateSkewProfile(*step.skew, c.num_local_experts));
    }
    for (int32_t id : step.new_tokens) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "forward: token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    const int64_t total = step.kv->num_tokens + static_cast<int64_t>(step.new_tokens.size());
    if (total > c.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward: sequence ", s, " would reach ", total,
                       " positions, past max_position_embeddings=", c.max_position_embeddings));
    }
  }
  // Reserve blocks for all sequences, all-or-nothing across the batch.
  {
    std::vector<size_t> old_sizes;
    for (SequenceStep& step : batch) old_sizes.push_back(step.kv->block_table.size());
    for (size_t s = 0; s < batch.size(); ++s) {
      SequenceStep& step = batch[s];
      if (!pool.Reserve(*step.kv,
                        step.kv->num_tokens + static_cast<int64_t>(step.new_tokens.size()))) {
        for (size_t r = 0; r < s; ++r) {  // undo the reservations made in this call
          auto& table = batch[r].kv->block_table;
          while (table.size() > old_sizes[r]) {
            pool.FreeBlock(table.back());
            table.pop_back();
          }
        }
        return absl::ResourceExhaustedError(
            absl::StrCat("kv cache: no free blocks for sequence ", s, " (", pool.num_free_blocks(),
                         " free of ", pool.shape().num_blocks, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

MixtralModel::MixtralModel(ModelConfig config, MixtralWeights weights, kernels::Backend* backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {
  expert_load_.tokens.assign(static_cast<size_t>(config_.num_hidden_layers),
                             std::vector<int64_t>(static_cast<size_t>(config_.num_local_experts)));
  stats_ = std::make_unique<parallel::EpStatsRecorder>(0, 1, config_.num_hidden_layers,
                                                       config_.num_local_experts);
}

absl::Status MixtralModel::EnableExpertParallel(const parallel::ExpertParallelContext& ep) {
  if (ep.comm == nullptr || ep.placement == nullptr) {
    return absl::InvalidArgumentError("expert parallelism needs a communicator and a placement");
  }
  const parallel::ExpertPlacement& p = *ep.placement;
  const int rank = ep.comm->rank(), world = ep.comm->world_size();
  if (p.world_size() != world) {
    return absl::InvalidArgumentError(absl::StrCat("expert placement is for ", p.world_size(),
                                                   " ranks, the communicator has ", world));
  }
  if (p.num_layers() != config_.num_hidden_layers || p.num_experts() != config_.num_local_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert placement has ", p.num_layers(), " layers x ", p.num_experts(),
                     " experts, the model num_hidden_layers=", config_.num_hidden_layers,
                     " x num_local_experts=", config_.num_local_experts));
  }
  for (const auto& [layer, expert] : p.ExpertsOf(rank)) {
    const parallel::ExpertWeights& w = weights_.layers[layer].moe.experts[expert];
    if (w.w1.data == nullptr || w.w2.data == nullptr || w.w3.data == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", rank, " holds layer ", layer, " expert ", expert,
          " by the placement, but its weights were not loaded (load with the same placement)"));
    }
  }
  ep_ = ep;
  stats_ = std::make_unique<parallel::EpStatsRecorder>(
      rank, world, config_.num_hidden_layers, config_.num_local_experts, stats_window_steps_);
  return absl::OkStatus();
}

absl::Status MixtralModel::SwapExpertPlacement(
    const parallel::ExpertPlacement* placement,
    const std::vector<std::pair<std::pair<int64_t, int64_t>, parallel::ExpertWeights>>& added) {
  if (!expert_parallel()) {
    return absl::FailedPreconditionError("SwapExpertPlacement needs expert parallelism");
  }
  const parallel::ExpertPlacement& p = *placement;
  const int rank = ep_.comm->rank();
  if (p.world_size() != ep_.comm->world_size() || p.num_layers() != config_.num_hidden_layers ||
      p.num_experts() != config_.num_local_experts) {
    return absl::InvalidArgumentError("SwapExpertPlacement: the placement does not fit the model");
  }
  // The new expert views: kept where still held, added, or cleared. Built aside, so that an
  // error leaves the model unchanged.
  std::vector<LayerWeights> layers = weights_.layers;
  for (const auto& [le, w] : added) {
    const auto [layer, expert] = le;
    if (layer < 0 || layer >= p.num_layers() || expert < 0 || expert >= p.num_experts() ||
        !w.held()) {
      return absl::InvalidArgumentError(
          absl::StrCat("SwapExpertPlacement: bad weights for layer ", layer, " expert ", expert));
    }
    layers[layer].moe.experts[expert] = w;
  }
  for (int64_t l = 0; l < p.num_layers(); ++l) {
    for (int64_t e = 0; e < p.num_experts(); ++e) {
      parallel::ExpertWeights& w = layers[l].moe.experts[e];
      if (!p.Holds(rank, l, e)) {
        w = {};
      } else if (!w.held()) {
        return absl::FailedPreconditionError(absl::StrCat("SwapExpertPlacement: rank ", rank,
                                                          " would hold layer ", l, " expert ", e,
                                                          " without its weights"));
      }
    }
  }
  kernels::DeviceBuffer tables;
  if (device_ready_) {
    std::vector<parallel::MoeLayerWeights*> moe;
    for (LayerWeights& lw : layers) moe.push_back(&lw.moe);
    MOESERVE_ASSIGN_OR_RETURN(tables, parallel::BuildExpertTables(*backend_, moe));
  }
  weights_.layers = std::move(layers);
  if (device_ready_) expert_tables_ = std::move(tables);
  ep_.placement = placement;
  return absl::OkStatus();
}

absl::Status MixtralModel::SetRouterSkew(const parallel::RouterSkew& skew) {
  MOESERVE_ASSIGN_OR_RETURN(std::vector<float> bias,
                            parallel::MakeRouterBias(config_.num_local_experts, skew));
  router_bias_ = std::move(bias);
  router_bias_dirty_ = true;
  return absl::OkStatus();
}

void MixtralModel::SetStatsWindowSteps(int64_t steps) {
  stats_window_steps_ = std::max<int64_t>(1, steps);
  const int rank = expert_parallel() ? ep_.comm->rank() : 0;
  const int world = expert_parallel() ? ep_.comm->world_size() : 1;
  stats_ = std::make_unique<parallel::EpStatsRecorder>(
      rank, world, config_.num_hidden_layers, config_.num_local_experts, stats_window_steps_);
}

absl::Status MixtralModel::SetSkewProfile(std::optional<parallel::SkewProfile> profile) {
  if (profile) {
    MOESERVE_RETURN_IF_ERROR(parallel::ValidateSkewProfile(*profile, config_.num_local_experts));
  }
  skew_profile_ = std::move(profile);
  return absl::OkStatus();
}

absl::Status MixtralModel::PrepareTokenBias(absl::Span<const SequenceStep> batch,
                                            int64_t num_tokens) {
  step_token_bias_ = nullptr;
  bool any = false;
  for (const SequenceStep& step : batch) any = any || step.skew != nullptr;
  if (!any && !skew_profile_) return absl::OkStatus();  // the default: no bias passed at all
  const int64_t layers = config_.num_hidden_layers, experts = config_.num_local_experts;
  const size_t bytes = sizeof(float) * static_cast<size_t>(layers * num_tokens * experts);
  kernels::Backend& be = *backend_;
  if (token_bias_host_.bytes() < bytes) {
    // Grows only; the previous step's upload finished at its Synchronize.
    MOESERVE_ASSIGN_OR_RETURN(token_bias_host_, be.AllocateHost(bytes * 2));
    MOESERVE_ASSIGN_OR_RETURN(token_bias_device_, be.Allocate(bytes * 2));
  }
  // [layers, T, experts]; unskewed tokens get +0.0f rows (exact, see kernels/ops/router.h).
  float* host = token_bias_host_.as<float>();
  std::fill(host, host + layers * num_tokens * experts, 0.0f);
  int64_t t0 = 0;
  for (const SequenceStep& step : batch) {
    const int64_t n = static_cast<int64_t>(step.new_tokens.size());
    const parallel::SkewProfile* p = step.skew       ? step.skew.get()
                                     : skew_profile_ ? &*skew_profile_
                                                     : nullptr;
    for (int64_t l = 0; p != nullptr && l < layers; ++l) {
      float* rows = host + (l * num_tokens + t0) * experts;
      for (int64_t i = 0; i < n; ++i) {
        if (i == 0 || p->position_dependent()) {
          p->BiasFor(l, step.kv->num_tokens + i, absl::MakeSpan(rows + i * experts, experts));
        } else {
          std::copy(rows, rows + experts, rows + i * experts);
        }
      }
    }
    t0 += n;
  }
  MOESERVE_RETURN_IF_ERROR(be.CopyToDeviceAsync(token_bias_device_.data(), host, bytes));
  step_token_bias_ = token_bias_device_.as<float>();
  return absl::OkStatus();
}

absl::Status MixtralModel::MoeBlock(int64_t l, const void* h, int64_t num_tokens, void* out) {
  const ModelConfig& c = config_;
  const parallel::MoeLayerShape shape{c.hidden_size, c.intermediate_size, c.num_local_experts,
                                      c.num_experts_per_tok};
  const parallel::MoeLayerWeights& w = weights_.layers[l].moe;
  const float* bias = router_bias_.empty() ? nullptr : router_bias_device_.as<float>();
  // [T, experts] rows of this layer, or null (no skew in this step, or an idle join).
  const float* token_bias = step_token_bias_ != nullptr && num_tokens > 0
                                ? step_token_bias_ + l * num_tokens * c.num_local_experts
                                : nullptr;
  if (!expert_parallel()) {
    // Load statistics accumulate on the device; RecordDeviceExpertLoad reads them per step.
    int64_t* counts = expert_counts_.as<int64_t>() + l * c.num_local_experts;
    MOESERVE_RETURN_IF_ERROR(parallel::RunMoeLayer(*backend_, shape, w, moe_workspace_, h,
                                                   num_tokens, out, bias, counts, token_bias));
    if (!routing_capture_.active() || num_tokens == 0) return absl::OkStatus();
    return routing_capture_.Enqueue(*backend_, l, moe_workspace_.expert_ids,
                                    moe_workspace_.weights);
  }
  parallel::EpLayerTrace trace;
  parallel::RoutingHostCopy routing;
  if (routing_capture_.active() && num_tokens > 0) {
    routing = {routing_capture_.ids(l), routing_capture_.weights(l)};
  }
  // A new replica start every call (ExpertParallelContext::replica_offset): batch-1 decode
  // spreads over a hot expert's replicas too.
  ++ep_.replica_offset;
  MOESERVE_RETURN_IF_ERROR(parallel::RunExpertParallelMoeLayer(
      *backend_, shape, w, l, ep_, h, num_tokens, out, bias, &trace, token_bias, routing));
  for (int64_t e = 0; e < c.num_local_experts; ++e) {
    expert_load_.tokens[l][e] += trace.routed_per_expert[e];
  }
  stats_->RecordLayer(l, trace);
  return absl::OkStatus();
}

void MixtralModel::RecordDeviceExpertLoad(int64_t num_tokens, int64_t padding_rows) {
  const ModelConfig& c = config_;
  const int64_t experts = c.num_local_experts;
  const int64_t* now = expert_counts_host_.as<int64_t>();
  // Padding rows are exactly zero, so every layer routes them to the same experts.
  std::vector<int64_t> padding(static_cast<size_t>(experts), 0);
  if (padding_rows > 0) {
    for (int32_t e : PaddingRouting(router_bias_, experts, c.num_experts_per_tok)) {
      padding[e] = padding_rows;
    }
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // World size 1: every row is routed and computed here, none crosses a link.
    parallel::EpLayerTrace trace;
    trace.routed_per_expert.resize(static_cast<size_t>(experts));
    for (int64_t e = 0; e < experts; ++e) {
      const size_t i = static_cast<size_t>(l * experts + e);
      trace.routed_per_expert[e] = now[i] - expert_counts_recorded_[i] - padding[e];
      expert_counts_recorded_[i] = now[i];
      expert_load_.tokens[l][e] += trace.routed_per_expert[e];
    }
    trace.computed_per_expert = trace.routed_per_expert;
    trace.rows_sent_to = {num_tokens * c.num_experts_per_tok};
    trace.rows_received_from = trace.rows_sent_to;
    trace.row_bytes =
        c.hidden_size * static_cast<int64_t>(kernels::DTypeSize(backend_->activation_dtype()));
    stats_->RecordLayer(l, trace);
  }
}

absl::Status MixtralModel::PrepareDevice() {
  kernels::Backend& be = *backend_;
  const ModelConfig& c = config_;
  if (!device_ready_) {
    std::vector<parallel::MoeLayerWeights*> layers;
    for (LayerWeights& lw : weights_.layers) layers.push_back(&lw.moe);
    MOESERVE_ASSIGN_OR_RETURN(expert_tables_, parallel::BuildExpertTables(be, layers));
    const size_t count_bytes = sizeof(int64_t) * c.num_hidden_layers * c.num_local_experts;
    MOESERVE_ASSIGN_OR_RETURN(expert_counts_, be.Allocate(count_bytes));
    MOESERVE_ASSIGN_OR_RETURN(expert_counts_host_, be.AllocateHost(count_bytes));
    MOESERVE_RETURN_IF_ERROR(be.MemsetAsync(expert_counts_.data(), 0, count_bytes));
    std::memset(expert_counts_host_.data(), 0, count_bytes);
    expert_counts_recorded_.assign(count_bytes / sizeof(int64_t), 0);
    device_ready_ = true;
  }
  if (router_bias_dirty_) {
    // Only after SetRouterBias/SetRouterSkew: one extra upload in that step.
    if (!router_bias_.empty() && static_cast<int64_t>(router_bias_.size()) == c.num_local_experts) {
      const size_t bytes = sizeof(float) * router_bias_.size();
      if (router_bias_device_.bytes() < bytes) {
        MOESERVE_ASSIGN_OR_RETURN(router_bias_device_, be.Allocate(bytes));
      }
      MOESERVE_RETURN_IF_ERROR(
          be.CopyToDevice(router_bias_device_.data(), router_bias_.data(), bytes));
    }
    router_bias_dirty_ = false;
  }
  return absl::OkStatus();
}

absl::Status MixtralModel::JoinLayersIdle() {
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    MOESERVE_RETURN_IF_ERROR(MoeBlock(l, nullptr, 0, nullptr));
  }
  return absl::OkStatus();
}

KvCacheShape MixtralModel::KvShape(int64_t block_size, int64_t num_blocks) const {
  return {config_.num_hidden_layers,
          config_.num_key_value_heads,
          config_.head_dim,
          block_size,
          num_blocks,
          backend_->kv_dtype()};
}

absl::Status MixtralModel::Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                   StepOutput* out) {
  return ForwardImpl(batch, pool, nullptr, out);
}

absl::Status MixtralModel::Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                   const StepSampling& sampling, StepOutput* out) {
  return ForwardImpl(batch, pool, &sampling, out);
}

absl::Status MixtralModel::ForwardImpl(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                       const StepSampling* sampling, StepOutput* out) {
  const ModelConfig& c = config_;
  stats_->BeginStep();
  step_token_bias_ = nullptr;
  out->sampled.Clear();
  // Device state first: with expert parallelism even a failed step serves the peers' rows.
  absl::Status ready = PrepareDevice();
  if (ready.ok() && sampling != nullptr) {
    ready = sampling->Validate(static_cast<int64_t>(batch.size()));
  }
  if (ready.ok()) ready = ValidateAndReserve(c, router_bias_, batch, pool);
  if (!ready.ok() || batch.empty()) {
    // Nothing to compute here; with expert parallelism the peers still need this rank in
    // every layer's exchange (it may hold experts their tokens were routed to).
    if (expert_parallel()) MOESERVE_RETURN_IF_ERROR(JoinLayersIdle());
    MOESERVE_RETURN_IF_ERROR(ready);
    out->vocab = c.vocab_size;
    out->logits.clear();
    out->row_offsets.assign(1, 0);
    if (sampling != nullptr && !sampling->keep_logits) out->row_offsets.clear();
    return absl::OkStatus();
  }
  absl::Status st = RunBatch(batch, pool, sampling, out);
  // A failure part-way through the layers leaves the peers waiting in a later layer's exchange:
  // end the group so that they fail too (a no-op if a collective already failed).
  if (!st.ok() && expert_parallel()) ep_.comm->Abort(st);
  return st;
}

// The step's persistent buffers. Index arrays sit at fixed offsets for the current capacities,
// identical in the pinned host staging buffer and its device twin, so a step is one upload:
//   ids [T] i32 | positions [T] i32 | slots [T] i64 | logit_rows [R] i32
//   | row_mask [T] f32 | row_identity [T] i32 (padding mask of bucketed decode steps)
//   | query_start [S+1] i32 | context_lens [S] i32 | block_tables [S, B] i32
//   | sample_rows [S] SampleRow | history_tokens [H] i32 | history_output_counts [H] i32
//   | history_in_prompt [H] u8
// (a step uploads the prefix up to the last array it uses).
// Activations (activation dtype): x, branch, h [T, hidden]; q, attn [T, q_width];
// k, v [T, kv_width]; rows [R, hidden]; logits [R, vocab] fp32.
// Capacities (T tokens, S sequences, B blocks per sequence = the block-table stride, R LM-head
// rows, H penalty-history entries) grow by powers of two and never shrink.
struct MixtralModel::StepBuffers {
  int64_t tokens = 0, seqs = 0, blocks = 0, rows = 0, history = 0;
  size_t ids = 0, positions = 0, logit_rows = 0, slots = 0, row_mask = 0, row_identity = 0,
         query_start = 0, context_lens = 0, block_tables = 0, sample_rows = 0, history_tokens = 0,
         history_output_counts = 0, history_in_prompt = 0, index_bytes = 0;
  kernels::DeviceBuffer host_index, device_index, activations, row_buffers;
  void *x = nullptr, *branch = nullptr, *h = nullptr, *q = nullptr, *attn = nullptr, *k = nullptr,
       *v = nullptr, *rows_act = nullptr;
  float* logits = nullptr;

  template <typename T>
  T* Host(size_t offset) {
    return reinterpret_cast<T*>(static_cast<char*>(host_index.data()) + offset);
  }
  template <typename T>
  T* Dev(size_t offset) {
    return reinterpret_cast<T*>(static_cast<char*>(device_index.data()) + offset);
  }

  // Rows num_tokens .. bucket-1 of a decode step (one token per sequence) become padding rows
  // (decode_graphs.h); row_mask is 1 for the real rows and 0 for these. The LM head runs on one
  // row per token, padding included: rows [0, num_tokens) are the sampled and the kept rows.
  void FillPaddingRows(int64_t num_tokens, int64_t bucket, int32_t padding_block) {
    int32_t* ids_h = Host<int32_t>(ids);
    float* mask = Host<float>(row_mask);
    int32_t* identity = Host<int32_t>(row_identity);
    for (int64_t t = 0; t < bucket; ++t) {
      mask[t] = t < num_tokens ? 1.0f : 0.0f;
      identity[t] = static_cast<int32_t>(t);
      Host<int32_t>(logit_rows)[t] = static_cast<int32_t>(t);
    }
    for (int64_t t = num_tokens; t < bucket; ++t) {  // row t is padding sequence t
      ids_h[t] = 0;
      Host<int32_t>(positions)[t] = 0;
      Host<int64_t>(slots)[t] = -1;  // KvWrite skips it
      Host<int32_t>(query_start)[t + 1] = static_cast<int32_t>(t + 1);
      Host<int32_t>(context_lens)[t] = 1;
      int32_t* table = Host<int32_t>(block_tables) + t * blocks;
      std::fill(table, table + blocks, -1);
      table[0] = padding_block;
    }
  }

  // Grows whatever is too small for a step of these sizes; allocates nothing otherwise.
  absl::Status Reserve(kernels::Backend& be, const ModelConfig& c, int64_t num_tokens,
                       int64_t num_seqs, int64_t max_blocks, int64_t num_rows,
                       int64_t num_history) {
    const int64_t new_tokens = GrowCapacity(tokens, num_tokens),
                  new_seqs = GrowCapacity(seqs, num_seqs),
                  new_blocks = GrowCapacity(blocks, max_blocks),
                  new_rows = GrowCapacity(rows, num_rows),
                  new_history = GrowCapacity(history, num_history);
    const size_t act = kernels::DTypeSize(be.activation_dtype());
    if (new_tokens != tokens || new_seqs != seqs || new_blocks != blocks || new_rows != rows ||
        new_history != history) {
      const int64_t T = new_tokens, S = new_seqs, B = new_blocks, R = new_rows, H = new_history;
      size_t at = 0;
      auto place = [&](size_t bytes) {
        const size_t offset = at;
        at += bytes;
        return offset;
      };
      ids = place(AlignedBytes(T, sizeof(int32_t)));
      positions = place(AlignedBytes(T, sizeof(int32_t)));
      slots = place(AlignedBytes(T, sizeof(int64_t)));
      logit_rows = place(AlignedBytes(R, sizeof(int32_t)));
      row_mask = place(AlignedBytes(T, sizeof(float)));
      row_identity = place(AlignedBytes(T, sizeof(int32_t)));
      query_start = place(AlignedBytes(S + 1, sizeof(int32_t)));
      context_lens = place(AlignedBytes(S, sizeof(int32_t)));
      block_tables = place(AlignedBytes(S * B, sizeof(int32_t)));
      sample_rows = place(AlignedBytes(S, sizeof(kernels::SampleRow)));
      history_tokens = place(AlignedBytes(H, sizeof(int32_t)));
      history_output_counts = place(AlignedBytes(H, sizeof(int32_t)));
      history_in_prompt = place(AlignedBytes(H, sizeof(uint8_t)));
      index_bytes = at;
      MOESERVE_ASSIGN_OR_RETURN(host_index, be.AllocateHost(index_bytes));
      MOESERVE_ASSIGN_OR_RETURN(device_index, be.Allocate(index_bytes));
    }
    if (new_tokens != tokens) {
      const int64_t T = new_tokens;
      const int64_t q_width = c.num_attention_heads * c.head_dim;
      const int64_t kv_width = c.num_key_value_heads * c.head_dim;
      const size_t sizes[] = {
          AlignedBytes(T * c.hidden_size, act), AlignedBytes(T * c.hidden_size, act),
          AlignedBytes(T * c.hidden_size, act), AlignedBytes(T * q_width, act),
          AlignedBytes(T * q_width, act),       AlignedBytes(T * kv_width, act),
          AlignedBytes(T * kv_width, act)};
      size_t total = 0;
      for (size_t b : sizes) total += b;
      MOESERVE_ASSIGN_OR_RETURN(activations, be.Allocate(total));
      char* p = static_cast<char*>(activations.data());
      void** parts[] = {&x, &branch, &h, &q, &attn, &k, &v};
      for (size_t i = 0; i < 7; ++i) {
        *parts[i] = p;
        p += sizes[i];
      }
    }
    if (new_rows != rows) {
      const size_t act_bytes = AlignedBytes(new_rows * c.hidden_size, act);
      MOESERVE_ASSIGN_OR_RETURN(
          row_buffers,
          be.Allocate(act_bytes + AlignedBytes(new_rows * c.vocab_size, sizeof(float))));
      rows_act = row_buffers.data();
      logits = reinterpret_cast<float*>(static_cast<char*>(row_buffers.data()) + act_bytes);
    }
    tokens = new_tokens;
    seqs = new_seqs;
    blocks = new_blocks;
    rows = new_rows;
    history = new_history;
    return absl::OkStatus();
  }
};

// What EnqueueDeviceStep needs besides the step buffers: sizes (the bucket for decode graphs) and
// the attention index params, whose host copies RunBatch has validated.
struct MixtralModel::StepPlan {
  int64_t tokens = 0;         // rows of every activation (T, padded to the bucket)
  int64_t logit_rows = 0;     // LM-head rows (R, padded to the bucket)
  bool mask_padding = false;  // zero the padding rows after the embedding (row_mask)
  kernels::KvWriteParams kw;
  kernels::PagedAttentionParams ap;
};

MixtralModel::~MixtralModel() = default;

// Enqueues op `op` with params `p` after validating them (host checks, cheap).
#define MOESERVE_ENQUEUE(op, p)                           \
  do {                                                    \
    const auto& _params = (p);                            \
    MOESERVE_RETURN_IF_ERROR(kernels::Validate(_params)); \
    be.op(_params);                                       \
  } while (0)

absl::Status MixtralModel::RunBatch(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                    const StepSampling* sampling, StepOutput* out) {
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;
  const kernels::DType act = be.activation_dtype();
  const int64_t head_dim = c.head_dim;
  const int64_t block_size = pool.shape().block_size;
  const kernels::DType kv_dtype = pool.shape().kv_dtype;

  // Sizes of the flattened batch. The LM head runs on R = N + R_kept rows: first the last token
  // of each of the N sampled sequences (the rows Sample reads), then, when the logits are kept,
  // every wanted logits row in StepOutput's layout (the rows downloaded).
  const bool keep_logits = sampling == nullptr || sampling->keep_logits;
  const int64_t N = sampling != nullptr ? sampling->num_rows() : 0;
  const int64_t H = sampling != nullptr ? sampling->num_history() : 0;
  int64_t T = 0, R_kept = 0, max_blocks = 1, max_query = 0, max_context = 0;
  const int64_t S = static_cast<int64_t>(batch.size());
  bool decode_only = true;
  for (const SequenceStep& step : batch) {
    const int64_t n = static_cast<int64_t>(step.new_tokens.size());
    decode_only = decode_only && n == 1;
    T += n;
    if (keep_logits) R_kept += step.all_logits ? n : 1;
    max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(step.kv->block_table.size()));
    max_query = std::max(max_query, n);
    max_context = std::max(max_context, step.kv->num_tokens + n);
  }
  // A decode-only step may run padded to a bucket (decode_graphs.h); padding rows read the pool's
  // padding block, so without a free block the step runs unpadded. A padded step's LM head runs
  // on one row per token (bucket rows): rows [0, S) are then both the sampled rows and the kept
  // ones, which needs every sequence sampled, in order.
  bool samples_every_row = sampling == nullptr || N == S;
  for (int64_t i = 0; samples_every_row && sampling != nullptr && i < N; ++i) {
    samples_every_row = sampling->sequences[static_cast<size_t>(i)] == i;
  }
  // A step that captures routing runs unpadded: a graph would bake in this step's host copies.
  bool captures_routing = false;
  for (const SequenceStep& step : batch) captures_routing |= step.routing != nullptr;
  int64_t bucket = decode_only && samples_every_row && !expert_parallel() && !captures_routing
                       ? DecodeBucket(graph_options_, S)
                       : 0;
  int32_t padding_block = -1;
  if (bucket > S) {
    const std::optional<int32_t> block = pool.PaddingBlock(be);
    if (block) padding_block = *block;
    if (!block) bucket = 0;
  }
  const int64_t R = bucket > 0 ? bucket : N + R_kept;
  const int64_t run_tokens = bucket > 0 ? bucket : T, run_seqs = bucket > 0 ? bucket : S;
  if (!step_) step_ = std::make_unique<StepBuffers>();
  StepBuffers& B = *step_;
  MOESERVE_RETURN_IF_ERROR(B.Reserve(be, c, run_tokens, run_seqs, max_blocks, R, H));
  if (N > 0) {
    MOESERVE_RETURN_IF_ERROR(sampler_.Reserve(be, N, c.vocab_size, sampling->max_top_logprobs()));
  }
  const parallel::MoeLayerShape moe_shape{c.hidden_size, c.intermediate_size, c.num_local_experts,
                                          c.num_experts_per_tok};
  if (!expert_parallel()) {
    // Sized by the token capacity, like the activations.
    MOESERVE_RETURN_IF_ERROR(moe_workspace_.Reserve(be, moe_shape, B.tokens));
  }

  // Fill the staging buffer: the host side of the step's one upload.
  int32_t* ids = B.Host<int32_t>(B.ids);
  int32_t* positions = B.Host<int32_t>(B.positions);
  int32_t* logit_rows = B.Host<int32_t>(B.logit_rows);
  int64_t* slots = B.Host<int64_t>(B.slots);
  int32_t* query_start = B.Host<int32_t>(B.query_start);
  int32_t* context_lens = B.Host<int32_t>(B.context_lens);
  int32_t* block_tables = B.Host<int32_t>(B.block_tables);
  out->row_offsets.assign(1, 0);
  query_start[0] = 0;
  int64_t t = 0, r = N;  // the kept rows follow the sampled ones
  for (int64_t s = 0; s < S; ++s) {
    const SequenceStep& step = batch[s];
    const int64_t start = step.kv->num_tokens;
    const int64_t n = static_cast<int64_t>(step.new_tokens.size());
    for (int64_t i = 0; i < n; ++i, ++t) {
      const int64_t pos = start + i;
      ids[t] = step.new_tokens[i];
      positions[t] = static_cast<int32_t>(pos);
      slots[t] = static_cast<int64_t>(step.kv->block_table[pos / block_size]) * block_size +
                 pos % block_size;
      if (keep_logits && (step.all_logits || i == n - 1)) {
        logit_rows[r++] = static_cast<int32_t>(t);
      }
    }
    query_start[s + 1] = static_cast<int32_t>(t);
    context_lens[s] = static_cast<int32_t>(start + n);
    out->row_offsets.push_back(r - N);
    int32_t* table = block_tables + s * B.blocks;
    std::fill(table, table + B.blocks, -1);
    std::copy(step.kv->block_table.begin(), step.kv->block_table.end(), table);
  }
  size_t upload_bytes = B.block_tables + sizeof(int32_t) * static_cast<size_t>(run_seqs * B.blocks);
  if (N > 0) {
    // The sampled rows (last token of each sampled sequence), their SampleRows and histories.
    for (int64_t i = 0; i < N; ++i) {
      logit_rows[i] = query_start[sampling->sequences[static_cast<size_t>(i)] + 1] - 1;
    }
    std::memcpy(B.Host<kernels::SampleRow>(B.sample_rows), sampling->rows.data(),
                sizeof(kernels::SampleRow) * static_cast<size_t>(N));
    upload_bytes = B.sample_rows + sizeof(kernels::SampleRow) * static_cast<size_t>(N);
    if (H > 0) {
      std::memcpy(B.Host<int32_t>(B.history_tokens), sampling->history_tokens.data(),
                  sizeof(int32_t) * static_cast<size_t>(H));
      std::memcpy(B.Host<int32_t>(B.history_output_counts), sampling->history_output_counts.data(),
                  sizeof(int32_t) * static_cast<size_t>(H));
      std::memcpy(B.Host<uint8_t>(B.history_in_prompt), sampling->history_in_prompt.data(),
                  static_cast<size_t>(H));
      upload_bytes = B.history_in_prompt + static_cast<size_t>(H);
    }
  }
  if (bucket > 0) B.FillPaddingRows(T, bucket, padding_block);  // T == S: one token each
  if (!keep_logits) out->row_offsets.clear();
  MOESERVE_RETURN_IF_ERROR(
      be.CopyToDeviceAsync(B.device_index.data(), B.host_index.data(), upload_bytes));
  // Laid out for the rows that run: a padded step's padding rows get zero bias rows, so their
  // routing stays PaddingRouting's (the global bias only).
  MOESERVE_RETURN_IF_ERROR(PrepareTokenBias(batch, run_tokens));
  MOESERVE_RETURN_IF_ERROR(
      routing_capture_.Prepare(be, batch, c.num_hidden_layers, run_tokens, c.num_experts_per_tok));

  // The index arrays are the same for every layer: check their host copies once.
  StepPlan plan;
  plan.tokens = run_tokens;
  plan.logit_rows = R;
  plan.mask_padding = bucket > 0;
  kernels::KvWriteParams& kw = plan.kw;
  kw.slots = B.Dev<int64_t>(B.slots);
  kw.num_tokens = run_tokens;
  kw.num_kv_heads = c.num_key_value_heads;
  kw.head_dim = head_dim;
  kw.num_slots = pool.shape().num_blocks * block_size;
  kw.act_dtype = act;
  kw.kv_dtype = kv_dtype;
  kw.k = B.k;
  kw.v = B.v;
  kernels::PagedAttentionParams& ap = plan.ap;
  ap.q = B.q;
  ap.out = B.attn;
  ap.block_tables = B.Dev<int32_t>(B.block_tables);
  ap.query_start = B.Dev<int32_t>(B.query_start);
  ap.context_lens = B.Dev<int32_t>(B.context_lens);
  ap.num_seqs = run_seqs;
  ap.num_tokens = run_tokens;
  ap.num_q_heads = c.num_attention_heads;
  ap.num_kv_heads = c.num_key_value_heads;
  ap.head_dim = head_dim;
  ap.block_size = block_size;
  ap.max_blocks_per_seq = B.blocks;
  ap.num_blocks = pool.shape().num_blocks;
  ap.sliding_window = c.sliding_window.value_or(0);
  ap.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  ap.act_dtype = act;
  ap.kv_dtype = kv_dtype;
  ap.max_query_len = max_query;
  ap.max_context_len = max_context;
  if (bucket > 0) {
    // Fixed by the bucket and the capacities only: a graph replays these bounds in later steps.
    ap.max_query_len = 1;
    ap.max_context_len = B.blocks * block_size;
  }
  MOESERVE_RETURN_IF_ERROR(kernels::ValidateIndices(kw, slots));
  MOESERVE_RETURN_IF_ERROR(kernels::ValidateIndices(ap, block_tables, query_start, context_lens));

  if (bucket > 0) {
    MOESERVE_RETURN_IF_ERROR(RunDecodeBucket(bucket, plan, pool));
  } else {
    MOESERVE_RETURN_IF_ERROR(EnqueueDeviceStep(plan, pool));
  }

  // Sampling on the device from logits rows [0, N), downloading only its results. It runs after
  // a decode graph's replay, not inside it: its kernels depend on the step's sampling options.
  if (N > 0) {
    MOESERVE_RETURN_IF_ERROR(sampler_.Enqueue(
        be, *sampling, B.logits, c.vocab_size, B.Dev<kernels::SampleRow>(B.sample_rows),
        B.Dev<int32_t>(B.history_tokens), B.Dev<int32_t>(B.history_output_counts),
        B.Dev<uint8_t>(B.history_in_prompt)));
  }

  // The step's only downloads, then its only synchronisation. The kept rows follow the sampled
  // ones, except in a padded step where rows [0, S) are both.
  out->vocab = c.vocab_size;
  out->logits.resize(static_cast<size_t>(R_kept * c.vocab_size));
  if (R_kept > 0) {
    const int64_t first_kept = bucket > 0 ? 0 : N;
    MOESERVE_RETURN_IF_ERROR(be.CopyToHostAsync(out->logits.data(),
                                                B.logits + first_kept * c.vocab_size,
                                                sizeof(float) * out->logits.size()));
  }
  if (!expert_parallel()) {
    MOESERVE_RETURN_IF_ERROR(be.CopyToHostAsync(expert_counts_host_.data(), expert_counts_.data(),
                                                expert_counts_.bytes()));
  }
  MOESERVE_RETURN_IF_ERROR(be.Synchronize());
  if (!expert_parallel()) RecordDeviceExpertLoad(T, bucket > 0 ? bucket - T : 0);
  if (N > 0) sampler_.Read(*sampling, &out->sampled);
  routing_capture_.Scatter(batch);

  // TODO(refactor): only the scheduler should advance num_computed_tokens and reserve KV blocks;
  // Forward still does both (ValidateAndReserve and here) to keep today's behaviour and tests.
  for (SequenceStep& step : batch) {
    step.kv->num_tokens += static_cast<int64_t>(step.new_tokens.size());
  }
  return absl::OkStatus();
}

// The device part of a step, from the embedding to the LM-head logits: only enqueued work with
// persistent buffers and sizes from `plan`, so it can be captured as a graph (decode_graphs.h).
absl::Status MixtralModel::EnqueueDeviceStep(const StepPlan& plan, KvBlockPool& pool) {
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;
  const kernels::DType act = be.activation_dtype();
  const int64_t hidden = c.hidden_size, head_dim = c.head_dim;
  const int64_t T = plan.tokens, R = plan.logit_rows;
  StepBuffers& B = *step_;
  // Padded steps embed into h and copy into x through the row mask (padding rows become zero).
  MOESERVE_ENQUEUE(
      Embedding, (kernels::EmbeddingParams{
                     B.Dev<int32_t>(B.ids), weights_.embed_tokens.data, weights_.embed_tokens.dtype,
                     plan.mask_padding ? B.h : B.x, act, T, c.vocab_size, hidden}));
  if (plan.mask_padding) {
    kernels::MoeCombineParams mask;
    mask.expert_out = B.h;
    mask.src_rows = B.Dev<int32_t>(B.row_identity);
    mask.weights = B.Dev<float>(B.row_mask);
    mask.out = B.x;
    mask.num_tokens = T;
    mask.top_k = 1;
    mask.hidden = hidden;
    mask.num_expert_rows = T;
    mask.act_dtype = act;
    MOESERVE_ENQUEUE(MoeCombine, mask);
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block. h = norm(x), with the previous layer's MoE output added to x first.
    MOESERVE_ENQUEUE(RmsNorm, l == 0
                                  ? Norm(B.x, T, w.input_norm, c.rms_norm_eps, B.h, act)
                                  : Norm(B.branch, T, w.input_norm, c.rms_norm_eps, B.h, act, B.x));
    MOESERVE_ENQUEUE(Matmul, kernels::LinearParams(B.h, T, w.q_proj, B.q, act));
    MOESERVE_ENQUEUE(Matmul, kernels::LinearParams(B.h, T, w.k_proj, B.k, act));
    MOESERVE_ENQUEUE(Matmul, kernels::LinearParams(B.h, T, w.v_proj, B.v, act));
    MOESERVE_ENQUEUE(Rope, (kernels::RopeParams{B.q, B.k, B.Dev<int32_t>(B.positions), T,
                                                c.num_attention_heads, c.num_key_value_heads,
                                                head_dim, static_cast<float>(c.rope_theta), act}));
    kernels::KvWriteParams kw = plan.kw;
    kw.k_cache = pool.k(l);
    kw.v_cache = pool.v(l);
    MOESERVE_ENQUEUE(KvWrite, kw);
    kernels::PagedAttentionParams ap = plan.ap;
    ap.k_cache = pool.k(l);
    ap.v_cache = pool.v(l);
    MOESERVE_ENQUEUE(PagedAttention, ap);
    MOESERVE_ENQUEUE(Matmul, kernels::LinearParams(B.attn, T, w.o_proj, B.branch, act));

    // MoE block: x += attention output, h = norm(x) (fused), branch = moe(h).
    MOESERVE_ENQUEUE(RmsNorm, Norm(B.branch, T, w.post_attn_norm, c.rms_norm_eps, B.h, act, B.x));
    MOESERVE_RETURN_IF_ERROR(MoeBlock(l, B.h, T, B.branch));
  }
  MOESERVE_ENQUEUE(AddInPlace, (kernels::AddInPlaceParams{B.x, B.branch, T * hidden, act}));

  // Final norm and LM head (fp32 logits) on the wanted rows only: [R, vocab].
  if (R > 0) {
    MOESERVE_ENQUEUE(GatherRows, (kernels::GatherRowsParams{B.x, B.Dev<int32_t>(B.logit_rows),
                                                            B.rows_act, R, T, hidden, act}));
    MOESERVE_ENQUEUE(RmsNorm,
                     Norm(B.rows_act, R, weights_.final_norm, c.rms_norm_eps, B.rows_act, act));
    kernels::MatmulParams lm =
        kernels::LinearParams(B.rows_act, R, weights_.lm_head, B.logits, act);
    lm.y_dtype = kernels::DType::kF32;
    MOESERVE_ENQUEUE(Matmul, lm);
  }
  return absl::OkStatus();
}

absl::Status MixtralModel::RunDecodeBucket(int64_t bucket, const StepPlan& plan,
                                           KvBlockPool& pool) {
  kernels::Backend& be = *backend_;
  if (!be.SupportsGraphs()) return EnqueueDeviceStep(plan, pool);  // the same padded step, eager
  const StepBuffers& B = *step_;
  // Everything the graph bakes in besides the bucket: addresses and capacities.
  DecodeGraphCache::Key key;
  key.addresses = {B.device_index.data(),
                   B.activations.data(),
                   B.row_buffers.data(),
                   moe_workspace_.logits,
                   expert_counts_.data(),
                   expert_tables_.data(),
                   router_bias_.empty() ? nullptr : router_bias_device_.data(),
                   step_token_bias_};  // null in steps without skew: toggling recaptures
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    key.addresses.push_back(pool.k(l));
    key.addresses.push_back(pool.v(l));
  }
  key.sizes = {B.tokens,
               B.seqs,
               B.blocks,
               B.rows,
               moe_workspace_.capacity(),
               pool.shape().num_blocks,
               pool.shape().block_size};
  graphs_.Validate(key);
  if (kernels::Graph* graph = graphs_.Find(bucket)) return be.Replay(*graph);
  // First step of this bucket: capture (nothing runs), then replay.
  MOESERVE_RETURN_IF_ERROR(be.BeginCapture());
  const absl::Status enqueued = EnqueueDeviceStep(plan, pool);
  absl::StatusOr<std::unique_ptr<kernels::Graph>> graph = be.EndCapture();
  MOESERVE_RETURN_IF_ERROR(enqueued);
  MOESERVE_RETURN_IF_ERROR(graph.status());
  kernels::Graph& captured = **graph;
  graphs_.Insert(bucket, *std::move(graph));
  return be.Replay(captured);
}

#undef MOESERVE_ENQUEUE

}  // namespace moeserve::runtime
