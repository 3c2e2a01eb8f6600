// The serving engine: a bounded admission queue in front of one worker per rank. Each worker owns
// a model replica's attention state (KV pool), a continuous-batching Scheduler and the sequences
// it runs; it loops: admit -> schedule -> forward -> sample -> stream back.
//
//   front end --Submit--> admission queue --(least-loaded rank)--> Worker thread
//      ^                                                             |
//      +------------------- RequestStream <-- updates ---------------+
//
// Threading: Submit, Stats and the drain calls are thread-safe and never wait for a model step.
// Everything a worker owns (scheduler, pool, model, sequences) is touched only by its thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/comm/communicator.h"
#include "parallel/moe/ep_stats.h"
#include "parallel/placement/expert_placement.h"
#include "runtime/engine/load_recorder.h"
#include "runtime/engine/request.h"
#include "runtime/model/expert_source.h"
#include "runtime/model/mixtral_model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {

struct EngineOptions {
  int64_t max_num_seqs = 256;            // running sequences per rank
  int64_t max_num_batched_tokens = 512;  // tokens per step per rank (prefill chunks + decodes)
  int64_t max_queue = 4096;              // requests waiting for admission (then RESOURCE_EXHAUSTED)
  int64_t kv_block_size = 16;
  int64_t kv_blocks = 0;  // per rank; 0: from kv_cache_bytes
  int64_t kv_cache_bytes = int64_t{256} << 20;
  // With kv_blocks 0 on a CUDA backend: the pool takes this fraction of the GPU's memory less what
  // is in use once the weights are loaded (KvBlocksForMemoryUtilization), instead of
  // kv_cache_bytes. 0: kv_cache_bytes everywhere.
  double gpu_memory_utilization = 0;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  // Bound of one request's routing trace (return_routing): n x traced tokens x layers entries,
  // each top_k (expert id, weight) pairs; traced tokens = prompt + max_tokens - 1. Larger
  // requests are InvalidArgument. 65536 entries of top-2 are 1 MiB in memory and about 3 MB of
  // response JSON (Mixtral: 2048 tokens of 32 layers).
  int64_t max_routing_entries = 65536;
  // Steps the load recorder keeps (a ring; load_recorder.h).
  int64_t recorder_max_steps = kDefaultRecorderMaxSteps;
  // EPLB (eplb.h): replica budget of Rebalance (extra experts per rank per layer), and the
  // automatic trigger: every eplb_interval_steps steps (0: off) rebalance when the measured
  // rank max/mean over the statistics window exceeds eplb_threshold.
  int64_t eplb_extra_experts_per_rank = 1;
  int64_t eplb_interval_steps = 0;
  double eplb_threshold = 1.3;

  absl::Status Validate() const;
};

// EPLB (eplb.h) since start.
struct EplbCounters {
  int64_t rebalances = 0;  // switches made (changed placements)
  double last_pause_ms = 0;
  double last_imbalance_before = 1.0;  // measured rank max/mean before the last switch
  double last_imbalance_after = 1.0;   // projected after it
};

struct EngineStats {
  int64_t requests_submitted = 0;
  int64_t requests_finished = 0;
  int64_t requests_cancelled = 0;
  int64_t requests_rejected = 0;  // queue full
  int64_t prompt_tokens = 0;      // prompt tokens computed (recomputation included)
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t queue_depth = 0;  // waiting for admission or for a first schedule
  int64_t running_sequences = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  // Cumulative tokens routed per layer per expert, summed over ranks: [num_layers][num_experts].
  std::vector<std::vector<int64_t>> expert_tokens;
  // Expert-parallel view: per-rank traffic and all-to-all time, expert and rank imbalance
  // (max/mean), last step and cumulative. World size 1: one rank, no traffic.
  parallel::EpStats ep;
  EplbCounters eplb;
};

// One rank's model and everything it needs; the engine takes ownership of the worker's inputs.
struct RankModel {
  std::unique_ptr<kernels::Backend> backend;  // may be null when `model` does not own one
  std::shared_ptr<void> keep_alive;           // whatever backs the weights (e.g. a LoadedModel)
  MixtralModel* model = nullptr;
  // With expert parallelism: this rank's communicator (the one the model's MoE layers use). The
  // workers then run in lockstep: before every step the ranks agree (all-reduce) whether any of
  // them has work, and a rank with none still runs the step with an empty batch so that it joins
  // every layer's all-to-all. Null: the rank steps on its own.
  parallel::Communicator* comm = nullptr;
  // Where this rank reads experts it did not load (EPLB replicas); null: it cannot.
  ExpertSource expert_source;
};

struct RebalanceResult;
class Rebalancer;

class Engine {
 public:
  // Starts one worker thread per rank. `tokenizer` must outlive the engine.
  // `placement`: the expert placement the ranks were loaded with (null at world size 1), reported
  // by placement().
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::vector<RankModel> ranks, const Tokenizer* tokenizer, const EngineOptions& options,
      std::shared_ptr<const parallel::ExpertPlacement> placement = nullptr);
  ~Engine();  // cancels what is left and joins the workers

  // Validates and enqueues. InvalidArgument for a bad request (empty prompt, prompt or
  // prompt + max_tokens past max_model_len, bad sampling parameters, token ids outside the
  // vocabulary), ResourceExhausted when the admission queue is full, Unavailable after
  // StopAdmission or a group failure (GroupFailure).
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerationRequest request);

  // Graceful shutdown: refuse new requests, let the admitted ones finish.
  void StopAdmission();
  // True when every admitted request has finished before `timeout`.
  bool WaitUntilIdle(absl::Duration timeout);

  // Lockstep groups (ranks with a communicator): the failure that broke the group (a collective
  // failed: a peer died, timed out or aborted), OK while there is none. The requests it ended
  // got this status (UNAVAILABLE / DEADLINE_EXCEEDED); the engine serves nothing after it.
  absl::Status GroupFailure() const;
  // True when every worker loop has ended before `timeout`: after a group failure, or when the
  // group agreed to stop (rank 0's engine was destroyed; what a rank process without front ends
  // waits for).
  bool WaitUntilStopped(absl::Duration timeout);

  EngineStats Stats() const;
  const ModelConfig& model_config() const;
  const EngineOptions& options() const;
  int64_t max_model_len() const;
  // Ranks of the expert-parallel group (the placement's world size: in a rank process this
  // counts the other processes' ranks too).
  int world_size() const;
  // The bounded expert-load recorder (load_recorder.h); thread-safe.
  LoadRecorder& recorder();
  // Null at world size 1 (every expert on rank 0). After a Rebalance, the new placement; a
  // pointer returned earlier stays valid for the engine's life.
  const parallel::ExpertPlacement* placement() const;

  // EPLB (eplb.h): plans replicas of hot experts from the window's measured load, prepares their
  // weights while serving and switches every rank between two steps. Outputs do not change.
  // extra_experts_per_rank < 0: options().eplb_extra_experts_per_rank. FailedPrecondition at
  // world size 1, with ranks as processes, or with no load measured; Unimplemented on CUDA.
  absl::StatusOr<RebalanceResult> Rebalance(int64_t extra_experts_per_rank = -1);
  EplbCounters eplb_counters() const;

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moeserve::runtime
