// Test harness for expert parallelism: runs greedy generation of a set of sequences either on one
// plain model (the world-size-1 oracle: no communicator, every expert local) or on an
// expert-parallel group of N in-process ranks, each with its own MixtralModel (loaded with only
// its experts), KvBlockPool and its own subset of the sequences (data-parallel attention).
//
// Every rank runs the same number of steps in lockstep; a rank with no active sequence in a step
// calls Forward with an empty batch and so joins every layer's exchange with zero tokens.
// Sequences may start at different steps, so prefill and decode mix within one batch.
//
// Backends: the EP tests are parameterised over tests/golden/backends.h's backends. On CUDA every
// case skips (MOESERVE_SKIP_EP_ON_CUDA) with runtime::LoadRankSet's own refusal of --device cuda
// with --ep-size > 1: the in-process communicator moves rows with host memcpy, and no device
// communicator exists yet. When LoadRankSet stops refusing, the skip turns into a failure that
// says to run these cases on CUDA (GroupOptions::backend is already threaded through).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "parallel/comm/in_process_communicator.h"
#include "parallel/moe/ep_stats.h"
#include "parallel/moe/router_skew.h"
#include "parallel/placement/expert_placement.h"
#include "runtime/engine/rank_set.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/weight_names.h"
#include "tests/golden/backends.h"

namespace moeserve::runtime::ep_test {

struct Script {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 8;
  int64_t start_step = 0;  // the step whose batch first includes this sequence
};

struct SequenceResult {
  std::vector<float> prompt_logits;             // [prompt length, vocab]
  std::vector<std::vector<float>> step_logits;  // the last row of each decode step
  std::vector<int32_t> tokens;                  // greedy continuation
  int rank = 0;
  RoutingTrace routing;  // with GroupOptions::trace_routing
};

struct GroupRun {
  std::vector<SequenceResult> sequences;
  std::vector<parallel::EpRankStats> stats;      // per rank
  std::vector<LoadStats> load_stats;             // per rank (checkpoint-backed models)
  std::vector<std::vector<std::string>> loaded;  // per rank: tensor names read
  std::vector<ExpertLoad> expert_load;           // per rank: MixtralModel::expert_load()
};

using ModelFactory = std::function<absl::StatusOr<std::unique_ptr<LoadedModel>>(
    kernels::Backend* backend, const ModelLoadOptions& options)>;

inline int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);  // first of equal maxima
}

struct GroupOptions {
  int world = 1;
  // Null: the oracle (one plain model, no expert parallelism; world must be 1).
  const parallel::ExpertPlacement* placement = nullptr;
  std::function<int(size_t sequence)> assign = [](size_t) { return 0; };
  parallel::RouterSkew skew;
  int64_t kv_block_size = 4;
  std::string backend = "cpu";  // every rank's backend (tests/golden/backends.h)
  bool trace_routing = false;   // fill SequenceResult::routing
};

// LoadRankSet's answer to --device cuda with --ep-size 2 for the model in `model_dir` (empty: the
// embedded one): Unimplemented while expert parallelism has no device communicator. It refuses
// before creating any backend, so the answer is the same with or without a GPU.
inline absl::Status CudaEpRefusal(const std::string& model_dir) {
  RankSetOptions options;
  options.model_dir = model_dir;
  options.ep_size = 2;
  options.device = "cuda";
  return LoadRankSet(options).status();
}

inline absl::StatusOr<GroupRun> RunGroup(const ModelFactory& make,
                                         const std::vector<Script>& scripts,
                                         const GroupOptions& options) {
  int64_t num_steps = 0;
  for (const Script& s : scripts) num_steps = std::max(num_steps, s.start_step + s.max_new_tokens);
  GroupRun run;
  run.sequences.resize(scripts.size());
  run.stats.resize(static_cast<size_t>(options.world));
  run.load_stats.resize(static_cast<size_t>(options.world));
  run.loaded.resize(static_cast<size_t>(options.world));
  run.expert_load.resize(static_cast<size_t>(options.world));
  parallel::InProcessGroupOptions group_options;
  group_options.timeout = absl::Seconds(120);  // a lost rank fails the test, never hangs it
  parallel::InProcessGroup group(options.world, group_options);

  absl::Status st = group.Run([&](int rank, parallel::Communicator& comm) -> absl::Status {
    // 8 ranks share 2 cores: one CPU thread each.
    std::unique_ptr<kernels::Backend> backend = backend_test::NewBackend(options.backend, 1);
    if (backend == nullptr) return absl::InternalError("no " + options.backend + " backend");
    ModelLoadOptions load;
    load.placement = options.placement;
    load.rank = rank;
    absl::StatusOr<std::unique_ptr<LoadedModel>> loaded = make(backend.get(), load);
    if (!loaded.ok()) return loaded.status();
    MixtralModel& model = *(*loaded)->model;
    if (options.placement != nullptr) {
      if (auto s = model.EnableExpertParallel({&comm, options.placement}); !s.ok()) return s;
    }
    if (auto s = model.SetRouterSkew(options.skew); !s.ok()) return s;
    absl::StatusOr<KvBlockPool> pool =
        KvBlockPool::Create(*backend, model.KvShape(options.kv_block_size, 1024));
    if (!pool.ok()) return pool.status();
    const int64_t vocab = model.config().vocab_size;

    std::vector<size_t> mine;
    for (size_t i = 0; i < scripts.size(); ++i) {
      if (options.assign(i) == rank) mine.push_back(i);
    }
    std::vector<SequenceKv> kv(scripts.size());
    for (int64_t step = 0; step < num_steps; ++step) {
      std::vector<SequenceStep> batch;
      std::vector<size_t> in_batch;
      for (size_t i : mine) {
        const Script& s = scripts[i];
        SequenceResult& r = run.sequences[i];
        if (step < s.start_step || static_cast<int64_t>(r.tokens.size()) >= s.max_new_tokens) {
          continue;
        }
        if (step == s.start_step) {
          batch.push_back({s.prompt, &kv[i], true});
        } else {
          batch.push_back({{r.tokens.back()}, &kv[i], false});
        }
        if (options.trace_routing) batch.back().routing = &r.routing;
        in_batch.push_back(i);
      }
      StepOutput out;
      if (auto f = model.Forward(absl::MakeSpan(batch), *pool, &out); !f.ok()) {
        return absl::Status(
            f.code(), absl::StrCat("rank ", rank, " step ", step, ": ", std::string(f.message())));
      }
      for (size_t b = 0; b < in_batch.size(); ++b) {
        SequenceResult& r = run.sequences[in_batch[b]];
        r.rank = rank;
        if (step == scripts[in_batch[b]].start_step) {
          r.prompt_logits.assign(out.row(out.row_offsets[b]), out.row(out.row_offsets[b + 1]));
        } else {
          r.step_logits.emplace_back(out.last_row(b), out.last_row(b) + vocab);
        }
        r.tokens.push_back(Argmax(out.last_row(b), vocab));
      }
    }
    for (size_t i : mine) pool->Release(kv[i]);
    if (pool->num_used_blocks() != 0) return absl::InternalError("KV blocks leaked");
    run.stats[rank] = model.ep_stats();
    run.expert_load[rank] = model.expert_load();
    if ((*loaded)->checkpoint) {
      run.load_stats[rank] = (*loaded)->checkpoint->stats();
      run.loaded[rank] = (*loaded)->checkpoint->LoadedTensorNames();
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return run;
}

// A small random-model config of the Mixtral architecture (vocab 512, hidden 64, 4 heads of 16,
// 2 KV heads, experts of 96), fast enough for 8 ranks on 2 cores.
inline ModelConfig SmallConfig(int64_t layers = 4, int64_t experts = 8,
                               std::optional<int64_t> window = std::nullopt) {
  ModelConfig c = *PresetConfig("tiny", layers);
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.head_dim = 16;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.intermediate_size = 96;
  c.num_local_experts = experts;
  c.sliding_window = window;
  return c;
}

// The w1/w2/w3 tensor names of the experts `placement` gives `rank`, sorted.
inline std::vector<std::string> ExpertTensorNames(const parallel::ExpertPlacement& placement,
                                                  int rank) {
  std::vector<std::string> names;
  for (const auto& [layer, expert] : placement.ExpertsOf(rank)) {
    for (const char* w : {"w1", "w2", "w3"}) {
      names.push_back(ExpertPrefix(layer, expert) + w + ".weight");
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The expert tensors among `names` (keeps the order).
inline std::vector<std::string> ExpertTensorsIn(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const std::string& n : names) {
    if (n.find(".experts.") != std::string::npos) out.push_back(n);
  }
  return out;
}

// Sequence i on rank (i * 3 + 1) % world: spreads sequences and, with few sequences and many
// ranks, leaves some ranks with none.
inline std::function<int(size_t)> Spread(int world) {
  return [world](size_t i) { return static_cast<int>((i * 3 + 1) % static_cast<size_t>(world)); };
}

}  // namespace moeserve::runtime::ep_test

// In an EP test parameterised over backends: skips a case whose backend is absent, and every CUDA
// case (an expected skip, with LoadRankSet's reason) while expert parallelism cannot run on CUDA.
#define MOESERVE_SKIP_EP_ON_CUDA(backend, model_dir)                                           \
  do {                                                                                         \
    if ((backend) == "cuda") {                                                                 \
      const absl::Status refusal = ::moeserve::runtime::ep_test::CudaEpRefusal(model_dir);     \
      if (absl::IsUnimplemented(refusal)) {                                                    \
        GTEST_SKIP() << ::moeserve::runtime::backend_test::kNotApplicable                      \
                     << "expert parallelism on CUDA needs a device communicator: " << refusal; \
      }                                                                                        \
    }                                                                                          \
    MOESERVE_SKIP_UNLESS_BACKEND(backend);                                                     \
    if ((backend) == "cuda") {                                                                 \
      FAIL() << "LoadRankSet accepts --device cuda with --ep-size 2 now: run the EP tests on " \
                "CUDA (GroupOptions::backend) instead of skipping them";                       \
    }                                                                                          \
  } while (0)
