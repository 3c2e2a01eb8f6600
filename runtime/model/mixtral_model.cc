#include "runtime/model/mixtral_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {
namespace {

using kernels::DeviceBuffer;

kernels::MatmulParams Linear(const float* x, int64_t rows, const kernels::TensorView& w, float* y) {
  kernels::MatmulParams p;
  p.x = x;
  p.w = w.data;
  p.w_dtype = w.dtype;
  p.y = y;
  p.m_rows = rows;
  p.n = w.dim(0);
  p.k = w.dim(1);
  return p;
}

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

}  // namespace

MixtralModel::MixtralModel(ModelConfig config, MixtralWeights weights, kernels::Backend* backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {
  expert_load_.tokens.assign(static_cast<size_t>(config_.num_hidden_layers),
                             std::vector<int64_t>(static_cast<size_t>(config_.num_local_experts)));
}

KvCacheShape MixtralModel::KvShape(int64_t block_size, int64_t num_blocks) const {
  return {config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim, block_size,
          num_blocks};
}

absl::Status MixtralModel::Forward(absl::Span<SequenceStep> batch, KvBlockPool& pool,
                                   StepOutput* out) {
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;
  const int64_t hidden = c.hidden_size, head_dim = c.head_dim;
  const int64_t q_width = c.num_attention_heads * head_dim;
  const int64_t kv_width = c.num_key_value_heads * head_dim;
  const int64_t block_size = pool.shape().block_size;

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

  const parallel::MoeLayerShape moe_shape{hidden, c.intermediate_size, c.num_local_experts,
                                          c.num_experts_per_tok};
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // Attention block.
    be.RmsNorm(Norm(x.as<float>(), T, w.input_norm, c.rms_norm_eps, h.as<float>()));
    be.Matmul(Linear(h.as<float>(), T, w.q_proj, q.as<float>()));
    be.Matmul(Linear(h.as<float>(), T, w.k_proj, k.as<float>()));
    be.Matmul(Linear(h.as<float>(), T, w.v_proj, v.as<float>()));
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
    be.Matmul(Linear(attn.as<float>(), T, w.o_proj, branch.as<float>()));
    be.AddInPlace({x.as<float>(), branch.as<float>(), T * hidden});

    // MoE block.
    be.RmsNorm(Norm(x.as<float>(), T, w.post_attn_norm, c.rms_norm_eps, h.as<float>()));
    parallel::MoeRoutingStats stats;
    MOESERVE_RETURN_IF_ERROR(
        parallel::RunMoeLayer(be, moe_shape, w.moe, h.as<float>(), T, branch.as<float>(),
                              router_bias_.empty() ? nullptr : router_bias_.data(), &stats));
    for (int64_t e = 0; e < c.num_local_experts; ++e) {
      expert_load_.tokens[l][e] += stats.tokens_per_expert[e];
    }
    be.AddInPlace({x.as<float>(), branch.as<float>(), T * hidden});
  }

  // Final norm and LM head on the wanted rows only.
  const int64_t R = static_cast<int64_t>(L.logit_rows.size());
  DeviceBuffer rows = be.Allocate(sizeof(float) * R * hidden);
  be.GatherRows({x.as<float>(), logit_rows.as<int32_t>(), rows.as<float>(), R, T, hidden});
  be.RmsNorm(Norm(rows.as<float>(), R, weights_.final_norm, c.rms_norm_eps, rows.as<float>()));
  DeviceBuffer logits = be.Allocate(sizeof(float) * R * c.vocab_size);
  be.Matmul(Linear(rows.as<float>(), R, weights_.lm_head, logits.as<float>()));
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
