// One choice (of a request's n) being generated: its scheduler Sequence plus everything that turns
// its next token into output: the Sampler (own generator, penalty history; the model step samples
// on the device from the Sampler's row), incremental detokenization, stop strings / stop tokens /
// EOS / max_tokens.
//
// Threading: owned by the worker thread that runs the sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine/request.h"
#include "runtime/engine/text_stream.h"
#include "runtime/model/step_sampling.h"
#include "runtime/sampling/sampler.h"
#include "runtime/sampling/stop_checker.h"
#include "runtime/scheduler/sequence.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {

class Choice {
 public:
  // REQUIRES: request.sampling validated, with max_tokens resolved (Engine::Submit does both).
  Choice(int32_t index, int64_t seq_id, const GenerationRequest& request,
         const Tokenizer& tokenizer, int32_t eos_token_id);

  Sequence& seq() { return seq_; }
  int32_t index() const { return index_; }
  bool finished() const { return finish_ != FinishReason::kNone; }
  // The choice's routing trace when the request asked for it (the step writes it), else null.
  RoutingTrace* routing() { return routing_.get(); }

  // Asks the step to sample this choice's next token from the logits of batch[batch_index]'s last
  // token (one row of `sampling`, from the Sampler).
  void AddSampleRow(int64_t batch_index, StepSampling* sampling) const;
  // Takes the token the step sampled for that row (StepOutput::sampled): records it in the
  // Sampler, appends it to the sequence, and returns what the client gets: the token, newly final
  // text, logprobs, and a finish reason when this token ends the choice (EOS, stop token, stop
  // string, max_tokens: StopChecker's OpenAI semantics).
  ChoiceDelta OnSampled(SampledToken sampled);
  // Ends the choice without a token (cancelled, failed); emits text still held back.
  ChoiceDelta Abort(FinishReason reason);

 private:
  const int32_t index_;
  Sequence seq_;
  Sampler sampler_;
  TextStream text_;
  StopChecker stop_;
  FinishReason finish_ = FinishReason::kNone;
  std::shared_ptr<RoutingTrace> routing_;  // return_routing only
};

}  // namespace moeserve::runtime
