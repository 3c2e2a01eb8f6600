// CUDA sampling: one CTA per logits row, the CPU reference's pipeline (kernels/cpu/sampling.cc)
// re-expressed with block-wide passes over the vocabulary and no sort.
//
// Per row (vocab V, T = 512 threads; "pass" = every thread walks ids tid, tid + T, ...):
//   1. penalties: copy the row to the workspace, then one thread per history entry rewrites its
//      (distinct) token with the CPU's fp32 formula (explicit _rn intrinsics: no contraction).
//   2. greedy (temperature < 1e-5) or no finite maximum: block argmin of OrderKey (higher logit
//      first, ties to the lower id; NaN only when logits[0] is NaN, as cpu::ArgMax).
//   3. max logit; candidates l >= min_p threshold; weight exp((l - max) / T) in double, stored in
//      the workspace (-1 marks a non-candidate).
//   4. top_k: when k < #candidates, the cut key X = max{x : #{candidates with key < x} < k}, found
//      bit by bit over the 64-bit OrderKey (64 counting passes); survivors have key <= X, which
//      is exactly the CPU's k smallest keys.
//   5. top_p: the same search with mass instead of count: X = max{x : mass(key < x) < top_p *
//      total}; a token stays iff the mass strictly before it is < top_p * total, as on the CPU.
//      The masses are block sums with a fixed tree, monotone in x, so the search is exact for
//      these sums (they differ from the CPU's only in rounding order).
//   6. draw: each thread owns a contiguous chunk of ids; chunk sums, an exclusive scan of them in
//      id order (thread 0, sequential), then the first id whose cumulative weight exceeds
//      u * total (the CPU's inverse CDF; the last surviving id when rounding leaves none).
//   7. logprobs of the raw logits: max, a fixed-tree sum of exp in double, log; top_logprobs by
//      n successive block minima of OrderKey (n <= max_top_logprobs, 20 in practice).
// Deterministic: fixed reduction trees, no atomics, nothing depends on other rows.
//
// Known slow (correctness first): top_k and top_p cost 64 passes each over the row (about
// 0.1-0.5 ms per row at V = 32000, rows in parallel across SMs); greedy and plain temperature
// rows cost ~4 passes. A faster version would select on a compacted candidate list in shared
// memory (top_k small) or radix-select 8 bits per pass with fixed-order per-bin sums.
#include <cfloat>
#include <climits>
#include <cstdint>

#include <math_constants.h>

#include "kernels/cuda/sampling.cuh"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;  // SplitMix64's step, as on the CPU

__device__ uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// cpu::OrderKey: ascending key = descending logit, then ascending id; -0 == +0; NaN last.
__device__ uint64_t OrderKey(float logit, int64_t id) {
  uint32_t bits = __float_as_uint(logit);
  uint32_t descending = 0xFFFFFFFFu;  // NaN
  if ((bits & 0x7FFFFFFFu) <= 0x7F800000u) {
    if ((bits & 0x7FFFFFFFu) == 0) bits = 0;  // -0 -> +0
    const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    descending = ~ascending;
  }
  return (static_cast<uint64_t>(descending) << 32) | static_cast<uint32_t>(id);
}

// cpu::PenalisedLogit in the same fp32 operations, each rounded to nearest (no FMA).
__device__ float PenalisedLogit(float logit, const SampleRow& row, int32_t output_count) {
  const float repetition = row.repetition_penalty;
  if (repetition != 1.0f) {
    logit = logit > 0.0f ? __fdiv_rn(logit, repetition) : __fmul_rn(logit, repetition);
  }
  if (output_count > 0) {
    const float penalty = __fadd_rn(__fmul_rn(row.frequency_penalty, __int2float_rn(output_count)),
                                    row.presence_penalty);
    logit = __fsub_rn(logit, penalty);
  }
  return logit;
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MinOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return b < a ? b : a;
  }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a < b ? b : a;
  }
};
struct MaxIgnoringNaN {  // fmaxf returns the other operand when one is NaN
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Every thread gets op over all threads' v, by a fixed tree: warp shuffles down to lane 0, then
// the warps' results in warp order. `scratch` is a [kWarps] shared array of T; the trailing
// barrier lets the caller reuse it at once.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_down_sync(kFullMask, v, offset));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T result = scratch[0];
  for (int w = 1; w < kWarps; ++w) result = op(result, scratch[w]);
  __syncthreads();
  return result;
}

struct Shared {
  double doubles[kWarps];
  unsigned long long u64s[kWarps];
  float floats[kWarps];
  int ints[kWarps];
  double chunk_prefix[kThreads];  // step 6: exclusive prefix of the chunk sums
  double total;
};

// cpu::ArgMax over `logits`: the smallest OrderKey, except that logits[0] NaN gives 0.
__device__ int32_t BlockArgMax(const float* logits, int64_t vocab, Shared& sh) {
  if (isnan(logits[0])) return 0;
  unsigned long long best = ULLONG_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    best = MinOp()(best, static_cast<unsigned long long>(OrderKey(logits[i], i)));
  }
  best = BlockReduce(best, MinOp(), sh.u64s);
  return static_cast<int32_t>(best & 0xFFFFFFFFu);
}

// Steps 3-6 for a row whose penalised logits have the finite maximum `max_logit`.
__device__ int32_t FilterAndDraw(const float* logits, int64_t vocab, const SampleRow& row,
                                 float max_logit, double* weights, Shared& sh) {
  const int tid = static_cast<int>(threadIdx.x);
  const double max_d = static_cast<double>(max_logit);
  const double inv_temperature = __ddiv_rn(1.0, static_cast<double>(row.temperature));
  const double threshold = row.min_p > 0.0f
                               ? __dadd_rn(max_d, __dmul_rn(static_cast<double>(row.temperature),
                                                            log(static_cast<double>(row.min_p))))
                               : -static_cast<double>(FLT_MAX);

  // 3. Candidates and their weights (each thread reads back only its own ids until step 6).
  int num_local = 0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    const double l = static_cast<double>(logits[i]);
    double w = -1.0;
    if (l >= threshold) {
      w = exp(__dmul_rn(__dsub_rn(l, max_d), inv_temperature));
      ++num_local;
    }
    weights[i] = w;
  }

  // 4. top_k.
  uint64_t cut = ~0ull;  // survivors: candidates with OrderKey <= cut
  if (row.top_k > 0) {
    const int num_candidates = BlockReduce(num_local, SumOp(), sh.ints);
    if (row.top_k < num_candidates) {
      uint64_t x = 0;  // invariant: #{key < x} < k
      for (int b = 63; b >= 0; --b) {
        const uint64_t probe = x | (1ull << b);
        int below = 0;
        for (int64_t i = tid; i < vocab; i += kThreads) {
          below += (weights[i] >= 0.0 && OrderKey(logits[i], i) < probe) ? 1 : 0;
        }
        if (BlockReduce(below, SumOp(), sh.ints) < row.top_k) x = probe;
      }
      cut = x;
    }
  }

  // 5. top_p over the top_k survivors.
  if (row.top_p < 1.0f) {
    double mass_local = 0.0;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      if (weights[i] >= 0.0 && OrderKey(logits[i], i) <= cut) mass_local += weights[i];
    }
    const double target =
        __dmul_rn(static_cast<double>(row.top_p), BlockReduce(mass_local, SumOp(), sh.doubles));
    uint64_t x = 0;  // invariant: mass(key < x) < target
    for (int b = 63; b >= 0; --b) {
      const uint64_t probe = x | (1ull << b);
      double below = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const uint64_t key = OrderKey(logits[i], i);
        if (weights[i] >= 0.0 && key <= cut && key < probe) below += weights[i];
      }
      if (BlockReduce(below, SumOp(), sh.doubles) < target) x = probe;
    }
    cut = x < cut ? x : cut;
  }

  // The survivors' weights; 0 for everything else (including -1 non-candidates).
  for (int64_t i = tid; i < vocab; i += kThreads) {
    const double w = weights[i];
    weights[i] = (w > 0.0 && OrderKey(logits[i], i) <= cut) ? w : 0.0;
  }
  __syncthreads();  // step 6 reads other threads' ids

  // 6. Inverse CDF in id order over contiguous chunks.
  const int64_t chunk = (vocab + kThreads - 1) / kThreads;
  const int64_t begin = tid * chunk < vocab ? tid * chunk : vocab;
  const int64_t end = begin + chunk < vocab ? begin + chunk : vocab;
  double chunk_sum = 0.0;
  for (int64_t i = begin; i < end; ++i) chunk_sum += weights[i];
  sh.chunk_prefix[tid] = chunk_sum;
  __syncthreads();
  if (tid == 0) {
    double running = 0.0;
    for (int t = 0; t < kThreads; ++t) {
      const double sum = sh.chunk_prefix[t];
      sh.chunk_prefix[t] = running;
      running += sum;
    }
    sh.total = running;
  }
  __syncthreads();
  const uint64_t bits = Mix64(row.stream_key + kGolden * (row.draw_index + 1));
  const double target =
      __dmul_rn(__dmul_rn(__ull2double_rn(bits >> 11), 0x1.0p-53), sh.total);  // [0, total)
  int first = INT_MAX, last = -1;
  double cumulative = sh.chunk_prefix[tid];
  for (int64_t i = begin; i < end; ++i) {
    const double w = weights[i];
    if (w == 0.0) continue;
    cumulative += w;
    last = static_cast<int>(i);
    if (target < cumulative) {
      first = static_cast<int>(i);
      break;
    }
  }
  first = BlockReduce(first, MinOp(), sh.ints);
  last = BlockReduce(last, MaxOp(), sh.ints);
  return first != INT_MAX ? first : last;
}

// cpu::Logprob.
__device__ float Logprob(float logit, double log_normaliser) {
  const double value = __dsub_rn(static_cast<double>(logit), log_normaliser);
  return isfinite(value) ? __double2float_rn(value) : kSampleImpossibleLogprob;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p, size_t weights_offset) {
  __shared__ Shared sh;
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t r = blockIdx.x;
  const int64_t vocab = p.vocab;
  const SampleRow row = p.row_params[r];
  const float* raw = p.logits + r * vocab;
  float* penalised = static_cast<float*>(p.workspace) + r * vocab;
  double* weights =
      reinterpret_cast<double*>(static_cast<char*>(p.workspace) + weights_offset) + r * vocab;

  // 1. Penalties on a copy of the row.
  const float* logits = raw;
  if (row.history_end > row.history_begin) {
    for (int64_t i = tid; i < vocab; i += kThreads) penalised[i] = raw[i];
    __syncthreads();
    for (int64_t e = row.history_begin + tid; e < row.history_end; e += kThreads) {
      const int32_t token = p.history_tokens[e];
      const int32_t count = p.history_output_counts[e];
      if (token < 0 || token >= vocab || !(p.history_in_prompt[e] != 0 || count > 0)) continue;
      penalised[token] = PenalisedLogit(raw[token], row, count);
    }
    __syncthreads();
    logits = penalised;
  }

  // 2-6. The token.
  int32_t token;
  bool argmax = row.temperature < kSampleGreedyTemperature;
  float max_logit = 0.0f;
  if (!argmax) {
    float m = -CUDART_INF_F;
    for (int64_t i = tid; i < vocab; i += kThreads) m = fmaxf(m, logits[i]);
    max_logit = BlockReduce(m, MaxIgnoringNaN(), sh.floats);
    argmax = !isfinite(max_logit);  // all -inf / NaN, or a +inf: the CPU takes the argmax
  }
  if (argmax) {
    token = BlockArgMax(logits, vocab, sh);
  } else {
    token = FilterAndDraw(logits, vocab, row, max_logit, weights, sh);
  }
  if (tid == 0) p.out_tokens[r] = token;

  // 7. Logprobs of the raw logits.
  const int64_t max_top = p.out_top_tokens != nullptr ? p.max_top_logprobs : 0;
  if (p.out_logprobs == nullptr && max_top == 0) return;
  float m = -CUDART_INF_F;
  for (int64_t i = tid; i < vocab; i += kThreads) m = fmaxf(m, raw[i]);
  const double raw_max = static_cast<double>(BlockReduce(m, MaxIgnoringNaN(), sh.floats));
  double sum = 0.0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    sum += exp(__dsub_rn(static_cast<double>(raw[i]), raw_max));
  }
  const double log_normaliser = __dadd_rn(raw_max, log(BlockReduce(sum, SumOp(), sh.doubles)));
  if (p.out_logprobs != nullptr && tid == 0)
    p.out_logprobs[r] = Logprob(raw[token], log_normaliser);
  if (max_top == 0) return;
  int64_t n = row.num_top_logprobs < 0 ? 0 : row.num_top_logprobs;
  if (n > max_top) n = max_top;
  if (n > vocab) n = vocab;
  unsigned long long previous = 0;
  for (int64_t j = 0; j < n; ++j) {
    unsigned long long best = ULLONG_MAX;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const unsigned long long key = OrderKey(raw[i], i);
      if ((j == 0 || key > previous) && key < best) best = key;
    }
    best = BlockReduce(best, MinOp(), sh.u64s);
    previous = best;
    if (tid == 0) {
      const auto id = static_cast<int32_t>(best & 0xFFFFFFFFu);
      p.out_top_tokens[r * max_top + j] = id;
      p.out_top_logprobs[r * max_top + j] = Logprob(raw[id], log_normaliser);
    }
  }
  for (int64_t j = n + tid; j < max_top; j += kThreads) {
    p.out_top_tokens[r * max_top + j] = -1;
    p.out_top_logprobs[r * max_top + j] = 0.0f;
  }
}

}  // namespace

cudaError_t Sample(const SampleParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (p.workspace == nullptr || p.workspace_bytes < SampleWorkspaceBytes(p.rows, p.vocab)) {
    return cudaErrorInvalidValue;
  }
  SampleKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(
      p, SampleWorkspaceWeightsOffset(p.rows, p.vocab));
  return cudaGetLastError();
}

}  // namespace moeserve::kernels::cuda
