// The model step's device contract, checked on the CPU through a counting wrapper Backend:
//  - a steady-state step allocates nothing, uploads its inputs with one copy, downloads the
//    logits (and the expert-load counters) and synchronises once;
//  - a backend that reports a non-CPU device gets the weights copied to its memory at load
//    (after a free-memory check), and computes bitwise the same logits as the CPU.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/model_loader.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

struct Counts {
  int64_t allocate = 0, allocate_scratch = 0, allocate_host = 0;
  int64_t to_device = 0, to_host = 0, on_device = 0, memset = 0, synchronize = 0;
  int64_t allocations() const { return allocate + allocate_scratch + allocate_host; }
};

// Forwards everything to a CPU backend, counting memory calls, copies and synchronisations.
// With fake_device it reports Device::kCuda, so the loader takes the device-upload path (the
// memory is still host memory, which the CPU kernels can read).
class CountingBackend final : public kernels::Backend {
 public:
  explicit CountingBackend(bool fake_device, size_t free_bytes = 0)
      : inner_(kernels::MakeCpuBackend(1)), fake_device_(fake_device), free_bytes_(free_bytes) {}

  Counts counts;

  kernels::Device device() const override {
    return fake_device_ ? kernels::Device::kCuda : kernels::Device::kCpu;
  }
  std::string_view name() const override { return "counting"; }
  std::string Describe() const override { return "counting over " + inner_->Describe(); }
  kernels::DType activation_dtype() const override { return inner_->activation_dtype(); }
  kernels::DType kv_dtype() const override { return inner_->kv_dtype(); }

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
};

ModelConfig Config() { return ep_test::SmallConfig(/*layers=*/2); }

// Greedy generation over a batch of two sequences (a prefill, then decode steps); returns every
// step's logits and the per-step counts of the backend.
struct GenerateRun {
  std::vector<std::vector<float>> logits;
  std::vector<Counts> per_step;
};

GenerateRun Generate(CountingBackend& backend, MixtralModel& model, int steps) {
  GenerateRun run;
  auto pool = KvBlockPool::Create(backend, model.KvShape(16, 16));  // one block per sequence
  EXPECT_TRUE(pool.ok()) << pool.status();
  SequenceKv kv[2];
  std::vector<int32_t> next[2] = {{5, 17, 3, 99, 42}, {7, 7, 300}};
  for (int s = 0; s < steps; ++s) {
    std::vector<SequenceStep> batch(2);
    for (int i = 0; i < 2; ++i) {
      batch[i].new_tokens = next[i];
      batch[i].kv = &kv[i];
    }
    const Counts before = backend.counts;
    StepOutput out;
    const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    Counts d = backend.counts;
    d.allocate -= before.allocate;
    d.allocate_scratch -= before.allocate_scratch;
    d.allocate_host -= before.allocate_host;
    d.to_device -= before.to_device;
    d.to_host -= before.to_host;
    d.on_device -= before.on_device;
    d.memset -= before.memset;
    d.synchronize -= before.synchronize;
    run.per_step.push_back(d);
    run.logits.push_back(out.logits);
    for (int i = 0; i < 2; ++i) {
      const float* row = out.last_row(i);
      int32_t best = 0;
      for (int32_t v = 1; v < out.vocab; ++v) best = row[v] > row[best] ? v : best;
      next[i] = {best};
    }
  }
  return run;
}

void ExpectSteadyState(const GenerateRun& run) {
  // Step 0 (prefill) sizes every buffer (and builds the expert tables); decode steps fit in
  // what exists (capacities only grow, by powers of two, when a step is larger).
  ASSERT_GE(run.per_step.size(), 4u);
  for (size_t s = 1; s < run.per_step.size(); ++s) {
    const Counts& c = run.per_step[s];
    EXPECT_EQ(c.allocations(), 0) << "step " << s;
    EXPECT_EQ(c.to_device, 1) << "step " << s;  // the staging buffer
    EXPECT_EQ(c.to_host, 2) << "step " << s;    // logits + expert-load counters
    EXPECT_EQ(c.synchronize, 1) << "step " << s;
    EXPECT_EQ(c.on_device + c.memset, 0) << "step " << s;
  }
}

TEST(DeviceStepTest, CpuSteadyStateStepAllocatesNothingAndSynchronisesOnce) {
  CountingBackend backend(/*fake_device=*/false);
  auto loaded = LoadRandomModel(Config(), 3, &backend);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->device_weights.empty());  // CPU: the host views, no copy
  const GenerateRun run = Generate(backend, *(*loaded)->model, 8);
  ExpectSteadyState(run);
}

TEST(DeviceStepTest, DeviceBackendGetsWeightCopiesAndTheSameBits) {
  auto cpu = std::make_unique<CountingBackend>(false);
  auto reference = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(reference.ok());
  const GenerateRun want = Generate(*cpu, *(*reference)->model, 6);

  CountingBackend device(/*fake_device=*/true);
  auto loaded = LoadRandomModel(Config(), 3, &device);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Dense tensors in one buffer, then w1/w3/w2 stacks per layer.
  EXPECT_EQ((*loaded)->device_weights.size(), 1u + 3u * Config().num_hidden_layers);
  EXPECT_EQ(device.counts.synchronize, 1);  // one at the end of the upload
  const GenerateRun got = Generate(device, *(*loaded)->model, 6);
  ASSERT_EQ(got.logits.size(), want.logits.size());
  for (size_t s = 0; s < got.logits.size(); ++s) {
    ASSERT_EQ(got.logits[s].size(), want.logits[s].size());
    EXPECT_EQ(0, std::memcmp(got.logits[s].data(), want.logits[s].data(),
                             sizeof(float) * got.logits[s].size()))
        << "step " << s;
  }
  ExpectSteadyState(got);
}

TEST(DeviceStepTest, WeightsThatDoNotFitFailBeforeAnyCopy) {
  CountingBackend device(/*fake_device=*/true, /*free_bytes=*/4096);
  auto loaded = LoadRandomModel(Config(), 3, &device);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(loaded.status().message().find("4096 bytes"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("model weights need"), std::string::npos);
  EXPECT_EQ(device.counts.to_device, 0);
  EXPECT_EQ(device.counts.allocations(), 0);
}

}  // namespace
}  // namespace moeserve::runtime
