// The compute backend the runtime model calls: memory, copies, events, CUDA graphs and one
// virtual per op family, all ops taking the same parameter structs as the kernels.
//
// Asynchronous-device contract (the CPU backend meets it trivially):
//  - A backend owns one device, one stream and the events it creates. Ops and *Async copies are
//    enqueued in order on that stream and may run after the call returns; failures of enqueued
//    work surface in Synchronize() (or the next call that reports a Status).
//  - Pointers in op param structs are device pointers of this backend's device, except where a
//    field says "host". Ops never read device memory on the host: sizes that depend on routing
//    (tokens per expert) are read by the kernels on the device; the host passes upper bounds.
//  - Memory: Allocate() is for long-lived buffers (weights, KV pool, persistent step buffers);
//    AllocateScratch() comes from a stream-ordered caching allocator, so a steady-state step
//    allocates nothing from the device; AllocateHost() is host memory the device copies from and
//    to asynchronously (pinned on CUDA). Running out of memory is ResourceExhausted, not a crash.
//  - Activations are in activation_dtype() (CPU: fp32, the bitwise reference; CUDA: bf16), the
//    KV cache in kv_dtype(); accumulation is always fp32. Router logits, router weights and LM
//    head logits are fp32 on every backend.
//
// Threading: a Backend is used by one thread at a time (the rank's worker thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops/attention.h"
#include "kernels/ops/elementwise.h"
#include "kernels/ops/embedding.h"
#include "kernels/ops/matmul.h"
#include "kernels/ops/moe.h"
#include "kernels/ops/rmsnorm.h"
#include "kernels/ops/rope.h"
#include "kernels/ops/router.h"
#include "kernels/ops/sampling.h"
#include "kernels/tensor.h"

namespace moeserve::kernels {

// A point in a backend's stream (cudaEvent_t on CUDA; already complete on CPU).
class Event {
 public:
  virtual ~Event() = default;
};

// A captured sequence of enqueued work that can be replayed (cudaGraphExec_t on CUDA). Replays
// read and write the same device addresses as the capture: inputs go in persistent buffers.
class Graph {
 public:
  virtual ~Graph() = default;
};

struct DeviceMemoryInfo {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string_view name() const = 0;
  // "cpu (2 threads)" / "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB)": logged at start.
  virtual std::string Describe() const = 0;
  virtual DType activation_dtype() const = 0;
  virtual DType kv_dtype() const = 0;

  // ---- Memory on this backend's device.
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  virtual absl::StatusOr<DeviceBuffer> AllocateScratch(size_t bytes) = 0;
  virtual absl::StatusOr<DeviceBuffer> AllocateHost(size_t bytes) = 0;
  virtual absl::StatusOr<DeviceMemoryInfo> MemoryInfo() const = 0;

  // ---- Copies, enqueued on the stream. Host pointers must stay valid and unchanged until the
  // copy completes (an event or Synchronize); from AllocateHost memory they are truly async.
  virtual absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyOnDeviceAsync(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status MemsetAsync(void* dst, int value, size_t bytes) = 0;
  // Blocking conveniences for load time and tests: the async copy, then Synchronize().
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes);
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes);

  // ---- Events and synchronisation.
  virtual absl::StatusOr<std::unique_ptr<Event>> CreateEvent() = 0;
  virtual absl::Status RecordEvent(Event& event) = 0;  // marks the work enqueued so far
  virtual absl::Status WaitEvent(Event& event) = 0;    // the host waits for that work
  // Waits for all enqueued work; returns the first error any of it hit.
  virtual absl::Status Synchronize() = 0;

  // ---- Graphs. Without support (CPU), Begin returns Unimplemented and callers run eagerly.
  virtual bool SupportsGraphs() const { return false; }
  virtual absl::Status BeginCapture() { return absl::UnimplementedError("graphs"); }
  virtual absl::StatusOr<std::unique_ptr<Graph>> EndCapture() {
    return absl::UnimplementedError("graphs");
  }
  virtual absl::Status Replay(Graph& graph) {
    (void)graph;
    return absl::UnimplementedError("graphs");
  }

  // ---- Ops (enqueued; REQUIRES: Validate(p).ok() — callers validate once on the host).
  virtual void Embedding(const EmbeddingParams& p) = 0;
  virtual void RmsNorm(const RmsNormParams& p) = 0;
  virtual void Rope(const RopeParams& p) = 0;
  virtual void Matmul(const MatmulParams& p) = 0;
  virtual void KvWrite(const KvWriteParams& p) = 0;
  virtual void PagedAttention(const PagedAttentionParams& p) = 0;
  virtual void RouterTopK(const RouterTopKParams& p) = 0;
  virtual void MoeAlign(const MoeAlignParams& p) = 0;
  virtual void GatherRows(const GatherRowsParams& p) = 0;
  virtual void GroupedMatmul(const GroupedMatmulParams& p) = 0;
  virtual void SwiGlu(const SwiGluParams& p) = 0;
  virtual void MoeCombine(const MoeCombineParams& p) = 0;
  virtual void AddInPlace(const AddInPlaceParams& p) = 0;
  virtual void Sample(const SampleParams& p) = 0;
};

// The reference backend. num_threads <= 0: OpenMP's default (all cores).
std::unique_ptr<Backend> MakeCpuBackend(int num_threads = 0);

// The CUDA backend on device `device_index` (kernels/cuda/cuda_backend.cc). Unavailable when the
// build has no CUDA; FailedPrecondition when there is no usable GPU.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_index = 0);

}  // namespace moeserve::kernels
