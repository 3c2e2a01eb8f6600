// LoadModelDir on damaged checkpoints: a config.json that disagrees with the files is refused
// before anything is sized from it, and NaN / Inf weights are reported (--check-weights).
#include "runtime/model/model_loader.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/weights/safetensors_writer.h"

namespace moeserve::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.vocab_size = 64;
  c.max_position_embeddings = 128;
  c.dtype = kernels::DType::kF32;
  return c;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

class ModelLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) /
            (std::string("moeserve_loader_") + test->name() + "_" + std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    backend_ = kernels::MakeCpuBackend(1);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes SmallConfig's random weights with `poison` (name -> value) written into element 3 of
  // the named tensors, and config.json from `config_json` (default: SmallConfig().ToJson()).
  void WriteModel(const std::map<std::string, float>& poison = {},
                  const std::string& config_json = "") {
    const ModelConfig c = SmallConfig();
    std::vector<OwnedTensor> owned = MakeRandomWeights(c, 7);
    std::vector<NamedTensor> named;
    for (OwnedTensor& t : owned) {
      if (auto it = poison.find(t.name); it != poison.end()) {
        ASSERT_EQ(t.dtype, kernels::DType::kF32);
        std::memcpy(t.bytes.data() + 3 * sizeof(float), &it->second, sizeof(float));
      }
      named.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
    }
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", named).ok());
    WriteConfig(config_json.empty() ? c.ToJson() : config_json);
  }
  void WriteConfig(const std::string& text) {
    std::ofstream(dir_ + "/config.json", std::ios::trunc) << text;
  }
  absl::StatusOr<std::unique_ptr<LoadedModel>> Load(WeightCheck check = WeightCheck::kWarn) {
    ModelLoadOptions options;
    options.weight_check = check;
    return LoadModelDir(dir_, backend_.get(), options);
  }

  std::string dir_;
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(ModelLoaderTest, CleanCheckpointLoadsWithoutWarnings) {
  WriteModel();
  for (WeightCheck check : {WeightCheck::kOff, WeightCheck::kWarn, WeightCheck::kFull}) {
    auto loaded = Load(check);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_THAT((*loaded)->warnings, IsEmpty());
  }
}

// The config is compared with the checkpoint's tensor list before the loader lists the weights
// it needs; the error names config.json and the field, not just the first missing tensor.
TEST_F(ModelLoaderTest, ConfigThatDisagreesWithTheFilesNamesTheField) {
  WriteModel();
  struct Case {
    std::string field;
    int64_t value;
  };
  for (const Case& c : {Case{"num_hidden_layers", 3}, Case{"num_hidden_layers", 1024},
                        Case{"num_local_experts", 8}}) {
    ModelConfig bad = SmallConfig();
    (c.field == "num_hidden_layers" ? bad.num_hidden_layers : bad.num_local_experts) = c.value;
    WriteConfig(bad.ToJson());
    auto loaded = Load();
    ASSERT_FALSE(loaded.ok()) << c.field << "=" << c.value;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(loaded.status()),
                AllOf(HasSubstr(dir_ + "/config.json"),
                      HasSubstr(c.field + "=" + std::to_string(c.value)), HasSubstr(dir_)));
  }
  // Fewer layers than the files hold is a prefix of the model; not an error (make-model --layers).
  ModelConfig fewer = SmallConfig();
  fewer.num_hidden_layers = 1;
  WriteConfig(fewer.ToJson());
  EXPECT_TRUE(Load().ok());
}

// A config of 2^40 layers used to grow memory by gigabytes in seconds (the loader listed every
// tensor of every layer before looking at the files); now it is refused at parse time.
TEST_F(ModelLoaderTest, AbsurdLayerCountIsRefusedBeforeAnyAllocation) {
  WriteModel();
  std::string json = SmallConfig().ToJson();
  const std::string from = "\"num_hidden_layers\": 2";
  ASSERT_NE(json.find(from), std::string::npos) << json;
  json.replace(json.find(from), from.size(), "\"num_hidden_layers\": 1099511627776");
  WriteConfig(json);
  auto loaded = Load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(Message(loaded.status()),
              AllOf(HasSubstr("config.json"), HasSubstr("num_hidden_layers=1099511627776")));
}

TEST_F(ModelLoaderTest, NonFiniteWeightIsAWarningByDefaultAndAnErrorWithFull) {
  const std::string norm = "model.layers.1.post_attention_layernorm.weight";
  WriteModel({{norm, std::numeric_limits<float>::quiet_NaN()}});

  auto warned = Load(WeightCheck::kWarn);
  ASSERT_TRUE(warned.ok()) << warned.status();
  ASSERT_THAT((*warned)->warnings, SizeIs(1));
  EXPECT_THAT((*warned)->warnings[0],
              AllOf(HasSubstr(norm), HasSubstr("model.safetensors"), HasSubstr("1 of 32")));

  auto strict = Load(WeightCheck::kFull);
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(strict.status()),
              AllOf(HasSubstr(norm), HasSubstr(dir_ + "/model.safetensors"), HasSubstr("NaN")));

  auto off = Load(WeightCheck::kOff);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_THAT((*off)->warnings, IsEmpty());
}

// Expert weights (~96% of Mixtral-8x7B's bytes) are scanned only with --check-weights full.
TEST_F(ModelLoaderTest, ExpertWeightsAreScannedOnlyWithFull) {
  const std::string w2 = "model.layers.0.block_sparse_moe.experts.3.w2.weight";
  WriteModel({{w2, -std::numeric_limits<float>::infinity()}});
  auto warned = Load(WeightCheck::kWarn);
  ASSERT_TRUE(warned.ok()) << warned.status();
  EXPECT_THAT((*warned)->warnings, IsEmpty());
  auto strict = Load(WeightCheck::kFull);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(Message(strict.status()), HasSubstr(w2));
}

TEST(WeightCheckTest, CountsNanAndInfInEveryFloatDtype) {
  const float f32[] = {1.0f, std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(), -0.0f,
                       std::numeric_limits<float>::max()};
  EXPECT_EQ(CountNonFinite({f32, kernels::DType::kF32, kernels::Device::kCpu, {5}}), 2);
  // bf16: 0x7F80 +Inf, 0xFF80 -Inf, 0x7FC0 NaN, 0x7F7F max finite, 0x3F80 1.0.
  const uint16_t bf16[] = {0x7F80, 0xFF80, 0x7FC0, 0x7F7F, 0x3F80};
  EXPECT_EQ(CountNonFinite({bf16, kernels::DType::kBF16, kernels::Device::kCpu, {5}}), 3);
  // f16: 0x7C00 +Inf, 0x7E00 NaN, 0x7BFF max finite, 0xFC00 -Inf.
  const uint16_t f16[] = {0x7C00, 0x7E00, 0x7BFF, 0xFC00};
  EXPECT_EQ(CountNonFinite({f16, kernels::DType::kF16, kernels::Device::kCpu, {4}}), 3);
  EXPECT_EQ(ParseWeightCheck("full").value(), WeightCheck::kFull);
  EXPECT_THAT(Message(ParseWeightCheck("strict").status()), HasSubstr("off, warn, full"));
}

}  // namespace
}  // namespace moeserve::runtime
