// Choosing the next token from a row of logits, per sequence, with the OpenAI / vLLM parameters.
//
// Pipeline for one step (the order is vLLM v1's, so the same parameters mean the same thing):
//   1. penalties on a copy of the raw logits:
//        repetition_penalty r (vLLM): every token seen in the prompt or the output so far has its
//          logit divided by r when positive and multiplied by r when negative;
//        frequency_penalty f, presence_penalty p (OpenAI): logit -= f * count + p * (count > 0),
//          where count is how often the token occurs in the output so far (not the prompt).
//   2. temperature < 1e-5 (vLLM's epsilon; 0 is the usual spelling): greedy, the argmax of the
//      penalised logits, ties to the lowest id. Nothing below applies and no random draw is made.
//   3. logits / temperature, softmax;
//   4. min_p: drop tokens whose probability is below min_p * (the largest probability);
//   5. top_k: keep the k most likely (ties to the lower id);
//   6. top_p: keep the smallest most-likely-first prefix whose mass reaches top_p of what is left
//      (a token stays iff the mass strictly before it is < top_p); at least one token stays;
//   7. renormalise and draw one token with the sequence's own generator (inverse CDF over the
//      surviving ids in id order).
// Cost per step: O(vocab) passes, exp only for the min_p / top_k survivors, and top_k / top_p by
// expected-linear selection (nth_element), never a sort of the vocabulary.
//
// Logprobs (when params.logprobs): log_softmax of the RAW logits, before penalties and
// temperature (vLLM's default logprobs_mode "raw_logprobs"): the sampled token's logprob and the
// top_logprobs most likely tokens of that raw distribution. They describe what the model
// predicted, independent of how the request chose to sample from it.
//
// Determinism: the k-th draw of a sequence depends only on (seed, choice index, k) — a
// counter-based SplitMix64 stream — so a seeded request gives the same tokens whatever else is in
// the batch, in whatever order sequences are sampled, and after a preemption that keeps the
// Sampler. Without a seed, each Sampler draws one from a process-wide counter mixed with
// std::random_device (different on every request and every run).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/ops/sampling.h"

namespace moeserve::runtime {

inline constexpr int32_t kMaxTopLogprobs = 20;  // OpenAI's limit for top_logprobs
inline constexpr int32_t kMaxStopStrings = 16;
inline constexpr int32_t kMaxChoices = 128;            // OpenAI's limit for n
inline constexpr float kGreedyTemperature = 1e-5f;     // temperature below this is greedy (vLLM)
inline constexpr float kImpossibleLogprob = -9999.0f;  // what OpenAI reports for p = 0

// One request's sampling parameters, as the OpenAI / gRPC front ends parse them. The first four
// fields keep their order so `SamplingParams{temperature, top_k, top_p, seed}` keeps working.
struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = -1;        // -1 or 0: no limit; < -1 invalid
  float top_p = 1.0f;        // (0, 1]
  // Absent: a fresh seed per Sampler. Present: same seed, same tokens (for each choice index).
  std::optional<uint64_t> seed;
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float frequency_penalty = 0.0f;   // [-2, 2]
  float presence_penalty = 0.0f;    // [-2, 2]
  int32_t n = 1;                    // choices per request, [1, kMaxChoices]
  // >= 1. Absent: up to the context length (see ResolveMaxTokens).
  std::optional<int64_t> max_tokens;
  bool ignore_eos = false;              // keep going after EOS (stop_token_ids still stop)
  std::vector<std::string> stop;        // <= kMaxStopStrings non-empty UTF-8 strings
  std::vector<int32_t> stop_token_ids;  // >= 0 each
  bool logprobs = false;                // return the sampled token's logprob
  int32_t top_logprobs = 0;             // [0, kMaxTopLogprobs]; > 0 needs logprobs

  // InvalidArgument naming the field and the value, e.g. "top_p must be in (0, 1], got 1.5".
  absl::Status Validate() const;
  // The number of tokens to generate at most for a prompt of `prompt_tokens` in a context of
  // `context_length` positions: max_tokens, or what is left of the context when absent.
  // InvalidArgument when the prompt leaves no room or prompt + max_tokens exceeds the context.
  absl::StatusOr<int64_t> ResolveMaxTokens(int64_t prompt_tokens, int64_t context_length) const;
};

// Index of the largest logit; ties go to the lowest id. REQUIRES: vocab >= 1.
int32_t ArgMax(const float* logits, int64_t vocab);

// What one sampling step produced.
struct SampledToken {
  int32_t token = 0;
  // Natural-log probabilities of the raw distribution, only when params.logprobs; -inf (a
  // masked logit) is reported as kImpossibleLogprob so it survives JSON.
  float logprob = 0.0f;  // of `token`
  // (token, logprob) of the params.top_logprobs most likely tokens, most likely first, ties to
  // the lower id.
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// A token the next draw may produce and its probability (after every filter, renormalised).
struct TokenProbability {
  int32_t token = 0;
  double probability = 0.0;
};

// One sequence's sampler: the parameters, the random stream and the token history the penalties
// need. Threading: not thread-safe; one thread (the engine loop) calls it, but different Samplers
// are independent and may be used from different threads at once. Movable; keep it for the whole
// life of the sequence (across preemptions) so draws and penalties continue where they were.
class Sampler {
 public:
  // A sequence without prompt history (repetition_penalty then sees only the output) and choice
  // index 0. REQUIRES: params.Validate().ok().
  explicit Sampler(const SamplingParams& params);
  // `prompt_tokens`: the prompt, for repetition_penalty (not kept when the penalty is off).
  // `choice_index` in [0, params.n): choice i of a request with a seed draws from its own stream,
  // fixed by (seed, i). REQUIRES: params.Validate().ok().
  Sampler(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
          int32_t choice_index);

  // Samples the next token from `logits` ([vocab], the model's raw output row) and records it in
  // the output history. Call exactly once per generated token: each call advances the random
  // stream and the penalty counts. REQUIRES: vocab >= 1.
  int32_t Sample(const float* logits, int64_t vocab);
  // Same, plus logprob / top_logprobs when the params ask for them.
  SampledToken SampleWithLogprobs(const float* logits, int64_t vocab);

  // The distribution the next draw would use (steps 1-6 above): the tokens with probability > 0
  // in id order; for greedy, the argmax with probability 1. Records nothing.
  std::vector<TokenProbability> Distribution(const float* logits, int64_t vocab) const;

  // This sequence's next draw for the device sampler (kernels/ops/sampling.h): fills *row and
  // appends the penalty history (distinct tokens, in no particular order) to the three arrays,
  // setting row->history_begin / history_end to their indices. The op then samples what
  // Sample / SampleWithLogprobs would (the caller records the token with RecordSampled).
  void AppendSampleRow(kernels::SampleRow* row, std::vector<int32_t>* history_tokens,
                       std::vector<int32_t>* history_output_counts,
                       std::vector<uint8_t>* history_in_prompt) const;
  // Records a token the device sampled from this Sampler's AppendSampleRow: advances the random
  // stream and the penalty counts exactly as Sample does.
  void RecordSampled(int32_t token) { Record(token); }

  // The explicit seed, or the one drawn for this Sampler.
  uint64_t seed() const { return seed_; }
  int64_t num_output_tokens() const { return num_output_tokens_; }
  const SamplingParams& params() const { return params_; }

 private:
  struct TokenHistory {
    bool in_prompt = false;
    int32_t output_count = 0;
  };

  bool Greedy() const { return params_.temperature < kGreedyTemperature; }
  bool PenaltiesOn() const;
  // The logits after penalties: `logits` itself when none apply, else a thread-local copy.
  const float* PenalisedLogits(const float* logits, int64_t vocab) const;
  // [vocab] unnormalised probabilities after temperature, min_p, top_k and top_p (0 for the
  // tokens filtered out); returns their sum.
  double FilteredWeights(const float* logits, int64_t vocab, std::vector<double>* weights) const;
  int32_t Draw(const float* logits, int64_t vocab);
  void Record(int32_t token);

  SamplingParams params_;
  uint64_t seed_;
  uint64_t stream_key_;  // SplitMix64 state base for this (seed, choice index)
  int64_t num_output_tokens_ = 0;
  // Tokens of the prompt and the output, only when a penalty is on.
  absl::flat_hash_map<int32_t, TokenHistory> history_;
};

}  // namespace moeserve::runtime
