#include "server/lab/rebalance_json.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace moeserve::server {

absl::StatusOr<int64_t> ParseRebalanceBody(const std::string& body) {
  if (absl::StripAsciiWhitespace(body).empty()) return -1;
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("rebalance: the body must be a JSON object (or empty)");
  }
  int64_t budget = -1;
  for (const auto& [key, value] : j.items()) {
    if (key != "extra_experts_per_rank") {
      return absl::InvalidArgumentError(
          absl::StrCat("rebalance: unknown field \"", key, "\" (only \"extra_experts_per_rank\")"));
    }
    if (!value.is_number_integer() || value.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rebalance: extra_experts_per_rank must be an integer >= 0, got ", value.dump()));
    }
    budget = value.get<int64_t>();
  }
  return budget;
}

nlohmann::json RebalanceJson(const runtime::RebalanceResult& r) {
  auto placement = [](const std::string& text) {
    nlohmann::json p = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    return p.is_discarded() ? nlohmann::json(text) : p;
  };
  return {{"object", "moeserve.lab.rebalance"},
          {"changed", r.changed},
          {"old_placement", placement(r.old_placement)},
          {"new_placement", placement(r.new_placement)},
          {"imbalance_before", r.measured_imbalance_before},
          {"projected_imbalance_before", r.projected_imbalance_before},
          {"projected_imbalance_after", r.projected_imbalance_after},
          {"replicas", r.replicas},
          {"experts_prepared", r.experts_prepared},
          {"prepare_ms", r.prepare_ms},
          {"pause_ms", r.pause_ms},
          {"total_ms", r.total_ms}};
}

}  // namespace moeserve::server
