#include "parallel/moe/router_skew.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moeserve::parallel {

absl::StatusOr<std::vector<float>> MakeRouterBias(int64_t num_experts, const RouterSkew& skew) {
  if (!std::isfinite(skew.bias)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router skew: bias ", skew.bias, " is not finite"));
  }
  if (!skew.enabled()) return std::vector<float>{};
  std::vector<float> bias(static_cast<size_t>(num_experts), 0.0f);
  for (int64_t e : skew.experts) {
    if (e < 0 || e >= num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("router skew: expert ", e, " is outside [0, ", num_experts, ")"));
    }
    bias[e] = skew.bias;
  }
  return bias;
}

absl::StatusOr<RouterSkew> ParseRouterSkew(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  RouterSkew skew;
  if (parts.size() != 2 || !absl::SimpleAtof(parts[1], &skew.bias)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router skew \"", text, "\": expected EXPERT[,EXPERT...]:BIAS, e.g. \"0:2.5\""));
  }
  const std::vector<std::string> experts = absl::StrSplit(parts[0], ',');
  for (const std::string& e : experts) {
    int64_t expert = 0;
    if (!absl::SimpleAtoi(e, &expert)) {
      return absl::InvalidArgumentError(
          absl::StrCat("router skew \"", text, "\": \"", e, "\" is not an expert index"));
    }
    skew.experts.push_back(expert);
  }
  return skew;
}

}  // namespace moeserve::parallel
