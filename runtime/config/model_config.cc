#include "runtime/config/model_config.h"

#include <algorithm>
#include <climits>
#include <cmath>
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
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX}) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, "=", it->dump(), " is out of range"));
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
  // Range-checked before narrowing: 2^32 + 1 must not become token 1.
  if (v->is_number_unsigned() ? v->get<uint64_t>() > uint64_t{INT32_MAX}
                              : (v->get<int64_t>() < 0 || v->get<int64_t>() > INT32_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, "=", v->dump(), " is not a token id"));
  }
  *out = static_cast<int32_t>(v->get<int64_t>());
  return absl::OkStatus();
}

// The field is absent, null or equal to `neutral` (a value that leaves the Mixtral math as is).
bool AbsentOr(const json& j, const char* field, const json& neutral) {
  auto it = j.find(field);
  return it == j.end() || it->is_null() || *it == neutral;
}

absl::Status Unsupported(const std::string& source, const char* field, const json& value,
                         const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, "=", value.dump(),
                                                 " is not supported (", why,
                                                 "); see docs/checkpoints.md"));
}

// Fields that change the forward pass and that moeserve does not implement. A config that sets
// one to anything but its neutral value is refused: running it "approximately" would generate
// plausible but wrong text. Unknown fields are otherwise ignored (HF configs carry much
// bookkeeping); docs/checkpoints.md lists what is read, ignored and refused.
absl::Status CheckUnsupportedFields(const json& j, const std::string& source) {
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    const bool ok = it->is_array() && std::any_of(it->begin(), it->end(), [](const json& a) {
                      return a == "MixtralForCausalLM";
                    });
    if (!ok) {
      return Unsupported(source, "architectures", *it,
                         "moeserve runs MixtralForCausalLM: a language-model head over the "
                         "Mixtral decoder");
    }
  }
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!(*it == "silu" || *it == "swish")) {  // the same function under two names in HF
      return Unsupported(source, "hidden_act", *it, "experts compute silu(w1 x) * (w3 x)");
    }
  }
  struct Neutral {
    const char* field;
    json value;
    const char* why;
  };
  const Neutral neutral_fields[] = {
      {"attention_bias", false, "attention projections have no bias"},
      {"mlp_bias", false, "expert projections have no bias"},
      {"partial_rotary_factor", 1.0, "RoPE rotates the whole head_dim"},
      {"norm_topk_prob", true, "the top-k router weights are renormalised to sum to 1"},
      {"use_sliding_window", false, "the window is sliding_window, on every layer"},
      {"final_logit_softcapping", nullptr, "logits are not soft-capped"},
      {"attn_logit_softcapping", nullptr, "attention scores are not soft-capped"},
      {"embedding_multiplier", 1.0, "embeddings are not scaled"},
      {"residual_multiplier", 1.0, "residuals are not scaled"},
      {"attention_multiplier", nullptr, "attention scale is head_dim^-0.5"},
      {"logits_scaling", 1.0, "logits are not scaled"},
  };
  for (const Neutral& n : neutral_fields) {
    if (!AbsentOr(j, n.field, n.value)) return Unsupported(source, n.field, j[n.field], n.why);
  }
  for (const char* field : {"quantization_config", "compression_config"}) {
    if (!AbsentOr(j, field, nullptr)) {
      return Unsupported(source, field, j[field],
                         "weights are read as F32/BF16/F16 tensors, not quantized ones");
    }
  }
  return absl::OkStatus();
}

// rope_type of a rope_parameters / rope_scaling object ("type" in older files); "default" when
// absent.
absl::StatusOr<std::string> RopeType(const json& params, const std::string& source,
                                     const char* where) {
  for (const char* key : {"rope_type", "type"}) {
    auto it = params.find(key);
    if (it == params.end() || it->is_null()) continue;
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", where, ".", key, " must be a string, got ", it->dump()));
    }
    return it->get<std::string>();
  }
  return std::string("default");
}

// RoPE base frequency from any of the layouts Hugging Face has written:
//   transformers < 4.45  top-level "rope_theta", optional "rope_scaling" ({"type": ...} or null)
//   transformers 4.45+   top-level "rope_theta", "rope_scaling": {"rope_type": ...}
//   transformers 5       "rope_parameters": {"rope_theta": ..., "rope_type": "default"}
// Only the default (unscaled) RoPE is implemented; any scaling type is refused. Mixtral's
// default theta (1e6) applies when no layout gives one.
absl::Status ReadRope(const json& j, const std::string& source, double* theta) {
  std::optional<double> found;
  std::string found_in;
  auto take = [&](const json& holder, const std::string& where) -> absl::Status {
    auto it = holder.find("rope_theta");
    if (it == holder.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", where, " must be a number, got ", it->dump()));
    }
    const double value = it->get<double>();
    if (found && *found != value) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", where, "=", it->dump(),
                                                     " disagrees with ", found_in, "=", *found));
    }
    found = value;
    found_in = where;
    return absl::OkStatus();
  };
  MOESERVE_RETURN_IF_ERROR(take(j, "rope_theta"));
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", key, " must be an object or null, got ", it->dump()));
    }
    MOESERVE_ASSIGN_OR_RETURN(const std::string type, RopeType(*it, source, key));
    if (type != "default") {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": ", key, " has rope_type \"", type,
          "\", which is not supported (only the default, unscaled RoPE is implemented; "
          "see docs/checkpoints.md)"));
    }
    if (!AbsentOr(*it, "partial_rotary_factor", 1.0)) {
      return Unsupported(source, "partial_rotary_factor", (*it)["partial_rotary_factor"],
                         "RoPE rotates the whole head_dim");
    }
    MOESERVE_RETURN_IF_ERROR(take(*it, absl::StrCat(key, ".rope_theta")));
  }
  if (found) *theta = *found;
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
  // Upper bounds, checked before anything is sized from the config: far above any published
  // model (Mixtral-8x22B: hidden 6144, 56 layers, 8 experts, vocab 32768), far below what would
  // overflow the byte counts (every product of these stays under 2^63) or exhaust memory just
  // by listing the tensors.
  auto at_most = [](const char* field, int64_t v, int64_t limit) -> absl::Status {
    if (v <= limit) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", field, "=", v, " exceeds the limit of ", limit));
  };
  MOESERVE_RETURN_IF_ERROR(at_most("hidden_size", hidden_size, kMaxHiddenSize));
  MOESERVE_RETURN_IF_ERROR(at_most("intermediate_size", intermediate_size, kMaxIntermediateSize));
  MOESERVE_RETURN_IF_ERROR(at_most("num_hidden_layers", num_hidden_layers, kMaxLayers));
  MOESERVE_RETURN_IF_ERROR(at_most("num_attention_heads", num_attention_heads, kMaxHeads));
  MOESERVE_RETURN_IF_ERROR(at_most("head_dim", head_dim, kMaxHeadDim));
  MOESERVE_RETURN_IF_ERROR(at_most("num_local_experts", num_local_experts, kMaxExperts));
  MOESERVE_RETURN_IF_ERROR(at_most("vocab_size", vocab_size, kMaxVocabSize));
  MOESERVE_RETURN_IF_ERROR(
      at_most("max_position_embeddings", max_position_embeddings, kMaxPositionEmbeddings));
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
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: rope_theta=", rope_theta, " must be > 0"));
  }
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: rms_norm_eps=", rms_norm_eps, " must be a finite number > 0"));
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

namespace {

absl::StatusOr<ModelConfig> ParseModelConfigJson(const json& j, const std::string& source) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string() && *it != "mixtral") {
    return absl::InvalidArgumentError(absl::StrCat(source, ": model_type is ", it->dump(),
                                                   ", expected \"mixtral\" (MixtralForCausalLM)"));
  }
  MOESERVE_RETURN_IF_ERROR(CheckUnsupportedFields(j, source));
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
  MOESERVE_RETURN_IF_ERROR(ReadRope(j, source, &c.rope_theta));
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

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             const std::string& source) {
  // nlohmann reports problems as exceptions (a number that overflows a double is out_of_range,
  // not parse_error); every one of them becomes a Status naming the file.
  try {
    json j;
    try {
      j = json::parse(json_text.begin(), json_text.end());
    } catch (const json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
    }
    return ParseModelConfigJson(j, source);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
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
