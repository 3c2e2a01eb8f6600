#include "runtime/model/random_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/weight_names.h"
#include "runtime/weights/safetensors_writer.h"

namespace moeserve::runtime {
namespace {

// splitmix64: tiny, fast, and identical on every platform (unlike std:: distributions).
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t HashName(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::vector<std::string> PresetNames() { return {"tiny", "mixtral-8x7b"}; }

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name, int64_t num_layers) {
  ModelConfig c;  // defaults are Mixtral 8x7B
  if (name == "tiny") {
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 2;
    c.head_dim = 32;
    c.dtype = kernels::DType::kBF16;
  } else if (name == "mixtral-8x7b") {
    c.num_hidden_layers = 32;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset \"", name, "\" (known: tiny, mixtral-8x7b)"));
  }
  if (num_layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--layers=", num_layers, " must be > 0"));
  }
  if (num_layers > 0) c.num_hidden_layers = num_layers;
  MOESERVE_RETURN_IF_ERROR(c.Validate());
  return c;
}

OwnedTensor MakeRandomTensor(const std::string& name, const std::vector<int64_t>& shape,
                             kernels::DType dtype, uint64_t seed, int64_t hidden_size) {
  OwnedTensor t{name, dtype, shape, {}};
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  t.bytes.resize(static_cast<size_t>(numel) * kernels::DTypeSize(dtype));

  // Uniform in [center - half, center + half]; std = half / sqrt(3).
  float center = 0.0f, half;
  if (EndsWith(name, "norm.weight")) {
    center = 1.0f;
    half = 0.1f;
  } else if (name == "model.embed_tokens.weight") {
    half = std::sqrt(3.0f);  // std 1: embeddings are O(1) like a trained model's normed states
  } else if (EndsWith(name, "gate.weight")) {
    half = std::sqrt(3.0f) * 4.0f / std::sqrt(static_cast<float>(hidden_size));  // decisive routing
  } else {
    half = std::sqrt(3.0f) / std::sqrt(static_cast<float>(shape.back()));  // std 1/sqrt(fan_in)
  }
  uint64_t state = HashName(name, seed);
  for (int64_t i = 0; i < numel; ++i) {
    const double u = static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;  // [0, 1)
    const float v = center + half * static_cast<float>(2.0 * u - 1.0);
    switch (dtype) {
      case kernels::DType::kBF16: {
        const uint16_t b = kernels::F32ToBf16(v);
        std::memcpy(t.bytes.data() + 2 * i, &b, 2);
        break;
      }
      case kernels::DType::kF16: {
        const uint16_t b = kernels::F32ToF16(v);
        std::memcpy(t.bytes.data() + 2 * i, &b, 2);
        break;
      }
      default:
        std::memcpy(t.bytes.data() + 4 * i, &v, 4);
    }
  }
  return t;
}

std::vector<OwnedTensor> MakeRandomWeights(const ModelConfig& config, uint64_t seed,
                                           const ExpertFilter& holds_expert) {
  std::vector<OwnedTensor> out;
  for (const WeightSpec& spec : HeldWeightSpecs(config, holds_expert)) {
    out.push_back(MakeRandomTensor(spec.name, spec.shape, config.dtype, seed, config.hidden_size));
  }
  return out;
}

absl::Status WriteRandomModel(const ModelConfig& config, uint64_t seed, const std::string& dir,
                              bool shard_per_layer,
                              const std::function<void(int64_t, int64_t)>& on_progress) {
  MOESERVE_RETURN_IF_ERROR(config.Validate());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  {
    std::ofstream cfg(dir + "/config.json");
    cfg << config.ToJson() << "\n";
    if (!cfg) return absl::InternalError(absl::StrCat(dir, "/config.json: write failed"));
  }
  const std::vector<WeightSpec> specs = AllWeightSpecs(config);
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"generator", "moeserve make-model"}, {"seed", std::to_string(seed)}};
  // Group tensors into shards: [non-layer head tensors + layer 0], [layer 1], ... or one file.
  std::vector<std::vector<WeightSpec>> shards(1);
  if (shard_per_layer) {
    shards.assign(static_cast<size_t>(config.num_hidden_layers), {});
    for (const WeightSpec& s : specs) {
      int64_t layer = 0;
      if (s.name.rfind("model.layers.", 0) == 0) layer = std::stoll(s.name.substr(13));
      shards[layer].push_back(s);
    }
  } else {
    shards[0] = specs;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  int64_t total_bytes = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        shards.size() == 1
            ? "model.safetensors"
            : absl::StrCat("model-", absl::Dec(i + 1, absl::kZeroPad5), "-of-",
                           absl::Dec(shards.size(), absl::kZeroPad5), ".safetensors");
    std::vector<OwnedTensor> owned;
    std::vector<NamedTensor> named;
    for (const WeightSpec& s : shards[i]) {
      owned.push_back(MakeRandomTensor(s.name, s.shape, config.dtype, seed, config.hidden_size));
    }
    for (const OwnedTensor& t : owned) {
      named.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
      weight_map[t.name] = file;
      total_bytes += static_cast<int64_t>(t.bytes.size());
    }
    MOESERVE_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + file, named, metadata));
    if (on_progress) on_progress(static_cast<int64_t>(i + 1), static_cast<int64_t>(shards.size()));
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}},
                            {"weight_map", weight_map}};
    std::ofstream out(dir + "/model.safetensors.index.json");
    out << index.dump(2) << "\n";
    if (!out)
      return absl::InternalError(absl::StrCat(dir, "/model.safetensors.index.json: write failed"));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::runtime
