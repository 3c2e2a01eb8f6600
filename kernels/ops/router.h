// Top-k router: for every token pick the k experts with the largest router logits and weight them
// with a softmax over those k logits (Mixtral: k = 2). Equal to Hugging Face's softmax over all
// experts followed by top-k and renormalisation. Ties go to the lower expert index.
// Output choices of a token are sorted by ascending expert id: that is the fixed order in which
// the MoE combine adds expert outputs (the order of HF's per-expert loop).
// Everything stays on the device: the routing decides nothing on the host.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace moeserve::kernels {

struct RouterTopKParams {
  const float* logits = nullptr;      // [num_tokens, num_experts] fp32
  const float* logit_bias = nullptr;  // optional [num_experts], added before top-k (skew tests)
  int32_t* expert_ids = nullptr;      // [num_tokens, top_k]
  float* weights = nullptr;           // [num_tokens, top_k] fp32
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t top_k = 2;
  // Optional [num_tokens, num_experts] fp32, added after logit_bias (per-request skew). Rows of
  // tokens without skew hold +0.0f: x + 0.0f == x for every x but -0.0f (which becomes +0.0f,
  // equal under every comparison and exp), so their routing is bitwise what it is without it.
  const float* token_bias = nullptr;
};

absl::Status Validate(const RouterTopKParams& p);

}  // namespace moeserve::kernels
