// moeserve bench: prefill and decode throughput of a model on this machine.
//
// Prefill: `batch` sequences of `prompt_len` random tokens in one forward step.
// Decode: then `gen_len` steps of one new token per sequence (greedy), all sequences batched.
// Each phase is repeated `repeat` times on fresh KV state; the median is reported as JSON.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>

#include "nlohmann/json.hpp"
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
  std::vector<double> prefill_s, decode_s;
  for (int rep = 0; rep <= f.repeat; ++rep) {  // rep 0 is the warm-up
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
    }
    auto t2 = Clock::now();
    for (auto& k : kv) session->pool->Release(k);
    if (!st.ok()) {
      std::cerr << "error: " << st.message() << "\n";
      return 1;
    }
    if (rep == 0) continue;
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
  std::cout << j.dump() << "\n";
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
  cmd->callback([flags, exit_code]() { *exit_code = RunBench(*flags); });
}

}  // namespace moeserve::server
