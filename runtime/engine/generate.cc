#include "runtime/engine/generate.h"

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {

absl::StatusOr<GenerateResult> Generate(MixtralModel& model, KvBlockPool& pool,
                                        const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) return absl::InvalidArgumentError("generate: the prompt is empty");
  if (options.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("generate: max_tokens=", options.max_tokens, " must be > 0"));
  }
  MOESERVE_RETURN_IF_ERROR(options.sampling.Validate());
  const int64_t context = model.config().max_position_embeddings;
  if (static_cast<int64_t>(prompt.size()) + options.max_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat("generate: prompt (", prompt.size(),
                                                   " tokens) + max_tokens (", options.max_tokens,
                                                   ") exceeds the context length ", context));
  }

  SequenceKv kv;
  Sampler sampler(options.sampling);
  GenerateResult result;
  StepOutput out;
  auto run = [&](std::vector<int32_t> tokens) -> absl::Status {
    SequenceStep step{std::move(tokens), &kv, false};
    absl::Status st = model.Forward(absl::MakeSpan(&step, 1), pool, &out);
    if (!st.ok()) pool.Release(kv);
    return st;
  };
  const int64_t chunk =
      options.prefill_chunk > 0 ? options.prefill_chunk : static_cast<int64_t>(prompt.size());
  for (size_t begin = 0; begin < prompt.size(); begin += static_cast<size_t>(chunk)) {
    const size_t end = std::min(prompt.size(), begin + static_cast<size_t>(chunk));
    MOESERVE_RETURN_IF_ERROR(run({prompt.begin() + static_cast<int64_t>(begin),
                                  prompt.begin() + static_cast<int64_t>(end)}));
  }
  while (true) {
    const int32_t token = sampler.Sample(out.last_row(0), out.vocab);
    result.tokens.push_back(token);
    if (on_token) on_token(token);
    if (options.stop_at_eos && token == model.config().eos_token_id) {
      result.stopped_at_eos = true;
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens) break;
    MOESERVE_RETURN_IF_ERROR(run({token}));
  }
  pool.Release(kv);
  return result;
}

}  // namespace moeserve::runtime
