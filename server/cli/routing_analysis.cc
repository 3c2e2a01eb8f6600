#include "server/cli/routing_analysis.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moeserve::server {

std::vector<int64_t> PaperLayers(int64_t num_layers) {
  std::vector<int64_t> layers;
  for (int64_t l : {int64_t{0}, (num_layers - 1) / 2, num_layers - 1}) {
    if (l >= 0 && std::find(layers.begin(), layers.end(), l) == layers.end()) layers.push_back(l);
  }
  return layers;
}

double RandomTopKOverlap(int64_t num_experts, int64_t top_k) {
  // C(E - k, k) / C(E, k) = prod_{i<k} (E - k - i) / (E - i): the second set misses the first.
  double miss = 1.0;
  for (int64_t i = 0; i < top_k; ++i) {
    miss *= std::max<double>(0.0, static_cast<double>(num_experts - top_k - i)) /
            static_cast<double>(num_experts - i);
  }
  return 1.0 - miss;
}

absl::StatusOr<RoutingAnalysis> AnalyzeRouting(const std::vector<PromptSetTraces>& sets,
                                               int64_t num_experts) {
  RoutingAnalysis a;
  a.num_experts = num_experts;
  for (const PromptSetTraces& set : sets) {
    for (const runtime::RoutingTrace& t : set.traces) {
      if (a.num_layers == 0) {
        a.num_layers = t.num_layers;
        a.top_k = t.top_k;
      }
      if (t.num_layers != a.num_layers || t.top_k != a.top_k) {
        return absl::InvalidArgumentError("routing analysis: traces of different shapes");
      }
    }
  }
  if (a.num_layers == 0 || a.top_k == 0 || num_experts <= 0) {
    return absl::InvalidArgumentError("routing analysis: no traced token");
  }
  const int64_t L = a.num_layers, E = num_experts, k = a.top_k;
  a.paper_layers = PaperLayers(L);
  a.random_first = 1.0 / static_cast<double>(E);
  a.random_top_k = RandomTopKOverlap(E, k);
  for (const PromptSetTraces& set : sets) {
    SetAnalysis s;
    s.name = set.name;
    s.num_prompts = static_cast<int64_t>(set.traces.size());
    std::vector<std::vector<int64_t>> rows(L, std::vector<int64_t>(E, 0));
    std::vector<int64_t> same_first(L, 0), shared(L, 0);
    for (const runtime::RoutingTrace& t : set.traces) {
      const int64_t T = t.num_positions();
      s.num_tokens += T;
      s.num_pairs += std::max<int64_t>(0, T - 1);
      for (int64_t p = 0; p < T; ++p) {
        for (int64_t l = 0; l < L; ++l) {
          const int32_t* cur = t.experts.data() + (p * L + l) * k;
          for (int64_t j = 0; j < k; ++j) {
            if (cur[j] < 0 || cur[j] >= E) {
              return absl::InvalidArgumentError(
                  absl::StrCat("routing analysis: expert id ", cur[j], " outside [0, ", E, ")"));
            }
            ++rows[l][cur[j]];
          }
          if (p == 0) continue;
          const int32_t* prev = cur - L * k;  // the same layer, one position earlier
          same_first[l] += prev[0] == cur[0];
          bool any = false;
          for (int64_t i = 0; i < k && !any; ++i) {
            any = std::find(prev, prev + k, cur[i]) != prev + k;
          }
          shared[l] += any;
        }
      }
    }
    s.expert_share.assign(L, std::vector<double>(E, 0.0));
    s.repeat_first.assign(L, 0.0);
    s.repeat_top_k.assign(L, 0.0);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t e = 0; e < E; ++e) {
        if (s.num_tokens > 0) s.expert_share[l][e] = double(rows[l][e]) / double(s.num_tokens * k);
      }
      if (s.num_pairs > 0) {
        s.repeat_first[l] = double(same_first[l]) / double(s.num_pairs);
        s.repeat_top_k[l] = double(shared[l]) / double(s.num_pairs);
      }
    }
    a.sets.push_back(std::move(s));
  }
  return a;
}

std::string FormatAnalysis(const RoutingAnalysis& a) {
  std::string out = absl::StrFormat(
      "routing analysis: %d layers, %d experts, top-%d; layers shown: ", a.num_layers,
      a.num_experts, a.top_k);
  for (size_t i = 0; i < a.paper_layers.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", a.paper_layers[i]);
  }
  absl::StrAppend(&out, "\n\nprompt sets:\n");
  for (const SetAnalysis& s : a.sets) {
    absl::StrAppend(&out, absl::StrFormat("  %-16s %5d prompts %7d tokens %7d pairs\n", s.name,
                                          s.num_prompts, s.num_tokens, s.num_pairs));
  }
  absl::StrAppend(
      &out, absl::StrFormat("\nshare of routed rows per expert (uniform: %.3f)\n", a.random_first));
  absl::StrAppend(&out, absl::StrFormat("%-16s %5s", "set", "layer"));
  for (int64_t e = 0; e < a.num_experts; ++e)
    absl::StrAppend(&out, absl::StrFormat(" %6s", absl::StrCat("e", e)));
  absl::StrAppend(&out, "\n");
  for (const SetAnalysis& s : a.sets) {
    for (int64_t l : a.paper_layers) {
      absl::StrAppend(&out, absl::StrFormat("%-16s %5d", s.name, l));
      for (double share : s.expert_share[l])
        absl::StrAppend(&out, absl::StrFormat(" %6.3f", share));
      absl::StrAppend(&out, "\n");
    }
  }
  absl::StrAppend(&out,
                  absl::StrFormat("\nconsecutive tokens keeping an expert (random: first %.1f %%, "
                                  "top-%d overlap %.1f %%)\n",
                                  100 * a.random_first, a.top_k, 100 * a.random_top_k));
  absl::StrAppend(&out, absl::StrFormat("%-16s %5s %9s %9s\n", "set", "layer", "first %",
                                        absl::StrCat("top-", a.top_k, " %")));
  for (const SetAnalysis& s : a.sets) {
    for (int64_t l : a.paper_layers) {
      absl::StrAppend(&out, absl::StrFormat("%-16s %5d %9.1f %9.1f\n", s.name, l,
                                            100 * s.repeat_first[l], 100 * s.repeat_top_k[l]));
    }
  }
  return out;
}

nlohmann::json AnalysisJson(const RoutingAnalysis& a, const std::vector<PromptSetTraces>& sets,
                            bool with_traces) {
  nlohmann::json out = {{"num_layers", a.num_layers},
                        {"num_experts", a.num_experts},
                        {"top_k", a.top_k},
                        {"paper_layers", a.paper_layers},
                        {"random_first", a.random_first},
                        {"random_top_k", a.random_top_k}};
  nlohmann::json js = nlohmann::json::array();
  for (size_t i = 0; i < a.sets.size(); ++i) {
    const SetAnalysis& s = a.sets[i];
    nlohmann::json j = {{"name", s.name},
                        {"num_prompts", s.num_prompts},
                        {"num_tokens", s.num_tokens},
                        {"num_pairs", s.num_pairs},
                        {"expert_share", s.expert_share},
                        {"repeat_first", s.repeat_first},
                        {"repeat_top_k", s.repeat_top_k}};
    if (with_traces && i < sets.size()) {
      nlohmann::json traces = nlohmann::json::array();
      for (const runtime::RoutingTrace& t : sets[i].traces) {
        const int64_t L = t.num_layers, k = t.top_k;
        nlohmann::json experts = nlohmann::json::array();
        for (int64_t p = 0; p < t.num_positions(); ++p) {
          nlohmann::json per_layer = nlohmann::json::array();
          for (int64_t l = 0; l < L; ++l) {
            const auto first = t.experts.begin() + (p * L + l) * k;
            per_layer.push_back(std::vector<int32_t>(first, first + k));
          }
          experts.push_back(std::move(per_layer));
        }
        traces.push_back({{"token_ids", t.tokens}, {"experts", std::move(experts)}});
      }
      j["traces"] = std::move(traces);
    }
    js.push_back(std::move(j));
  }
  out["sets"] = std::move(js);
  return out;
}

}  // namespace moeserve::server
