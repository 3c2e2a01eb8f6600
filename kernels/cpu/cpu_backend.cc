// The CPU reference backend: forwards each op to its kernels/cpu implementation.
#include <omp.h>

#include <cstring>

#include "kernels/backend.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"

namespace moeserve::kernels {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : num_threads_(num_threads) {}
  Device device() const override { return Device::kCpu; }
  std::string_view name() const override { return "cpu"; }

  DeviceBuffer Allocate(size_t bytes) override { return DeviceBuffer(Device::kCpu, bytes); }
  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }

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
  void GatherRows(const GatherRowsParams& p) override {
    UseThreads();
    cpu::GatherRows(p);
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

  absl::Status Synchronize() override { return absl::OkStatus(); }

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
