#include "runtime/config/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::runtime {
namespace {

using nlohmann::json;

// Reads an integer field. Missing: keep the default if `required` is false.
absl::Status ReadInt(const json& j, const std::string& source, const char* field, bool required,
                     int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat(source, ": missing ", field));
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, " must be an integer, got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const std::string& source, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, " must be a number, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

// bos/eos ids may be an int or a list of ints (HF allows several EOS ids); we take the first.
absl::Status ReadTokenId(const json& j, const std::string& source, const char* field,
                         int32_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  const json* v = &*it;
  if (v->is_array() && !v->empty()) v = &(*v)[0];
  if (!v->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, " must be an integer, got ", it->dump()));
  }
  *out = v->get<int32_t>();
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* field, int64_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("config: ", field, "=", v, " must be > 0"));
  };
  MOESERVE_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  MOESERVE_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  MOESERVE_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  MOESERVE_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  MOESERVE_RETURN_IF_ERROR(positive("num_key_value_heads", num_key_value_heads));
  MOESERVE_RETURN_IF_ERROR(positive("head_dim", head_dim));
  MOESERVE_RETURN_IF_ERROR(positive("num_local_experts", num_local_experts));
  MOESERVE_RETURN_IF_ERROR(positive("num_experts_per_tok", num_experts_per_tok));
  MOESERVE_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  MOESERVE_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  if (num_attention_heads % num_key_value_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: num_attention_heads=", num_attention_heads,
                     " is not a multiple of num_key_value_heads=", num_key_value_heads));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: head_dim=", head_dim, " must be even for rotary embeddings"));
  }
  if (num_experts_per_tok > num_local_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: num_experts_per_tok=", num_experts_per_tok,
                     " exceeds num_local_experts=", num_local_experts));
  }
  if (!(rope_theta > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: rope_theta=", rope_theta, " must be > 0"));
  }
  if (!(rms_norm_eps > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: rms_norm_eps=", rms_norm_eps, " must be > 0"));
  }
  if (sliding_window && *sliding_window <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: sliding_window=", *sliding_window,
                                                   " must be a positive integer or null"));
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size || eos_token_id < 0 ||
      eos_token_id >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("config: bos_token_id=", bos_token_id,
                                                   " / eos_token_id=", eos_token_id,
                                                   " must be in [0, vocab_size=", vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             const std::string& source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string() && *it != "mixtral") {
    return absl::InvalidArgumentError(absl::StrCat(source, ": model_type is ", it->dump(),
                                                   ", expected \"mixtral\" (MixtralForCausalLM)"));
  }
  ModelConfig c;
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "hidden_size", true, &c.hidden_size));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "intermediate_size", true, &c.intermediate_size));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "num_hidden_layers", true, &c.num_hidden_layers));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;  // HF default when absent
  MOESERVE_RETURN_IF_ERROR(
      ReadInt(j, source, "num_key_value_heads", false, &c.num_key_value_heads));
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "head_dim", false, &c.head_dim));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "num_local_experts", true, &c.num_local_experts));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "num_experts_per_tok", true, &c.num_experts_per_tok));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, source, "rope_theta", &c.rope_theta));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, source, "rms_norm_eps", &c.rms_norm_eps));
  MOESERVE_RETURN_IF_ERROR(
      ReadInt(j, source, "max_position_embeddings", false, &c.max_position_embeddings));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "vocab_size", true, &c.vocab_size));
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    int64_t w = 0;
    MOESERVE_RETURN_IF_ERROR(ReadInt(j, source, "sliding_window", true, &w));
    c.sliding_window = w;
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": tie_word_embeddings must be true or false, got ", it->dump()));
    }
    c.tie_word_embeddings = it->get<bool>();
  }
  MOESERVE_RETURN_IF_ERROR(ReadTokenId(j, source, "bos_token_id", &c.bos_token_id));
  MOESERVE_RETURN_IF_ERROR(ReadTokenId(j, source, "eos_token_id", &c.eos_token_id));
  for (const char* field : {"torch_dtype", "dtype"}) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string()) continue;
    const std::string d = *it;
    if (d == "bfloat16") {
      c.dtype = kernels::DType::kBF16;
    } else if (d == "float16") {
      c.dtype = kernels::DType::kF16;
    } else if (d == "float32") {
      c.dtype = kernels::DType::kF32;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": ", field, "=\"", d, "\" is not one of bfloat16, float16, float32"));
    }
  }
  if (absl::Status st = c.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", std::string(st.message())));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

std::string ModelConfig::ToJson() const {
  json j;
  j["architectures"] = {"MixtralForCausalLM"};
  j["model_type"] = "mixtral";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["num_local_experts"] = num_local_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["rope_theta"] = rope_theta;
  j["rms_norm_eps"] = rms_norm_eps;
  j["sliding_window"] = sliding_window ? json(*sliding_window) : json(nullptr);
  j["max_position_embeddings"] = max_position_embeddings;
  j["vocab_size"] = vocab_size;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = dtype == kernels::DType::kBF16  ? "bfloat16"
                     : dtype == kernels::DType::kF16 ? "float16"
                                                     : "float32";
  return j.dump(2);
}

}  // namespace moeserve::runtime
