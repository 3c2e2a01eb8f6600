#include "parallel/comm/in_process_communicator.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

namespace moeserve::parallel {
namespace {

std::string KindName(int kind) {
  static const char* const kNames[] = {"AllToAll", "AllToAllV", "AllReduce(int64)",
                                       "AllReduce(double)", "Barrier"};
  return kNames[kind];
}

template <typename T>
T Reduce(T a, T b, ReduceOp op) {
  return op == ReduceOp::kSum ? a + b : std::max(a, b);
}

}  // namespace

// Rank r's view of the group: forwards to the shared rendezvous.
class InProcessGroup::RankCommunicator final : public Communicator {
 public:
  RankCommunicator(InProcessGroup* group, int rank) : group_(group), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world_size_; }

  absl::Status AllToAll(const int64_t* send, int64_t* recv, int64_t count) override {
    Call call;
    call.kind = Kind::kAllToAll;
    call.send = send;
    call.count = count;
    std::vector<Call> all;
    absl::Status st = group_->Publish(rank_, call, &all);
    const absl::Status valid = st.ok() ? group_->Validate(rank_, all) : absl::OkStatus();
    const int n = world_size();
    std::vector<int64_t> result;
    if (st.ok() && valid.ok()) {
      result.resize(static_cast<size_t>(n * count));
      for (int p = 0; p < n; ++p) {
        const int64_t* src = static_cast<const int64_t*>(all[p].send) + rank_ * count;
        std::copy(src, src + count, result.begin() + p * count);
      }
    }
    return Finish(st, valid, [&] { std::copy(result.begin(), result.end(), recv); });
  }

  absl::Status AllToAllV(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                         void* recv, const int64_t* recv_counts,
                         const int64_t* recv_offsets) override {
    Call call;
    call.kind = Kind::kAllToAllV;
    call.send = send;
    call.send_counts = send_counts;
    call.send_offsets = send_offsets;
    call.recv_counts = recv_counts;
    call.recv_offsets = recv_offsets;
    std::vector<Call> all;
    absl::Status st = group_->Publish(rank_, call, &all);
    const absl::Status valid = st.ok() ? group_->Validate(rank_, all) : absl::OkStatus();
    if (st.ok() && valid.ok()) {
      // Pull this rank's share from every peer. The buffers do not overlap (contract), and no
      // peer writes its send buffer until barrier B.
      for (int p = 0; p < world_size(); ++p) {
        const int64_t bytes = recv_counts[p];
        if (bytes == 0) continue;
        std::memcpy(static_cast<char*>(recv) + recv_offsets[p],
                    static_cast<const char*>(all[p].send) + all[p].send_offsets[rank_],
                    static_cast<size_t>(bytes));
      }
    }
    return Finish(st, valid, [] {});
  }

  absl::Status AllReduce(const int64_t* send, int64_t* recv, int64_t count, ReduceOp op) override {
    return AllReduceImpl(Kind::kAllReduceInt64, send, recv, count, op);
  }
  absl::Status AllReduce(const double* send, double* recv, int64_t count, ReduceOp op) override {
    return AllReduceImpl(Kind::kAllReduceDouble, send, recv, count, op);
  }

  absl::Status Barrier() override {
    Call call;  // kind kBarrier
    std::vector<Call> all;
    absl::Status st = group_->Publish(rank_, call, &all);
    const absl::Status valid = st.ok() ? group_->Validate(rank_, all) : absl::OkStatus();
    return Finish(st, valid, [] {});
  }

  void Abort(const absl::Status& reason) override { group_->Abort(reason); }

 private:
  template <typename T>
  absl::Status AllReduceImpl(Kind kind, const T* send, T* recv, int64_t count, ReduceOp op) {
    Call call;
    call.kind = kind;
    call.send = send;
    call.count = count;
    call.op = op;
    std::vector<Call> all;
    absl::Status st = group_->Publish(rank_, call, &all);
    const absl::Status valid = st.ok() ? group_->Validate(rank_, all) : absl::OkStatus();
    std::vector<T> result;
    if (st.ok() && valid.ok()) {
      // Rank order, starting from rank 0's value: every rank computes the same bits.
      const T* first = static_cast<const T*>(all[0].send);
      result.assign(first, first + count);
      for (int p = 1; p < world_size(); ++p) {
        const T* src = static_cast<const T*>(all[p].send);
        for (int64_t i = 0; i < count; ++i) result[i] = Reduce(result[i], src[i], op);
      }
    }
    return Finish(st, valid, [&] { std::copy(result.begin(), result.end(), recv); });
  }

  // Barrier B, then (on success) writes results that must wait until peers stopped reading.
  // An invalid call still passes barrier B (peers may be reading its counts), then ends the
  // group: the ranks' call sequences have diverged.
  template <typename WriteFn>
  absl::Status Finish(const absl::Status& published, const absl::Status& valid, WriteFn write) {
    if (!published.ok()) return published;  // the group is aborted: barrier B would not complete
    if (absl::Status st = group_->Arrive(); !st.ok()) return st;
    if (!valid.ok()) {
      group_->Abort(valid);
      return valid;
    }
    write();
    return absl::OkStatus();
  }

  InProcessGroup* const group_;
  const int rank_;
};

InProcessGroup::InProcessGroup(int world_size, InProcessGroupOptions options)
    : world_size_(std::max(world_size, 1)), options_(options) {
  for (int r = 0; r < world_size_; ++r) {
    comms_.push_back(std::make_unique<RankCommunicator>(this, r));
  }
  absl::MutexLock lock(&mu_);
  calls_.resize(static_cast<size_t>(world_size_));
}

InProcessGroup::~InProcessGroup() = default;

Communicator* InProcessGroup::comm(int rank) { return comms_.at(static_cast<size_t>(rank)).get(); }

void InProcessGroup::Abort(const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  AbortLocked(reason);
}

void InProcessGroup::AbortLocked(const absl::Status& reason) {
  if (!aborted_.ok()) return;
  aborted_ = reason.ok() ? absl::AbortedError("communicator group aborted") : reason;
}

absl::Status InProcessGroup::ArriveLocked() {
  if (!aborted_.ok()) return aborted_;
  const uint64_t generation = generation_;
  if (++arrived_ == world_size_) {
    arrived_ = 0;
    ++generation_;
    return absl::OkStatus();
  }
  auto released = [this, generation]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return generation_ != generation || !aborted_.ok();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&released), options_.timeout)) {
    AbortLocked(absl::DeadlineExceededError(
        absl::StrCat("in-process communicator: waited ", absl::FormatDuration(options_.timeout),
                     " for the other ranks at a collective (", arrived_, " of ", world_size_,
                     " had arrived); a rank stopped calling collectives")));
  }
  if (generation_ != generation) return absl::OkStatus();
  return aborted_;
}

absl::Status InProcessGroup::Arrive() {
  absl::MutexLock lock(&mu_);
  return ArriveLocked();
}

absl::Status InProcessGroup::Publish(int rank, const Call& call, std::vector<Call>* all) {
  absl::MutexLock lock(&mu_);
  if (!aborted_.ok()) return aborted_;
  calls_[rank] = call;
  if (absl::Status st = ArriveLocked(); !st.ok()) return st;
  *all = calls_;  // stable until barrier B: nobody publishes again before it
  // Every rank checks every call (Validate), so all of them reach the same verdict.
  return absl::OkStatus();
}

absl::Status InProcessGroup::Validate(int rank, const std::vector<Call>& all) const {
  const Call& mine = all[rank];
  for (int p = 0; p < world_size_; ++p) {
    const Call& other = all[p];
    if (other.kind != mine.kind) {
      return absl::FailedPreconditionError(absl::StrCat(
          "collective mismatch: rank ", rank, " called ", KindName(static_cast<int>(mine.kind)),
          " while rank ", p, " called ", KindName(static_cast<int>(other.kind))));
    }
    if (other.count != mine.count || other.op != mine.op || other.count < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(KindName(static_cast<int>(mine.kind)),
                       ": ranks disagree on the element count or op (rank ", rank, ": ", mine.count,
                       ", rank ", p, ": ", other.count, ")"));
    }
    if ((other.kind == Kind::kAllToAll || other.kind == Kind::kAllReduceInt64 ||
         other.kind == Kind::kAllReduceDouble) &&
        other.count > 0 && other.send == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(KindName(static_cast<int>(mine.kind)), ": rank ", p, " passed no buffer"));
    }
  }
  if (mine.kind != Kind::kAllToAllV) return absl::OkStatus();
  for (int src = 0; src < world_size_; ++src) {
    const Call& s = all[src];
    for (int dst = 0; dst < world_size_; ++dst) {
      const Call& d = all[dst];
      const int64_t sent = s.send_counts[dst], expected = d.recv_counts[src];
      if (sent < 0 || s.send_offsets[dst] < 0 || d.recv_offsets[src] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("AllToAllV: negative count or offset for ", src, " -> ", dst));
      }
      if (sent != expected) {
        return absl::InvalidArgumentError(absl::StrCat("AllToAllV: rank ", src, " sends ", sent,
                                                       " bytes to rank ", dst, ", which expects ",
                                                       expected, " bytes from it"));
      }
      if (sent > 0 && s.send == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("AllToAllV: rank ", src, " sends ", sent, " bytes from a null buffer"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status InProcessGroup::Run(
    const std::function<absl::Status(int rank, Communicator& comm)>& body) {
  std::vector<absl::Status> results(static_cast<size_t>(world_size_));
  auto run_rank = [&](int r) {
    results[r] = body(r, *comm(r));
    if (!results[r].ok()) {
      Abort(absl::AbortedError(
          absl::StrCat("rank ", r, " failed: ", std::string(results[r].message()))));
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < world_size_; ++r) threads.emplace_back(run_rank, r);
  run_rank(0);
  for (std::thread& t : threads) t.join();
  // A rank's own error first; the Aborted errors of its peers are consequences.
  for (const absl::Status& st : results) {
    if (!st.ok() && !absl::IsAborted(st)) return st;
  }
  for (const absl::Status& st : results) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace moeserve::parallel
