// Prometheus metrics of the daemon, written in the text exposition format (version 0.0.4).
//
// Front ends record what only they see (requests by endpoint and status code, time to first
// token, inter-token latency, end-to-end latency); the engine's counters, gauges and per-expert
// token counts are read from Engine::Stats() at scrape time. We write the text format ourselves
// rather than link prometheus-cpp: its Debian package pulls in civetweb and libcurl for an
// exposer we do not need (server/http serves /metrics), and the format is a few lines per family.
//
// Thread-safe: every method may be called from any front-end thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/request.h"

namespace moeserve::server {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value, int64_t count = 1);
  // Appends "# HELP", "# TYPE" and the _bucket / _sum / _count lines of `name`.
  void Render(const std::string& name, const std::string& help, std::string* out) const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative; +Inf last
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  // One finished call: api "http" or "grpc", endpoint "/v1/completions" or "Generate", code the
  // HTTP status or the gRPC status name.
  void CountRequest(const std::string& api, const std::string& endpoint, const std::string& code);
  void ObserveTimeToFirstToken(absl::Duration d) { ttft_.Observe(absl::ToDoubleSeconds(d)); }
  // `tokens` tokens arrived `d` after the previous ones: each gets d / tokens.
  void ObserveInterToken(absl::Duration d, int64_t tokens);
  void ObserveRequestLatency(absl::Duration d) { e2e_.Observe(absl::ToDoubleSeconds(d)); }

  // The whole exposition: front-end metrics followed by the engine's.
  std::string Render(const runtime::EngineStats& stats) const;

 private:
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
  mutable absl::Mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, int64_t> requests_
      ABSL_GUARDED_BY(mu_);
};

// Times one request's stream for the latency histograms: feed it every update in order.
class RequestTimer {
 public:
  RequestTimer(ServerMetrics* metrics, absl::Time submitted_at)
      : metrics_(metrics), submitted_at_(submitted_at), last_(submitted_at) {}
  void OnUpdate(const runtime::RequestUpdate& update);

 private:
  ServerMetrics* metrics_;
  absl::Time submitted_at_;
  absl::Time last_;
  bool first_token_seen_ = false;
};

}  // namespace moeserve::server
