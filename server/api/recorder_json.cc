#include "server/api/recorder_json.h"

namespace moeserve::server::api {

nlohmann::json RecorderJson(const runtime::RecorderDump& dump, bool with_steps) {
  nlohmann::json out = {{"recording", dump.recording},         {"max_steps", dump.max_steps},
                        {"steps_dropped", dump.steps_dropped}, {"num_layers", dump.num_layers},
                        {"num_experts", dump.num_experts},     {"world_size", dump.world_size}};
  if (!with_steps) return out;
  nlohmann::json steps = nlohmann::json::array();
  for (const runtime::RecordedStep& s : dump.steps) {
    steps.push_back(
        {{"step", s.step}, {"expert_tokens", s.expert_tokens}, {"rank_rows", s.rank_rows}});
  }
  out["steps"] = std::move(steps);
  return out;
}

}  // namespace moeserve::server::api
