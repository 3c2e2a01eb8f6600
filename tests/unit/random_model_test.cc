// make-model's output read back through the real loading path, and the embedded model.
#include "runtime/model/random_model.h"

#include <filesystem>
#include <set>

#include "gtest/gtest.h"
#include "runtime/engine/generate.h"
#include "runtime/model/model_loader.h"
#include "runtime/weights/safetensors.h"

namespace moeserve::runtime {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c = *PresetConfig("tiny", 2);
  c.vocab_size = 300;
  c.hidden_size = 48;
  c.head_dim = 12;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.intermediate_size = 40;
  return c;
}

std::vector<int32_t> GreedyTokens(MixtralModel& model, kernels::Backend& backend) {
  auto pool = KvBlockPool::Create(backend, model.KvShape(8, 32));
  GenerateOptions opts;
  opts.max_tokens = 12;
  opts.stop_at_eos = false;
  auto r = Generate(model, *pool, {1, 17, 33, 250}, opts);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

TEST(RandomModelTest, WeightsAreAPureFunctionOfSeedAndName) {
  const auto a = MakeRandomTensor("model.layers.0.self_attn.q_proj.weight", {8, 8},
                                  kernels::DType::kBF16, 1, 8);
  const auto b = MakeRandomTensor("model.layers.0.self_attn.q_proj.weight", {8, 8},
                                  kernels::DType::kBF16, 1, 8);
  const auto c = MakeRandomTensor("model.layers.0.self_attn.q_proj.weight", {8, 8},
                                  kernels::DType::kBF16, 2, 8);
  EXPECT_EQ(a.bytes, b.bytes);
  EXPECT_NE(a.bytes, c.bytes);
}

TEST(RandomModelTest, SingleFileAndShardedWritesLoadToTheSameModel) {
  const ModelConfig config = SmallConfig();
  const std::string base = testing::TempDir() + "/moeserve_random_model";
  std::filesystem::remove_all(base);
  ASSERT_TRUE(WriteRandomModel(config, 7, base + "/single", false).ok());
  ASSERT_TRUE(WriteRandomModel(config, 7, base + "/sharded", true).ok());
  EXPECT_TRUE(std::filesystem::exists(base + "/sharded/model.safetensors.index.json"));
  auto backend = kernels::MakeCpuBackend(1);
  auto single = LoadModelDir(base + "/single", backend.get());
  auto sharded = LoadModelDir(base + "/sharded", backend.get());
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  const auto tokens = GreedyTokens(*(*single)->model, *backend);
  EXPECT_EQ(tokens, GreedyTokens(*(*sharded)->model, *backend));
  // Not degenerate: a random model should not repeat one token forever.
  EXPECT_GT(std::set<int32_t>(tokens.begin(), tokens.end()).size(), 2u);
  std::filesystem::remove_all(base);
}

TEST(RandomModelTest, EmbeddedModelMatchesMakeModelTinyWithSeedZero) {
  // The embedded default model is exactly `make-model --config tiny --seed 0`.
  const std::string dir = testing::TempDir() + "/moeserve_tiny";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WriteRandomModel(*PresetConfig("tiny"), kEmbeddedModelSeed, dir, false).ok());
  auto backend = kernels::MakeCpuBackend(1);
  auto embedded = LoadEmbeddedModel(backend.get());
  auto written = LoadModelDir(dir, backend.get());
  ASSERT_TRUE(embedded.ok()) << embedded.status();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ((*embedded)->model->config().vocab_size, 32000);
  EXPECT_EQ(GreedyTokens(*(*embedded)->model, *backend),
            GreedyTokens(*(*written)->model, *backend));
  std::filesystem::remove_all(dir);
}

TEST(RandomModelTest, UnknownPresetIsAnError) {
  auto r = PresetConfig("huge");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("huge"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::runtime
