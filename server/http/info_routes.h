// The answers of the daemon's HTTP routes that do not generate: /v1/models, /health, /metrics,
// the imbalance lab's recorder, live page, stats and rebalance. Pure request -> answer functions
// over the serving context (no Beast); http_server.cc writes the answer and counts it.
#pragma once

#include <string>

#include "server/api/serving_context.h"
#include "server/http/routes.h"

namespace moeserve::server {

struct RouteAnswer {
  int status = 200;
  std::string content_type;
  std::string body;
};

// The answer to `id` (any route but kCompletions / kChat) with request body `body`.
RouteAnswer AnswerInfoRoute(RouteId id, const std::string& body, ServingContext& ctx);

}  // namespace moeserve::server
