#include "server/api/routing_json.h"

namespace moeserve::server::api {

using json = nlohmann::json;

json RoutingJson(const std::vector<std::pair<int32_t, const runtime::RoutingTrace*>>& choices) {
  json out = {{"num_layers", 0}, {"top_k", 0}, {"choices", json::array()}};
  for (const auto& [index, trace] : choices) {
    out["num_layers"] = trace->num_layers;
    out["top_k"] = trace->top_k;
    const int64_t positions = trace->num_positions(), layers = trace->num_layers;
    const int64_t k = trace->top_k;
    json experts = json::array(), weights = json::array();
    for (int64_t p = 0; p < positions; ++p) {
      json pe = json::array(), pw = json::array();
      for (int64_t l = 0; l < layers; ++l) {
        const size_t at = static_cast<size_t>((p * layers + l) * k);
        json le = json::array(), lw = json::array();
        for (int64_t j = 0; j < k; ++j) {
          le.push_back(trace->experts[at + static_cast<size_t>(j)]);
          lw.push_back(trace->weights[at + static_cast<size_t>(j)]);
        }
        pe.push_back(std::move(le));
        pw.push_back(std::move(lw));
      }
      experts.push_back(std::move(pe));
      weights.push_back(std::move(pw));
    }
    out["choices"].push_back({{"index", index},
                              {"token_ids", trace->tokens},
                              {"experts", std::move(experts)},
                              {"weights", std::move(weights)}});
  }
  return out;
}

}  // namespace moeserve::server::api
