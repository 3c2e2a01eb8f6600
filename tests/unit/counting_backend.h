// A Backend for tests of the model step's device contract: forwards everything to a CPU backend
// and counts memory calls, copies (and the bytes the host reads back) and synchronisations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kernels/backend.h"

namespace moeserve::runtime::counting_test {

struct Counts {
  int64_t allocate = 0, allocate_scratch = 0, allocate_host = 0;
  int64_t to_device = 0, to_host = 0, on_device = 0, memset = 0, synchronize = 0;
  size_t to_host_bytes = 0;  // what the host read back
  int64_t allocations() const { return allocate + allocate_scratch + allocate_host; }
  // The counts of the calls made between two snapshots.
  Counts operator-(const Counts& before) const {
    Counts d = *this;
    d.allocate -= before.allocate;
    d.allocate_scratch -= before.allocate_scratch;
    d.allocate_host -= before.allocate_host;
    d.to_device -= before.to_device;
    d.to_host -= before.to_host;
    d.on_device -= before.on_device;
    d.memset -= before.memset;
    d.synchronize -= before.synchronize;
    d.to_host_bytes -= before.to_host_bytes;
    return d;
  }
};

// Forwards everything to a CPU backend, counting memory calls, copies and synchronisations.
// With fake_device it reports Device::kCuda, so the loader takes the device-upload path (the
// memory is still host memory, which the CPU kernels can read).
class CountingBackend final : public kernels::Backend {
 public:
  explicit CountingBackend(bool fake_device = false, size_t free_bytes = 0)
      : inner_(kernels::MakeCpuBackend(1)), fake_device_(fake_device), free_bytes_(free_bytes) {}
  // A CUDA-like configuration on the CPU kernels: bf16 activations and KV cache.
  void UseBf16() { bf16_ = true; }

  Counts counts;

  kernels::Device device() const override {
    return fake_device_ ? kernels::Device::kCuda : kernels::Device::kCpu;
  }
  std::string_view name() const override { return "counting"; }
  std::string Describe() const override { return "counting over " + inner_->Describe(); }
  kernels::DType activation_dtype() const override {
    return bf16_ ? kernels::DType::kBF16 : inner_->activation_dtype();
  }
  kernels::DType kv_dtype() const override {
    return bf16_ ? kernels::DType::kBF16 : inner_->kv_dtype();
  }

  absl::StatusOr<kernels::DeviceBuffer> Allocate(size_t bytes) override {
    ++counts.allocate;
    return inner_->Allocate(bytes);
  }
  absl::StatusOr<kernels::DeviceBuffer> AllocateScratch(size_t bytes) override {
    ++counts.allocate_scratch;
    return inner_->AllocateScratch(bytes);
  }
  absl::StatusOr<kernels::DeviceBuffer> AllocateHost(size_t bytes) override {
    ++counts.allocate_host;
    return inner_->AllocateHost(bytes);
  }
  absl::StatusOr<kernels::DeviceMemoryInfo> MemoryInfo() const override {
    if (free_bytes_ == 0) return inner_->MemoryInfo();
    return kernels::DeviceMemoryInfo{free_bytes_, free_bytes_};
  }
  absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes) override {
    ++counts.to_device;
    return inner_->CopyToDeviceAsync(dst, src, bytes);
  }
  absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes) override {
    ++counts.to_host;
    counts.to_host_bytes += bytes;
    return inner_->CopyToHostAsync(dst, src, bytes);
  }
  absl::Status CopyOnDeviceAsync(void* dst, const void* src, size_t bytes) override {
    ++counts.on_device;
    return inner_->CopyOnDeviceAsync(dst, src, bytes);
  }
  absl::Status MemsetAsync(void* dst, int value, size_t bytes) override {
    ++counts.memset;
    return inner_->MemsetAsync(dst, value, bytes);
  }
  absl::StatusOr<std::unique_ptr<kernels::Event>> CreateEvent() override {
    return inner_->CreateEvent();
  }
  absl::Status RecordEvent(kernels::Event& e) override { return inner_->RecordEvent(e); }
  absl::Status WaitEvent(kernels::Event& e) override { return inner_->WaitEvent(e); }
  absl::Status Synchronize() override {
    ++counts.synchronize;
    return inner_->Synchronize();
  }

  void Embedding(const kernels::EmbeddingParams& p) override { inner_->Embedding(p); }
  void RmsNorm(const kernels::RmsNormParams& p) override { inner_->RmsNorm(p); }
  void Rope(const kernels::RopeParams& p) override { inner_->Rope(p); }
  void Matmul(const kernels::MatmulParams& p) override { inner_->Matmul(p); }
  void KvWrite(const kernels::KvWriteParams& p) override { inner_->KvWrite(p); }
  void PagedAttention(const kernels::PagedAttentionParams& p) override {
    inner_->PagedAttention(p);
  }
  void RouterTopK(const kernels::RouterTopKParams& p) override { inner_->RouterTopK(p); }
  void MoeAlign(const kernels::MoeAlignParams& p) override { inner_->MoeAlign(p); }
  void GatherRows(const kernels::GatherRowsParams& p) override { inner_->GatherRows(p); }
  void GroupedMatmul(const kernels::GroupedMatmulParams& p) override { inner_->GroupedMatmul(p); }
  void SwiGlu(const kernels::SwiGluParams& p) override { inner_->SwiGlu(p); }
  void MoeCombine(const kernels::MoeCombineParams& p) override { inner_->MoeCombine(p); }
  void AddInPlace(const kernels::AddInPlaceParams& p) override { inner_->AddInPlace(p); }
  void Sample(const kernels::SampleParams& p) override { inner_->Sample(p); }

 private:
  std::unique_ptr<kernels::Backend> inner_;
  const bool fake_device_;
  const size_t free_bytes_;
  bool bf16_ = false;
};

}  // namespace moeserve::runtime::counting_test
