#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/sampling/stop_checker.h"

namespace moeserve::runtime {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, SplitMix64's step

// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

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
  return Mix64(base + kGolden * counter.fetch_add(1, std::memory_order_relaxed));
}

// Strict "a is more likely than b" over ids: higher logit first, ties to the lower id. A total
// order, so every selection below picks the same set whatever algorithm std:: uses.
struct MoreLikely {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// The same order as MoreLikely, as one integer per candidate so selection compares plain
// uint64_t (no indirect loads or tie branches): ascending key = descending logit, then ascending
// id. The logit's bits are mapped so that unsigned order matches float order (NaN excluded).
uint64_t OrderKey(float logit, int32_t id) {
  if (logit == 0.0f) logit = 0.0f;  // -0 and +0 are one value, tied by id
  uint32_t bits;
  std::memcpy(&bits, &logit, sizeof(bits));
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(id);
}
int32_t KeyId(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

// Largest logit, ignoring NaN; -inf when there is none.
float MaxLogit(const float* logits, int64_t vocab) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) best = std::max(best, logits[i]);
  return best;
}

// Per-thread scratch (the engine loop samples every sequence on one thread): a [vocab] copy of
// the logits for penalties and the candidate list, so a sequence owns no vocab-sized buffer.
struct Scratch {
  std::vector<float> logits;    // [vocab] penalised logits
  std::vector<uint64_t> keys;   // OrderKey of the candidates while filtering
  std::vector<double> weights;  // [vocab] filtered, unnormalised probabilities
};
Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Keeps the smallest most-likely-first prefix of `keys` (OrderKey) whose mass reaches `target`
// (a token stays iff the mass strictly before it is < target) and returns its length; `keys` is
// reordered so that prefix comes first, in no particular order. Expected O(n): halving
// nth_element steps narrow down where the cut falls; only the last <= 64 keys are sorted.
size_t NucleusSize(std::vector<uint64_t>& keys, const std::vector<double>& weights, double target) {
  auto at = [&](size_t i) { return keys.begin() + static_cast<int64_t>(i); };
  auto weight = [&](size_t i) { return weights[static_cast<size_t>(KeyId(keys[i]))]; };
  size_t lo = 0, hi = keys.size();  // the cut is in (lo, hi]
  double before = 0.0;              // mass of keys[0, lo), each more likely than keys[lo, n)
  while (hi - lo > 64) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(at(lo), at(mid), at(hi));
    double mass = 0.0;
    for (size_t i = lo; i < mid; ++i) mass += weight(i);
    if (before + mass >= target) {
      hi = mid;
    } else {
      before += mass;
      lo = mid;
    }
  }
  std::sort(at(lo), at(hi));
  for (size_t i = lo; i < hi; ++i) {
    if (!(before < target)) return std::max<size_t>(i, 1);
    before += weight(i);
  }
  return hi;
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

int32_t ArgMax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplingParams& params) : Sampler(params, {}, 0) {}

Sampler::Sampler(const SamplingParams& params, absl::Span<const int32_t> prompt_tokens,
                 int32_t choice_index)
    : params_(params), seed_(params.seed ? *params.seed : DrawSeed()) {
  // Two mixing rounds so that neighbouring seeds and neighbouring choice indices land on
  // unrelated streams.
  stream_key_ = Mix64(Mix64(seed_) + kGolden * (static_cast<uint64_t>(choice_index) + 1));
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
  std::vector<float>& out = ThreadScratch().logits;
  out.assign(logits, logits + vocab);
  const float repetition = params_.repetition_penalty;
  // Each token is penalised independently, so the hash map's iteration order does not matter.
  for (const auto& [token, seen] : history_) {
    if (token < 0 || token >= vocab) continue;
    float& logit = out[static_cast<size_t>(token)];
    if (repetition != 1.0f) logit = logit > 0.0f ? logit / repetition : logit * repetition;
    if (seen.output_count > 0) {
      logit -= params_.frequency_penalty * static_cast<float>(seen.output_count) +
               params_.presence_penalty;
    }
  }
  return out.data();
}

double Sampler::FilteredWeights(const float* logits, int64_t vocab,
                                std::vector<double>* weights) const {
  weights->assign(static_cast<size_t>(vocab), 0.0);
  const float max_logit = MaxLogit(logits, vocab);
  if (!std::isfinite(max_logit)) {
    // Every logit -inf / NaN, or one +inf: nothing to normalise; take the argmax.
    (*weights)[static_cast<size_t>(ArgMax(logits, vocab))] = 1.0;
    return 1.0;
  }
  const double inv_temperature = 1.0 / static_cast<double>(params_.temperature);
  auto scaled = [&](int32_t id) {  // log(p_i / p_max)
    return (static_cast<double>(logits[id]) - max_logit) * inv_temperature;
  };
  // min_p: p_i >= min_p * p_max  <=>  (l_i - l_max) / T >= log(min_p)  <=>  l_i >= threshold.
  // Without min_p the threshold only drops -inf (masked) logits; NaN fails any comparison.
  const double threshold = params_.min_p > 0.0f
                               ? max_logit + static_cast<double>(params_.temperature) *
                                                 std::log(static_cast<double>(params_.min_p))
                               : -static_cast<double>(std::numeric_limits<float>::max());
  std::vector<uint64_t>& keys = ThreadScratch().keys;
  keys.resize(static_cast<size_t>(vocab));
  size_t num_keys = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (static_cast<double>(logits[i]) >= threshold) {
      keys[num_keys++] = OrderKey(logits[i], static_cast<int32_t>(i));
    }
  }
  keys.resize(num_keys);
  // top_k and top_p keep a most-likely-first prefix of the candidates under a total order, so
  // the kept set is exact and the same whatever std:: algorithm finds it.
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keys.size()) {
    std::nth_element(keys.begin(), keys.begin() + params_.top_k, keys.end());
    keys.resize(static_cast<size_t>(params_.top_k));
  }
  // exp only for the survivors of min_p / top_k: the costliest step when they keep few.
  double total = 0.0;
  for (uint64_t key : keys) {
    const int32_t id = KeyId(key);
    total += (*weights)[static_cast<size_t>(id)] = std::exp(scaled(id));
  }
  if (params_.top_p < 1.0f) {
    const size_t keep = NucleusSize(keys, *weights, static_cast<double>(params_.top_p) * total);
    for (size_t i = keep; i < keys.size(); ++i) (*weights)[static_cast<size_t>(KeyId(keys[i]))] = 0;
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += (*weights)[static_cast<size_t>(KeyId(keys[i]))];
  }
  return total;
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
  const float* penalised = PenalisedLogits(logits, vocab);
  if (Greedy()) return ArgMax(penalised, vocab);
  std::vector<double>& weights = ThreadScratch().weights;
  const double total = FilteredWeights(penalised, vocab, &weights);
  // Draw k of this stream is SplitMix64 output k: a function of (stream key, k) only. Inverse
  // CDF over the ids in id order.
  const uint64_t bits =
      Mix64(stream_key_ + kGolden * (static_cast<uint64_t>(num_output_tokens_) + 1));
  const double target = static_cast<double>(bits >> 11) * 0x1.0p-53 * total;  // [0, total)
  double cumulative = 0.0;
  int32_t last_candidate = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0.0) continue;
    cumulative += weights[i];
    last_candidate = static_cast<int32_t>(i);
    if (target < cumulative) return last_candidate;
  }
  return last_candidate;  // rounding left target == total
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

  // log_softmax of the raw logits in double: log p_i = l_i - (max + log sum exp(l_j - max)).
  const double max_logit = MaxLogit(logits, vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - max_logit);
  const double log_normaliser = max_logit + std::log(sum);
  auto logprob = [&](int32_t id) {
    const double value = logits[id] - log_normaliser;
    return std::isfinite(value) ? static_cast<float>(value) : kImpossibleLogprob;
  };
  out.logprob = logprob(out.token);

  // The top_logprobs (<= 20) most likely ids by one pass with a small sorted buffer.
  const MoreLikely more_likely{logits};
  const size_t want =
      std::min(static_cast<size_t>(params_.top_logprobs), static_cast<size_t>(vocab));
  std::vector<int32_t> best;
  best.reserve(want + 1);
  for (int64_t i = 0; i < vocab && want > 0; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (best.size() == want && !more_likely(id, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), id, more_likely), id);
    if (best.size() > want) best.pop_back();
  }
  out.top_logprobs.reserve(best.size());
  for (int32_t id : best) out.top_logprobs.emplace_back(id, logprob(id));
  return out;
}

}  // namespace moeserve::runtime
