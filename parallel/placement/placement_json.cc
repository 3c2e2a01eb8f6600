// ExpertPlacement <-> JSON (the format is documented in expert_placement.h). Kept apart from
// expert_placement.cc so that builds without nlohmann_json (MOESERVE_KERNELS_ONLY on a bare GPU
// machine) still get the placement itself.
#include <climits>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "parallel/placement/expert_placement.h"

namespace moeserve::parallel {
namespace {

using nlohmann::json;
using Table = std::vector<std::vector<std::vector<int>>>;

// One layer's [[ranks of expert 0], [ranks of expert 1], ...].
absl::StatusOr<std::vector<std::vector<int>>> ParseLayer(const json& j, int64_t num_experts,
                                                         const std::string& where) {
  if (!j.is_array() || static_cast<int64_t>(j.size()) != num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected an array of ", num_experts,
                                                   " rank lists (one per expert), got ", j.dump()));
  }
  std::vector<std::vector<int>> layer;
  for (size_t e = 0; e < j.size(); ++e) {
    const json& ranks = j[e];
    if (!ranks.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "[", e, "]: expected a list of ranks, got ", ranks.dump()));
    }
    std::vector<int> holders;
    for (const json& r : ranks) {
      if (!r.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "[", e, "]: rank ", r.dump(), " is not an integer"));
      }
      // Range-checked before narrowing, so 2^32 + 1 does not become rank 1.
      const bool fits = r.is_number_unsigned()
                            ? r.get<uint64_t>() <= uint64_t{INT_MAX}
                            : (r.get<int64_t>() >= INT_MIN && r.get<int64_t>() <= INT_MAX);
      if (!fits) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "[", e, "]: rank ", r.dump(), " is not a rank"));
      }
      holders.push_back(r.get<int>());
    }
    layer.push_back(std::move(holders));
  }
  return layer;
}

// FromJson after parsing; may throw json::exception (FromJson turns it into a Status).
absl::StatusOr<ExpertPlacement> FromParsedJson(const json& doc, int64_t num_layers,
                                               int64_t num_experts, int ep_size,
                                               const std::string& source) {
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  for (const auto& [key, value] : doc.items()) {
    if (key != "world_size" && key != "experts" && key != "layers") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": unknown key \"", key, "\" (known: world_size, experts, layers)"));
    }
  }
  if (doc.contains("world_size")) {
    if (!doc["world_size"].is_number_integer() || doc["world_size"].get<int64_t>() != ep_size) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": world_size ",
                                                     doc["world_size"].dump(),
                                                     " does not match --ep-size ", ep_size));
    }
  }
  Table table(static_cast<size_t>(num_layers));
  std::vector<bool> set(static_cast<size_t>(num_layers), false);
  if (doc.contains("experts")) {
    auto layer = ParseLayer(doc["experts"], num_experts, source + ": experts");
    if (!layer.ok()) return layer.status();
    for (int64_t l = 0; l < num_layers; ++l) {
      table[l] = *layer;
      set[l] = true;
    }
  }
  if (doc.contains("layers")) {
    if (!doc["layers"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": \"layers\" must be an object {\"<layer>\": [...]}"));
    }
    for (const auto& [key, value] : doc["layers"].items()) {
      int64_t l = -1;
      try {
        size_t used = 0;
        l = std::stoll(key, &used);
        if (used != key.size()) l = -1;
      } catch (const std::exception&) {
        l = -1;
      }
      if (l < 0 || l >= num_layers) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ": layers[\"", key, "\"] is not a layer in [0, ", num_layers, ")"));
      }
      auto layer = ParseLayer(value, num_experts, absl::StrCat(source, ": layers[\"", key, "\"]"));
      if (!layer.ok()) return layer.status();
      table[l] = *std::move(layer);
      set[l] = true;
    }
  }
  for (int64_t l = 0; l < num_layers; ++l) {
    if (!set[l]) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": layer ", l, " has no placement (give \"experts\" for all layers)"));
    }
  }
  auto placement = ExpertPlacement::FromTable(ep_size, std::move(table));
  if (!placement.ok()) {
    return absl::Status(placement.status().code(),
                        absl::StrCat(source, ": ", std::string(placement.status().message())));
  }
  return placement;
}

}  // namespace

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromJson(const std::string& text,
                                                          int64_t num_layers, int64_t num_experts,
                                                          int ep_size, const std::string& source) {
  // nlohmann reports problems as exceptions, not only parse_error (1e999 is out_of_range); every
  // one becomes a Status naming the file.
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
  }
  try {
    return FromParsedJson(doc, num_layers, num_experts, ep_size, source);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::StatusOr<ExpertPlacement> ExpertPlacement::FromJsonFile(const std::string& path,
                                                              int64_t num_layers,
                                                              int64_t num_experts, int ep_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read expert placement file"));
  std::stringstream text;
  text << in.rdbuf();
  return FromJson(text.str(), num_layers, num_experts, ep_size, path);
}

std::string ExpertPlacement::ToJson() const {
  json doc;
  doc["world_size"] = world_size_;
  bool uniform = true;
  for (const auto& layer : ranks_) uniform = uniform && layer == ranks_[0];
  if (uniform) {
    doc["experts"] = ranks_[0];
  } else {
    json layers = json::object();
    for (size_t l = 0; l < ranks_.size(); ++l) layers[std::to_string(l)] = ranks_[l];
    doc["layers"] = layers;
  }
  return doc.dump();
}

}  // namespace moeserve::parallel
