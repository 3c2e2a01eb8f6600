// Named router-skew profiles for load tests: a bias added to the router logits before top-k, as
// a function of (layer, token position). A positive bias makes an expert win more often; the
// measured imbalance (ep_stats.h) follows.
//
// Text syntax (the --router-skew flag and the per-request `router_skew` field):
//   E[,E...]:BIAS               explicit: BIAS on experts E.. in every layer (router_skew.h)
//   hot:K[:BIAS]                experts 0..K-1 get BIAS (default 4) in every layer
//   zipf:S                      expert e gets log(w_e), w_e = 1/(e+1)^S: softmax routing
//                               probability tilts toward zipf(S) (the normaliser of the zipf
//                               weights is a common shift, which top-k and softmax ignore)
//   per-layer-hot:K[:BIAS[:SEED]]  K experts per layer, chosen from (layer, SEED) by a fixed
//                               hash (default BIAS 4, SEED 0): different hot experts per layer
//   drift:K:PERIOD[:BIAS]       a hot set of K experts that moves every PERIOD token positions:
//                               a token at position p (its index in its sequence) sees experts
//                               (w*K + i) mod E for i < K, w = p / PERIOD. Keyed by position,
//                               not by engine step, so a request's output does not depend on
//                               how it was batched (reproducible).
//   off                         no skew: a request's way to opt out of the daemon's default
// A profile with zero strength (BIAS 0, S 0, or off) is valid and adds exact zeros.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moeserve::parallel {

enum class SkewKind { kExplicit, kHot, kZipf, kPerLayerHot, kDrift };

struct SkewProfile {
  SkewKind kind = SkewKind::kExplicit;
  std::vector<int64_t> experts;  // kExplicit: the biased experts
  float bias = 4.0f;             // every kind but kZipf
  int64_t k = 0;                 // kHot, kPerLayerHot, kDrift: number of hot experts
  double zipf_s = 0;             // kZipf
  int64_t period = 1;            // kDrift: token positions per hot set
  uint64_t seed = 0;             // kPerLayerHot
  std::string text;              // the text it was parsed from (logs, stats)

  // Whether the bias depends on the token position (else only on the layer).
  bool position_dependent() const { return kind == SkewKind::kDrift; }

  // Writes the [num_experts] bias of `layer` for a token at `position` into `bias`.
  // REQUIRES: ValidateSkewProfile(*this, bias.size()).ok().
  void BiasFor(int64_t layer, int64_t position, absl::Span<float> bias) const;
};

// Parses the text syntax above. InvalidArgument with the expected syntax on bad input.
absl::StatusOr<SkewProfile> ParseSkewProfile(const std::string& text);

// Checks the profile against a model: experts in [0, num_experts), 1 <= K <= num_experts, finite
// bias and S >= 0, PERIOD >= 1.
absl::Status ValidateSkewProfile(const SkewProfile& profile, int64_t num_experts);

// The hot experts of `layer` under per-layer-hot (K distinct experts, ascending).
std::vector<int64_t> PerLayerHotExperts(int64_t layer, int64_t k, int64_t num_experts,
                                        uint64_t seed);

}  // namespace moeserve::parallel
