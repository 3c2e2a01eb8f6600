// The Mixtral paper's routing analysis (Jiang et al. 2024, "Mixtral of Experts", section 5) over
// routing traces (runtime/model/routing_trace.h) grouped in prompt sets:
//
//   expert share   per set, layer and expert: rows routed to the expert / all rows of the layer
//                  (a row is one (token, choice) pair: first and second choices both count, as
//                  in the paper's Figure 7). Uniform routing gives 1 / E.
//   repetition     per set and layer, over consecutive tokens (i, i+1) of one prompt:
//                    first  how often token i+1's first choice is token i's first choice
//                    top-k  how often their top-k sets share an expert
//                  (the paper's Table 5). Random routing gives 1 / E and
//                  1 - C(E-k, k) / C(E, k) (top-2 of 8: 1 - 15/28 = 46.4 %).
//
// Pure functions; `moeserve analyze-routing` runs the model and prints / writes these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/model/routing_trace.h"

namespace moeserve::server {

struct PromptSetTraces {
  std::string name;
  std::vector<runtime::RoutingTrace> traces;  // one per prompt, all of one shape
};

struct SetAnalysis {
  std::string name;
  int64_t num_prompts = 0;
  int64_t num_tokens = 0;                         // traced positions, all prompts
  int64_t num_pairs = 0;                          // consecutive (i, i+1) pairs, all prompts
  std::vector<std::vector<double>> expert_share;  // [num_layers][num_experts]
  std::vector<double> repeat_first;               // [num_layers]
  std::vector<double> repeat_top_k;               // [num_layers]
};

struct RoutingAnalysis {
  int64_t num_layers = 0, num_experts = 0, top_k = 0;
  std::vector<int64_t> paper_layers;  // PaperLayers(num_layers)
  double random_first = 0;            // 1 / E
  double random_top_k = 0;            // RandomTopKOverlap(E, k)
  std::vector<SetAnalysis> sets;
};

// The paper's layers 0, 15 and 31 when the model has 32 layers; in general the first, middle
// ((L - 1) / 2) and last, without repeats.
std::vector<int64_t> PaperLayers(int64_t num_layers);

// Chance that two independent uniformly random k-subsets of E experts share one:
// 1 - C(E - k, k) / C(E, k).
double RandomTopKOverlap(int64_t num_experts, int64_t top_k);

// InvalidArgument for traces of different shapes, expert ids outside [0, num_experts), or no
// traced token at all.
absl::StatusOr<RoutingAnalysis> AnalyzeRouting(const std::vector<PromptSetTraces>& sets,
                                               int64_t num_experts);

// The stdout table: the expert shares of the paper layers per set, then the repetition rates of
// every set at those layers against the random baselines.
std::string FormatAnalysis(const RoutingAnalysis& analysis);

// The --json document: the analysis of every layer, and (with_traces) every prompt's token ids
// and experts [T][L][k], best first, so the numbers can be recomputed independently.
nlohmann::json AnalysisJson(const RoutingAnalysis& analysis,
                            const std::vector<PromptSetTraces>& sets, bool with_traces);

}  // namespace moeserve::server
