// One rank's engine loop: owns the rank's model, KV block pool, scheduler and the requests
// admitted to it, and runs admit -> schedule -> forward + sample (in the model step, on the device)
// -> stream back on its own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "runtime/engine/choice.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/request.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/step_sampling.h"
#include "runtime/scheduler/scheduler.h"

namespace moeserve::runtime {

// Counters shared by all workers and read by Engine::Stats (relaxed atomics: monotonic totals).
struct EngineCounters {
  std::atomic<int64_t> requests_submitted{0};
  std::atomic<int64_t> requests_finished{0};
  std::atomic<int64_t> requests_cancelled{0};
  std::atomic<int64_t> requests_rejected{0};
  std::atomic<int64_t> prompt_tokens{0};
  std::atomic<int64_t> generated_tokens{0};
  std::atomic<int64_t> steps{0};
  std::atomic<int64_t> queue_depth{0};  // admitted, not yet scheduled for the first time
  std::atomic<int64_t> in_flight{0};    // admitted, not yet finished
};

// A placement switch (EPLB) posted to every worker of a lockstep group: each applies it between
// two steps, at the first step agreement where every rank has it (the same step everywhere).
struct PlacementSwap {
  int64_t generation = 0;  // > 0, increasing from one swap to the next
  const parallel::ExpertPlacement* placement = nullptr;
  // [rank in this engine]: the experts that rank gains, packed (MixtralModel::SwapExpertPlacement).
  std::vector<std::vector<std::pair<std::pair<int64_t, int64_t>, parallel::ExpertWeights>>> added;

  absl::Mutex mu;
  int applied ABSL_GUARDED_BY(mu) = 0;                   // ranks done (ok or not)
  std::vector<absl::Status> status ABSL_GUARDED_BY(mu);  // [rank]
  // [rank]: seconds the rank's step loop was held by the switch.
  std::vector<double> pause_seconds ABSL_GUARDED_BY(mu);
};

// A request admitted to a worker.
struct AdmittedRequest {
  GenerationRequest request;
  std::shared_ptr<RequestStream> stream;
};

class Worker {
 public:
  Worker(int rank, RankModel rank_model, KvBlockPool pool, const SchedulerConfig& config,
         const Tokenizer* tokenizer, EngineCounters* counters);
  ~Worker();  // stops the thread; requests still running get a kCancelled final update

  // Before Start: the engine's load recorder, fed after every step (load_recorder.h).
  void SetRecorder(LoadRecorder* recorder) { recorder_ = recorder; }
  void Start();
  // Thread-safe: hands a validated request to this worker.
  void Enqueue(AdmittedRequest request);
  // Thread-safe: wakes an idle lockstep worker so that it joins the next step promptly (a request
  // was admitted to another rank).
  void Kick();
  // Thread-safe: posts a placement switch (lockstep workers only); the worker reports into it.
  void PostSwap(std::shared_ptr<PlacementSwap> swap);
  // Thread-safe: requests admitted here and not finished (the least-loaded rank gets the next).
  int64_t load() const { return load_.load(std::memory_order_relaxed); }

  // Thread-safe snapshots, refreshed after every step.
  struct Snapshot {
    int64_t running = 0;
    int64_t kv_blocks_used = 0;
    int64_t kv_blocks_total = 0;
    int64_t preemptions = 0;
    std::vector<std::vector<int64_t>> expert_tokens;
  };
  Snapshot snapshot() const;
  // Thread-safe: whether the loop has ended (the group agreed to stop, or it failed), and the
  // failure that ended it (OK when none).
  bool ended() const;
  absl::Status failure() const;
  // Thread-safe: this rank's expert-load and all-to-all counters.
  parallel::EpRankStats ep_stats() const { return rank_model_.model->ep_stats(); }
  // Before Start, for a worker whose peers are other PROCESSES: every `every_loops` turns of the
  // loop (the same turn on every rank: each turn is one step agreement) gather every rank's
  // EpRankStats (GatherEpRankStats), so that group_ep_stats() covers the whole group.
  void GatherGroupStats(int every_loops) { gather_every_ = every_loops; }
  // Thread-safe: every rank's stats as last gathered, this rank's fresh; empty when not
  // gathering (or before the first gather).
  std::vector<parallel::EpRankStats> group_ep_stats() const;

 private:
  struct Active {
    AdmittedRequest admitted;
    std::vector<std::unique_ptr<Choice>> choices;
    int64_t unfinished = 0;
    bool queued = true;  // counted in EngineCounters::queue_depth until first scheduled
    Usage usage;
  };

  void Loop();
  void Admit(std::vector<AdmittedRequest> incoming);
  void CancelAbandoned(bool cancel_all);
  void RunStep();
  // Lockstep only: agrees with the other ranks on (any rank has work, any rank stops, the
  // placement swap every rank has: *swap_generation in, the agreed one out, 0 for none).
  absl::Status AgreeOnStep(bool* any_work, bool* any_stop, int64_t* swap_generation);
  // Applies `swap` (agreed by every rank) to the model and reports into it.
  void ApplySwap(PlacementSwap& swap);
  // Fails every active request with `status` (the group is broken).
  void FailAll(const absl::Status& status);
  // Removes a finished request; `update` is its last update.
  void Complete(int64_t request_key, RequestUpdate update, FinishReason reason);
  void PublishSnapshot();

  const int rank_;
  RankModel rank_model_;
  KvBlockPool pool_;
  Scheduler scheduler_;
  const Tokenizer* tokenizer_;
  EngineCounters* counters_;
  LoadRecorder* recorder_ = nullptr;

  // Worker-thread state.
  std::map<int64_t, Active> active_;        // by request key (admission order)
  std::map<int64_t, Choice*> seq_choice_;   // sequence id -> its choice
  std::map<int64_t, int64_t> seq_request_;  // sequence id -> request key
  StepSampling sampling_;  // the step's sampling requests, reused (capacity kept) across steps
  int64_t next_request_key_ = 0;
  int64_t next_seq_id_ = 0;

  std::atomic<int64_t> load_{0};
  mutable absl::Mutex mu_;
  std::vector<AdmittedRequest> inbox_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<PlacementSwap> pending_swap_ ABSL_GUARDED_BY(mu_);
  Snapshot snapshot_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  int gather_every_ = 0;    // 0: never (set before Start)
  int64_t loop_turns_ = 0;  // worker thread only
  // Lockstep: whether some rank had work in the last step agreement (worker thread only). While
  // it is true an idle rank goes straight to the next agreement instead of sleeping, so a busy
  // peer never waits for its idle timeout on every step.
  bool group_busy_ = false;
  std::vector<parallel::EpRankStats> group_stats_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace moeserve::runtime
