// Checkpoint: the three directory layouts, lazy shard opening (a rank maps only the shards holding
// its tensors), Load's shape/dtype checks and the index validation messages.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/weights/safetensors.h"
#include "runtime/weights/safetensors_writer.h"

namespace moeserve::runtime {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kQProj[] = "model.layers.0.self_attn.q_proj.weight";

std::string Message(const absl::Status& status) { return std::string(status.message()); }

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) / (std::string("moeserve_checkpoint_") + test->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string PathOf(const std::string& file) const { return (fs::path(dir_) / file).string(); }

  // Writes `file` holding F32 tensors of the given shapes, filled with 0, 1, 2, ...
  void WriteFile(const std::string& file,
                 const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                 DType dtype = DType::kF32) {
    std::vector<NamedTensor> named;
    buffers_.clear();
    for (const auto& [name, shape] : tensors) {
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      std::vector<float> values(static_cast<size_t>(numel));
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
      buffers_.push_back(std::move(values));
      named.push_back({name, dtype, shape, buffers_.back().data()});
    }
    ASSERT_TRUE(WriteSafetensors(PathOf(file), named).ok());
  }

  void WriteText(const std::string& file, const std::string& text) {
    std::ofstream(PathOf(file), std::ios::binary | std::ios::trunc) << text;
  }

  // Two shards: layer 0 in shard 1, layer 1 (and the head) in shard 2, through the index.
  void WriteTwoShards() {
    WriteFile("model-00001-of-00002.safetensors",
              {{"model.layers.0.mlp.experts.0.w1.weight", {8, 4}},
               {"model.layers.0.mlp.experts.1.w1.weight", {8, 4}}});
    WriteFile("model-00002-of-00002.safetensors",
              {{"model.layers.1.mlp.experts.0.w1.weight", {8, 4}}, {"lm_head.weight", {16, 4}}});
    WriteText("model.safetensors.index.json", R"({
      "metadata": {"total_size": 640},
      "weight_map": {
        "model.layers.0.mlp.experts.0.w1.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.mlp.experts.1.w1.weight": "model-00001-of-00002.safetensors",
        "model.layers.1.mlp.experts.0.w1.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}})");
  }

  std::unique_ptr<Checkpoint> OpenOk() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    return ckpt.ok() ? std::move(*ckpt) : nullptr;
  }

  std::string dir_;
  std::vector<std::vector<float>> buffers_;
};

TEST_F(CheckpointTest, SingleFileLoadAndInfo) {
  WriteFile("model.safetensors", {{kQProj, {64, 32}}, {"model.norm.weight", {32}}});
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->stats().files_opened, 1);
  EXPECT_THAT(ckpt->TensorNames(), ElementsAre(kQProj, "model.norm.weight"));
  EXPECT_TRUE(ckpt->Has("model.norm.weight"));
  EXPECT_FALSE(ckpt->Has("model.embed_tokens.weight"));

  absl::StatusOr<TensorInfo> info = ckpt->Info(kQProj);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->file, PathOf("model.safetensors"));
  EXPECT_EQ(info->shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(info->dtype, DType::kF32);

  absl::StatusOr<kernels::TensorView> norm = ckpt->Load("model.norm.weight", {32});
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_EQ(static_cast<const float*>(norm->data)[31], 31.0f);
  EXPECT_EQ(ckpt->stats().tensors_loaded, 1);
  EXPECT_EQ(ckpt->stats().bytes_loaded, 32 * 4);
}

TEST_F(CheckpointTest, WrongShapeNamesTensorFileAndBothShapes) {
  WriteFile("model.safetensors", {{kQProj, {64, 32}}});
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<kernels::TensorView> view = ckpt->Load(kQProj, {64, 64});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(view.status()), std::string(kQProj) + " in " + PathOf("model.safetensors") +
                                        ": shape [64, 32] but expected [64, 64]");
  EXPECT_EQ(ckpt->stats().tensors_loaded, 0);
}

TEST_F(CheckpointTest, NonFloatDtypeWhereFloatExpected) {
  WriteFile("model.safetensors", {{"positions", {4}}}, DType::kI32);
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<kernels::TensorView> view = ckpt->Load("positions", {4});
  EXPECT_THAT(Message(view.status()),
              AllOf(HasSubstr("positions in " + PathOf("model.safetensors")),
                    HasSubstr("dtype I32 but a float dtype")));
  absl::StatusOr<kernels::TensorView> as_int = ckpt->Load("positions", {4}, false);
  ASSERT_TRUE(as_int.ok()) << as_int.status();
  EXPECT_EQ(as_int->dtype, DType::kI32);
}

// The expert-parallel requirement: a rank that needs only shard 2 never maps shard 1.
TEST_F(CheckpointTest, ShardedLoadOpensOnlyTheShardItNeeds) {
  WriteTwoShards();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->stats().files_opened, 0);
  EXPECT_EQ(ckpt->TensorNames().size(), 4u);
  EXPECT_TRUE(ckpt->Has("model.layers.0.mlp.experts.1.w1.weight"));

  absl::StatusOr<kernels::TensorView> head = ckpt->Load("lm_head.weight", {16, 4});
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(static_cast<const float*>(head->data)[63], 63.0f);
  ASSERT_TRUE(ckpt->Load("model.layers.1.mlp.experts.0.w1.weight", {8, 4}).ok());
  LoadStats stats = ckpt->stats();
  EXPECT_EQ(stats.files_opened, 1);
  EXPECT_EQ(stats.tensors_loaded, 2);
  EXPECT_EQ(stats.bytes_loaded, (16 * 4 + 8 * 4) * 4);

  absl::StatusOr<TensorInfo> info = ckpt->Info("model.layers.0.mlp.experts.0.w1.weight");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->file, PathOf("model-00001-of-00002.safetensors"));
  EXPECT_EQ(ckpt->stats().files_opened, 2);
  ASSERT_TRUE(ckpt->Load("model.layers.0.mlp.experts.0.w1.weight", {8, 4}).ok());
  EXPECT_EQ(ckpt->stats().files_opened, 2) << "an open shard is reused";
  EXPECT_EQ(ckpt->stats().bytes_loaded, (16 * 4 + 8 * 4 + 8 * 4) * 4);
}

TEST_F(CheckpointTest, ShardedMissingTensorNamesTheIndex) {
  WriteTwoShards();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<kernels::TensorView> view = ckpt->Load("model.embed_tokens.weight", {16, 4});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(view.status()),
              AllOf(HasSubstr("'model.embed_tokens.weight'"),
                    HasSubstr("consulted " + PathOf("model.safetensors.index.json"))));
  EXPECT_EQ(ckpt->stats().files_opened, 0);
}

TEST_F(CheckpointTest, SingleFileMissingTensorNamesTheFile) {
  WriteFile("model.safetensors", {{"model.norm.weight", {32}}});
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<TensorInfo> info = ckpt->Info("lm_head.weight");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(info.status()), AllOf(HasSubstr("'lm_head.weight'"),
                                            HasSubstr("consulted " + PathOf("model.safetensors"))));
}

TEST_F(CheckpointTest, IndexNamesMissingShard) {
  WriteTwoShards();
  fs::remove(PathOf("model-00002-of-00002.safetensors"));
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()),
              AllOf(HasSubstr(PathOf("model.safetensors.index.json")),
                    HasSubstr(PathOf("model-00002-of-00002.safetensors") + " does not exist")));
}

TEST_F(CheckpointTest, IndexNotValidJson) {
  WriteText("model.safetensors.index.json", R"({"weight_map": {"a": )");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(ckpt.status()), AllOf(HasSubstr(PathOf("model.safetensors.index.json")),
                                            HasSubstr("not valid JSON")));
}

TEST_F(CheckpointTest, IndexWithOverflowingNumberIsAnError) {
  WriteText("model.safetensors.index.json",
            R"({"metadata": {"total_size": 1e999}, "weight_map": {}})");
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(ckpt.status()), AllOf(HasSubstr(PathOf("model.safetensors.index.json")),
                                            HasSubstr("not valid JSON")));
}

TEST_F(CheckpointTest, IndexWithoutWeightMapOrWithBadEntries) {
  const std::string index = PathOf("model.safetensors.index.json");
  WriteText("model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(Message(Checkpoint::Open(dir_).status()),
              AllOf(HasSubstr(index), HasSubstr("\"weight_map\"")));
  WriteText("model.safetensors.index.json", R"({"weight_map": {"w": 3}})");
  EXPECT_THAT(Message(Checkpoint::Open(dir_).status()),
              AllOf(HasSubstr(index), HasSubstr("weight_map['w'] must be a file name")));
  WriteText("model.safetensors.index.json", R"({"weight_map": {"w": "../elsewhere.safetensors"}})");
  EXPECT_THAT(Message(Checkpoint::Open(dir_).status()),
              HasSubstr("is not a file name in the checkpoint directory"));
}

TEST_F(CheckpointTest, IndexDisagreesWithShard) {
  WriteTwoShards();
  WriteText("model.safetensors.index.json", R"({"weight_map": {
      "lm_head.weight": "model-00001-of-00002.safetensors"}})");
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<kernels::TensorView> view = ckpt->Load("lm_head.weight", {16, 4});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(view.status()), AllOf(HasSubstr(PathOf("model-00001-of-00002.safetensors")),
                                            HasSubstr("no tensor 'lm_head.weight'")));
}

TEST_F(CheckpointTest, CorruptShardFailsOnFirstUse) {
  WriteTwoShards();
  WriteText("model-00002-of-00002.safetensors", "abc");
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->Load("model.layers.0.mlp.experts.0.w1.weight", {8, 4}).ok());
  absl::StatusOr<kernels::TensorView> view = ckpt->Load("lm_head.weight", {16, 4});
  EXPECT_THAT(Message(view.status()),
              AllOf(HasSubstr(PathOf("model-00002-of-00002.safetensors")), HasSubstr("truncated")));
}

TEST_F(CheckpointTest, FallbackToEverySafetensorsFile) {
  WriteFile("b.safetensors", {{"model.norm.weight", {4}}});
  WriteFile("a.safetensors", {{"lm_head.weight", {2, 4}}});
  WriteText("notes.txt", "not weights");
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->stats().files_opened, 2);
  EXPECT_THAT(ckpt->TensorNames(), ElementsAre("lm_head.weight", "model.norm.weight"));
  absl::StatusOr<TensorInfo> info = ckpt->Info("model.norm.weight");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->file, PathOf("b.safetensors"));
  EXPECT_TRUE(ckpt->Load("lm_head.weight", {2, 4}).ok());
}

TEST_F(CheckpointTest, FallbackRejectsTensorInTwoFiles) {
  WriteFile("a.safetensors", {{"lm_head.weight", {2, 4}}});
  WriteFile("b.safetensors", {{"lm_head.weight", {2, 4}}});
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  EXPECT_THAT(Message(ckpt.status()),
              AllOf(HasSubstr("'lm_head.weight' is in both " + PathOf("a.safetensors")),
                    HasSubstr(PathOf("b.safetensors"))));
}

TEST_F(CheckpointTest, DirectoryWithoutWeights) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()), AllOf(HasSubstr(dir_), HasSubstr("*.safetensors")));
  EXPECT_EQ(Checkpoint::Open(PathOf("missing")).status().code(), absl::StatusCode::kNotFound);
}

// Load is thread-safe: concurrent first uses of one shard open it exactly once.
TEST_F(CheckpointTest, ConcurrentLoadsOpenEachShardOnce) {
  WriteTwoShards();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&ckpt, t] {
      const char* name = t % 2 ? "lm_head.weight" : "model.layers.0.mlp.experts.0.w1.weight";
      const std::vector<int64_t> shape =
          t % 2 ? std::vector<int64_t>{16, 4} : std::vector<int64_t>{8, 4};
      EXPECT_TRUE(ckpt->Load(name, shape).ok());
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ckpt->stats().files_opened, 2);
  EXPECT_EQ(ckpt->stats().tensors_loaded, 8);
}

}  // namespace
}  // namespace moeserve::runtime
