#include "runtime/model/step_sampling.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/base/buffer_sizes.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {

using kernels::AlignedBytes;
using kernels::GrowCapacity;
int64_t StepSampling::max_top_logprobs() const {
  if (!logprobs) return 0;
  int64_t most = 0;
  for (const kernels::SampleRow& row : rows) {
    most = std::max<int64_t>(most, row.num_top_logprobs);
  }
  return most;
}

void StepSampling::Clear() {
  sequences.clear();
  rows.clear();
  history_tokens.clear();
  history_output_counts.clear();
  history_in_prompt.clear();
  row_logprobs.clear();
  logprobs = false;
  keep_logits = false;
}

void StepSampling::Add(int64_t sequence, const Sampler& sampler) {
  sequences.push_back(sequence);
  rows.emplace_back();
  sampler.AppendSampleRow(&rows.back(), &history_tokens, &history_output_counts,
                          &history_in_prompt);
  row_logprobs.push_back(sampler.params().logprobs ? 1 : 0);
  if (sampler.params().logprobs) logprobs = true;
}

absl::Status StepSampling::Validate(int64_t num_seqs) const {
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("forward: sampling ", parts...));
  };
  if (sequences.size() != rows.size()) {
    return invalid("has ", rows.size(), " rows for ", sequences.size(), " sequences");
  }
  if (!row_logprobs.empty() && row_logprobs.size() != rows.size()) {
    return invalid("has ", row_logprobs.size(), " row_logprobs flags for ", rows.size(), " rows");
  }
  const size_t h = history_tokens.size();
  if (history_output_counts.size() != h || history_in_prompt.size() != h) {
    return invalid("history arrays differ in length (", h, ", ", history_output_counts.size(), ", ",
                   history_in_prompt.size(), ")");
  }
  if (h > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return invalid("history has ", h, " entries, more than int32 indices reach");
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t s = sequences[i];
    if (s < 0 || s >= num_seqs || (i > 0 && s <= sequences[i - 1])) {
      return invalid("row ", i, " names sequence ", s,
                     " (rows need strictly ascending indices into a batch of ", num_seqs, ")");
    }
    const kernels::SampleRow& row = rows[i];
    if (row.history_begin < 0 || row.history_begin > row.history_end ||
        static_cast<size_t>(row.history_end) > h) {
      return invalid("row ", i, " has history [", row.history_begin, ", ", row.history_end,
                     ") outside the ", h, " entries");
    }
    if (row.num_top_logprobs < 0 || row.num_top_logprobs > kMaxTopLogprobs) {
      return invalid("row ", i, " asks for ", row.num_top_logprobs, " top logprobs (at most ",
                     kMaxTopLogprobs, ")");
    }
  }
  return absl::OkStatus();
}

void SampledRows::Clear() {
  tokens.clear();
  logprobs.clear();
  top_tokens.clear();
  top_logprobs.clear();
  row_logprobs.clear();
  max_top_logprobs = 0;
}

SampledToken SampledRows::row(int64_t i) const {
  SampledToken out;
  out.token = tokens[static_cast<size_t>(i)];
  if (logprobs.empty()) return out;
  if (!row_logprobs.empty() && row_logprobs[static_cast<size_t>(i)] == 0) return out;
  out.logprob = logprobs[static_cast<size_t>(i)];
  for (int64_t j = 0; j < max_top_logprobs; ++j) {
    const size_t at = static_cast<size_t>(i * max_top_logprobs + j);
    if (top_tokens[at] < 0) break;  // the row asked for fewer (or the vocabulary is smaller)
    out.top_logprobs.emplace_back(top_tokens[at], top_logprobs[at]);
  }
  return out;
}

DeviceSampler::Layout DeviceSampler::LayoutOf(int64_t rows, int64_t max_top, bool logprobs) {
  Layout l;
  l.logprobs = AlignedBytes(rows, sizeof(int32_t));
  if (!logprobs) {
    l.top_tokens = l.top_logprobs = l.bytes = l.logprobs;
    return l;
  }
  l.top_tokens = l.logprobs + AlignedBytes(rows, sizeof(float));
  l.top_logprobs = l.top_tokens + AlignedBytes(rows * max_top, sizeof(int32_t));
  l.bytes = l.top_logprobs + AlignedBytes(rows * max_top, sizeof(float));
  return l;
}

absl::Status DeviceSampler::Reserve(kernels::Backend& be, int64_t rows, int64_t vocab,
                                    int64_t max_top) {
  const int64_t new_rows = GrowCapacity(rows_, rows);
  // max_top in [0, kMaxTopLogprobs]: reserve the whole range at once (a few bytes per row).
  const int64_t new_top = max_top > 0 ? std::max<int64_t>(max_top_, kMaxTopLogprobs) : max_top_;
  if (new_rows != rows_ || new_top != max_top_) {
    const size_t bytes = LayoutOf(new_rows, new_top, /*logprobs=*/true).bytes;
    MOESERVE_ASSIGN_OR_RETURN(results_, be.Allocate(bytes));
    MOESERVE_ASSIGN_OR_RETURN(results_host_, be.AllocateHost(bytes));
  }
  // The CPU sampler needs no workspace (it keeps per-thread scratch); a device one does.
  if (be.device() != kernels::Device::kCpu && (new_rows != rows_ || vocab != vocab_)) {
    MOESERVE_ASSIGN_OR_RETURN(workspace_,
                              be.Allocate(kernels::SampleWorkspaceBytes(new_rows, vocab)));
  }
  rows_ = new_rows;
  vocab_ = vocab;
  max_top_ = new_top;
  return absl::OkStatus();
}

absl::Status DeviceSampler::Enqueue(kernels::Backend& be, const StepSampling& sampling,
                                    const float* logits, int64_t vocab,
                                    const kernels::SampleRow* rows, const int32_t* history_tokens,
                                    const int32_t* history_output_counts,
                                    const uint8_t* history_in_prompt) {
  const int64_t n = sampling.num_rows();
  if (n == 0) return absl::OkStatus();
  const int64_t max_top = sampling.max_top_logprobs();
  const Layout layout = LayoutOf(n, max_top, sampling.logprobs);
  char* results = static_cast<char*>(results_.data());
  kernels::SampleParams p;
  p.logits = logits;
  p.row_params = rows;
  p.num_history = sampling.num_history();
  if (p.num_history > 0) {
    p.history_tokens = history_tokens;
    p.history_output_counts = history_output_counts;
    p.history_in_prompt = history_in_prompt;
  }
  p.out_tokens = reinterpret_cast<int32_t*>(results);
  if (sampling.logprobs) {
    p.out_logprobs = reinterpret_cast<float*>(results + layout.logprobs);
    if (max_top > 0) {
      p.out_top_tokens = reinterpret_cast<int32_t*>(results + layout.top_tokens);
      p.out_top_logprobs = reinterpret_cast<float*>(results + layout.top_logprobs);
    }
  }
  p.rows = n;
  p.vocab = vocab;
  p.max_top_logprobs = max_top;
  if (workspace_.data() != nullptr) {
    p.workspace = workspace_.data();
    p.workspace_bytes = workspace_.bytes();
  }
  MOESERVE_RETURN_IF_ERROR(kernels::Validate(p));
  be.Sample(p);
  // Ids only, unless a row asked for logprobs: a few bytes per sequence.
  const size_t download = sampling.logprobs ? layout.bytes : sizeof(int32_t) * n;
  return be.CopyToHostAsync(results_host_.data(), results_.data(), download);
}

void DeviceSampler::Read(const StepSampling& sampling, SampledRows* out) const {
  out->Clear();
  const int64_t n = sampling.num_rows();
  if (n == 0) return;
  const int64_t max_top = sampling.max_top_logprobs();
  const Layout layout = LayoutOf(n, max_top, sampling.logprobs);
  const char* host = static_cast<const char*>(results_host_.data());
  auto read = [&](auto* dst, size_t offset, int64_t count) {
    dst->resize(static_cast<size_t>(count));
    std::memcpy(dst->data(), host + offset, sizeof((*dst)[0]) * static_cast<size_t>(count));
  };
  read(&out->tokens, 0, n);
  if (!sampling.logprobs) return;
  read(&out->logprobs, layout.logprobs, n);
  out->row_logprobs = sampling.row_logprobs;
  out->max_top_logprobs = max_top;
  if (max_top == 0) return;
  read(&out->top_tokens, layout.top_tokens, n * max_top);
  read(&out->top_logprobs, layout.top_logprobs, n * max_top);
}

}  // namespace moeserve::runtime
