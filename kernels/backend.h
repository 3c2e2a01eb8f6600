// The compute backend the runtime model calls: one virtual per op family, all taking the same
// parameter structs as the kernels, plus memory and synchronisation.
//
// Pointers in the param structs are device pointers of this backend's device. Ops are enqueued in
// order on the backend's stream and may run asynchronously (CUDA); failures of enqueued work are
// reported by Synchronize(). The CPU backend runs each op to completion on the calling thread
// (with OpenMP inside the op).
//
// Threading: a Backend is used by one thread at a time (the rank's worker thread).
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "kernels/ops/attention.h"
#include "kernels/ops/elementwise.h"
#include "kernels/ops/embedding.h"
#include "kernels/ops/matmul.h"
#include "kernels/ops/moe.h"
#include "kernels/ops/rmsnorm.h"
#include "kernels/ops/rope.h"
#include "kernels/ops/router.h"
#include "kernels/tensor.h"

namespace moeserve::kernels {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string_view name() const = 0;

  // Memory on this backend's device.
  virtual DeviceBuffer Allocate(size_t bytes) = 0;
  virtual void CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes) = 0;

  virtual void Embedding(const EmbeddingParams& p) = 0;
  virtual void RmsNorm(const RmsNormParams& p) = 0;
  virtual void Rope(const RopeParams& p) = 0;
  virtual void Matmul(const MatmulParams& p) = 0;
  virtual void KvWrite(const KvWriteParams& p) = 0;
  virtual void PagedAttention(const PagedAttentionParams& p) = 0;
  virtual void RouterTopK(const RouterTopKParams& p) = 0;
  virtual void GatherRows(const GatherRowsParams& p) = 0;
  virtual void SwiGlu(const SwiGluParams& p) = 0;
  virtual void MoeCombine(const MoeCombineParams& p) = 0;
  virtual void AddInPlace(const AddInPlaceParams& p) = 0;

  // Waits for all enqueued work; returns the first error any of it hit.
  virtual absl::Status Synchronize() = 0;
};

// The reference backend. num_threads <= 0: OpenMP's default (all cores).
std::unique_ptr<Backend> MakeCpuBackend(int num_threads = 0);

}  // namespace moeserve::kernels
