// What every front end of the daemon shares: the engine, the tokenizer, the request limits, the
// metrics and the drain flag. Owned by `moeserve serve`; outlives the front ends.
#pragma once

#include <atomic>
#include <string>

#include "runtime/engine/engine.h"
#include "runtime/tokenizer/tokenizer.h"
#include "server/api/api_request.h"
#include "server/metrics/metrics.h"

namespace moeserve::server {

struct ServingContext {
  runtime::Engine* engine = nullptr;
  const runtime::Tokenizer* tokenizer = nullptr;
  api::ApiLimits limits;
  ServerMetrics* metrics = nullptr;
  std::string model_source;   // model directory or "embedded:tiny"
  std::string server_config;  // the effective configuration, as printed at start-up
  int64_t max_body_bytes = 0;
  // Set by SIGTERM / SIGINT: new requests get 503 / UNAVAILABLE, /health reports draining.
  std::atomic<bool> draining{false};
  // Generation calls admitted by the engine whose response is not fully written yet; the drain
  // waits for 0 so the last chunks reach the clients before the listeners close.
  std::atomic<int64_t> active_calls{0};
};

}  // namespace moeserve::server
