// The model architecture, read from a Hugging Face config.json (MixtralForCausalLM).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace moeserve::runtime {

// Upper bounds Validate enforces (docs/checkpoints.md): far above published models, low enough
// that a hostile config.json cannot make the loader allocate without bound.
inline constexpr int64_t kMaxHiddenSize = 65536;
inline constexpr int64_t kMaxIntermediateSize = int64_t{1} << 20;
inline constexpr int64_t kMaxLayers = 1024;
inline constexpr int64_t kMaxHeads = 1024;
inline constexpr int64_t kMaxHeadDim = 1024;
inline constexpr int64_t kMaxExperts = 1024;
inline constexpr int64_t kMaxVocabSize = int64_t{1} << 24;
inline constexpr int64_t kMaxPositionEmbeddings = int64_t{1} << 24;

struct ModelConfig {
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 14336;  // per expert
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 8;
  int64_t head_dim = 128;  // config "head_dim" when present, else hidden_size / num_attention_heads
  int64_t num_local_experts = 8;
  int64_t num_experts_per_tok = 2;
  // RoPE base; read from "rope_theta" or "rope_parameters"/"rope_scaling" (default type only).
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-5;
  std::optional<int64_t> sliding_window;  // null in config.json: full attention
  int64_t max_position_embeddings = 32768;
  int64_t vocab_size = 32000;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  int32_t eos_token_id = 2;
  // dtype the checkpoint declares ("torch_dtype" / "dtype"); tensors carry their own dtype.
  kernels::DType dtype = kernels::DType::kBF16;

  // Checks every invariant the forward pass relies on; messages name the field.
  absl::Status Validate() const;
  // HF config.json text for this config (make-model writes it, ModelInfo prints it).
  std::string ToJson() const;
};

// Parses config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             const std::string& source = "config.json");
// Reads <dir>/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace moeserve::runtime
