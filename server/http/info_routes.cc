#include "server/http/info_routes.h"

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/api/openai_json.h"
#include "server/api/recorder_json.h"
#include "server/lab/lab_page.h"
#include "server/lab/lab_stats.h"
#include "server/lab/rebalance_json.h"

namespace moeserve::server {
namespace {

constexpr char kJson[] = "application/json";

RouteAnswer Models(const ServingContext& ctx) {
  nlohmann::json model = {{"id", ctx.limits.served_model_name},
                          {"object", "model"},
                          {"created", 0},
                          {"owned_by", "moeserve"},
                          {"root", ctx.model_source},
                          {"max_model_len", ctx.limits.max_model_len}};
  nlohmann::json body = {{"object", "list"}, {"data", nlohmann::json::array({model})}};
  return {200, kJson, body.dump()};
}

// Runs on the calling connection's strand: the call holds it while the replicas are prepared
// (milliseconds for the embedded model, longer for a large checkpoint) and until every rank has
// switched at a step boundary; the ranks keep serving meanwhile.
RouteAnswer Rebalance(const std::string& body, ServingContext& ctx) {
  absl::StatusOr<int64_t> budget = ParseRebalanceBody(body);
  absl::StatusOr<runtime::RebalanceResult> result =
      budget.ok() ? ctx.engine->Rebalance(*budget) : budget.status();
  if (result.ok()) return {200, kJson, RebalanceJson(*result).dump()};
  // Not possible in this configuration (world size 1, processes, CUDA, no load yet): 409
  // Conflict, not a server error.
  const absl::StatusCode code = result.status().code();
  if (code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kUnimplemented) {
    return {409, kJson, api::ErrorBody(409, std::string(result.status().message()))};
  }
  return {api::HttpStatusOf(result.status()), kJson, api::ErrorBody(result.status())};
}

}  // namespace

RouteAnswer AnswerInfoRoute(RouteId id, const std::string& body, ServingContext& ctx) {
  switch (id) {
    case RouteId::kModels:
      return Models(ctx);
    case RouteId::kHealth: {
      const bool draining = ctx.draining.load();
      return {draining ? 503 : 200, "text/plain", draining ? "draining\n" : "ok\n"};
    }
    case RouteId::kMetrics:
      return {200, "text/plain; version=0.0.4; charset=utf-8",
              ctx.metrics->Render(ctx.engine->Stats())};
    case RouteId::kRecorderStart:
    case RouteId::kRecorderStop:
    case RouteId::kRecorderDump: {
      runtime::LoadRecorder& recorder = ctx.engine->recorder();
      if (id == RouteId::kRecorderStart) recorder.Start();
      if (id == RouteId::kRecorderStop) recorder.Stop();
      return {200, kJson, api::RecorderJson(recorder.Dump(), id == RouteId::kRecorderDump).dump()};
    }
    case RouteId::kLabPage:
      return {200, "text/html; charset=utf-8", std::string(LabPageHtml())};
    case RouteId::kLabStats:
      return {200, kJson, LabStatsJson(ctx.engine->Stats(), ctx.engine->placement()).dump()};
    case RouteId::kRebalance:
      return Rebalance(body, ctx);
    case RouteId::kCompletions:
    case RouteId::kChat:
      break;
  }
  return {500, kJson,
          api::ErrorBody(absl::InternalError("a generation route reached AnswerInfoRoute"))};
}

}  // namespace moeserve::server
