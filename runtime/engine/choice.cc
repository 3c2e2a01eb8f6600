#include "runtime/engine/choice.h"

namespace moeserve::runtime {

Choice::Choice(int32_t index, int64_t seq_id, const GenerationRequest& request,
               const Tokenizer& tokenizer, int32_t eos_token_id)
    : index_(index),
      sampler_(request.sampling, request.prompt, index),
      text_(tokenizer, request.text_continues_prompt ? request.prompt : std::vector<int32_t>{}),
      stop_(request.sampling, eos_token_id, request.sampling.max_tokens.value_or(1)) {
  seq_.id = seq_id;
  seq_.tokens = request.prompt;
  seq_.num_prompt_tokens = static_cast<int64_t>(request.prompt.size());
  if (request.return_routing) routing_ = std::make_shared<RoutingTrace>();
}

void Choice::AddSampleRow(int64_t batch_index, StepSampling* sampling) const {
  sampling->Add(batch_index, sampler_);
}

ChoiceDelta Choice::OnSampled(SampledToken sampled) {
  ChoiceDelta delta;
  delta.index = index_;
  sampler_.RecordSampled(sampled.token);
  seq_.tokens.push_back(sampled.token);
  delta.tokens.push_back(sampled.token);
  if (sampler_.params().logprobs) {
    delta.logprobs.push_back({sampled.token, sampled.logprob, std::move(sampled.top_logprobs)});
  }
  StopCheckResult r = stop_.Append(sampled.token, text_.Push(sampled.token));
  delta.text = std::move(r.text);
  if (r.finished()) {
    finish_ = r.cause == StopCause::kMaxTokens ? FinishReason::kLength : FinishReason::kStop;
    delta.finish_reason = finish_;
    delta.routing = routing_;  // the step that sampled this token ran every traced one
  }
  return delta;
}

ChoiceDelta Choice::Abort(FinishReason reason) {
  ChoiceDelta delta;
  delta.index = index_;
  delta.text = stop_.Flush();  // text held back for a possible stop string is final now
  finish_ = reason;
  delta.finish_reason = reason;
  return delta;
}

}  // namespace moeserve::runtime
