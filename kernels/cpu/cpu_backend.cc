// The CPU reference backend: forwards each op to its kernels/cpu implementation. Every op and
// copy runs to completion on the calling thread (OpenMP inside the op), so "async" copies are
// memcpy, events are complete when recorded and Synchronize has nothing to wait for.
//
// Memory: Allocate, AllocateScratch and AllocateHost are all plain 64-byte-aligned host
// allocations (no caching allocator: malloc already recycles; the model keeps its step buffers
// persistent, so a steady-state step allocates nothing anyway).
#include <omp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/sampling.h"

namespace moeserve::kernels {
namespace {

class CpuEvent final : public Event {};

absl::StatusOr<DeviceBuffer> AllocateAligned(size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  constexpr size_t kAlign = 64;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cpu: out of memory allocating ", bytes, " bytes"));
  }
  return DeviceBuffer::Adopt(Device::kCpu, p, bytes, [](void* q) { std::free(q); });
}

// MemAvailable from /proc/meminfo (what the kernel could hand out without swapping), else the
// free physical pages.
DeviceMemoryInfo HostMemoryInfo() {
  DeviceMemoryInfo info;
  const long page = sysconf(_SC_PAGESIZE);
  info.total_bytes = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(page);
  info.free_bytes = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<size_t>(page);
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") {
      info.free_bytes = kib * 1024;
      break;
    }
  }
  return info;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : num_threads_(num_threads) {}
  Device device() const override { return Device::kCpu; }
  std::string_view name() const override { return "cpu"; }
  std::string Describe() const override {
    const int threads = num_threads_ > 0 ? num_threads_ : omp_get_max_threads();
    return absl::StrCat("cpu (", threads, threads == 1 ? " thread)" : " threads)");
  }
  DType activation_dtype() const override { return DType::kF32; }
  DType kv_dtype() const override { return DType::kF32; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override { return AllocateAligned(bytes); }
  absl::StatusOr<DeviceBuffer> AllocateScratch(size_t bytes) override {
    return AllocateAligned(bytes);
  }
  absl::StatusOr<DeviceBuffer> AllocateHost(size_t bytes) override {
    return AllocateAligned(bytes);
  }
  absl::StatusOr<DeviceMemoryInfo> MemoryInfo() const override { return HostMemoryInfo(); }

  absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyOnDeviceAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status MemsetAsync(void* dst, int value, size_t bytes) override {
    if (bytes) std::memset(dst, value, bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override {
    return std::unique_ptr<Event>(std::make_unique<CpuEvent>());
  }
  absl::Status RecordEvent(Event& event) override {
    (void)event;
    return absl::OkStatus();
  }
  absl::Status WaitEvent(Event& event) override {
    (void)event;
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  void Embedding(const EmbeddingParams& p) override {
    UseThreads();
    cpu::Embedding(p);
  }
  void RmsNorm(const RmsNormParams& p) override {
    UseThreads();
    cpu::RmsNorm(p);
  }
  void Rope(const RopeParams& p) override {
    UseThreads();
    cpu::Rope(p);
  }
  void Matmul(const MatmulParams& p) override {
    UseThreads();
    cpu::Matmul(p);
  }
  void KvWrite(const KvWriteParams& p) override {
    UseThreads();
    cpu::KvWrite(p);
  }
  void PagedAttention(const PagedAttentionParams& p) override {
    UseThreads();
    cpu::PagedAttention(p);
  }
  void RouterTopK(const RouterTopKParams& p) override {
    UseThreads();
    cpu::RouterTopK(p);
  }
  void MoeAlign(const MoeAlignParams& p) override {
    UseThreads();
    cpu::MoeAlign(p);
  }
  void GatherRows(const GatherRowsParams& p) override {
    UseThreads();
    cpu::GatherRows(p);
  }
  void GroupedMatmul(const GroupedMatmulParams& p) override {
    UseThreads();
    cpu::GroupedMatmul(p);
  }
  void SwiGlu(const SwiGluParams& p) override {
    UseThreads();
    cpu::SwiGlu(p);
  }
  void MoeCombine(const MoeCombineParams& p) override {
    UseThreads();
    cpu::MoeCombine(p);
  }
  void AddInPlace(const AddInPlaceParams& p) override {
    UseThreads();
    cpu::AddInPlace(p);
  }
  void Sample(const SampleParams& p) override {
    UseThreads();
    cpu::Sample(p);
  }

 private:
  // OpenMP's thread count is a per-thread setting, and the model runs on the engine's worker
  // thread, not the one that made the backend: apply it in the calling thread (cheap when set).
  void UseThreads() const {
    if (num_threads_ > 0 && omp_get_max_threads() != num_threads_) {
      omp_set_num_threads(num_threads_);
    }
  }

  const int num_threads_;  // 0: OpenMP's default (all cores or OMP_NUM_THREADS)
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace moeserve::kernels
