// Bucketed decode steps (runtime/model/decode_graphs.h), checked on the CPU:
//  - padded decode steps (eager on the CPU backend) give bitwise the same logits and expert-load
//    statistics as unpadded ones;
//  - through a backend that fakes graphs (records the work enqueued between BeginCapture and
//    EndCapture without running it, like CUDA, and runs it on Replay), the first step of a bucket
//    captures then replays, later ones only replay, and growing the step buffers drops the graphs.
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "parallel/moe/skew_profile.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/decode_graphs.h"
#include "runtime/model/model_loader.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

// A CPU backend that pretends to support graphs. Enqueued work between BeginCapture and
// EndCapture is recorded, not run (a CUDA capture does not execute either); Replay runs it.
class FakeGraphBackend final : public kernels::Backend {
 public:
  FakeGraphBackend() : inner_(kernels::MakeCpuBackend(1)) {}

  int64_t captures = 0, replays = 0, ops_run_while_capturing = 0;

  kernels::Device device() const override { return inner_->device(); }
  std::string_view name() const override { return "fake-graphs"; }
  std::string Describe() const override { return "fake graphs over " + inner_->Describe(); }
  kernels::DType activation_dtype() const override { return inner_->activation_dtype(); }
  kernels::DType kv_dtype() const override { return inner_->kv_dtype(); }
  absl::StatusOr<kernels::DeviceBuffer> Allocate(size_t bytes) override {
    if (recording_) return absl::FailedPreconditionError("Allocate during capture");
    return inner_->Allocate(bytes);
  }
  absl::StatusOr<kernels::DeviceBuffer> AllocateScratch(size_t bytes) override {
    if (recording_) return absl::FailedPreconditionError("AllocateScratch during capture");
    return inner_->AllocateScratch(bytes);
  }
  absl::StatusOr<kernels::DeviceBuffer> AllocateHost(size_t bytes) override {
    if (recording_) return absl::FailedPreconditionError("AllocateHost during capture");
    return inner_->AllocateHost(bytes);
  }
  absl::StatusOr<kernels::DeviceMemoryInfo> MemoryInfo() const override {
    return inner_->MemoryInfo();
  }
  absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes) override {
    if (recording_) return absl::FailedPreconditionError("host copy during capture");
    return inner_->CopyToDeviceAsync(dst, src, bytes);
  }
  absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes) override {
    if (recording_) return absl::FailedPreconditionError("host copy during capture");
    return inner_->CopyToHostAsync(dst, src, bytes);
  }
  absl::Status CopyOnDeviceAsync(void* dst, const void* src, size_t bytes) override {
    return Enqueue([=, this] { (void)inner_->CopyOnDeviceAsync(dst, src, bytes); });
  }
  absl::Status MemsetAsync(void* dst, int value, size_t bytes) override {
    return Enqueue([=, this] { (void)inner_->MemsetAsync(dst, value, bytes); });
  }
  absl::StatusOr<std::unique_ptr<kernels::Event>> CreateEvent() override {
    return inner_->CreateEvent();
  }
  absl::Status RecordEvent(kernels::Event& e) override { return inner_->RecordEvent(e); }
  absl::Status WaitEvent(kernels::Event& e) override { return inner_->WaitEvent(e); }
  absl::Status Synchronize() override {
    if (recording_) return absl::FailedPreconditionError("Synchronize during capture");
    return inner_->Synchronize();
  }

  bool SupportsGraphs() const override { return true; }
  absl::Status BeginCapture() override {
    if (recording_) return absl::FailedPreconditionError("nested capture");
    recording_ = std::make_unique<Recorded>();
    ++captures;
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<kernels::Graph>> EndCapture() override {
    if (!recording_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
    return std::unique_ptr<kernels::Graph>(std::move(recording_));
  }
  absl::Status Replay(kernels::Graph& graph) override {
    ++replays;
    for (const auto& work : static_cast<Recorded&>(graph).work) work();
    return absl::OkStatus();
  }

  void Embedding(const kernels::EmbeddingParams& p) override {
    Op([=, this] { inner_->Embedding(p); });
  }
  void RmsNorm(const kernels::RmsNormParams& p) override {
    Op([=, this] { inner_->RmsNorm(p); });
  }
  void Rope(const kernels::RopeParams& p) override {
    Op([=, this] { inner_->Rope(p); });
  }
  void Matmul(const kernels::MatmulParams& p) override {
    Op([=, this] { inner_->Matmul(p); });
  }
  void KvWrite(const kernels::KvWriteParams& p) override {
    Op([=, this] { inner_->KvWrite(p); });
  }
  void PagedAttention(const kernels::PagedAttentionParams& p) override {
    Op([=, this] { inner_->PagedAttention(p); });
  }
  void RouterTopK(const kernels::RouterTopKParams& p) override {
    Op([=, this] { inner_->RouterTopK(p); });
  }
  void MoeAlign(const kernels::MoeAlignParams& p) override {
    Op([=, this] { inner_->MoeAlign(p); });
  }
  void GatherRows(const kernels::GatherRowsParams& p) override {
    Op([=, this] { inner_->GatherRows(p); });
  }
  void GroupedMatmul(const kernels::GroupedMatmulParams& p) override {
    Op([=, this] { inner_->GroupedMatmul(p); });
  }
  void SwiGlu(const kernels::SwiGluParams& p) override {
    Op([=, this] { inner_->SwiGlu(p); });
  }
  void MoeCombine(const kernels::MoeCombineParams& p) override {
    Op([=, this] { inner_->MoeCombine(p); });
  }
  void AddInPlace(const kernels::AddInPlaceParams& p) override {
    Op([=, this] { inner_->AddInPlace(p); });
  }
  void Sample(const kernels::SampleParams& p) override {
    Op([=, this] { inner_->Sample(p); });
  }

 private:
  struct Recorded final : kernels::Graph {
    std::vector<std::function<void()>> work;
  };
  void Op(std::function<void()> work) {
    if (recording_) {
      recording_->work.push_back(std::move(work));
    } else {
      work();
    }
  }
  absl::Status Enqueue(std::function<void()> work) {
    Op(std::move(work));
    return absl::OkStatus();
  }

  std::unique_ptr<kernels::Backend> inner_;
  std::unique_ptr<Recorded> recording_;
};

ModelConfig Config() { return ep_test::SmallConfig(/*layers=*/2); }

const std::vector<std::vector<int32_t>> kPrompts = {{5, 17, 3, 99, 42}, {7, 7, 300}, {11, 2},
                                                    {250, 1, 8, 9},     {64},        {33, 34, 35}};

// Runs a schedule: schedule[s] lists the sequences of step s. A sequence's first step is its
// prompt (a prefill), later steps its greedy next token. Returns every step's logits.
struct DriveResult {
  std::vector<std::vector<float>> logits;
  ExpertLoad load;
  int64_t used_blocks = 0;
};
// skewed: sequence 1 carries a per-request skew profile (its own token-bias rows).
DriveResult Drive(kernels::Backend& backend, MixtralModel& model,
                  const std::vector<std::vector<int>>& schedule, bool skewed = false) {
  std::shared_ptr<const parallel::SkewProfile> skew;
  if (skewed) {
    auto parsed = parallel::ParseSkewProfile("drift:2:3:2.5");
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    if (parsed.ok()) skew = std::make_shared<const parallel::SkewProfile>(*parsed);
  }
  DriveResult run;
  auto pool = KvBlockPool::Create(backend, model.KvShape(4, 64));
  EXPECT_TRUE(pool.ok()) << pool.status();
  std::vector<SequenceKv> kv(kPrompts.size());
  std::vector<std::vector<int32_t>> next = kPrompts;
  for (const std::vector<int>& seqs : schedule) {
    std::vector<SequenceStep> batch(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      batch[i].new_tokens = next[seqs[i]];
      batch[i].kv = &kv[seqs[i]];
      if (seqs[i] == 1) batch[i].skew = skew;
    }
    StepOutput out;
    const absl::Status st = model.Forward(absl::MakeSpan(batch), *pool, &out);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return run;
    EXPECT_EQ(static_cast<int64_t>(out.logits.size()), out.row_offsets.back() * out.vocab);
    for (size_t i = 0; i < seqs.size(); ++i) {
      const float* row = out.last_row(static_cast<int64_t>(i));
      int32_t best = 0;
      for (int32_t v = 1; v < out.vocab; ++v) best = row[v] > row[best] ? v : best;
      next[seqs[i]] = {best};
    }
    run.logits.push_back(out.logits);
  }
  run.load = model.expert_load();
  run.used_blocks = pool->num_used_blocks();
  return run;
}

void ExpectSameBits(const DriveResult& got, const DriveResult& want) {
  ASSERT_EQ(got.logits.size(), want.logits.size());
  for (size_t s = 0; s < got.logits.size(); ++s) {
    ASSERT_EQ(got.logits[s].size(), want.logits[s].size()) << "step " << s;
    EXPECT_EQ(0, std::memcmp(got.logits[s].data(), want.logits[s].data(),
                             sizeof(float) * got.logits[s].size()))
        << "step " << s;
  }
  EXPECT_EQ(got.load.tokens, want.load.tokens);
}

// Prefill 3 sequences, decode them (bucket 4), a prefill that brings the batch to 5 (the step
// buffers grow to 8 sequences), decode 5 (bucket 8), then 3 again (bucket 4, recaptured).
const std::vector<std::vector<int>> kSchedule = {
    {0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4},
    {0, 2, 4}, {0, 2, 4}, {1},       {1}};

DecodeGraphOptions Graphs(std::vector<int64_t> sizes) {
  DecodeGraphOptions o;
  o.enabled = true;
  o.sizes = std::move(sizes);
  return o;
}

TEST(DecodeGraphsTest, PaddedDecodeStepsGiveTheSameBitsAndStatistics) {
  auto cpu = kernels::MakeCpuBackend(1);
  auto reference = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(reference.ok()) << reference.status();
  const DriveResult want = Drive(*cpu, *(*reference)->model, kSchedule);

  auto padded_cpu = kernels::MakeCpuBackend(1);
  auto padded = LoadRandomModel(Config(), 3, padded_cpu.get());
  ASSERT_TRUE(padded.ok());
  (*padded)->model->SetDecodeGraphs(Graphs({2, 4, 8}));
  const DriveResult got = Drive(*padded_cpu, *(*padded)->model, kSchedule);
  ExpectSameBits(got, want);
  EXPECT_EQ(got.used_blocks, want.used_blocks + 1);        // the padding block
  EXPECT_EQ((*padded)->model->decode_graphs().size(), 0);  // no graphs on the CPU
}

// A per-request skew (position-dependent drift) on one sequence: its token-bias rows follow the
// padded layout, padding rows get none.
TEST(DecodeGraphsTest, PaddedStepsWithAPerRequestSkewGiveTheSameBits) {
  auto cpu = kernels::MakeCpuBackend(1);
  auto reference = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(reference.ok()) << reference.status();
  const DriveResult want = Drive(*cpu, *(*reference)->model, kSchedule, /*skewed=*/true);
  auto unskewed = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(unskewed.ok());
  // The skew matters (else this test could not fail).
  EXPECT_NE(Drive(*cpu, *(*unskewed)->model, kSchedule).load.tokens, want.load.tokens);

  auto padded_cpu = kernels::MakeCpuBackend(1);
  auto padded = LoadRandomModel(Config(), 3, padded_cpu.get());
  ASSERT_TRUE(padded.ok());
  (*padded)->model->SetDecodeGraphs(Graphs({2, 4, 8}));
  ExpectSameBits(Drive(*padded_cpu, *(*padded)->model, kSchedule, /*skewed=*/true), want);
}

TEST(DecodeGraphsTest, PaddingIsLeftOutOfTheStatisticsWithARouterBias) {
  const std::vector<float> bias = {0.0f, 3.0f, -1.0f, 3.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  ASSERT_EQ(static_cast<int64_t>(bias.size()), Config().num_local_experts);
  auto cpu = kernels::MakeCpuBackend(1);
  auto reference = LoadRandomModel(Config(), 5, cpu.get());
  ASSERT_TRUE(reference.ok());
  (*reference)->model->SetRouterBias(bias);
  const DriveResult want = Drive(*cpu, *(*reference)->model, kSchedule);

  auto padded_cpu = kernels::MakeCpuBackend(1);
  auto padded = LoadRandomModel(Config(), 5, padded_cpu.get());
  ASSERT_TRUE(padded.ok());
  (*padded)->model->SetRouterBias(bias);
  (*padded)->model->SetDecodeGraphs(Graphs({4, 8}));
  ExpectSameBits(Drive(*padded_cpu, *(*padded)->model, kSchedule), want);
}

TEST(DecodeGraphsTest, FirstStepOfABucketCapturesThenReplaysAndGrowthRecaptures) {
  auto cpu = kernels::MakeCpuBackend(1);
  auto reference = LoadRandomModel(Config(), 3, cpu.get());
  ASSERT_TRUE(reference.ok());
  const DriveResult want = Drive(*cpu, *(*reference)->model, kSchedule);

  FakeGraphBackend fake;
  auto loaded = LoadRandomModel(Config(), 3, &fake);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  MixtralModel& model = *(*loaded)->model;
  model.SetDecodeGraphs(Graphs({2, 4, 8}));
  const DriveResult got = Drive(fake, model, kSchedule);
  ExpectSameBits(got, want);
  // Decode steps: 3 x bucket 4 (one capture), 2 x bucket 8 after the growth (the bucket-4 graph
  // is dropped: one capture), 2 x bucket 4 (recaptured), 2 x bucket 2... sizes {2,4,8}: a single
  // sequence goes to bucket 2 (one capture).
  EXPECT_EQ(fake.captures, 4);
  EXPECT_EQ(fake.replays, 3 + 2 + 2 + 2);
  EXPECT_EQ(model.decode_graphs().invalidations(), 1);
  EXPECT_EQ(model.decode_graphs().size(), 3);
}

TEST(DecodeGraphsTest, OffOrTooLargeBatchesRunEagerly) {
  FakeGraphBackend fake;
  auto loaded = LoadRandomModel(Config(), 3, &fake);
  ASSERT_TRUE(loaded.ok());
  MixtralModel& model = *(*loaded)->model;
  model.SetDecodeGraphs(Graphs({2}));  // 3 and 5 sequences have no bucket; 1 has
  Drive(fake, model, kSchedule);
  EXPECT_EQ(fake.captures, 1);
  EXPECT_EQ(fake.replays, 2);
}

TEST(DecodeGraphsTest, SizesAndBuckets) {
  auto sizes = ParseGraphSizes("8, 1,2,4,4");
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  EXPECT_EQ(*sizes, (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_FALSE(ParseGraphSizes("").ok());
  EXPECT_FALSE(ParseGraphSizes("0,2").ok());
  EXPECT_FALSE(ParseGraphSizes("two").ok());
  DecodeGraphOptions o = Graphs(*sizes);
  EXPECT_EQ(DecodeBucket(o, 1), 1);
  EXPECT_EQ(DecodeBucket(o, 3), 4);
  EXPECT_EQ(DecodeBucket(o, 8), 8);
  EXPECT_EQ(DecodeBucket(o, 9), 0);
  o.enabled = false;
  EXPECT_EQ(DecodeBucket(o, 3), 0);
  EXPECT_EQ(PaddingRouting({}, 8, 2), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(PaddingRouting({0, 1, 5, 1}, 4, 2), (std::vector<int32_t>{1, 2}));
}

}  // namespace
}  // namespace moeserve::runtime
