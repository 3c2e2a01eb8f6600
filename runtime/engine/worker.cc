#include "runtime/engine/worker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "parallel/moe/ep_stats_gather.h"
#include "spdlog/spdlog.h"

namespace moeserve::runtime {

Worker::Worker(int rank, RankModel rank_model, KvBlockPool pool, const SchedulerConfig& config,
               const Tokenizer* tokenizer, EngineCounters* counters)
    : rank_(rank),
      rank_model_(std::move(rank_model)),
      pool_(std::move(pool)),
      scheduler_(config, &pool_),
      tokenizer_(tokenizer),
      counters_(counters) {
  PublishSnapshot();
}

Worker::~Worker() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Worker::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Worker::Enqueue(AdmittedRequest request) {
  load_.fetch_add(1, std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  inbox_.push_back(std::move(request));
}

Worker::Snapshot Worker::snapshot() const {
  absl::MutexLock lock(&mu_);
  return snapshot_;
}

bool Worker::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

absl::Status Worker::failure() const {
  absl::MutexLock lock(&mu_);
  return failure_;
}

std::vector<parallel::EpRankStats> Worker::group_ep_stats() const {
  std::vector<parallel::EpRankStats> all;
  {
    absl::MutexLock lock(&mu_);
    all = group_stats_;
  }
  if (all.empty()) return all;
  all[static_cast<size_t>(rank_)] = ep_stats();  // this rank's own, fresh
  return all;
}

void Worker::PostSwap(std::shared_ptr<PlacementSwap> swap) {
  absl::MutexLock lock(&mu_);
  pending_swap_ = std::move(swap);
  kicked_ = true;
}

void Worker::ApplySwap(PlacementSwap& swap) {
  const absl::Time start = absl::Now();
  const size_t index = static_cast<size_t>(rank_);
  absl::Status st = rank_model_.model->SwapExpertPlacement(swap.placement, swap.added[index]);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!st.ok()) {
    // The other ranks switched: rows would reach a rank without the expert. Break the group
    // rather than compute wrong results.
    spdlog::error("rank {}: placement switch failed: {}", rank_, std::string(st.message()));
    rank_model_.comm->Abort(st);
  }
  absl::MutexLock lock(&swap.mu);
  swap.status[index] = st;
  swap.pause_seconds[index] = seconds;
  ++swap.applied;
}

void Worker::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

void Worker::Loop() {
  const bool lockstep = rank_model_.comm != nullptr;
  while (true) {
    std::vector<AdmittedRequest> incoming;
    bool stopping;
    std::shared_ptr<PlacementSwap> swap;
    {
      absl::MutexLock lock(&mu_);
      if (active_.empty() && !(lockstep && group_busy_)) {
        // Idle: sleep until a request arrives or the engine shuts down. A lockstep rank also wakes
        // when another rank got a request (Kick) and at least every 20 ms, because its peers may
        // be waiting for it in the step agreement. While the group is busy (the last agreement
        // had work) an idle rank does not sleep at all: its peers run a step right after each
        // agreement and need it back at the next one.
        struct Wake {
          const std::vector<AdmittedRequest>* inbox;
          const bool* stop;
          const bool* kicked;
        } wake{&inbox_, &stop_, &kicked_};
        const absl::Condition cond(
            +[](Wake* w) { return !w->inbox->empty() || *w->stop || *w->kicked; }, &wake);
        if (lockstep) {
          mu_.AwaitWithTimeout(cond, absl::Milliseconds(20));
        } else {
          mu_.Await(cond);
        }
      }
      incoming.swap(inbox_);
      stopping = stop_;
      swap = pending_swap_;
      kicked_ = false;
    }
    Admit(std::move(incoming));
    bool any_work = !active_.empty();
    if (lockstep) {
      int64_t swap_generation = swap != nullptr ? swap->generation : 0;
      absl::Status agreed = AgreeOnStep(&any_work, &stopping, &swap_generation);
      group_busy_ = agreed.ok() && any_work;
      if (agreed.ok() && swap != nullptr && swap_generation == swap->generation && !stopping) {
        // Every rank has it: all switch here, between the same two steps.
        ApplySwap(*swap);
        absl::MutexLock lock(&mu_);
        if (pending_swap_ == swap) pending_swap_ = nullptr;
      }
      if (agreed.ok() && gather_every_ > 0 && ++loop_turns_ % gather_every_ == 0) {
        absl::StatusOr<std::vector<parallel::EpRankStats>> all =
            parallel::GatherEpRankStats(*rank_model_.comm, rank_model_.model->ep_stats());
        if (all.ok()) {
          absl::MutexLock lock(&mu_);
          group_stats_ = *std::move(all);
        } else {
          agreed = all.status();
        }
      }
      if (!agreed.ok()) {
        spdlog::error("rank {}: step agreement failed: {}", rank_, std::string(agreed.message()));
        {
          absl::MutexLock lock(&mu_);
          failure_ = agreed;
        }
        // To a client the group's failure is the server being unavailable (HTTP 503 / gRPC
        // UNAVAILABLE), whatever the collective's own code (a timeout is DEADLINE_EXCEEDED).
        FailAll(absl::UnavailableError(
            absl::StrCat("the expert-parallel group failed: ", agreed.message())));
        break;
      }
    }
    CancelAbandoned(/*cancel_all=*/stopping);
    if (stopping) break;
    if (any_work) RunStep();
  }
  PublishSnapshot();
  absl::MutexLock lock(&mu_);
  ended_ = true;
}

absl::Status Worker::AgreeOnStep(bool* any_work, bool* any_stop, int64_t* swap_generation) {
  // The swap generation goes in negated: max(-g) = -min(g), so a swap is agreed only once every
  // rank has it (a rank without one sends 0).
  const int64_t mine[3] = {*any_work ? 1 : 0, *any_stop ? 1 : 0, -*swap_generation};
  int64_t all[3] = {0, 0, 0};
  absl::Status st = rank_model_.comm->AllReduce(mine, all, 3, parallel::ReduceOp::kMax);
  *any_work = all[0] != 0;
  *any_stop = all[1] != 0;
  *swap_generation = -all[2];
  return st;
}

void Worker::FailAll(const absl::Status& status) {
  std::vector<int64_t> keys;
  for (auto& [key, a] : active_) keys.push_back(key);
  for (int64_t key : keys) {
    RequestUpdate update;
    update.status = status;
    for (auto& choice : active_[key].choices) {
      if (choice->finished()) continue;
      scheduler_.Finish(&choice->seq());
      update.choices.push_back(choice->Abort(FinishReason::kError));
    }
    Complete(key, std::move(update), FinishReason::kError);
  }
}

void Worker::Admit(std::vector<AdmittedRequest> incoming) {
  for (AdmittedRequest& admitted : incoming) {
    const int64_t key = next_request_key_++;
    Active& a = active_[key];
    a.admitted = std::move(admitted);
    const GenerationRequest& req = a.admitted.request;
    a.usage.prompt_tokens = static_cast<int64_t>(req.prompt.size());
    for (int32_t i = 0; i < req.sampling.n; ++i) {
      auto choice = std::make_unique<Choice>(i, next_seq_id_++, req, *tokenizer_,
                                             rank_model_.model->config().eos_token_id);
      seq_choice_[choice->seq().id] = choice.get();
      seq_request_[choice->seq().id] = key;
      scheduler_.Add(&choice->seq());
      a.choices.push_back(std::move(choice));
    }
    a.unfinished = req.sampling.n;
  }
}

void Worker::CancelAbandoned(bool cancel_all) {
  std::vector<int64_t> cancelled;
  for (auto& [key, a] : active_) {
    if (cancel_all || a.admitted.stream->cancelled()) cancelled.push_back(key);
  }
  if (cancelled.empty()) return;
  std::vector<RequestUpdate> updates(cancelled.size());
  for (size_t i = 0; i < cancelled.size(); ++i) {
    for (auto& choice : active_[cancelled[i]].choices) {
      if (choice->finished()) continue;
      scheduler_.Finish(&choice->seq());  // frees its KV blocks now
      updates[i].choices.push_back(choice->Abort(FinishReason::kCancelled));
    }
  }
  PublishSnapshot();  // a client that sees the final update also sees the blocks freed
  for (size_t i = 0; i < cancelled.size(); ++i) {
    Complete(cancelled[i], std::move(updates[i]), FinishReason::kCancelled);
  }
}

void Worker::RunStep() {
  const bool lockstep = rank_model_.comm != nullptr;
  SchedulerOutput plan = scheduler_.Schedule();
  if (plan.empty() && !lockstep) {
    // Work that cannot be scheduled yet (e.g. waiting for blocks held by nothing that will run):
    // Engine::Submit rejects requests that could never fit, so this is transient. Don't spin.
    absl::SleepFor(absl::Milliseconds(1));
    return;
  }

  std::vector<SequenceStep> batch;
  batch.reserve(plan.scheduled.size());
  sampling_.Clear();
  int64_t prompt_tokens = 0;
  for (const ScheduledSequence& s : plan.scheduled) {
    Sequence& seq = *s.seq;
    // One sampling row per sequence whose step ends at its last known token (not for prefill
    // chunks that don't end the prompt); the device samples it, only the ids come back.
    if (s.samples) {
      seq_choice_[seq.id]->AddSampleRow(static_cast<int64_t>(batch.size()), &sampling_);
    }
    const auto begin = seq.tokens.begin() + seq.num_computed_tokens();
    Active& a = active_[seq_request_[seq.id]];
    batch.push_back({std::vector<int32_t>(begin, begin + s.num_new_tokens), &seq.kv, false,
                     a.admitted.request.router_skew, seq_choice_[seq.id]->routing()});
    const int64_t first = seq.num_computed_tokens();
    prompt_tokens +=
        std::max<int64_t>(0, std::min(first + s.num_new_tokens, seq.num_prompt_tokens) - first);
    if (a.queued) {
      a.queued = false;
      counters_->queue_depth.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  StepOutput out;
  const absl::Status status =
      rank_model_.model->Forward(absl::MakeSpan(batch), pool_, sampling_, &out);
  counters_->steps.fetch_add(1, std::memory_order_relaxed);
  counters_->prompt_tokens.fetch_add(prompt_tokens, std::memory_order_relaxed);
  scheduler_.OnStepDone(plan);
  if (recorder_ != nullptr && recorder_->recording()) recorder_->Record(ep_stats());

  std::map<int64_t, RequestUpdate> updates;  // by request key
  if (!status.ok()) {
    // A model failure fails the requests of this step only; the worker keeps serving.
    spdlog::error("rank {}: step failed: {}", rank_, std::string(status.message()));
    // In a lockstep group a failed step is the group failing (a collective of a MoE layer): as
    // in FailAll, the client sees UNAVAILABLE.
    const absl::Status client_status =
        lockstep ? absl::UnavailableError(
                       absl::StrCat("the expert-parallel step failed: ", status.message()))
                 : status;
    for (const ScheduledSequence& s : plan.scheduled) {
      Choice* choice = seq_choice_[s.seq->id];
      if (choice->finished()) continue;
      scheduler_.Finish(s.seq);
      RequestUpdate& u = updates[seq_request_[s.seq->id]];
      u.status = client_status;
      u.choices.push_back(choice->Abort(FinishReason::kError));
    }
  } else {
    for (int64_t row = 0; row < sampling_.num_rows(); ++row) {
      const ScheduledSequence& s =
          plan.scheduled[static_cast<size_t>(sampling_.sequences[static_cast<size_t>(row)])];
      Choice* choice = seq_choice_[s.seq->id];
      ChoiceDelta delta = choice->OnSampled(out.sampled.row(row));
      counters_->generated_tokens.fetch_add(1, std::memory_order_relaxed);
      if (choice->finished()) scheduler_.Finish(s.seq);
      updates[seq_request_[s.seq->id]].choices.push_back(std::move(delta));
    }
  }

  PublishSnapshot();  // before the updates: a client never sees stats older than its tokens
  for (auto& [key, update] : updates) {
    Active& a = active_[key];
    for (const ChoiceDelta& d : update.choices) {
      a.usage.completion_tokens += static_cast<int64_t>(d.tokens.size());
      if (d.finish_reason != FinishReason::kNone) --a.unfinished;
    }
    if (a.unfinished == 0) {
      Complete(key, std::move(update), status.ok() ? FinishReason::kStop : FinishReason::kError);
    } else {
      update.usage = a.usage;
      a.admitted.stream->Push(std::move(update));
    }
  }
}

void Worker::Complete(int64_t key, RequestUpdate update, FinishReason reason) {
  Active& a = active_[key];
  update.finished = true;
  update.usage = a.usage;
  if (a.queued) counters_->queue_depth.fetch_sub(1, std::memory_order_relaxed);
  if (reason == FinishReason::kCancelled) {
    counters_->requests_cancelled.fetch_add(1, std::memory_order_relaxed);
  } else {
    counters_->requests_finished.fetch_add(1, std::memory_order_relaxed);
  }
  a.admitted.stream->Push(std::move(update));
  for (auto& choice : a.choices) {
    seq_choice_.erase(choice->seq().id);
    seq_request_.erase(choice->seq().id);
  }
  active_.erase(key);
  load_.fetch_sub(1, std::memory_order_relaxed);
  counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
}

void Worker::PublishSnapshot() {
  Snapshot s;
  s.running = scheduler_.num_running();
  s.kv_blocks_used = pool_.num_used_blocks();
  s.kv_blocks_total = pool_.shape().num_blocks;
  s.preemptions = scheduler_.num_preemptions();
  s.expert_tokens = rank_model_.model->expert_load().tokens;
  absl::MutexLock lock(&mu_);
  snapshot_ = std::move(s);
}

}  // namespace moeserve::runtime
