// Iteration-level (continuous-batching) scheduler for one rank, after vLLM v1: no prefill or
// decode phases, only "how many of each sequence's tokens are not yet in the KV cache". Each step
// gets a token budget (max_num_batched_tokens) that is spent first on the running sequences, in
// age order (one token for a decode, a chunk for an unfinished prefill), then on waiting ones
// (FCFS) while fewer than max_num_seqs run.
//
// Memory: KV blocks are reserved here, before the step. When a running sequence cannot get the
// blocks for its next tokens, the youngest running sequence is preempted: its blocks are freed,
// its computed-token count reset, and it goes back to the front of the waiting queue; when it is
// scheduled again its prompt and generated tokens are recomputed (the same logits bit for bit,
// see the determinism contract in kernels/ops/matmul.h), so its output does not change.
//
// Threading: owned by one worker thread; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "runtime/kv/kv_block_pool.h"
#include "runtime/scheduler/sequence.h"

namespace moeserve::runtime {

struct SchedulerConfig {
  int64_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 512;
  int64_t sliding_window = 0;  // > 0: blocks that leave the window are freed after each step
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int64_t num_new_tokens = 0;  // tokens[num_computed, num_computed + num_new_tokens) run now
  // True when this step computes the sequence's last known token, so its logits give the next
  // token (false for a prefill chunk that is not the last one).
  bool samples = false;
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> scheduled;  // oldest first
  std::vector<Sequence*> preempted;          // preempted during this call
  int64_t num_tokens = 0;                    // sum of num_new_tokens

  bool empty() const { return scheduled.empty(); }
};

class Scheduler {
 public:
  // `pool` must outlive the scheduler.
  Scheduler(const SchedulerConfig& config, KvBlockPool* pool) : config_(config), pool_(pool) {}

  // Queues a new sequence (status kWaiting, nothing computed). Its id orders it.
  void Add(Sequence* seq);
  // Picks this step's work and reserves its KV blocks. Never loses a sequence: each one is in
  // exactly one of waiting / running until Finish.
  SchedulerOutput Schedule();
  // After the model ran the step: frees blocks that left the sliding window.
  void OnStepDone(const SchedulerOutput& output);
  // Removes a sequence (finished or cancelled, waiting or running) and frees its blocks.
  void Finish(Sequence* seq);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  bool has_work() const { return !waiting_.empty() || !running_.empty(); }

 private:
  void Preempt(Sequence* seq);

  SchedulerConfig config_;
  KvBlockPool* pool_;
  std::map<int64_t, Sequence*> waiting_;  // by id: oldest first, preempted ones included
  std::map<int64_t, Sequence*> running_;  // by id
  int64_t num_preemptions_ = 0;
};

}  // namespace moeserve::runtime
