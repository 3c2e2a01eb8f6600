#include "runtime/model/mixtral_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {
namespace {

using kernels::DeviceBuffer;

kernels::RmsNormParams Norm(const float* x, int64_t rows, const kernels::TensorView& w, double eps,
                            float* out) {
  kernels::RmsNormParams p;
  p.x = x;
  p.weight = w.data;
  p.weight_dtype = w.dtype;
  p.out = out;
  p.rows = rows;
  p.hidden = w.dim(0);
  p.eps = static_cast<float>(eps);
  return p;
}

// Host-side index arrays describing the flattened batch, copied to the device once per step.
struct BatchLayout {
  std::vector<int32_t> ids;           // [T]
  std::vector<int32_t> positions;     // [T]
  std::vector<int64_t> slots;         // [T]
  std::vector<int32_t> query_start;   // [S + 1]
  std::vector<int32_t> context_lens;  // [S]
  std::vector<int32_t> block_tables;  // [S, max_blocks]
  std::vector<int32_t> logit_rows;    // rows of x whose logits are wanted
  std::vector<int64_t> row_offsets;   // [S + 1] into logit_rows
  int64_t max_blocks = 1;
};

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
  stats_ = std::make_unique<parallel::EpStatsRecorder>(rank, world, config_.num_hidden_layers,
                                                       config_.num_local_experts);
  return absl::OkStatus();
}

absl::Status MixtralModel::SetRouterSkew(const parallel::RouterSkew& skew) {
  MOESERVE_ASSIGN_OR_RETURN(std::vector<float> bias,
                            parallel::MakeRouterBias(config_.num_local_experts, skew));
  router_bias_ = std::move(bias);
  return absl::OkStatus();
}

absl::Status MixtralModel::MoeBlock(int64_t l, const float* h, int64_t num_tokens, float* out) {
  const ModelConfig& c = config_;
  const parallel::MoeLayerShape shape{c.hidden_size, c.intermediate_size, c.num_local_experts,
                                      c.num_experts_per_tok};
  const parallel::MoeLayerWeights& w = weights_.layers[l].moe;
  const float* bias = router_bias_.empty() ? nullptr : router_bias_.data();
  parallel::EpLayerTrace trace;
  if (expert_parallel()) {
    MOESERVE_RETURN_IF_ERROR(parallel::RunExpertParallelMoeLayer(*backend_, shape, w, l, ep_, h,
                                                                 num_tokens, out, bias, &trace));
  } else {
    parallel::MoeRoutingStats routing;
    MOESERVE_RETURN_IF_ERROR(
        parallel::RunMoeLayer(*backend_, shape, w, h, num_tokens, out, bias, &routing));
    // World size 1: every row is routed and computed here, none crosses a link.
    trace.routed_per_expert = routing.tokens_per_expert;
    trace.computed_per_expert = routing.tokens_per_expert;
    trace.rows_sent_to = {num_tokens * c.num_experts_per_tok};
    trace.rows_received_from = trace.rows_sent_to;
    trace.row_bytes = c.hidden_size * static_cast<int64_t>(sizeof(float));
  }
  for (int64_t e = 0; e < c.num_local_experts; ++e) {
    expert_load_.tokens[l][e] += trace.routed_per_expert[e];
  }
  stats_->RecordLayer(l, trace);
  return absl::OkStatus();
}

absl::Status MixtralModel::JoinLayersIdle() {
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    MOESERVE_RETURN_IF_ERROR(MoeBlock(l, nullptr, 0, nullptr));
  }
  return absl::OkStatus();
}

KvCacheShape MixtralModel::KvShape(int64_t block_size, int64_t num_blocks) const {
  return {config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim, block_size,
          num_blocks};
}

absl::Status MixtralModel::Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                   StepOutput* out) {
  const ModelConfig& c = config_;
  stats_->BeginStep();
  absl::Status ready = ValidateAndReserve(c, router_bias_, batch, pool);
  if (!ready.ok() || batch.empty()) {
    // Nothing to compute here; with expert parallelism the peers still need this rank in
    // every layer's exchange (it may hold experts their tokens were routed to).
    if (expert_parallel()) MOESERVE_RETURN_IF_ERROR(JoinLayersIdle());
    MOESERVE_RETURN_IF_ERROR(ready);
    out->vocab = c.vocab_size;
    out->logits.clear();
    out->row_offsets.assign(1, 0);
    return absl::OkStatus();
  }
  absl::Status st = RunBatch(batch, pool, out);
  // A failure part-way through the layers leaves the peers waiting in a later layer's exchange:
  // end the group so that they fail too (a no-op if a collective already failed).
  if (!st.ok() && expert_parallel()) ep_.comm->Abort(st);
  return st;
}

absl::Status MixtralModel::RunBatch(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                    StepOutput* out) {
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;
  const int64_t hidden = c.hidden_size, head_dim = c.head_dim;
  const int64_t q_width = c.num_attention_heads * head_dim;
  const int64_t kv_width = c.num_key_value_heads * head_dim;
  const int64_t block_size = pool.shape().block_size;

  // Flatten the batch.
  BatchLayout L;
  L.query_start.push_back(0);
  L.row_offsets.push_back(0);
  for (const SequenceStep& step : batch) {
    L.max_blocks =
        std::max<int64_t>(L.max_blocks, static_cast<int64_t>(step.kv->block_table.size()));
  }
  for (const SequenceStep& step : batch) {
    const int64_t start = step.kv->num_tokens;
    const int64_t n = static_cast<int64_t>(step.new_tokens.size());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = start + i;
      L.ids.push_back(step.new_tokens[i]);
      L.positions.push_back(static_cast<int32_t>(pos));
      L.slots.push_back(static_cast<int64_t>(step.kv->block_table[pos / block_size]) * block_size +
                        pos % block_size);
      if (step.all_logits || i == n - 1) {
        L.logit_rows.push_back(static_cast<int32_t>(L.ids.size() - 1));
      }
    }
    L.query_start.push_back(static_cast<int32_t>(L.ids.size()));
    L.context_lens.push_back(static_cast<int32_t>(start + n));
    L.row_offsets.push_back(static_cast<int64_t>(L.logit_rows.size()));
    std::vector<int32_t> table(static_cast<size_t>(L.max_blocks), -1);
    std::copy(step.kv->block_table.begin(), step.kv->block_table.end(), table.begin());
    L.block_tables.insert(L.block_tables.end(), table.begin(), table.end());
  }
  const int64_t T = static_cast<int64_t>(L.ids.size());
  const int64_t S = static_cast<int64_t>(batch.size());

  // Device copies of the index arrays.
  auto upload = [&](const auto& host) {
    DeviceBuffer buf = be.Allocate(sizeof(host[0]) * host.size());
    be.CopyToDevice(buf.data(), host.data(), sizeof(host[0]) * host.size());
    return buf;
  };
  DeviceBuffer ids = upload(L.ids), positions = upload(L.positions), slots = upload(L.slots),
               query_start = upload(L.query_start), context_lens = upload(L.context_lens),
               block_tables = upload(L.block_tables), logit_rows = upload(L.logit_rows);

  // Activations.
  DeviceBuffer x = be.Allocate(sizeof(float) * T * hidden);  // residual stream
  DeviceBuffer h = be.Allocate(sizeof(float) * T * hidden);  // normed input
  DeviceBuffer q = be.Allocate(sizeof(float) * T * q_width);
  DeviceBuffer k = be.Allocate(sizeof(float) * T * kv_width);
  DeviceBuffer v = be.Allocate(sizeof(float) * T * kv_width);
  DeviceBuffer attn = be.Allocate(sizeof(float) * T * q_width);
  DeviceBuffer branch = be.Allocate(sizeof(float) * T * hidden);  // attention / MoE output

  be.Embedding({ids.as<int32_t>(), weights_.embed_tokens.data, weights_.embed_tokens.dtype,
                x.as<float>(), T, c.vocab_size, hidden});

  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block.
    be.RmsNorm(Norm(x.as<float>(), T, w.input_norm, c.rms_norm_eps, h.as<float>()));
    be.Matmul(kernels::LinearParams(h.as<float>(), T, w.q_proj, q.as<float>()));
    be.Matmul(kernels::LinearParams(h.as<float>(), T, w.k_proj, k.as<float>()));
    be.Matmul(kernels::LinearParams(h.as<float>(), T, w.v_proj, v.as<float>()));
    be.Rope({q.as<float>(), k.as<float>(), positions.as<int32_t>(), T, c.num_attention_heads,
             c.num_key_value_heads, head_dim, static_cast<float>(c.rope_theta)});
    kernels::KvWriteParams kw{k.as<float>(),
                              v.as<float>(),
                              pool.k(l),
                              pool.v(l),
                              slots.as<int64_t>(),
                              T,
                              c.num_key_value_heads,
                              head_dim,
                              pool.shape().num_blocks * block_size};
    be.KvWrite(kw);
    kernels::PagedAttentionParams ap;
    ap.q = q.as<float>();
    ap.out = attn.as<float>();
    ap.k_cache = pool.k(l);
    ap.v_cache = pool.v(l);
    ap.block_tables = block_tables.as<int32_t>();
    ap.query_start = query_start.as<int32_t>();
    ap.context_lens = context_lens.as<int32_t>();
    ap.num_seqs = S;
    ap.num_tokens = T;
    ap.num_q_heads = c.num_attention_heads;
    ap.num_kv_heads = c.num_key_value_heads;
    ap.head_dim = head_dim;
    ap.block_size = block_size;
    ap.max_blocks_per_seq = L.max_blocks;
    ap.num_blocks = pool.shape().num_blocks;
    ap.sliding_window = c.sliding_window.value_or(0);
    ap.scale = scale;
    if (l == 0) {
      // Index arrays are the same for every layer: validate them once (host copies).
      kernels::PagedAttentionParams host = ap;
      host.block_tables = L.block_tables.data();
      host.query_start = L.query_start.data();
      host.context_lens = L.context_lens.data();
      MOESERVE_RETURN_IF_ERROR(kernels::Validate(host));
    }
    be.PagedAttention(ap);
    be.Matmul(kernels::LinearParams(attn.as<float>(), T, w.o_proj, branch.as<float>()));
    be.AddInPlace({x.as<float>(), branch.as<float>(), T * hidden});

    // MoE block.
    be.RmsNorm(Norm(x.as<float>(), T, w.post_attn_norm, c.rms_norm_eps, h.as<float>()));
    MOESERVE_RETURN_IF_ERROR(MoeBlock(l, h.as<float>(), T, branch.as<float>()));
    be.AddInPlace({x.as<float>(), branch.as<float>(), T * hidden});
  }

  // Final norm and LM head on the wanted rows only.
  const int64_t R = static_cast<int64_t>(L.logit_rows.size());
  DeviceBuffer rows = be.Allocate(sizeof(float) * R * hidden);
  be.GatherRows({x.as<float>(), logit_rows.as<int32_t>(), rows.as<float>(), R, T, hidden});
  be.RmsNorm(Norm(rows.as<float>(), R, weights_.final_norm, c.rms_norm_eps, rows.as<float>()));
  DeviceBuffer logits = be.Allocate(sizeof(float) * R * c.vocab_size);
  be.Matmul(kernels::LinearParams(rows.as<float>(), R, weights_.lm_head, logits.as<float>()));
  MOESERVE_RETURN_IF_ERROR(be.Synchronize());

  out->vocab = c.vocab_size;
  out->row_offsets = L.row_offsets;
  out->logits.resize(static_cast<size_t>(R * c.vocab_size));
  be.CopyToHost(out->logits.data(), logits.data(), sizeof(float) * out->logits.size());
  for (SequenceStep& step : batch) {
    step.kv->num_tokens += static_cast<int64_t>(step.new_tokens.size());
  }
  return absl::OkStatus();
}

}  // namespace moeserve::runtime
