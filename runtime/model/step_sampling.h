// Sampling inside the model step: the host describes each row's draw (kernels::SampleRow, from
// the sequence's runtime::Sampler), the step samples on the device right after the LM head
// (Backend::Sample, kernels/ops/sampling.h) and only the sampled ids (and logprobs when a row
// asks) come back to the host, never the [rows, vocab] logits.
//
// On the CPU backend the op runs the same per-row code as runtime::Sampler, so the tokens and
// logprobs are bitwise those of Sampler::SampleWithLogprobs on the same logits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/sampling/sampler.h"

namespace moeserve::runtime {

// A step's sampling requests. Row i draws one token from the logits of the LAST new token of
// batch[sequences[i]]; the rows' penalty histories are ranges of the three history arrays.
// Reuse one object across steps (Clear keeps the capacity).
struct StepSampling {
  std::vector<int64_t> sequences;        // [rows] strictly ascending batch indices
  std::vector<kernels::SampleRow> rows;  // [rows]
  std::vector<int32_t> history_tokens;   // [num_history]
  std::vector<int32_t> history_output_counts;
  std::vector<uint8_t> history_in_prompt;
  // Download each sampled token's logprob (and the top_logprobs of rows with num_top_logprobs >
  // 0). Add sets it when a Sampler asks for logprobs.
  bool logprobs = false;
  // [rows] or empty: which rows report their logprobs in SampledRows::row (Add fills it from the
  // Sampler's params, so a row that did not ask gets logprob 0 and no top_logprobs, exactly as
  // Sampler::SampleWithLogprobs). Empty: every row, when logprobs.
  std::vector<uint8_t> row_logprobs;
  // Also download StepOutput::logits / row_offsets as Forward without sampling does (tests,
  // harnesses, prompt logprobs). Off: the step downloads no logits at all.
  bool keep_logits = false;

  int64_t num_rows() const { return static_cast<int64_t>(rows.size()); }
  int64_t num_history() const { return static_cast<int64_t>(history_tokens.size()); }
  // The largest num_top_logprobs of any row when logprobs are downloaded, else 0.
  int64_t max_top_logprobs() const;
  void Clear();
  // Appends the next draw of `sampler` for batch[sequence] (Sampler::AppendSampleRow); record the
  // token the step returns with Sampler::RecordSampled.
  void Add(int64_t sequence, const Sampler& sampler);
  // The requests are consistent with a batch of `num_seqs` sequences (called by Forward).
  absl::Status Validate(int64_t num_seqs) const;
};

// What the device sampled, per row of the StepSampling (filled by Forward with sampling).
struct SampledRows {
  std::vector<int32_t> tokens;      // [rows]
  std::vector<float> logprobs;      // [rows] when StepSampling::logprobs, else empty
  std::vector<int32_t> top_tokens;  // [rows, max_top_logprobs]; unused slots hold -1
  std::vector<float> top_logprobs;  // [rows, max_top_logprobs]
  int64_t max_top_logprobs = 0;
  std::vector<uint8_t> row_logprobs;  // [rows] or empty (every row): StepSampling::row_logprobs

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  void Clear();
  // Row i as the host Sampler reports it (Sampler::SampleWithLogprobs): the token, and with
  // logprobs the token's logprob and the row's top_logprobs.
  SampledToken row(int64_t i) const;
};

// The device side of the step tail's sampling: the op's workspace and the packed results
// (ids | logprobs | top ids | top logprobs) on the device with their pinned host twin, all
// persistent (grown by powers of two, never shrunk), so a steady-state step allocates nothing
// and downloads the results with ONE copy. The requests themselves travel in the step's index
// upload (MixtralModel's staging buffer).
class DeviceSampler {
 public:
  // Grows the buffers for `rows` x `vocab` with up to `max_top` top logprobs per row.
  absl::Status Reserve(kernels::Backend& be, int64_t rows, int64_t vocab, int64_t max_top);

  // Enqueues Backend::Sample over logits [rows, vocab] (device) with the requests' device copies,
  // then the download of its results into the pinned host buffer. REQUIRES: Reserve for these
  // sizes; the pointers are the device twins of `sampling`'s arrays.
  absl::Status Enqueue(kernels::Backend& be, const StepSampling& sampling, const float* logits,
                       int64_t vocab, const kernels::SampleRow* rows, const int32_t* history_tokens,
                       const int32_t* history_output_counts, const uint8_t* history_in_prompt);
  // After the step's Synchronize: the results of the last Enqueue, into *out.
  void Read(const StepSampling& sampling, SampledRows* out) const;

 private:
  // Byte offsets of the packed results of `rows` rows with `max_top` top logprobs.
  struct Layout {
    size_t logprobs = 0, top_tokens = 0, top_logprobs = 0, bytes = 0;
  };
  static Layout LayoutOf(int64_t rows, int64_t max_top, bool logprobs);

  int64_t rows_ = 0, vocab_ = 0, max_top_ = 0;
  kernels::DeviceBuffer workspace_;     // SampleWorkspaceBytes(rows_, vocab_)
  kernels::DeviceBuffer results_;       // packed results on the device
  kernels::DeviceBuffer results_host_;  // their pinned host copy
};

}  // namespace moeserve::runtime
