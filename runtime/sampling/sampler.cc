#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/sampling.h"
#include "runtime/sampling/stop_checker.h"

namespace moeserve::runtime {
namespace {

namespace kcpu = ::moeserve::kernels::cpu;

// The per-row math is kernels/cpu/sampling.cc's (shared with cpu::Sample, the reference of the
// device sampler); these constants are the same values under the runtime's names.
static_assert(kGreedyTemperature == kernels::kSampleGreedyTemperature);
static_assert(kImpossibleLogprob == kernels::kSampleImpossibleLogprob);

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, SplitMix64's step

// A seed for a request that gave none: a per-process random base (std::random_device, or the
// clock where that is unavailable) plus a counter, so concurrent requests never share one.
uint64_t DrawSeed() {
  static const uint64_t base = [] {
    try {
      std::random_device device;
      return (static_cast<uint64_t>(device()) << 32) ^ device();
    } catch (...) {  // std::random_device may throw where no entropy source exists
      return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
  }();
  static std::atomic<uint64_t> counter{0};
  return kcpu::Mix64(base + kGolden * counter.fetch_add(1, std::memory_order_relaxed));
}

kcpu::SampleFilter FilterOf(const SamplingParams& params) {
  return {params.temperature, params.top_k, params.top_p, params.min_p};
}

// Per-thread [vocab] copy of the logits for penalties (the engine loop samples every sequence
// on one thread), so a sequence owns no vocab-sized buffer.
std::vector<float>& PenaltyScratch() {
  thread_local std::vector<float> logits;
  return logits;
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  auto invalid = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return invalid("temperature must be a finite number >= 0, got ", temperature);
  }
  if (top_k < -1) return invalid("top_k must be -1 or 0 (no limit) or >= 1, got ", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid("top_p must be in (0, 1], got ", top_p);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid("min_p must be in [0, 1], got ", min_p);
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return invalid("repetition_penalty must be a finite number > 0, got ", repetition_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return invalid("frequency_penalty must be in [-2, 2], got ", frequency_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return invalid("presence_penalty must be in [-2, 2], got ", presence_penalty);
  }
  if (n < 1 || n > kMaxChoices) return invalid("n must be in [1, ", kMaxChoices, "], got ", n);
  if (max_tokens && *max_tokens < 1) return invalid("max_tokens must be >= 1, got ", *max_tokens);
  if (stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return invalid("stop may hold at most ", kMaxStopStrings, " strings, got ", stop.size());
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) return invalid("stop[", i, "] must not be empty");
    if (!IsValidUtf8(stop[i])) return invalid("stop[", i, "] is not valid UTF-8");
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0) {
      return invalid("stop_token_ids[", i, "] must be a token id >= 0, got ", stop_token_ids[i]);
    }
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return invalid("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ", top_logprobs);
  }
  if (top_logprobs > 0 && !logprobs) {
    return invalid("top_logprobs=", top_logprobs, " needs logprobs to be true");
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SamplingParams::ResolveMaxTokens(int64_t prompt_tokens,
                                                         int64_t context_length) const {
  const int64_t room = context_length - prompt_tokens;
  if (room < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt_tokens,
                                                   " tokens, which leaves no room to generate ",
                                                   "within the context length ", context_length));
  }
  if (!max_tokens) return room;
  if (*max_tokens > room) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens=", *max_tokens, " plus the prompt's ", prompt_tokens,
                     " tokens exceeds the context ", "length ", context_length));
  }
  return *max_tokens;
}

int32_t ArgMax(const float* logits, int64_t vocab) { return kcpu::ArgMax(logits, vocab); }

Sampler::Sampler(const SamplingParams& params) : Sampler(params, {}, 0) {}

Sampler::Sampler(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                 int32_t choice_index)
    : params_(params), seed_(params.seed ? *params.seed : DrawSeed()) {
  stream_key_ = kcpu::SampleStreamKey(seed_, static_cast<uint64_t>(choice_index));
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t token : prompt_tokens) history_[token].in_prompt = true;
  }
}

bool Sampler::PenaltiesOn() const {
  return params_.repetition_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
         params_.presence_penalty != 0.0f;
}

const float* Sampler::PenalisedLogits(const float* logits, int64_t vocab) const {
  if (history_.empty()) return logits;
  std::vector<float>& out = PenaltyScratch();
  out.assign(logits, logits + vocab);
  const kcpu::SamplePenalties penalties{params_.repetition_penalty, params_.frequency_penalty,
                                        params_.presence_penalty};
  // Each token is penalised independently, so the hash map's iteration order does not matter.
  for (const auto& [token, seen] : history_) {
    if (token < 0 || token >= vocab) continue;
    float& logit = out[static_cast<size_t>(token)];
    logit = kcpu::PenalisedLogit(logit, penalties, seen.output_count);
  }
  return out.data();
}

double Sampler::FilteredWeights(const float* logits, int64_t vocab,
                                std::vector<double>* weights) const {
  return kcpu::FilteredWeights(logits, vocab, FilterOf(params_), weights);
}

std::vector<TokenProbability> Sampler::Distribution(const float* logits, int64_t vocab) const {
  const float* penalised = PenalisedLogits(logits, vocab);
  if (Greedy()) return {{ArgMax(penalised, vocab), 1.0}};
  std::vector<double> weights;
  const double total = FilteredWeights(penalised, vocab, &weights);
  std::vector<TokenProbability> out;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] > 0.0) out.push_back({static_cast<int32_t>(i), weights[i] / total});
  }
  return out;
}

int32_t Sampler::Draw(const float* logits, int64_t vocab) {
  // Draw k of this stream is SplitMix64 output k: a function of (stream key, k) only.
  return kcpu::SampleToken(
      PenalisedLogits(logits, vocab), vocab, FilterOf(params_),
      kcpu::SampleDrawBits(stream_key_, static_cast<uint64_t>(num_output_tokens_)));
}

void Sampler::AppendSampleRow(kernels::SampleRow* row, std::vector<int32_t>* history_tokens,
                              std::vector<int32_t>* history_output_counts,
                              std::vector<uint8_t>* history_in_prompt) const {
  row->temperature = params_.temperature;
  row->top_k = params_.top_k;
  row->top_p = params_.top_p;
  row->min_p = params_.min_p;
  row->repetition_penalty = params_.repetition_penalty;
  row->frequency_penalty = params_.frequency_penalty;
  row->presence_penalty = params_.presence_penalty;
  row->num_top_logprobs = params_.logprobs ? params_.top_logprobs : 0;
  row->stream_key = stream_key_;
  row->draw_index = static_cast<uint64_t>(num_output_tokens_);
  row->history_begin = static_cast<int32_t>(history_tokens->size());
  for (const auto& [token, seen] : history_) {
    history_tokens->push_back(token);
    history_output_counts->push_back(seen.output_count);
    history_in_prompt->push_back(seen.in_prompt ? 1 : 0);
  }
  row->history_end = static_cast<int32_t>(history_tokens->size());
}

void Sampler::Record(int32_t token) {
  ++num_output_tokens_;
  if (PenaltiesOn()) ++history_[token].output_count;
}

int32_t Sampler::Sample(const float* logits, int64_t vocab) {
  const int32_t token = Draw(logits, vocab);
  Record(token);
  return token;
}

SampledToken Sampler::SampleWithLogprobs(const float* logits, int64_t vocab) {
  SampledToken out;
  out.token = Draw(logits, vocab);
  Record(out.token);
  if (!params_.logprobs) return out;

  // log_softmax of the raw logits in double.
  const double log_normaliser = kcpu::LogNormaliser(logits, vocab);
  out.logprob = kcpu::Logprob(logits, out.token, log_normaliser);
  const std::vector<int32_t> best = kcpu::TopTokens(logits, vocab, params_.top_logprobs);
  out.top_logprobs.reserve(best.size());
  for (int32_t id : best)
    out.top_logprobs.emplace_back(id, kcpu::Logprob(logits, id, log_normaliser));
  return out;
}

}  // namespace moeserve::runtime
