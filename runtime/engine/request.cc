#include "runtime/engine/request.h"

#include "absl/strings/str_cat.h"

namespace moeserve::runtime {

absl::Status CheckRoutingBound(const GenerationRequest& request, int64_t num_layers,
                               int64_t max_entries) {
  if (!request.return_routing) return absl::OkStatus();
  // The last sampled token is never run, so it has no routing.
  const int64_t tokens =
      static_cast<int64_t>(request.prompt.size()) + request.sampling.max_tokens.value_or(1) - 1;
  const int64_t entries = int64_t{request.sampling.n} * tokens * num_layers;
  if (entries <= max_entries) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "return_routing: the trace would hold n=", request.sampling.n, " x ", tokens, " tokens x ",
      num_layers, " layers = ", entries, " entries, over the limit of ", max_entries,
      " (--max-routing-entries); lower max_tokens, n or the prompt length"));
}

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "";
}

namespace {

// Appends `next` to `into`: both describe the same request, `next` later.
void Merge(RequestUpdate& into, RequestUpdate&& next) {
  for (ChoiceDelta& d : next.choices) {
    ChoiceDelta* target = nullptr;
    for (ChoiceDelta& existing : into.choices) {
      if (existing.index == d.index) target = &existing;
    }
    if (target == nullptr) {
      into.choices.push_back(std::move(d));
      continue;
    }
    target->tokens.insert(target->tokens.end(), d.tokens.begin(), d.tokens.end());
    target->text += d.text;
    for (TokenLogprob& lp : d.logprobs) target->logprobs.push_back(std::move(lp));
    if (d.finish_reason != FinishReason::kNone) target->finish_reason = d.finish_reason;
    if (d.routing != nullptr) target->routing = std::move(d.routing);
  }
  into.finished = into.finished || next.finished;
  if (!next.status.ok()) into.status = next.status;
  into.usage = next.usage;
}

}  // namespace

std::optional<RequestUpdate> RequestStream::Next(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(absl::Condition(
                            +[](std::deque<RequestUpdate>* q) { return !q->empty(); }, &pending_),
                        deadline);
  if (pending_.empty()) return std::nullopt;
  RequestUpdate out = std::move(pending_.front());
  pending_.pop_front();
  while (!pending_.empty()) {
    Merge(out, std::move(pending_.front()));
    pending_.pop_front();
  }
  return out;
}

void RequestStream::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

bool RequestStream::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void RequestStream::SetOnPush(std::function<void()> on_push) {
  bool pending = false;
  {
    absl::MutexLock lock(&mu_);
    on_push_ = on_push;
    pending = !pending_.empty();
  }
  if (on_push && pending) on_push();
}

void RequestStream::Push(RequestUpdate update) {
  std::function<void()> on_push;
  {
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(update));
    on_push = on_push_;
  }
  if (on_push) on_push();
}

}  // namespace moeserve::runtime
