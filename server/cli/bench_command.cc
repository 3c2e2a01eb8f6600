// moeserve bench: throughput of a model on this machine, two modes.
//
// Model mode (no --preset): prefill and decode of the model --model names (or the embedded one).
// `batch` sequences of `prompt_len` random tokens in one forward step, then `gen_len` steps of
// one new token per sequence (greedy), all sequences batched. Each phase is repeated `repeat`
// times on fresh KV state; the median is reported as JSON.
//
// Preset mode (--preset mixtral-8x7b|tiny): the GPU benchmark of docs/benchmarks.md. A
// random-init model of the preset's shapes is built directly in device memory
// (runtime/model/device_random_model.h: no checkpoint file), then, in one process:
//   copy     device-to-device copy bandwidth (CopyOnDeviceAsync of --copy-mib, timed)
//   decode   step time at each --batches size with --context cached tokens per sequence, the
//            bytes the step reads (dense weights + the distinct experts hit per layer, from the
//            expert-load counters, + KV) and the fraction of the copy bandwidth that achieves
//   prefill  tokens/s and TFLOP/s of one sequence of each --prefill-tokens length
//   moe      time of layer 0's MoE block alone (router, align, grouped GEMMs, combine) at each
//            --moe-tokens count
// The decode context is synthetic: its KV blocks are reserved and zeroed, not computed by a
// prefill (the step's cost depends on the context length, not on the values), which keeps the
// 256 x 512-token setup out of the time budget. Times are host wall time around work that ends
// in a Synchronize (Forward synchronises once per step), so they include launch overheads and,
// for decode, the step's logits copy to the host, like the serving engine's steps.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/random_fill.h"
#include "nlohmann/json.hpp"
#include "parallel/moe/moe_layer.h"
#include "runtime/engine/load_recorder.h"
#include "runtime/engine/rank_set.h"
#include "runtime/model/device_random_model.h"
#include "runtime/model/random_model.h"
#include "runtime/sampling/sampler.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace moeserve::server {
namespace {

struct BenchFlags {
  ModelOptions model;
  int64_t prompt_len = 128;
  int64_t gen_len = 32;
  int64_t batch = 1;
  int repeat = 3;
  // Preset mode (see the file comment); empty preset: model mode.
  std::string preset;
  int64_t layers = 0;  // 0: the preset's layer count
  int64_t context = 512;
  std::vector<int64_t> batches = {1, 8, 64, 256};
  int warmup = 3;
  int steps = 10;
  std::vector<int64_t> prefill_tokens = {512, 4096};
  std::vector<int64_t> moe_tokens = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  int64_t copy_mib = 4096;
  uint64_t seed = 1;
  // Model mode: also time every repetition with the load recorder on (what a serving worker
  // adds per step while /v1/lab/recorder records), interleaved with the plain runs.
  bool recorder = false;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int RunBench(const BenchFlags& f) {
  absl::StatusOr<ModelSession> session = OpenModelSession(f.model);
  if (!session.ok()) {
    std::cerr << "error: " << session.status().message() << "\n";
    return 1;
  }
  runtime::MixtralModel& model = session->model();
  const runtime::ModelConfig& c = model.config();
  using Clock = std::chrono::steady_clock;
  std::vector<double> prefill_s, decode_s, recorded_decode_s;
  double record_s = 0;  // time inside LoadRecorder::Record, timed repetitions
  int64_t records = 0;
  runtime::LoadRecorder recorder(c.num_hidden_layers, c.num_local_experts, 1,
                                 runtime::kDefaultRecorderMaxSteps);
  recorder.Start();
  // With --recorder each repetition runs twice: plain, then recording after every step.
  for (int run = 0; run < (f.recorder ? 2 : 1) * (f.repeat + 1); ++run) {
    const int rep = f.recorder ? run / 2 : run;  // rep 0 is the warm-up
    const bool record = f.recorder && run % 2 == 1;
    std::vector<runtime::SequenceKv> kv(static_cast<size_t>(f.batch));
    std::vector<runtime::SequenceStep> steps;
    uint64_t state = 12345;
    for (int64_t b = 0; b < f.batch; ++b) {
      runtime::SequenceStep s;
      for (int64_t i = 0; i < f.prompt_len; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        s.new_tokens.push_back(static_cast<int32_t>(3 + (state >> 33) % (c.vocab_size - 3)));
      }
      s.kv = &kv[b];
      steps.push_back(std::move(s));
    }
    runtime::StepOutput out;
    auto t0 = Clock::now();
    absl::Status st = model.Forward(absl::MakeSpan(steps), *session->pool, &out);
    auto t1 = Clock::now();
    for (int64_t g = 0; g < f.gen_len && st.ok(); ++g) {
      for (int64_t b = 0; b < f.batch; ++b) {
        steps[b].new_tokens = {runtime::ArgMax(out.last_row(b), out.vocab)};
      }
      st = model.Forward(absl::MakeSpan(steps), *session->pool, &out);
      if (record) {  // as Worker::RunStep does
        const auto r0 = Clock::now();
        recorder.Record(model.ep_stats());
        if (rep > 0) record_s += std::chrono::duration<double>(Clock::now() - r0).count();
        records += rep > 0;
      }
    }
    auto t2 = Clock::now();
    for (auto& k : kv) session->pool->Release(k);
    if (!st.ok()) {
      std::cerr << "error: " << st.message() << "\n";
      return 1;
    }
    if (rep == 0) continue;
    if (record) {
      recorded_decode_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      continue;
    }
    prefill_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    decode_s.push_back(std::chrono::duration<double>(t2 - t1).count());
  }
  const double prefill = Median(prefill_s), decode = Median(decode_s);
  nlohmann::json j = {
      {"engine", "moeserve"},
      {"backend", session->backend->name()},
      {"model", session->loaded->source},
      {"threads", f.model.threads},
      {"batch", f.batch},
      {"prompt_len", f.prompt_len},
      {"gen_len", f.gen_len},
      {"prefill_tok_s", static_cast<double>(f.batch * f.prompt_len) / prefill},
      {"decode_tok_s", static_cast<double>(f.batch * f.gen_len) / decode},
      {"decode_ms_per_step", 1000.0 * decode / static_cast<double>(f.gen_len)},
  };
  if (session->backend->device() == kernels::Device::kCpu) {
    j["cpu_kernels"] = std::string(kernels::cpu::CpuIsaName(kernels::cpu::ActiveCpuIsa()));
  }
  if (f.recorder) {
    const double recorded = Median(recorded_decode_s);
    j["decode_ms_per_step_recorder"] = 1000.0 * recorded / static_cast<double>(f.gen_len);
    j["recorder_overhead_pct"] = 100.0 * (recorded - decode) / decode;
    // The recorder's own time per step, measured around each call: robust to a noisy machine.
    j["recorder_us_per_step"] = 1e6 * record_s / static_cast<double>(std::max<int64_t>(1, records));
    j["recorder_share_of_step_pct"] =
        100.0 * (record_s / static_cast<double>(std::max<int64_t>(1, records))) /
        (decode / static_cast<double>(f.gen_len));
  }
  std::cout << j.dump() << "\n";
  return 0;
}

// ---- Preset mode ----------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double GiBOf(double bytes) { return bytes / static_cast<double>(1ull << 30); }

// Deterministic token ids in [3, vocab) (0..2 are the special tokens).
struct TokenStream {
  uint64_t state;
  int32_t Next(int64_t vocab) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>(3 + (state >> 33) % static_cast<uint64_t>(vocab - 3));
  }
};

// Device-to-device copy of `bytes`: the bandwidth reference for the decode numbers. A copy reads
// and writes every byte, so the DRAM traffic is 2 x bytes.
absl::StatusOr<json> CopyBench(kernels::Backend& be, size_t bytes, int reps) {
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer src, be.Allocate(bytes));
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer dst, be.Allocate(bytes));
  MOESERVE_RETURN_IF_ERROR(be.MemsetAsync(src.data(), 1, bytes));
  MOESERVE_RETURN_IF_ERROR(be.CopyOnDeviceAsync(dst.data(), src.data(), bytes));  // warm-up
  MOESERVE_RETURN_IF_ERROR(be.Synchronize());
  const auto t0 = Clock::now();
  for (int r = 0; r < reps; ++r) {
    MOESERVE_RETURN_IF_ERROR(be.CopyOnDeviceAsync(dst.data(), src.data(), bytes));
  }
  MOESERVE_RETURN_IF_ERROR(be.Synchronize());
  const double s = Seconds(t0, Clock::now()) / reps;
  return json{{"bytes", bytes},
              {"reps", reps},
              {"ms", 1e3 * s},
              {"copy_gb_s", static_cast<double>(bytes) / s / 1e9},
              {"read_write_gb_s", 2.0 * static_cast<double>(bytes) / s / 1e9}};
}

// Bytes of weights every token step reads whatever the routing: attention, norms, routers, the
// final norm and the LM head (embedding rows are added per token by the caller).
double DenseStepBytes(const runtime::ModelConfig& c) {
  const double e = static_cast<double>(kernels::DTypeSize(c.dtype));
  const double h = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double per_layer = (h * q * 2 + h * kv * 2 + 2 * h + h * c.num_local_experts) * e;
  return per_layer * static_cast<double>(c.num_hidden_layers) +
         (h + static_cast<double>(c.vocab_size) * h) * e;
}

double ExpertBytes(const runtime::ModelConfig& c) {
  return 3.0 * static_cast<double>(c.hidden_size * c.intermediate_size) *
         static_cast<double>(kernels::DTypeSize(c.dtype));
}

// K and V of one cached token in every layer.
double KvBytesPerToken(const runtime::ModelConfig& c, kernels::DType kv_dtype) {
  return 2.0 * static_cast<double>(c.num_hidden_layers * c.num_key_value_heads * c.head_dim) *
         static_cast<double>(kernels::DTypeSize(kv_dtype));
}

// FLOPs of one forward over `tokens` new tokens of one sequence starting at position 0, with
// the LM head on the last token only (what Forward computes): 2 per multiply-add, attention
// scores and values over the causal context included.
double PrefillFlops(const runtime::ModelConfig& c, int64_t tokens) {
  const double h = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double t = static_cast<double>(tokens);
  const double proj = 2.0 * t * h * (2 * q + 2 * kv);
  const double router = 2.0 * t * h * static_cast<double>(c.num_local_experts);
  const double experts = 2.0 * t * static_cast<double>(c.num_experts_per_tok) * 3.0 * h *
                         static_cast<double>(c.intermediate_size);
  const double attn = 4.0 * q * t * (t + 1) / 2.0;  // QK^T and PV over the causal triangle
  return (proj + router + experts + attn) * static_cast<double>(c.num_hidden_layers) +
         2.0 * h * static_cast<double>(c.vocab_size);
}

double MoeFlops(const runtime::ModelConfig& c, int64_t tokens) {
  const double h = static_cast<double>(c.hidden_size);
  return 2.0 * static_cast<double>(tokens) *
         (h * static_cast<double>(c.num_local_experts) +
          static_cast<double>(c.num_experts_per_tok) * 3.0 * h *
              static_cast<double>(c.intermediate_size));
}

absl::StatusOr<json> DecodeBench(const BenchFlags& f, runtime::MixtralModel& model,
                                 runtime::KvBlockPool& pool, int64_t batch) {
  const runtime::ModelConfig& c = model.config();
  kernels::Backend& be = model.backend();
  std::vector<runtime::SequenceKv> kv(static_cast<size_t>(batch));
  for (runtime::SequenceKv& k : kv) {
    if (!pool.Reserve(k, f.context)) {
      for (runtime::SequenceKv& r : kv) pool.Release(r);
      return absl::ResourceExhaustedError(absl::StrCat("KV pool too small for batch ", batch));
    }
    k.num_tokens = f.context;  // synthetic context: the zeroed blocks stand for 512 cached tokens
  }
  std::vector<runtime::SequenceStep> steps(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) steps[b].kv = &kv[b];
  TokenStream tokens{static_cast<uint64_t>(batch) * 7919u + f.seed};
  const double kv_token = KvBytesPerToken(c, be.kv_dtype());
  const double embed_row =
      static_cast<double>(c.hidden_size) * static_cast<double>(kernels::DTypeSize(c.dtype));
  std::vector<double> step_s, step_bytes, experts_hit;
  runtime::StepOutput out;
  absl::Status st;
  for (int i = 0; i < f.warmup + f.steps && st.ok(); ++i) {
    double kv_read = 0;
    for (int64_t b = 0; b < batch; ++b) {
      steps[b].new_tokens = {tokens.Next(c.vocab_size)};
      kv_read += static_cast<double>(kv[b].num_tokens + 1) * kv_token;
    }
    const runtime::ExpertLoad before = model.expert_load();
    const auto t0 = Clock::now();
    st = model.Forward(absl::MakeSpan(steps), pool, &out);
    const double s = Seconds(t0, Clock::now());
    if (!st.ok() || i < f.warmup) continue;
    const runtime::ExpertLoad& after = model.expert_load();
    int64_t hit = 0;  // distinct (layer, expert) pairs this step routed any token to
    for (size_t l = 0; l < after.tokens.size(); ++l) {
      for (size_t e = 0; e < after.tokens[l].size(); ++e) {
        if (after.tokens[l][e] > before.tokens[l][e]) ++hit;
      }
    }
    step_s.push_back(s);
    experts_hit.push_back(static_cast<double>(hit));
    step_bytes.push_back(DenseStepBytes(c) + static_cast<double>(batch) * embed_row +
                         static_cast<double>(hit) * ExpertBytes(c) + kv_read);
  }
  for (runtime::SequenceKv& k : kv) pool.Release(k);
  MOESERVE_RETURN_IF_ERROR(st);
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return sum / static_cast<double>(v.size());
  };
  const double ms = 1e3 * Median(step_s);
  const double bytes = mean(step_bytes);
  return json{
      {"batch", batch},
      {"context", f.context},
      {"steps", f.steps},
      {"step_ms_median", ms},
      {"step_ms_min", 1e3 * *std::min_element(step_s.begin(), step_s.end())},
      {"tokens_per_s", static_cast<double>(batch) / (ms / 1e3)},
      {"experts_hit_per_layer", mean(experts_hit) / static_cast<double>(c.num_hidden_layers)},
      {"bytes_per_step", bytes},
      {"achieved_gb_s", bytes / (ms / 1e3) / 1e9}};
}

absl::StatusOr<json> PrefillBench(const BenchFlags& f, runtime::MixtralModel& model,
                                  runtime::KvBlockPool& pool, int64_t num_tokens) {
  const runtime::ModelConfig& c = model.config();
  std::vector<double> times;
  TokenStream tokens{static_cast<uint64_t>(num_tokens) * 104729u + f.seed};
  const int reps = std::max(1, std::min(f.steps, 3));
  for (int rep = 0; rep <= reps; ++rep) {  // rep 0 is the warm-up
    runtime::SequenceKv kv;
    runtime::SequenceStep step;
    for (int64_t i = 0; i < num_tokens; ++i) step.new_tokens.push_back(tokens.Next(c.vocab_size));
    step.kv = &kv;
    runtime::StepOutput out;
    const auto t0 = Clock::now();
    absl::Status st = model.Forward(absl::MakeSpan(&step, 1), pool, &out);
    const double s = Seconds(t0, Clock::now());
    pool.Release(kv);
    MOESERVE_RETURN_IF_ERROR(st);
    if (rep > 0) times.push_back(s);
  }
  const double s = Median(times);
  return json{{"tokens", num_tokens},
              {"ms", 1e3 * s},
              {"tokens_per_s", static_cast<double>(num_tokens) / s},
              {"tflop_s", PrefillFlops(c, num_tokens) / s / 1e12}};
}

// Layer 0's MoE block alone on random activations, per token count.
absl::StatusOr<json> MoeBench(const BenchFlags& f, kernels::Backend& be,
                              const runtime::ModelConfig& c, runtime::MixtralWeights& weights) {
  parallel::MoeLayerWeights& layer = weights.layers.at(0).moe;
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer tables, parallel::BuildExpertTables(be, layer));
  const parallel::MoeLayerShape shape{c.hidden_size, c.intermediate_size, c.num_local_experts,
                                      c.num_experts_per_tok};
  const int64_t max_tokens = *std::max_element(f.moe_tokens.begin(), f.moe_tokens.end());
  const size_t act = kernels::DTypeSize(be.activation_dtype());
  const size_t io_bytes = static_cast<size_t>(max_tokens * c.hidden_size) * act;
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer x, be.Allocate(io_bytes));
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer y, be.Allocate(io_bytes));
  kernels::RandomFillParams fill;
  fill.out = x.data();
  fill.dtype = be.activation_dtype();
  fill.numel = max_tokens * c.hidden_size;
  fill.seed = f.seed + 17;
  fill.half_range = 1.7320508f;  // std 1, like a normed hidden state
  MOESERVE_RETURN_IF_ERROR(kernels::RandomFillOnBackend(be, fill));
  parallel::MoeWorkspace workspace;
  MOESERVE_RETURN_IF_ERROR(workspace.Reserve(be, shape, max_tokens));
  json rows = json::array();
  for (int64_t t : f.moe_tokens) {
    for (int i = 0; i < f.warmup; ++i) {
      MOESERVE_RETURN_IF_ERROR(parallel::RunMoeLayer(be, shape, layer, workspace, x.data(), t,
                                                     y.data(), nullptr, nullptr));
    }
    MOESERVE_RETURN_IF_ERROR(be.Synchronize());
    const auto t0 = Clock::now();
    for (int i = 0; i < f.steps; ++i) {
      MOESERVE_RETURN_IF_ERROR(parallel::RunMoeLayer(be, shape, layer, workspace, x.data(), t,
                                                     y.data(), nullptr, nullptr));
    }
    MOESERVE_RETURN_IF_ERROR(be.Synchronize());
    const double s = Seconds(t0, Clock::now()) / f.steps;
    rows.push_back({{"tokens", t}, {"ms", 1e3 * s}, {"tflop_s", MoeFlops(c, t) / s / 1e12}});
  }
  (void)tables;  // the pointer tables live until here
  return rows;
}

absl::Status RunPresetBenchOrError(const BenchFlags& f) {
  MOESERVE_ASSIGN_OR_RETURN(runtime::ModelConfig c, runtime::PresetConfig(f.preset, f.layers));
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> be,
                            runtime::MakeBackend(f.model.device, f.model.threads));
  std::cerr << "backend: " << be->Describe() << "\n";
  json j = {{"engine", "moeserve"},
            {"mode", "preset"},
            {"backend", be->name()},
            {"device", be->Describe()},
            {"preset", f.preset},
            {"layers", c.num_hidden_layers},
            {"hidden", c.hidden_size},
            {"intermediate", c.intermediate_size},
            {"experts", c.num_local_experts},
            {"activation_dtype", std::string(kernels::DTypeName(be->activation_dtype()))},
            {"kv_dtype", std::string(kernels::DTypeName(be->kv_dtype()))}};

  // Copy bandwidth first, before the weights take the memory.
  if (f.copy_mib > 0) {
    MOESERVE_ASSIGN_OR_RETURN(j["copy"], CopyBench(*be, static_cast<size_t>(f.copy_mib) << 20, 5));
    std::cerr << "copy: " << j["copy"].dump() << "\n";
  }

  // KV pool: the largest decode batch with its context and steps, or the longest prefill.
  const int64_t bs = f.model.kv_block_size;
  const int64_t max_batch =
      f.batches.empty() ? 0 : *std::max_element(f.batches.begin(), f.batches.end());
  const int64_t per_seq = (f.context + f.warmup + f.steps + bs) / bs;
  int64_t blocks = max_batch * per_seq;
  for (int64_t p : f.prefill_tokens) blocks = std::max(blocks, (p + bs - 1) / bs);
  blocks = std::max<int64_t>(blocks, 1);
  const double kv_bytes = static_cast<double>(blocks * bs) * KvBytesPerToken(c, be->kv_dtype());
  // Activations: a generous bound for the largest step (MoE workspace, attention, norms).
  int64_t max_tokens = max_batch;
  for (int64_t p : f.prefill_tokens) max_tokens = std::max(max_tokens, p);
  for (int64_t t : f.moe_tokens) max_tokens = std::max(max_tokens, t);
  const double act = static_cast<double>(kernels::DTypeSize(be->activation_dtype()));
  const double act_bytes =
      static_cast<double>(max_tokens) *
          (24.0 * c.hidden_size + 4.0 * c.num_experts_per_tok * c.intermediate_size) * act +
      static_cast<double>(max_batch) * c.vocab_size * 4.0;
  const size_t reserve = static_cast<size_t>(kv_bytes + act_bytes) + (size_t{1} << 30);

  runtime::MixtralWeights weights;
  const auto t_init = Clock::now();
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<runtime::LoadedModel> loaded,
                            runtime::MakeDeviceRandomModel(c, f.seed, be.get(), reserve, &weights));
  j["weights_bytes"] = runtime::DeviceRandomModelBytes(c);
  j["init_s"] = Seconds(t_init, Clock::now());
  std::cerr << "weights: " << GiBOf(j["weights_bytes"].get<double>()) << " GiB in "
            << j["init_s"].get<double>() << " s\n";
  runtime::MixtralModel& model = *loaded->model;
  MOESERVE_ASSIGN_OR_RETURN(runtime::KvBlockPool pool,
                            runtime::KvBlockPool::Create(*be, model.KvShape(bs, blocks)));
  // Zero the cache: the synthetic decode context must be finite values, not leftover memory.
  const size_t block_bytes = static_cast<size_t>(pool.shape().bytes_per_block());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    MOESERVE_RETURN_IF_ERROR(be->MemsetAsync(pool.k(l), 0, block_bytes * blocks));
    MOESERVE_RETURN_IF_ERROR(be->MemsetAsync(pool.v(l), 0, block_bytes * blocks));
  }
  MOESERVE_RETURN_IF_ERROR(be->Synchronize());
  j["kv_blocks"] = blocks;
  j["kv_bytes"] = kv_bytes;

  j["decode"] = json::array();
  for (int64_t b : f.batches) {
    MOESERVE_ASSIGN_OR_RETURN(json row, DecodeBench(f, model, pool, b));
    if (j.contains("copy")) {
      row["fraction_of_copy_bw"] =
          row["achieved_gb_s"].get<double>() / j["copy"]["read_write_gb_s"].get<double>();
    }
    std::cerr << "decode: " << row.dump() << "\n";
    j["decode"].push_back(row);
  }
  j["prefill"] = json::array();
  for (int64_t p : f.prefill_tokens) {
    MOESERVE_ASSIGN_OR_RETURN(json row, PrefillBench(f, model, pool, p));
    std::cerr << "prefill: " << row.dump() << "\n";
    j["prefill"].push_back(row);
  }
  if (!f.moe_tokens.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(j["moe_layer"], MoeBench(f, *be, c, weights));
  }
  std::cout << j.dump() << "\n";
  return absl::OkStatus();
}

int RunPresetBench(const BenchFlags& f) {
  absl::Status st = RunPresetBenchOrError(f);
  if (!st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode tokens/s");
  flags->model.AddTo(*cmd);
  cmd->add_option("--prompt-len", flags->prompt_len, "Prompt tokens per sequence")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--gen-len", flags->gen_len, "Decode steps")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", flags->batch, "Sequences per step")->check(CLI::PositiveNumber);
  cmd->add_option("--repeat", flags->repeat, "Timed repetitions (median reported)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--preset", flags->preset,
                  "Preset mode: build a random model of this preset's shapes in device memory "
                  "(mixtral-8x7b or tiny) and run the copy / decode / prefill / MoE benchmarks; "
                  "empty: model mode (--model)")
      ->envname("MOESERVE_BENCH_PRESET")
      ->check(CLI::IsMember(runtime::PresetNames()));
  cmd->add_option("--layers", flags->layers, "Preset mode: layers (0: the preset's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--context", flags->context, "Preset mode: cached tokens per decode sequence")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batches", flags->batches, "Preset mode: decode batch sizes")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", flags->warmup, "Preset mode: untimed steps before each measurement")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--steps", flags->steps, "Preset mode: timed steps per measurement")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prefill-tokens", flags->prefill_tokens,
                  "Preset mode: prompt lengths of the prefill measurements")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--moe-tokens", flags->moe_tokens,
                  "Preset mode: token counts of the MoE-block measurements")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--copy-mib", flags->copy_mib,
                  "Preset mode: MiB of the device-to-device copy bandwidth reference (0: skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", flags->seed, "Preset mode: weight seed")->capture_default_str();
  cmd->add_flag("--recorder", flags->recorder,
                "Model mode: also time decode with the load recorder on (recorder_overhead_pct)");
  cmd->callback([flags, exit_code]() {
    *exit_code = flags->preset.empty() ? RunBench(*flags) : RunPresetBench(*flags);
  });
}

}  // namespace moeserve::server
