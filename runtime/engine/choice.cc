#include "runtime/engine/choice.h"

#include <algorithm>

namespace moeserve::runtime {

Choice::Choice(int32_t index, int64_t seq_id, const GenerationRequest& request,
               const Tokenizer& tokenizer, int32_t eos_token_id)
    : index_(index),
      eos_token_id_(eos_token_id),
      max_tokens_(request.sampling.max_tokens.value_or(1)),
      sampler_(request.sampling, request.prompt, index),
      text_(tokenizer, request.text_continues_prompt ? request.prompt : std::vector<int32_t>{}),
      stop_(request.sampling.stop) {
  seq_.id = seq_id;
  seq_.tokens = request.prompt;
  seq_.num_prompt_tokens = static_cast<int64_t>(request.prompt.size());
}

ChoiceDelta Choice::OnLogits(const float* logits, int64_t vocab) {
  const SamplingParams& params = sampler_.params();
  ChoiceDelta delta;
  delta.index = index_;
  SampledToken sampled = sampler_.SampleWithLogprobs(logits, vocab);
  seq_.tokens.push_back(sampled.token);
  delta.tokens.push_back(sampled.token);
  if (params.logprobs) {
    delta.logprobs.push_back({sampled.token, sampled.logprob, std::move(sampled.top_logprobs)});
  }
  // EOS and stop tokens end the choice; like OpenAI / vLLM their text is not part of the output.
  const bool is_eos = sampled.token == eos_token_id_ && !params.ignore_eos;
  const bool is_stop_token = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(),
                                       sampled.token) != params.stop_token_ids.end();
  if (is_eos || is_stop_token) return Finish(std::move(delta), FinishReason::kStop);

  StopChecker::Result r = stop_.Push(text_.Push(sampled.token));
  delta.text = std::move(r.text);
  if (r.stopped) {
    finish_ = FinishReason::kStop;  // text after the stop string is dropped, not flushed
    delta.finish_reason = finish_;
    return delta;
  }
  if (seq_.num_generated_tokens() >= max_tokens_) {
    return Finish(std::move(delta), FinishReason::kLength);
  }
  return delta;
}

ChoiceDelta Choice::Abort(FinishReason reason) {
  ChoiceDelta delta;
  delta.index = index_;
  return Finish(std::move(delta), reason);
}

ChoiceDelta Choice::Finish(ChoiceDelta delta, FinishReason reason) {
  // Text held back (an incomplete character, a possible stop-string prefix) is final now.
  StopChecker::Result r = stop_.Push(text_.Flush());
  delta.text += r.text;
  if (!r.stopped) delta.text += stop_.Flush();
  finish_ = reason;
  delta.finish_reason = reason;
  return delta;
}

}  // namespace moeserve::runtime
