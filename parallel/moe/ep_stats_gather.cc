#include "parallel/moe/ep_stats_gather.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace moeserve::parallel {
namespace {

// Flat int64 encoding: scalars, then each vector as its length and values, each matrix as its
// row count, then every row as a vector. Decoding reads the same order.
class Writer {
 public:
  void Int(int64_t v) { out_.push_back(v); }
  void Vec(const std::vector<int64_t>& v) {
    Int(static_cast<int64_t>(v.size()));
    out_.insert(out_.end(), v.begin(), v.end());
  }
  void Mat(const std::vector<std::vector<int64_t>>& m) {
    Int(static_cast<int64_t>(m.size()));
    for (const auto& row : m) Vec(row);
  }
  std::vector<int64_t>& out() { return out_; }

 private:
  std::vector<int64_t> out_;
};

class Reader {
 public:
  Reader(const int64_t* data, int64_t size) : data_(data), size_(size) {}
  bool Int(int64_t* v) {
    if (pos_ >= size_) return false;
    *v = data_[pos_++];
    return true;
  }
  template <typename T>
  bool IntAs(T* v) {
    int64_t x = 0;
    if (!Int(&x)) return false;
    *v = static_cast<T>(x);
    return true;
  }
  bool Vec(std::vector<int64_t>* v) {
    int64_t n = 0;
    if (!Int(&n) || n < 0 || n > size_ - pos_) return false;
    v->assign(data_ + pos_, data_ + pos_ + n);
    pos_ += n;
    return true;
  }
  bool Mat(std::vector<std::vector<int64_t>>* m) {
    int64_t rows = 0;
    if (!Int(&rows) || rows < 0 || rows > size_ - pos_) return false;
    m->resize(static_cast<size_t>(rows));
    for (auto& row : *m) {
      if (!Vec(&row)) return false;
    }
    return true;
  }

 private:
  const int64_t* data_;
  int64_t size_;
  int64_t pos_ = 0;
};

std::vector<int64_t> Encode(const EpRankStats& s) {
  Writer w;
  w.Int(s.rank);
  w.Int(s.world_size);
  w.Int(s.window_steps);
  w.Int(s.steps);
  w.Int(s.layer_calls);
  w.Mat(s.routed_last_step);
  w.Mat(s.routed_total);
  w.Mat(s.computed_last_step);
  w.Mat(s.computed_total);
  w.Mat(s.routed_window);
  w.Mat(s.computed_window);
  w.Vec(s.rows_sent_to_last_step);
  w.Vec(s.rows_sent_to_total);
  w.Int(s.tokens_sent);
  w.Int(s.tokens_received);
  w.Int(s.local_rows);
  w.Int(s.dispatch_bytes_sent);
  w.Int(s.dispatch_bytes_received);
  w.Int(s.combine_bytes_sent);
  w.Int(s.combine_bytes_received);
  w.Vec(s.bytes_sent_to);
  w.Vec(s.bytes_sent_to_last_step);
  return std::move(w.out());
}

bool Decode(const int64_t* data, int64_t size, EpRankStats* s) {
  Reader r(data, size);
  return r.IntAs(&s->rank) && r.IntAs(&s->world_size) && r.Int(&s->window_steps) &&
         r.Int(&s->steps) && r.Int(&s->layer_calls) && r.Mat(&s->routed_last_step) &&
         r.Mat(&s->routed_total) && r.Mat(&s->computed_last_step) && r.Mat(&s->computed_total) &&
         r.Mat(&s->routed_window) && r.Mat(&s->computed_window) &&
         r.Vec(&s->rows_sent_to_last_step) && r.Vec(&s->rows_sent_to_total) &&
         r.Int(&s->tokens_sent) && r.Int(&s->tokens_received) && r.Int(&s->local_rows) &&
         r.Int(&s->dispatch_bytes_sent) && r.Int(&s->dispatch_bytes_received) &&
         r.Int(&s->combine_bytes_sent) && r.Int(&s->combine_bytes_received) &&
         r.Vec(&s->bytes_sent_to) && r.Vec(&s->bytes_sent_to_last_step);
}

}  // namespace

absl::StatusOr<std::vector<EpRankStats>> GatherEpRankStats(Communicator& comm,
                                                           const EpRankStats& mine) {
  const int world = comm.world_size();
  const int rank = comm.rank();
  const std::vector<int64_t> encoded = Encode(mine);
  // The encodings may differ in length (e.g. a rank that has not stepped yet has empty tables):
  // agree on the longest, then sum rows that are zero except each rank's own.
  const int64_t length = static_cast<int64_t>(encoded.size());
  int64_t longest = 0;
  if (absl::Status st = comm.AllReduce(&length, &longest, 1, ReduceOp::kMax); !st.ok()) return st;
  std::vector<int64_t> rows(static_cast<size_t>(world * longest), 0);
  std::copy(encoded.begin(), encoded.end(), rows.begin() + rank * longest);
  if (absl::Status st = comm.AllReduce(rows.data(), rows.data(), world * longest, ReduceOp::kSum);
      !st.ok()) {
    return st;
  }
  std::vector<double> seconds(static_cast<size_t>(world), 0.0);
  seconds[static_cast<size_t>(rank)] = mine.all_to_all_seconds;
  if (absl::Status st = comm.AllReduce(seconds.data(), seconds.data(), world, ReduceOp::kSum);
      !st.ok()) {
    return st;
  }
  std::vector<EpRankStats> all(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    if (!Decode(rows.data() + r * longest, longest, &all[static_cast<size_t>(r)])) {
      return absl::InternalError(absl::StrCat("expert-parallel statistics of rank ", r,
                                              " do not decode (a rank of another build?)"));
    }
    all[static_cast<size_t>(r)].all_to_all_seconds = seconds[static_cast<size_t>(r)];
  }
  return all;
}

}  // namespace moeserve::parallel
