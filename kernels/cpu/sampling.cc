#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/kernel_clones.h"

namespace moeserve::kernels::cpu {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, SplitMix64's step

// "a is more likely than b" as one integer per token, so selection compares plain uint64_t:
// ascending key = descending logit, then ascending id. The logit's bits are mapped so that
// unsigned order matches float order; -0 and +0 are one value (tied by id); NaN sorts after
// -inf. A total order, so every selection below picks the same set whatever algorithm std:: uses
// (and the CUDA kernel, which selects by bisection over the same keys).
uint64_t OrderKey(float logit, int32_t id) {
  uint32_t descending = 0xFFFFFFFFu;  // NaN: after everything
  if (!std::isnan(logit)) {
    if (logit == 0.0f) logit = 0.0f;
    uint32_t bits;
    std::memcpy(&bits, &logit, sizeof(bits));
    const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    descending = ~ascending;
  }
  return (static_cast<uint64_t>(descending) << 32) | static_cast<uint32_t>(id);
}
int32_t KeyId(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

// Largest logit, ignoring NaN; -inf when there is none.
float MaxLogit(const float* logits, int64_t vocab) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) best = std::max(best, logits[i]);
  return best;
}

// Per-thread scratch (the engine loop samples every sequence on one thread; cpu::Sample one row
// per OpenMP thread at a time), so no row owns a vocab-sized buffer.
struct Scratch {
  std::vector<float> logits;    // [vocab] penalised logits (cpu::Sample)
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

// One row of cpu::Sample.
void SampleRowOf(const SampleParams& p, int64_t r) {
  const SampleRow& row = p.row_params[r];
  const int64_t vocab = p.vocab;
  const float* raw = p.logits + r * vocab;
  const float* logits = raw;
  if (row.history_end > row.history_begin) {
    std::vector<float>& penalised = ThreadScratch().logits;
    penalised.assign(raw, raw + vocab);
    const SamplePenalties penalties{row.repetition_penalty, row.frequency_penalty,
                                    row.presence_penalty};
    for (int64_t e = row.history_begin; e < row.history_end; ++e) {
      const int32_t token = p.history_tokens[e];
      const int32_t count = p.history_output_counts[e];
      if (token < 0 || token >= vocab || !(p.history_in_prompt[e] != 0 || count > 0)) continue;
      penalised[static_cast<size_t>(token)] = PenalisedLogit(raw[token], penalties, count);
    }
    logits = penalised.data();
  }
  const SampleFilter filter{row.temperature, row.top_k, row.top_p, row.min_p};
  const int32_t token =
      SampleToken(logits, vocab, filter, SampleDrawBits(row.stream_key, row.draw_index));
  p.out_tokens[r] = token;

  const int64_t max_top = p.out_top_tokens ? p.max_top_logprobs : 0;
  if (p.out_logprobs == nullptr && max_top == 0) return;
  const double log_normaliser = LogNormaliser(raw, vocab);
  if (p.out_logprobs) p.out_logprobs[r] = Logprob(raw, token, log_normaliser);
  if (max_top == 0) return;
  const std::vector<int32_t> top =
      TopTokens(raw, vocab, std::clamp<int64_t>(row.num_top_logprobs, 0, max_top));
  for (int64_t j = 0; j < max_top; ++j) {
    const bool filled = j < static_cast<int64_t>(top.size());
    const int32_t id = filled ? top[static_cast<size_t>(j)] : -1;
    p.out_top_tokens[r * max_top + j] = id;
    p.out_top_logprobs[r * max_top + j] = filled ? Logprob(raw, id, log_normaliser) : 0.0f;
  }
}

}  // namespace

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SampleStreamKey(uint64_t seed, uint64_t choice_index) {
  // Two mixing rounds so that neighbouring seeds and neighbouring choice indices land on
  // unrelated streams.
  return Mix64(Mix64(seed) + kGolden * (choice_index + 1));
}

uint64_t SampleDrawBits(uint64_t stream_key, uint64_t draw_index) {
  return Mix64(stream_key + kGolden * (draw_index + 1));
}

namespace {

// ArgMax over 16 lanes: lane j keeps the first largest of logits[i], i = j (mod 16); the lanes'
// winners are then compared by value, ties to the lower id. Exact comparisons only, so this is
// the sequential scan's answer (NaN never wins; logits[0] == NaN is handled by the caller).
MOESERVE_KERNEL_CLONES int64_t ArgMaxLanes(const float* logits, int64_t vocab) {
  constexpr int kLanes = 16;
  float best[kLanes];
  int32_t best_id[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    best[j] = -std::numeric_limits<float>::infinity();
    best_id[j] = -1;
  }
  int64_t i = 0;
  for (; i + kLanes <= vocab; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const bool better = logits[i + j] > best[j];
      best[j] = better ? logits[i + j] : best[j];
      best_id[j] = better ? static_cast<int32_t>(i + j) : best_id[j];
    }
  }
  for (int j = 0; i < vocab; ++i, ++j) {
    if (logits[i] > best[j]) {
      best[j] = logits[i];
      best_id[j] = static_cast<int32_t>(i);
    }
  }
  int64_t winner = 0;  // every logit -inf or NaN: id 0, as the scan gives
  float winner_value = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < kLanes; ++j) {
    if (best_id[j] < 0) continue;
    if (best[j] > winner_value || (best[j] == winner_value && best_id[j] < winner)) {
      winner_value = best[j];
      winner = best_id[j];
    }
  }
  return winner;
}

}  // namespace

int32_t ArgMax(const float* logits, int64_t vocab) {
  if (vocab >= 64 && !std::isnan(logits[0])) {
    // A -inf logits[0] loses to any larger logit in both versions and wins when nothing is
    // larger (winner stays 0), so only a NaN first logit needs the scan.
    return static_cast<int32_t>(ArgMaxLanes(logits, vocab));
  }
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

float PenalisedLogit(float logit, const SamplePenalties& penalties, int32_t output_count) {
  const float repetition = penalties.repetition;
  if (repetition != 1.0f) logit = logit > 0.0f ? logit / repetition : logit * repetition;
  if (output_count > 0) {
    logit -= penalties.frequency * static_cast<float>(output_count) + penalties.presence;
  }
  return logit;
}

double FilteredWeights(const float* logits, int64_t vocab, const SampleFilter& filter,
                       std::vector<double>* weights) {
  weights->assign(static_cast<size_t>(vocab), 0.0);
  const float max_logit = MaxLogit(logits, vocab);
  if (!std::isfinite(max_logit)) {
    // Every logit -inf / NaN, or one +inf: nothing to normalise; take the argmax.
    (*weights)[static_cast<size_t>(ArgMax(logits, vocab))] = 1.0;
    return 1.0;
  }
  const double inv_temperature = 1.0 / static_cast<double>(filter.temperature);
  auto scaled = [&](int32_t id) {  // log(p_i / p_max)
    return (static_cast<double>(logits[id]) - max_logit) * inv_temperature;
  };
  // min_p: p_i >= min_p * p_max  <=>  (l_i - l_max) / T >= log(min_p)  <=>  l_i >= threshold.
  // Without min_p the threshold only drops -inf (masked) logits; NaN fails any comparison.
  const double threshold = filter.min_p > 0.0f
                               ? max_logit + static_cast<double>(filter.temperature) *
                                                 std::log(static_cast<double>(filter.min_p))
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
  if (filter.top_k > 0 && static_cast<size_t>(filter.top_k) < keys.size()) {
    std::nth_element(keys.begin(), keys.begin() + filter.top_k, keys.end());
    keys.resize(static_cast<size_t>(filter.top_k));
  }
  // exp only for the survivors of min_p / top_k: the costliest step when they keep few.
  double total = 0.0;
  for (uint64_t key : keys) {
    const int32_t id = KeyId(key);
    total += (*weights)[static_cast<size_t>(id)] = std::exp(scaled(id));
  }
  if (filter.top_p < 1.0f) {
    const size_t keep = NucleusSize(keys, *weights, static_cast<double>(filter.top_p) * total);
    for (size_t i = keep; i < keys.size(); ++i) (*weights)[static_cast<size_t>(KeyId(keys[i]))] = 0;
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += (*weights)[static_cast<size_t>(KeyId(keys[i]))];
  }
  return total;
}

int32_t DrawFromWeights(const std::vector<double>& weights, double total, uint64_t bits) {
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

int32_t SampleToken(const float* logits, int64_t vocab, const SampleFilter& filter, uint64_t bits) {
  if (filter.temperature < kSampleGreedyTemperature) return ArgMax(logits, vocab);
  std::vector<double>& weights = ThreadScratch().weights;
  const double total = FilteredWeights(logits, vocab, filter, &weights);
  return DrawFromWeights(weights, total, bits);
}

double LogNormaliser(const float* logits, int64_t vocab) {
  // log_softmax in double: log p_i = l_i - (max + log sum exp(l_j - max)).
  const double max_logit = MaxLogit(logits, vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - max_logit);
  return max_logit + std::log(sum);
}

float Logprob(const float* logits, int32_t id, double log_normaliser) {
  const double value = logits[id] - log_normaliser;
  return std::isfinite(value) ? static_cast<float>(value) : kSampleImpossibleLogprob;
}

std::vector<int32_t> TopTokens(const float* logits, int64_t vocab, int64_t n) {
  // One pass with a small sorted buffer of keys (n <= 20 in practice).
  const size_t want = static_cast<size_t>(std::clamp<int64_t>(n, 0, vocab));
  std::vector<uint64_t> best;
  best.reserve(want + 1);
  for (int64_t i = 0; i < vocab && want > 0; ++i) {
    const uint64_t key = OrderKey(logits[i], static_cast<int32_t>(i));
    if (best.size() == want && key > best.back()) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), key), key);
    if (best.size() > want) best.pop_back();
  }
  std::vector<int32_t> ids;
  ids.reserve(best.size());
  for (uint64_t key : best) ids.push_back(KeyId(key));
  return ids;
}

void Sample(const SampleParams& p) {
  // Rows are independent and each is computed in a fixed order, so the result is the same with
  // any number of threads.
#pragma omp parallel for schedule(dynamic, 1) if (p.rows > 1)
  for (int64_t r = 0; r < p.rows; ++r) SampleRowOf(p, r);
}

}  // namespace moeserve::kernels::cpu
