#include "runtime/scheduler/scheduler.h"

#include <algorithm>
#include <iterator>

namespace moeserve::runtime {

void Scheduler::Add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_[seq->id] = seq;
}

void Scheduler::Preempt(Sequence* seq) {
  running_.erase(seq->id);
  pool_->Release(seq->kv);  // also resets kv.num_tokens: everything is recomputed on resume
  seq->status = SequenceStatus::kWaiting;
  ++num_preemptions_;
  waiting_[seq->id] = seq;
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  int64_t budget = config_.max_num_batched_tokens;

  // Running sequences, oldest first. A preemption victim is always the youngest running sequence,
  // so it lies at or after `it`: sequences already scheduled in this step are never taken back.
  for (auto it = running_.begin(); it != running_.end() && budget > 0;) {
    Sequence* seq = it->second;
    const int64_t remaining = seq->num_tokens() - seq->num_computed_tokens();
    if (remaining <= 0) {  // nothing to compute until the engine appends a sampled token
      ++it;
      continue;
    }
    const int64_t n = std::min(remaining, budget);
    bool self_preempted = false;
    while (!pool_->Reserve(seq->kv, seq->num_computed_tokens() + n)) {
      Sequence* victim = std::prev(running_.end())->second;
      Preempt(victim);
      out.preempted.push_back(victim);
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) break;  // it was the youngest: no running sequence is left after it
    out.scheduled.push_back({seq, n, n == remaining});
    out.num_tokens += n;
    budget -= n;
    ++it;
  }

  // Waiting sequences, oldest first, while there is budget and room. Nothing new is admitted in a
  // step that had to preempt: memory is short, and the preempted ones come back first anyway.
  while (budget > 0 && out.preempted.empty() && !waiting_.empty() &&
         static_cast<int64_t>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.begin()->second;
    const int64_t remaining = seq->num_tokens() - seq->num_computed_tokens();
    const int64_t n = std::min(remaining, budget);
    if (!pool_->Reserve(seq->kv, seq->num_computed_tokens() + n)) break;  // FCFS: no overtaking
    waiting_.erase(waiting_.begin());
    seq->status = SequenceStatus::kRunning;
    running_[seq->id] = seq;
    out.scheduled.push_back({seq, n, n == remaining});
    out.num_tokens += n;
    budget -= n;
  }
  return out;
}

void Scheduler::OnStepDone(const SchedulerOutput& output) {
  if (config_.sliding_window <= 0) return;
  for (const ScheduledSequence& s : output.scheduled) {
    pool_->ReleaseOutOfWindow(s.seq->kv, config_.sliding_window);
  }
}

void Scheduler::Finish(Sequence* seq) {
  waiting_.erase(seq->id);
  running_.erase(seq->id);
  pool_->Release(seq->kv);
  seq->status = SequenceStatus::kFinished;
}

}  // namespace moeserve::runtime
