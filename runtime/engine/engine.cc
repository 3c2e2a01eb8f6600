#include "runtime/engine/engine.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "runtime/engine/eplb.h"
#include "runtime/engine/worker.h"
#include "spdlog/spdlog.h"

namespace moeserve::runtime {

absl::Status EngineOptions::Validate() const {
  auto positive = [](const char* name, int64_t v) -> absl::Status {
    if (v > 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(name, " must be > 0, got ", v));
  };
  MOESERVE_RETURN_IF_ERROR(positive("--max-num-seqs", max_num_seqs));
  MOESERVE_RETURN_IF_ERROR(positive("--max-num-batched-tokens", max_num_batched_tokens));
  MOESERVE_RETURN_IF_ERROR(positive("--max-queue", max_queue));
  MOESERVE_RETURN_IF_ERROR(positive("--kv-block-size", kv_block_size));
  if (kv_blocks < 0) return absl::InvalidArgumentError("--kv-blocks must be >= 0");
  if (kv_blocks == 0) MOESERVE_RETURN_IF_ERROR(positive("--kv-cache-bytes", kv_cache_bytes));
  if (max_model_len < 0) return absl::InvalidArgumentError("--max-model-len must be >= 0");
  if (eplb_extra_experts_per_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--eplb-extra-experts must be >= 0, got ", eplb_extra_experts_per_rank));
  }
  if (eplb_interval_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--eplb-interval-steps must be >= 0, got ", eplb_interval_steps));
  }
  if (!(eplb_threshold >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--eplb-threshold must be >= 1 (a max/mean ratio), got ", eplb_threshold));
  }
  return absl::OkStatus();
}

class Engine::Impl {
 public:
  Impl(const Tokenizer* tokenizer, const EngineOptions& options, ModelConfig config)
      : tokenizer_(tokenizer), options_(options), config_(std::move(config)) {}

  const Tokenizer* tokenizer_;
  EngineOptions options_;
  ModelConfig config_;
  int64_t max_model_len_ = 0;
  int64_t blocks_per_rank_ = 0;
  EngineCounters counters_;
  std::atomic<int64_t> next_request_id_{0};
  std::atomic<bool> admitting_{true};
  std::vector<std::unique_ptr<Worker>> workers_;
  std::shared_ptr<const parallel::ExpertPlacement> placement_;
  std::unique_ptr<LoadRecorder> recorder_;
  std::unique_ptr<Rebalancer> rebalancer_;  // destroyed before the workers (~Engine)

  // Blocks one sequence of `total_tokens` holds at most (with a sliding window, only the window
  // plus one step's chunk stays resident).
  int64_t BlocksForSequence(int64_t total_tokens) const {
    int64_t resident = total_tokens;
    if (config_.sliding_window && *config_.sliding_window > 0) {
      resident = std::min(resident, *config_.sliding_window + options_.max_num_batched_tokens +
                                        options_.kv_block_size);
    }
    return (resident + options_.kv_block_size - 1) / options_.kv_block_size;
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() {
  impl_->admitting_ = false;
  impl_->rebalancer_.reset();  // its automatic trigger must not post to dying workers
  impl_->workers_.clear();     // each worker cancels what it still runs and joins its thread
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::vector<RankModel> ranks, const Tokenizer* tokenizer, const EngineOptions& options,
    std::shared_ptr<const parallel::ExpertPlacement> placement) {
  MOESERVE_RETURN_IF_ERROR(options.Validate());
  if (ranks.empty()) return absl::InvalidArgumentError("engine: no ranks");
  if (tokenizer == nullptr) return absl::InvalidArgumentError("engine: no tokenizer");
  const ModelConfig& config = ranks[0].model->config();
  auto impl = std::make_unique<Impl>(tokenizer, options, config);
  impl->placement_ = std::move(placement);
  impl->max_model_len_ =
      options.max_model_len > 0 ? options.max_model_len : config.max_position_embeddings;
  if (impl->max_model_len_ > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--max-model-len ", impl->max_model_len_,
                                                   " exceeds the model's max_position_embeddings ",
                                                   config.max_position_embeddings));
  }
  const int comm_world = ranks[0].comm != nullptr ? ranks[0].comm->world_size() : 1;
  SchedulerConfig sched{.max_num_seqs = options.max_num_seqs,
                        .max_num_batched_tokens = options.max_num_batched_tokens,
                        .sliding_window = config.sliding_window.value_or(0)};
  std::vector<ExpertSource> sources;
  for (size_t r = 0; r < ranks.size(); ++r) {
    sources.push_back(ranks[r].expert_source);
    MixtralModel& model = *ranks[r].model;
    int64_t blocks = options.kv_blocks;
    if (blocks == 0 && options.gpu_memory_utilization > 0 &&
        model.backend().device() == kernels::Device::kCuda) {
      MOESERVE_ASSIGN_OR_RETURN(
          blocks,
          KvBlocksForMemoryUtilization(model.backend(), model.KvShape(options.kv_block_size, 0),
                                       options.gpu_memory_utilization, impl->max_model_len_));
      spdlog::info("rank {}: kv cache of {} blocks of {} tokens from --gpu-memory-utilization={}",
                   r, blocks, options.kv_block_size, options.gpu_memory_utilization);
    } else if (blocks == 0) {
      const KvCacheShape unit = model.KvShape(options.kv_block_size, 1);
      const int64_t bytes_per_block = 2 * unit.num_layers * unit.bytes_per_block();
      blocks = options.kv_cache_bytes / bytes_per_block;
    }
    if (impl->BlocksForSequence(impl->max_model_len_) > blocks &&
        impl->BlocksForSequence(1) > blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache of ", blocks, " blocks cannot hold even one block of tokens"));
    }
    MOESERVE_ASSIGN_OR_RETURN(
        KvBlockPool pool,
        KvBlockPool::Create(model.backend(), model.KvShape(options.kv_block_size, blocks)));
    impl->blocks_per_rank_ = blocks;
    // The rank in the group (in a rank process: its global rank, for the log).
    const int rank = ranks[r].comm != nullptr ? ranks[r].comm->rank() : static_cast<int>(r);
    impl->workers_.push_back(std::make_unique<Worker>(rank, std::move(ranks[r]), std::move(pool),
                                                      sched, tokenizer, &impl->counters_));
  }
  impl->recorder_ = std::make_unique<LoadRecorder>(
      impl->config_.num_hidden_layers, impl->config_.num_local_experts,
      static_cast<int>(impl->workers_.size()), options.recorder_max_steps);
  // A lone worker whose group has other ranks: they are other processes, whose statistics reach
  // this one only through the communicator (every 50 step agreements: ~1 s when idle).
  if (impl->workers_.size() == 1 && comm_world > 1) impl->workers_[0]->GatherGroupStats(50);
  for (auto& w : impl->workers_) {
    w->SetRecorder(impl->recorder_.get());
    w->Start();
  }
  auto engine = std::unique_ptr<Engine>(new Engine(std::move(impl)));
  std::vector<Worker*> workers;
  for (auto& w : engine->impl_->workers_) workers.push_back(w.get());
  Engine* e = engine.get();
  engine->impl_->rebalancer_ = std::make_unique<Rebalancer>(
      std::move(workers), std::move(sources), engine->impl_->placement_, engine->world_size(),
      options, [e] { return e->Stats(); },
      [e] { return e->impl_->counters_.steps.load(std::memory_order_relaxed); });
  return engine;
}

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(GenerationRequest request) {
  Impl& m = *impl_;
  if (!m.admitting_) return absl::UnavailableError("the server is shutting down");
  // A broken lockstep group runs no more steps: a request admitted now would never be answered.
  if (absl::Status failed = GroupFailure(); !failed.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the expert-parallel group failed: ", failed.message()));
  }
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t vocab = m.config_.vocab_size;
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " is ", request.prompt[i],
                                                     ", outside the vocabulary [0, ", vocab, ")"));
    }
  }
  MOESERVE_RETURN_IF_ERROR(request.sampling.Validate());
  if (request.router_skew != nullptr) {
    if (absl::Status st =
            parallel::ValidateSkewProfile(*request.router_skew, m.config_.num_local_experts);
        !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("router_skew: ", st.message()));
    }
  }
  MOESERVE_ASSIGN_OR_RETURN(const int64_t max_tokens,
                            request.sampling.ResolveMaxTokens(prompt_len, m.max_model_len_));
  request.sampling.max_tokens = max_tokens;
  MOESERVE_RETURN_IF_ERROR(
      CheckRoutingBound(request, m.config_.num_hidden_layers, m.options_.max_routing_entries));
  const int64_t blocks_needed = m.BlocksForSequence(prompt_len + max_tokens);
  if (blocks_needed > m.blocks_per_rank_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request needs ", blocks_needed, " KV cache blocks but a rank has ",
                     m.blocks_per_rank_, "; lower max_tokens or raise --kv-cache-bytes"));
  }
  // Admission: the queue bound counts requests not yet scheduled for the first time.
  if (m.counters_.queue_depth.fetch_add(1, std::memory_order_relaxed) >= m.options_.max_queue) {
    m.counters_.queue_depth.fetch_sub(1, std::memory_order_relaxed);
    m.counters_.requests_rejected.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request queue is full (", m.options_.max_queue, " waiting); retry later"));
  }
  if (request.request_id.empty()) {
    request.request_id = absl::StrCat("req-", m.next_request_id_.fetch_add(1));
  }
  auto stream = std::make_shared<RequestStream>(request.request_id);
  Worker* target = m.workers_[0].get();
  for (auto& w : m.workers_) {
    if (w->load() < target->load()) target = w.get();
  }
  m.counters_.requests_submitted.fetch_add(1, std::memory_order_relaxed);
  m.counters_.in_flight.fetch_add(1, std::memory_order_relaxed);
  target->Enqueue({std::move(request), stream});
  for (auto& w : m.workers_) {
    if (w.get() != target) w->Kick();  // lockstep peers join the next step without delay
  }
  return stream;
}

void Engine::StopAdmission() { impl_->admitting_ = false; }

bool Engine::WaitUntilIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (impl_->counters_.in_flight.load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

absl::Status Engine::GroupFailure() const {
  for (const auto& w : impl_->workers_) {
    if (absl::Status st = w->failure(); !st.ok()) return st;
  }
  return absl::OkStatus();
}

bool Engine::WaitUntilStopped(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    bool all = true;
    for (const auto& w : impl_->workers_) all &= w->ended();
    if (all) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

EngineStats Engine::Stats() const {
  const EngineCounters& c = impl_->counters_;
  EngineStats s;
  s.requests_submitted = c.requests_submitted.load();
  s.requests_finished = c.requests_finished.load();
  s.requests_cancelled = c.requests_cancelled.load();
  s.requests_rejected = c.requests_rejected.load();
  s.prompt_tokens = c.prompt_tokens.load();
  s.generated_tokens = c.generated_tokens.load();
  s.steps = c.steps.load();
  s.queue_depth = c.queue_depth.load();
  std::vector<parallel::EpRankStats> ep_ranks;
  for (const auto& w : impl_->workers_) {
    ep_ranks.push_back(w->ep_stats());
    Worker::Snapshot snap = w->snapshot();
    s.running_sequences += snap.running;
    s.kv_blocks_total += snap.kv_blocks_total;
    s.kv_blocks_used += snap.kv_blocks_used;
    s.preemptions += snap.preemptions;
    if (s.expert_tokens.empty()) {
      s.expert_tokens = snap.expert_tokens;
    } else {
      for (size_t l = 0; l < s.expert_tokens.size(); ++l) {
        for (size_t e = 0; e < s.expert_tokens[l].size(); ++e) {
          s.expert_tokens[l][e] += snap.expert_tokens[l][e];
        }
      }
    }
  }
  // Ranks in other processes: their last gathered statistics (this rank's are fresh).
  if (impl_->workers_.size() == 1) {
    std::vector<parallel::EpRankStats> group = impl_->workers_[0]->group_ep_stats();
    if (!group.empty()) ep_ranks = std::move(group);
  }
  s.ep = parallel::AggregateEpStats(ep_ranks);
  if (impl_->rebalancer_) s.eplb = impl_->rebalancer_->counters();
  return s;
}

const parallel::ExpertPlacement* Engine::placement() const {
  return impl_->rebalancer_ ? impl_->rebalancer_->current() : impl_->placement_.get();
}

absl::StatusOr<RebalanceResult> Engine::Rebalance(int64_t extra_experts_per_rank) {
  return impl_->rebalancer_->Rebalance(extra_experts_per_rank);
}

EplbCounters Engine::eplb_counters() const { return impl_->rebalancer_->counters(); }

const ModelConfig& Engine::model_config() const { return impl_->config_; }
const EngineOptions& Engine::options() const { return impl_->options_; }
int64_t Engine::max_model_len() const { return impl_->max_model_len_; }
LoadRecorder& Engine::recorder() { return *impl_->recorder_; }
int Engine::world_size() const {
  return impl_->placement_ ? impl_->placement_->world_size()
                           : static_cast<int>(impl_->workers_.size());
}

}  // namespace moeserve::runtime
