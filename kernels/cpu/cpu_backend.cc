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
  explicit CpuBackend(int num_threads) {
    if (num_threads > 0) omp_set_num_threads(num_threads);
  }
  Device device() const override { return Device::kCpu; }
  std::string_view name() const override { return "cpu"; }

  DeviceBuffer Allocate(size_t bytes) override { return DeviceBuffer(Device::kCpu, bytes); }
  void CopyToDevice(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void CopyToHost(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }

  void Embedding(const EmbeddingParams& p) override { cpu::Embedding(p); }
  void RmsNorm(const RmsNormParams& p) override { cpu::RmsNorm(p); }
  void Rope(const RopeParams& p) override { cpu::Rope(p); }
  void Matmul(const MatmulParams& p) override { cpu::Matmul(p); }
  void KvWrite(const KvWriteParams& p) override { cpu::KvWrite(p); }
  void PagedAttention(const PagedAttentionParams& p) override { cpu::PagedAttention(p); }
  void RouterTopK(const RouterTopKParams& p) override { cpu::RouterTopK(p); }
  void GatherRows(const GatherRowsParams& p) override { cpu::GatherRows(p); }
  void SwiGlu(const SwiGluParams& p) override { cpu::SwiGlu(p); }
  void MoeCombine(const MoeCombineParams& p) override { cpu::MoeCombine(p); }
  void AddInPlace(const AddInPlaceParams& p) override { cpu::AddInPlace(p); }

  absl::Status Synchronize() override { return absl::OkStatus(); }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int num_threads) {
  return std::make_unique<CpuBackend>(num_threads);
}

}  // namespace moeserve::kernels
