#include "parallel/moe/skew_profile.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "parallel/moe/router_skew.h"

namespace moeserve::parallel {
namespace {

constexpr char kSyntax[] =
    "expected one of E[,E...]:BIAS, hot:K[:BIAS], zipf:S, per-layer-hot:K[:BIAS[:SEED]], "
    "drift:K:PERIOD[:BIAS], off";

absl::Status Bad(const std::string& text, const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("router skew \"", text, "\": ", why, " (", kSyntax, ")"));
}

// SplitMix64: a fixed, platform-independent mixer (the per-layer choice must be reproducible).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<int64_t> PerLayerHotExperts(int64_t layer, int64_t k, int64_t num_experts,
                                        uint64_t seed) {
  // Partial Fisher-Yates over 0..E-1 driven by Mix(seed, layer, i): the first K are the hot set.
  std::vector<int64_t> order(static_cast<size_t>(num_experts));
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = Mix(seed ^ Mix(static_cast<uint64_t>(layer)));
  for (int64_t i = 0; i < k; ++i) {
    state = Mix(state);
    const int64_t j = i + static_cast<int64_t>(state % static_cast<uint64_t>(num_experts - i));
    std::swap(order[i], order[j]);
  }
  order.resize(static_cast<size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

void SkewProfile::BiasFor(int64_t layer, int64_t position, absl::Span<float> out) const {
  const int64_t num_experts = static_cast<int64_t>(out.size());
  std::fill(out.begin(), out.end(), 0.0f);
  switch (kind) {
    case SkewKind::kExplicit:
      for (int64_t e : experts) out[e] = bias;
      return;
    case SkewKind::kHot:
      for (int64_t e = 0; e < k; ++e) out[e] = bias;
      return;
    case SkewKind::kZipf:
      for (int64_t e = 0; e < num_experts; ++e) {
        out[e] = static_cast<float>(-zipf_s * std::log(static_cast<double>(e + 1)));
      }
      return;
    case SkewKind::kPerLayerHot:
      for (int64_t e : PerLayerHotExperts(layer, k, num_experts, seed)) out[e] = bias;
      return;
    case SkewKind::kDrift: {
      const int64_t window = position / period;
      for (int64_t i = 0; i < k; ++i) out[(window * k + i) % num_experts] = bias;
      return;
    }
  }
}

absl::StatusOr<SkewProfile> ParseSkewProfile(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  SkewProfile p;
  p.text = text;
  const std::string& name = parts[0];
  if (text == "off") {
    // No skew, explicitly: what a request sends to opt out of the daemon's --router-skew. Zero
    // strength adds exact zeros (kernels/ops/router.h), so routing is bitwise unskewed.
    p.kind = SkewKind::kHot;
    p.k = 1;
    p.bias = 0.0f;
    return p;
  }
  auto int_at = [&](size_t i, int64_t* v) { return absl::SimpleAtoi(parts[i], v); };
  auto float_at = [&](size_t i, float* v) { return absl::SimpleAtof(parts[i], v); };
  if (name == "hot") {
    p.kind = SkewKind::kHot;
    if (parts.size() < 2 || parts.size() > 3) return Bad(text, "hot takes K and an optional BIAS");
    if (!int_at(1, &p.k)) return Bad(text, "K is not an integer");
    if (parts.size() == 3 && !float_at(2, &p.bias)) return Bad(text, "BIAS is not a number");
  } else if (name == "zipf") {
    p.kind = SkewKind::kZipf;
    if (parts.size() != 2) return Bad(text, "zipf takes one exponent S");
    if (!absl::SimpleAtod(parts[1], &p.zipf_s)) return Bad(text, "S is not a number");
  } else if (name == "per-layer-hot") {
    p.kind = SkewKind::kPerLayerHot;
    if (parts.size() < 2 || parts.size() > 4) {
      return Bad(text, "per-layer-hot takes K, an optional BIAS and an optional SEED");
    }
    if (!int_at(1, &p.k)) return Bad(text, "K is not an integer");
    if (parts.size() >= 3 && !float_at(2, &p.bias)) return Bad(text, "BIAS is not a number");
    if (parts.size() == 4 && !absl::SimpleAtoi(parts[3], &p.seed)) {
      return Bad(text, "SEED is not a non-negative integer");
    }
  } else if (name == "drift") {
    p.kind = SkewKind::kDrift;
    if (parts.size() < 3 || parts.size() > 4) {
      return Bad(text, "drift takes K, PERIOD and an optional BIAS");
    }
    if (!int_at(1, &p.k)) return Bad(text, "K is not an integer");
    if (!int_at(2, &p.period)) return Bad(text, "PERIOD is not an integer");
    if (parts.size() == 4 && !float_at(3, &p.bias)) return Bad(text, "BIAS is not a number");
  } else {
    absl::StatusOr<RouterSkew> explicit_skew = ParseRouterSkew(text);
    if (!explicit_skew.ok()) return Bad(text, "unknown profile");
    p.kind = SkewKind::kExplicit;
    p.experts = explicit_skew->experts;
    p.bias = explicit_skew->bias;
  }
  // Model-independent checks now; the expert range once the model is known.
  if (!std::isfinite(p.bias)) return Bad(text, "BIAS is not finite");
  if (!std::isfinite(p.zipf_s) || p.zipf_s < 0) return Bad(text, "S must be finite and >= 0");
  if (p.kind != SkewKind::kExplicit && p.kind != SkewKind::kZipf && p.k < 1) {
    return Bad(text, "K must be >= 1");
  }
  if (p.kind == SkewKind::kDrift && p.period < 1) return Bad(text, "PERIOD must be >= 1");
  return p;
}

absl::Status ValidateSkewProfile(const SkewProfile& p, int64_t num_experts) {
  if (!std::isfinite(p.bias) || !std::isfinite(p.zipf_s) || p.zipf_s < 0) {
    return Bad(p.text, "bias and S must be finite, S >= 0");
  }
  if (p.kind == SkewKind::kExplicit) {
    if (p.experts.empty()) return Bad(p.text, "no experts");
    for (int64_t e : p.experts) {
      if (e < 0 || e >= num_experts) {
        return Bad(p.text, absl::StrCat("expert ", e, " is outside [0, ", num_experts, ")"));
      }
    }
  } else if (p.kind != SkewKind::kZipf && (p.k < 1 || p.k > num_experts)) {
    return Bad(p.text, absl::StrCat("K=", p.k, " is outside [1, ", num_experts, "]"));
  }
  if (p.kind == SkewKind::kDrift && p.period < 1) return Bad(p.text, "PERIOD must be >= 1");
  return absl::OkStatus();
}

}  // namespace moeserve::parallel
