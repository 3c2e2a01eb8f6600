#include "parallel/moe/moe_layer.h"

#include "absl/strings/str_cat.h"
#include "kernels/base/buffer_sizes.h"
#include "kernels/base/status_macros.h"
#include "parallel/moe/moe_steps.h"

namespace moeserve::parallel {

using kernels::AlignedBytes;
absl::StatusOr<kernels::DeviceBuffer> BuildExpertTables(kernels::Backend& backend,
                                                        absl::Span<MoeLayerWeights* const> layers) {
  // Host image: per layer [w1 x E][w3 x E][w2 x E].
  std::vector<const void*> host;
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::vector<ExpertWeights>& experts = layers[l]->experts;
    std::vector<const void*> w1, w3, w2;
    bool have_dtype = false;
    kernels::DType dtype = kernels::DType::kBF16;
    kernels::WeightLayout layout = kernels::WeightLayout::kRows;
    for (size_t e = 0; e < experts.size(); ++e) {
      const ExpertWeights& w = experts[e];
      w1.push_back(w.held() ? w.w1.data : nullptr);
      w3.push_back(w.held() ? w.w3.data : nullptr);
      w2.push_back(w.held() ? w.w2.data : nullptr);
      if (!w.held()) continue;
      for (const kernels::TensorView* t : {&w.w1, &w.w3, &w.w2}) {
        if (have_dtype && t->dtype != dtype) {
          return absl::InvalidArgumentError(absl::StrCat(
              "moe layer ", l, " expert ", e, ": weights of dtype ",
              std::string(kernels::DTypeName(t->dtype)), " among ",
              std::string(kernels::DTypeName(dtype)), " ones (one dtype per layer's experts)"));
        }
        if (have_dtype && t->layout != layout) {
          return absl::InvalidArgumentError(absl::StrCat(
              "moe layer ", l, " expert ", e, ": packed and unpacked expert weights mixed"));
        }
        dtype = t->dtype;
        layout = t->layout;
        have_dtype = true;
      }
    }
    layers[l]->tables.dtype = dtype;
    layers[l]->tables.layout = layout;
    host.insert(host.end(), w1.begin(), w1.end());
    host.insert(host.end(), w3.begin(), w3.end());
    host.insert(host.end(), w2.begin(), w2.end());
  }
  if (host.empty()) return kernels::DeviceBuffer();
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer buffer,
                            backend.Allocate(sizeof(const void*) * host.size()));
  MOESERVE_RETURN_IF_ERROR(
      backend.CopyToDevice(buffer.data(), host.data(), sizeof(const void*) * host.size()));
  const void* const* base = static_cast<const void* const*>(buffer.data());
  size_t offset = 0;
  for (MoeLayerWeights* layer : layers) {
    const size_t e = layer->experts.size();
    layer->tables.w1 = base + offset;
    layer->tables.w3 = base + offset + e;
    layer->tables.w2 = base + offset + 2 * e;
    layer->tables.all_experts = true;
    for (const ExpertWeights& w : layer->experts) layer->tables.all_experts &= w.held();
    offset += 3 * e;
  }
  return buffer;
}

absl::StatusOr<kernels::DeviceBuffer> BuildExpertTables(kernels::Backend& backend,
                                                        MoeLayerWeights& layer) {
  MoeLayerWeights* layers[] = {&layer};
  return BuildExpertTables(backend, layers);
}

absl::Status MoeWorkspace::Reserve(kernels::Backend& backend, const MoeLayerShape& shape,
                                   int64_t num_tokens) {
  const kernels::DType act = backend.activation_dtype();
  const bool same_shape = shape_.hidden == shape.hidden &&
                          shape_.intermediate == shape.intermediate &&
                          shape_.num_experts == shape.num_experts && shape_.top_k == shape.top_k;
  if (num_tokens <= capacity_ && same_shape && act == act_) return absl::OkStatus();
  int64_t capacity = same_shape && act == act_ && capacity_ > 0 ? capacity_ : 1;
  while (capacity < num_tokens) capacity *= 2;
  const int64_t rows = capacity * shape.top_k;
  const size_t a = kernels::DTypeSize(act);
  const size_t sizes[] = {
      AlignedBytes(capacity * shape.num_experts, sizeof(float)),  // logits
      AlignedBytes(rows, sizeof(int32_t)),                        // expert_ids
      AlignedBytes(rows, sizeof(float)),                          // weights
      AlignedBytes(shape.num_experts + 1, sizeof(int32_t)),       // expert_offsets
      AlignedBytes(rows, sizeof(int32_t)),                        // permuted_token
      AlignedBytes(rows, sizeof(int32_t)),                        // combine_rows
      AlignedBytes(rows * shape.hidden, a),                       // permuted
      AlignedBytes(rows * shape.intermediate, a),                 // inter
      AlignedBytes(rows * shape.hidden, a),                       // expert_out
  };
  size_t total = 0;
  for (size_t s : sizes) total += s;
  MOESERVE_ASSIGN_OR_RETURN(buffer_, backend.Allocate(total));
  char* p = static_cast<char*>(buffer_.data());
  void* parts[9];
  for (int i = 0; i < 9; ++i) {
    parts[i] = p;
    p += sizes[i];
  }
  logits = static_cast<float*>(parts[0]);
  expert_ids = static_cast<int32_t*>(parts[1]);
  weights = static_cast<float*>(parts[2]);
  expert_offsets = static_cast<int32_t*>(parts[3]);
  permuted_token = static_cast<int32_t*>(parts[4]);
  combine_rows = static_cast<int32_t*>(parts[5]);
  permuted = parts[6];
  inter = parts[7];
  expert_out = parts[8];
  capacity_ = capacity;
  shape_ = shape;
  act_ = act;
  return absl::OkStatus();
}

absl::Status RunMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                         const MoeLayerWeights& weights, MoeWorkspace& workspace, const void* x,
                         int64_t num_tokens, void* out, const float* logit_bias,
                         int64_t* expert_counts, const float* token_bias) {
  if (num_tokens == 0) return absl::OkStatus();
  if (!weights.tables.all_experts) {
    return absl::FailedPreconditionError(
        "moe: world size 1 needs every expert's weights (build the tables after loading them)");
  }
  MOESERVE_RETURN_IF_ERROR(workspace.Reserve(backend, shape, num_tokens));
  MoeWorkspace& ws = workspace;
  const int64_t rows = num_tokens * shape.top_k;
  MOESERVE_RETURN_IF_ERROR(EnqueueRouter(backend, shape, weights.gate, x, num_tokens, logit_bias,
                                         ws.logits, ws.expert_ids, ws.weights, token_bias));
  const kernels::MoeAlignParams ap{ws.expert_ids,   ws.expert_offsets, ws.permuted_token,
                                   ws.combine_rows, expert_counts,     num_tokens,
                                   shape.top_k,     shape.num_experts};
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(ap));
  backend.MoeAlign(ap);
  MOESERVE_RETURN_IF_ERROR(
      EnqueueGather(backend, x, num_tokens, ws.permuted_token, rows, shape.hidden, ws.permuted));
  MOESERVE_RETURN_IF_ERROR(EnqueueExperts(backend, shape, weights.tables, ws.permuted,
                                          ws.expert_offsets, rows, ws.inter, ws.expert_out));
  return EnqueueCombine(backend, shape, ws.expert_out, rows, ws.combine_rows, ws.weights,
                        num_tokens, out);
}

}  // namespace moeserve::parallel
