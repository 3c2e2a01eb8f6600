// The routing of one sequence's tokens, kept by position: for every token the model ran and every
// layer, the top-k experts the router chose and their combine weights (softmax over the k, the
// weights the MoE block multiplied the experts' outputs by), best first: descending weight, ties
// by ascending expert id (so experts[.., 0] is the token's first choice). Opt-in per request
// (`return_routing`); the model writes it after each step that ran the sequence's tokens.
//
// Layout: experts and weights are [num_positions, num_layers, top_k], row-major. A position is
// the token's index in its sequence (prompt first, then generated tokens). A token that is run
// again (recomputation after preemption) overwrites its own entries, so every position appears
// once. The last sampled token of a finished sequence is never run, so it has no entry.
#pragma once

#include <cstdint>
#include <vector>

namespace moeserve::runtime {

struct RoutingTrace {
  int64_t num_layers = 0;
  int64_t top_k = 0;
  std::vector<int32_t> tokens;   // [num_positions]: the token id run at each position
  std::vector<int32_t> experts;  // [num_positions, num_layers, top_k]
  std::vector<float> weights;    // [num_positions, num_layers, top_k]

  RoutingTrace() = default;
  RoutingTrace(int64_t layers, int64_t k) : num_layers(layers), top_k(k) {}

  int64_t num_positions() const {
    const int64_t row = num_layers * top_k;
    return row > 0 ? static_cast<int64_t>(experts.size()) / row : 0;
  }
  // Offset of (position, layer, 0) in experts / weights; grows the trace to hold `position`.
  int64_t Reserve(int64_t position, int64_t layer) {
    const size_t need = static_cast<size_t>((position + 1) * num_layers * top_k);
    if (experts.size() < need) {
      tokens.resize(static_cast<size_t>(position + 1), -1);
      experts.resize(need, -1);
      weights.resize(need, 0.0f);
    }
    return (position * num_layers + layer) * top_k;
  }
};

}  // namespace moeserve::runtime
