// What a front end hands the engine, and what streams back.
//
// A front end (gRPC, HTTP, CLI) tokenizes and validates a request, Submits it to the Engine and
// reads RequestUpdates from the returned RequestStream until one has `finished` set. The engine
// thread pushes updates; the front-end thread pulls them; nothing blocks the engine thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "parallel/moe/skew_profile.h"
#include "runtime/model/routing_trace.h"
#include "runtime/sampling/sampler.h"

namespace moeserve::runtime {

struct GenerationRequest {
  std::string request_id;       // for logs and stats; the engine assigns one when empty
  std::vector<int32_t> prompt;  // token ids, BOS included; non-empty
  SamplingParams sampling;      // validated by Engine::Submit
  // True for a completion (the output continues the prompt's text, so the first word keeps its
  // leading space); false for a chat answer, decoded on its own like mistral-common does.
  bool text_continues_prompt = true;
  // Load testing: router skew for this request's tokens only (the `router_skew` request field;
  // null: the daemon's --router-skew default, usually none). Validated by Engine::Submit.
  std::shared_ptr<const parallel::SkewProfile> router_skew;
  // Routing traces (the `return_routing` request field): each choice's final update carries the
  // experts and weights the router chose for its tokens. Bounded by
  // EngineOptions::max_routing_entries, checked by Engine::Submit.
  bool return_routing = false;
};

// InvalidArgument when `request` asks for its routing trace and the trace could hold more than
// `max_entries` (token, layer) entries: n x (prompt + max_tokens - 1) x num_layers. REQUIRES:
// sampling.max_tokens resolved. OK when return_routing is off.
absl::Status CheckRoutingBound(const GenerationRequest& request, int64_t num_layers,
                               int64_t max_entries);

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // top_logprobs alternatives, best first
};

// New output of one choice (one of the request's n samples) since the previous update.
struct ChoiceDelta {
  int32_t index = 0;
  std::vector<int32_t> tokens;         // tokens generated in this step (usually one)
  std::string text;                    // newly final text: valid UTF-8, stop strings removed
  std::vector<TokenLogprob> logprobs;  // one per token when the request asked for logprobs
  FinishReason finish_reason = FinishReason::kNone;
  // With return_routing, on the delta that finishes the choice (stop or length): the routing of
  // every token the model ran for it (routing_trace.h). Null otherwise.
  std::shared_ptr<const RoutingTrace> routing;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // summed over the n choices
};

struct RequestUpdate {
  std::vector<ChoiceDelta> choices;
  bool finished = false;  // the last update of the request: every choice has finished
  absl::Status status;    // not OK when the engine failed the request (finish_reason kError)
  Usage usage;            // running totals
};

// The engine -> front end channel of one request. Thread-safe.
class RequestStream {
 public:
  explicit RequestStream(std::string request_id) : request_id_(std::move(request_id)) {}

  const std::string& request_id() const { return request_id_; }

  // Front end: the next update, waiting until `deadline`; nullopt on timeout. Consecutive pending
  // updates are merged into one, so a slow reader gets fewer, larger updates.
  std::optional<RequestUpdate> Next(absl::Time deadline);
  // Front end: stop generating (client went away, deadline passed). The engine frees the
  // request's KV blocks at its next step and pushes a final kCancelled update.
  void Cancel();
  bool cancelled() const;

  // Front end: `on_push` runs after every Push, on the pushing (engine) thread and outside the
  // stream's lock, so an event-driven front end learns of new output without polling or a
  // thread per request. It must not block (post to an event loop) and may call Next. Runs once
  // at once when updates are already pending; null removes it.
  void SetOnPush(std::function<void()> on_push);

  // Engine side.
  void Push(RequestUpdate update);
  absl::Time submitted_at() const { return submitted_at_; }

 private:
  const std::string request_id_;
  const absl::Time submitted_at_ = absl::Now();
  mutable absl::Mutex mu_;
  std::deque<RequestUpdate> pending_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_push_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::runtime
