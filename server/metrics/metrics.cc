#include "server/metrics/metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve::server {
namespace {

// Latency buckets in seconds: 1 ms .. 60 s, roughly x2.5 apart (vLLM's TTFT buckets, extended
// down to 1 ms because the embedded model decodes a token in a few ms).
std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60};
}

void Header(const std::string& name, const std::string& type, const std::string& help,
            std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Scalar(const std::string& name, const std::string& type, const std::string& help, double value,
            std::string* out) {
  Header(name, type, help, out);
  absl::StrAppend(out, name, " ", value, "\n");
}

// Label values are ours (paths, status names, numbers), but escape anyway as the format asks.
std::string Escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// The imbalance lab's families (docs/imbalance-lab.md lists them with their label bounds):
// per (layer, expert), per (layer, rank), per layer and per (src, dst) link, over the last step
// ("last_step") and the sliding window ("window").
void RenderImbalanceLab(const parallel::EpStats& ep, std::string* out) {
  Scalar("moeserve_imbalance_window_steps", "gauge",
         "Steps in the sliding window of the *_window imbalance series.",
         static_cast<double>(ep.window_steps), out);
  using Grid = std::vector<std::vector<int64_t>>;
  const std::pair<const char*, const Grid*> expert_grids[] = {
      {"last_step", &ep.expert_tokens_last_step}, {"window", &ep.expert_tokens_window}};
  Header("moeserve_layer_expert_tokens", "gauge",
         "Rows routed to each expert of each layer, over the last step or the window.", out);
  for (const auto& [span, grid] : expert_grids) {
    for (size_t l = 0; l < grid->size(); ++l) {
      for (size_t e = 0; e < (*grid)[l].size(); ++e) {
        absl::StrAppend(out, "moeserve_layer_expert_tokens{layer=\"", l, "\",expert=\"", e,
                        "\",span=\"", span, "\"} ", (*grid)[l][e], "\n");
      }
    }
  }
  const std::pair<const char*, const Grid*> rank_grids[] = {
      {"last_step", &ep.rank_rows_per_layer_last_step}, {"window", &ep.rank_rows_per_layer_window}};
  Header("moeserve_layer_rank_rows", "gauge",
         "Expert rows each rank computed in each layer, over the last step or the window.", out);
  for (const auto& [span, grid] : rank_grids) {
    for (size_t l = 0; l < grid->size(); ++l) {
      for (size_t r = 0; r < (*grid)[l].size(); ++r) {
        absl::StrAppend(out, "moeserve_layer_rank_rows{layer=\"", l, "\",rank=\"", r, "\",span=\"",
                        span, "\"} ", (*grid)[l][r], "\n");
      }
    }
  }
  using Spreads = std::vector<parallel::LoadSpread>;
  struct SpreadFamily {
    const char* name;
    const char* help;
    const Spreads* last_step;
    const Spreads* window;
    bool cv;
  };
  const SpreadFamily spreads[] = {
      {"moeserve_layer_expert_imbalance_ratio", "Max / mean rows per expert of each layer.",
       &ep.expert_spread_last_step, &ep.expert_spread_window, false},
      {"moeserve_layer_expert_cv", "Coefficient of variation of rows per expert of each layer.",
       &ep.expert_spread_last_step, &ep.expert_spread_window, true},
      {"moeserve_layer_rank_imbalance_ratio", "Max / mean expert rows per rank of each layer.",
       &ep.rank_spread_last_step, &ep.rank_spread_window, false},
      {"moeserve_layer_rank_cv", "Coefficient of variation of expert rows per rank of each layer.",
       &ep.rank_spread_last_step, &ep.rank_spread_window, true},
  };
  for (const SpreadFamily& f : spreads) {
    Header(f.name, "gauge", f.help, out);
    for (const auto& [span, series] :
         {std::pair{"last_step", f.last_step}, std::pair{"window", f.window}}) {
      for (size_t l = 0; l < series->size(); ++l) {
        const parallel::LoadSpread& s = (*series)[l];
        absl::StrAppend(out, f.name, "{layer=\"", l, "\",span=\"", span, "\"} ",
                        f.cv ? s.cv : s.max_over_mean, "\n");
      }
    }
  }
  const std::pair<const char*, const Grid*> links[] = {
      {"moeserve_ep_link_rows_total", &ep.link_rows_total},
      {"moeserve_ep_link_bytes_total", &ep.link_bytes_total}};
  for (const auto& [name, grid] : links) {
    Header(name, "counter",
           std::string(name) == "moeserve_ep_link_rows_total"
               ? "Dispatch rows from rank src to rank dst (src == dst: computed locally)."
               : "Dispatch + combine bytes from rank src to rank dst.",
           out);
    for (size_t src = 0; src < grid->size(); ++src) {
      for (size_t dst = 0; dst < (*grid)[src].size(); ++dst) {
        absl::StrAppend(out, name, "{src=\"", src, "\",dst=\"", dst, "\"} ", (*grid)[src][dst],
                        "\n");
      }
    }
  }
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value, int64_t count) {
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();  // le semantics
  absl::MutexLock lock(&mu_);
  counts_[bucket] += count;
  sum_ += value * static_cast<double>(count);
  count_ += count;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string* out) const {
  absl::MutexLock lock(&mu_);
  Header(name, "histogram", help, out);
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(out, name, "_bucket{le=\"", bounds_[i], "\"} ", cumulative, "\n");
  }
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", count_, "\n", name, "_sum ", sum_, "\n", name,
                  "_count ", count_, "\n");
}

ServerMetrics::ServerMetrics()
    : ttft_(LatencyBuckets()), itl_(LatencyBuckets()), e2e_(LatencyBuckets()) {}

void ServerMetrics::CountRequest(const std::string& api, const std::string& endpoint,
                                 const std::string& code) {
  absl::MutexLock lock(&mu_);
  ++requests_[{api, endpoint, code}];
}

void ServerMetrics::ObserveInterToken(absl::Duration d, int64_t tokens) {
  if (tokens <= 0) return;
  itl_.Observe(absl::ToDoubleSeconds(d) / static_cast<double>(tokens), tokens);
}

std::string ServerMetrics::Render(const runtime::EngineStats& s) const {
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    Header("moeserve_requests_total", "counter",
           "Finished front-end calls by API, endpoint and status code.", &out);
    for (const auto& [key, count] : requests_) {
      const auto& [api, endpoint, code] = key;
      absl::StrAppend(&out, "moeserve_requests_total{api=\"", Escape(api), "\",endpoint=\"",
                      Escape(endpoint), "\",code=\"", Escape(code), "\"} ", count, "\n");
    }
  }
  ttft_.Render("moeserve_time_to_first_token_seconds",
               "Time from admission to the first generated token.", &out);
  itl_.Render("moeserve_inter_token_latency_seconds",
              "Time between consecutive generated tokens of a request.", &out);
  e2e_.Render("moeserve_request_latency_seconds", "Time from admission to the last token.", &out);

  Scalar("moeserve_engine_requests_submitted_total", "counter", "Requests admitted to the engine.",
         s.requests_submitted, &out);
  Scalar("moeserve_engine_requests_finished_total", "counter", "Requests the engine finished.",
         s.requests_finished, &out);
  Scalar("moeserve_engine_requests_cancelled_total", "counter",
         "Requests cancelled (client gone, deadline, shutdown).", s.requests_cancelled, &out);
  Scalar("moeserve_engine_requests_rejected_total", "counter",
         "Requests refused because the admission queue was full.", s.requests_rejected, &out);
  Scalar("moeserve_prompt_tokens_total", "counter",
         "Prompt tokens computed (recomputation after preemption included).", s.prompt_tokens,
         &out);
  Scalar("moeserve_generation_tokens_total", "counter", "Tokens generated.", s.generated_tokens,
         &out);
  Scalar("moeserve_engine_steps_total", "counter", "Engine steps (forward passes).", s.steps, &out);
  Scalar("moeserve_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.",
         s.preemptions, &out);
  Scalar("moeserve_queue_depth", "gauge", "Requests waiting for admission or a first schedule.",
         s.queue_depth, &out);
  Scalar("moeserve_running_sequences", "gauge", "Sequences in the running batch.",
         s.running_sequences, &out);
  Scalar("moeserve_kv_blocks_total", "gauge", "KV cache blocks, all ranks.", s.kv_blocks_total,
         &out);
  Scalar("moeserve_kv_blocks_used", "gauge", "KV cache blocks in use, all ranks.", s.kv_blocks_used,
         &out);
  Scalar("moeserve_kv_usage_ratio", "gauge", "KV cache blocks in use / total.",
         s.kv_blocks_total > 0
             ? static_cast<double>(s.kv_blocks_used) / static_cast<double>(s.kv_blocks_total)
             : 0.0,
         &out);
  Header("moeserve_expert_tokens_total", "counter", "Tokens routed to each expert of each layer.",
         &out);
  for (size_t layer = 0; layer < s.expert_tokens.size(); ++layer) {
    for (size_t expert = 0; expert < s.expert_tokens[layer].size(); ++expert) {
      absl::StrAppend(&out, "moeserve_expert_tokens_total{layer=\"", layer, "\",expert=\"", expert,
                      "\"} ", s.expert_tokens[layer][expert], "\n");
    }
  }
  // Expert parallelism: imbalance (max / mean, 1 = balanced) and per-rank traffic.
  const parallel::EpStats& ep = s.ep;
  Scalar("moeserve_expert_imbalance_ratio", "gauge",
         "Max / mean tokens per expert in the worst layer, cumulative.", ep.expert_imbalance_total,
         &out);
  Scalar("moeserve_expert_imbalance_last_step_ratio", "gauge",
         "Max / mean tokens per expert in the worst layer, last step.",
         ep.expert_imbalance_last_step, &out);
  Scalar("moeserve_rank_imbalance_ratio", "gauge",
         "Max / mean expert rows computed per rank, cumulative.", ep.rank_imbalance_total, &out);
  Scalar("moeserve_rank_imbalance_last_step_ratio", "gauge",
         "Max / mean expert rows computed per rank, last step.", ep.rank_imbalance_last_step, &out);
  struct RankFamily {
    const char* name;
    const char* help;
    double (*value)(const parallel::EpRankStats&);
  };
  const RankFamily families[] = {
      {"moeserve_ep_tokens_sent_total", "Dispatch rows sent to other ranks.",
       [](const parallel::EpRankStats& r) { return static_cast<double>(r.tokens_sent); }},
      {"moeserve_ep_tokens_received_total", "Dispatch rows received from other ranks.",
       [](const parallel::EpRankStats& r) { return static_cast<double>(r.tokens_received); }},
      {"moeserve_ep_bytes_sent_total", "Dispatch + combine bytes sent.",
       [](const parallel::EpRankStats& r) { return static_cast<double>(r.bytes_sent()); }},
      {"moeserve_ep_bytes_received_total", "Dispatch + combine bytes received.",
       [](const parallel::EpRankStats& r) { return static_cast<double>(r.bytes_received()); }},
      {"moeserve_ep_all_to_all_seconds_total", "Wall time in all-to-all collectives.",
       [](const parallel::EpRankStats& r) { return r.all_to_all_seconds; }},
  };
  for (const RankFamily& fam : families) {
    Header(fam.name, "counter", fam.help, &out);
    for (const parallel::EpRankStats& r : ep.ranks) {
      absl::StrAppend(&out, fam.name, "{rank=\"", r.rank, "\"} ", fam.value(r), "\n");
    }
  }
  RenderImbalanceLab(ep, &out);
  // EPLB (runtime/engine/eplb.h).
  Scalar("moeserve_eplb_rebalances_total", "counter",
         "Placement switches made by expert rebalancing (admin call or automatic).",
         static_cast<double>(s.eplb.rebalances), &out);
  Scalar("moeserve_eplb_last_pause_seconds", "gauge",
         "Longest time a rank's step loop was held by the last placement switch.",
         s.eplb.last_pause_ms / 1e3, &out);
  Scalar("moeserve_eplb_last_imbalance_before_ratio", "gauge",
         "Measured max / mean rank rows over the statistics window before the last switch.",
         s.eplb.last_imbalance_before, &out);
  Scalar("moeserve_eplb_last_imbalance_after_ratio", "gauge",
         "Projected max / mean rank rows after the last switch.", s.eplb.last_imbalance_after,
         &out);
  return out;
}

void RequestTimer::OnUpdate(const runtime::RequestUpdate& update) {
  // With n > 1 choices decode in lockstep: a step adds one token to each, so the step count is
  // the longest delta, not the sum.
  int64_t tokens = 0;
  for (const runtime::ChoiceDelta& c : update.choices) {
    tokens = std::max(tokens, static_cast<int64_t>(c.tokens.size()));
  }
  const absl::Time now = absl::Now();
  if (tokens > 0) {
    if (!first_token_seen_) {
      metrics_->ObserveTimeToFirstToken(now - submitted_at_);
      first_token_seen_ = true;
      if (tokens > 1) metrics_->ObserveInterToken(now - last_, tokens - 1);
    } else {
      metrics_->ObserveInterToken(now - last_, tokens);
    }
    last_ = now;
  }
  if (update.finished) metrics_->ObserveRequestLatency(now - submitted_at_);
}

}  // namespace moeserve::server
