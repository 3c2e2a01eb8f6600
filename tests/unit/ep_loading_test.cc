// Expert-parallel loading: a rank reads only the expert tensors its placement gives it (checked
// with the checkpoint's read counters), random models build only those, and a model refuses to
// join a group whose placement does not match what it loaded.
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include <unistd.h>

#include "gtest/gtest.h"
#include "parallel/comm/in_process_communicator.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/weight_names.h"
#include "tests/golden/ep_harness.h"

namespace moeserve::runtime {
namespace {

ModelConfig SmallConfig() { return ep_test::SmallConfig(/*layers=*/3); }

class EpLoadingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Per process: ctest runs each test of this suite as its own process, concurrently.
    dir_ =
        new std::string(testing::TempDir() + "/moeserve_ep_loading_" + std::to_string(::getpid()));
    std::filesystem::remove_all(*dir_);
    ASSERT_TRUE(WriteRandomModel(SmallConfig(), 5, *dir_, /*shard_per_layer=*/true).ok());
  }
  // The model as `rank` of `placement` loads it.
  static absl::StatusOr<std::unique_ptr<LoadedModel>> LoadRank(
      kernels::Backend* backend, const parallel::ExpertPlacement& placement, int rank) {
    ModelLoadOptions options;
    options.placement = &placement;
    options.rank = rank;
    return LoadModelDir(*dir_, backend, options);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string* dir_;
};
std::string* EpLoadingTest::dir_ = nullptr;

TEST_F(EpLoadingTest, EachRankReadsOnlyItsOwnExperts) {
  const ModelConfig config = SmallConfig();
  auto backend = kernels::MakeCpuBackend(1);
  auto full = LoadModelDir(*dir_, backend.get());
  ASSERT_TRUE(full.ok()) << full.status();
  const LoadStats all = (*full)->checkpoint->stats();

  // Bytes of one expert's three tensors, and of everything that is not an expert.
  int64_t expert_bytes = 0, shared_bytes = 0, shared_tensors = 0;
  for (const WeightSpec& s : AllWeightSpecs(config)) {
    int64_t n = 2;  // bf16
    for (int64_t d : s.shape) n *= d;
    if (s.is_expert()) {
      if (s.layer == 0 && s.expert == 0) expert_bytes += n;
    } else {
      shared_bytes += n;
      ++shared_tensors;
    }
  }
  EXPECT_EQ(all.bytes_loaded, shared_bytes + expert_bytes * 3 * 8);

  for (int ep : {2, 4, 8}) {
    auto placement = parallel::ExpertPlacement::Contiguous(3, 8, ep);
    ASSERT_TRUE(placement.ok());
    int64_t total_expert_tensors = 0;
    for (int rank = 0; rank < ep; ++rank) {
      auto loaded = LoadRank(backend.get(), *placement, rank);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      const LoadStats st = (*loaded)->checkpoint->stats();
      const int64_t held = 3 * (8 / ep);  // (layer, expert) pairs
      EXPECT_EQ(st.tensors_loaded, shared_tensors + 3 * held) << "ep " << ep << " rank " << rank;
      EXPECT_EQ(st.bytes_loaded, shared_bytes + held * expert_bytes);
      const std::vector<std::string> read =
          ep_test::ExpertTensorsIn((*loaded)->checkpoint->LoadedTensorNames());
      EXPECT_EQ(read, ep_test::ExpertTensorNames(*placement, rank))
          << "ep " << ep << " rank " << rank;
      total_expert_tensors += static_cast<int64_t>(read.size());
    }
    EXPECT_EQ(total_expert_tensors, 3 * 8 * 3);  // every expert read by exactly one rank
  }
}

TEST_F(EpLoadingTest, ReplicatedExpertsAreReadByEachOfTheirRanks) {
  auto placement = parallel::ExpertPlacement::FromJson(
      R"({"experts": [[0, 1, 2], [0], [0], [1], [1], [1], [2], [2]]})", 3, 8, 3);
  ASSERT_TRUE(placement.ok());
  auto backend = kernels::MakeCpuBackend(1);
  for (int rank = 0; rank < 3; ++rank) {
    auto loaded = LoadRank(backend.get(), *placement, rank);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const auto names = (*loaded)->checkpoint->LoadedTensorNames();
    EXPECT_TRUE(std::binary_search(names.begin(), names.end(), ExpertPrefix(2, 0) + "w2.weight"))
        << "rank " << rank << " must hold its replica of expert 0";
  }
}

TEST_F(EpLoadingTest, RandomModelsBuildOnlyTheRanksExperts) {
  const ModelConfig config = SmallConfig();
  auto placement = parallel::ExpertPlacement::Contiguous(3, 8, 4);
  ASSERT_TRUE(placement.ok());
  auto backend = kernels::MakeCpuBackend(1);
  const size_t shared = AllWeightSpecs(config).size() - 3 * 8 * 3;
  ModelLoadOptions options;
  options.placement = &*placement;
  options.rank = 3;
  auto loaded = LoadRandomModel(config, 5, backend.get(), options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->owned.size(), shared + 3 * 3 * 2);
  for (const OwnedTensor& t : (*loaded)->owned) {
    if (t.name.find(".experts.") == std::string::npos) continue;
    EXPECT_TRUE(t.name.find(".experts.6.") != std::string::npos ||
                t.name.find(".experts.7.") != std::string::npos)
        << t.name;
  }
  // The same tensors as the full model's (a pure function of seed and name).
  const OwnedTensor again =
      MakeRandomTensor((*loaded)->owned.back().name, (*loaded)->owned.back().shape, config.dtype, 5,
                       config.hidden_size);
  EXPECT_EQ(again.bytes, (*loaded)->owned.back().bytes);
}

TEST_F(EpLoadingTest, MismatchesAreClearErrors) {
  auto backend = kernels::MakeCpuBackend(1);
  auto wrong_layers = parallel::ExpertPlacement::Contiguous(5, 8, 2);
  ASSERT_TRUE(wrong_layers.ok());
  ModelLoadOptions options;
  options.placement = &*wrong_layers;
  auto bad = LoadModelDir(*dir_, backend.get(), options);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("num_hidden_layers=3"), std::string::npos)
      << bad.status();

  // Loaded as rank 0 of 2, then asked to be rank 1: its experts are missing.
  auto placement = parallel::ExpertPlacement::Contiguous(3, 8, 2);
  ASSERT_TRUE(placement.ok());
  options.placement = &*placement;
  options.rank = 0;
  auto loaded = LoadModelDir(*dir_, backend.get(), options);
  ASSERT_TRUE(loaded.ok());
  parallel::InProcessGroup group(2);
  absl::Status st = (*loaded)->model->EnableExpertParallel({group.comm(1), &*placement});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(std::string(st.message()).find("rank 1 holds layer 0 expert 4"), std::string::npos)
      << st;
  // A placement for another group size.
  parallel::InProcessGroup four(4);
  st = (*loaded)->model->EnableExpertParallel({four.comm(0), &*placement});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  // And the right one.
  EXPECT_TRUE((*loaded)->model->EnableExpertParallel({group.comm(0), &*placement}).ok());
  EXPECT_TRUE((*loaded)->model->expert_parallel());
}

TEST_F(EpLoadingTest, SkewValidation) {
  auto backend = kernels::MakeCpuBackend(1);
  auto loaded = LoadRandomModel(SmallConfig(), 5, backend.get());
  ASSERT_TRUE(loaded.ok());
  MixtralModel& model = *(*loaded)->model;
  EXPECT_EQ(model.SetRouterSkew({{8}, 1.0f}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(model.SetRouterSkew({{0, 7}, 1.5f}).ok());
  auto parsed = parallel::ParseRouterSkew("0,7:1.5");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->experts, (std::vector<int64_t>{0, 7}));
  EXPECT_EQ(parsed->bias, 1.5f);
  EXPECT_FALSE(parallel::ParseRouterSkew("0,x:1").ok());
  EXPECT_FALSE(parallel::ParseRouterSkew("3").ok());
  // A bias vector of the wrong size is refused by Forward (it used to be read out of bounds).
  model.SetRouterBias({1.0f, 2.0f});
  auto pool = KvBlockPool::Create(*backend, model.KvShape(4, 16));
  SequenceKv kv;
  SequenceStep step{{1, 2, 3}, &kv, false};
  StepOutput out;
  EXPECT_EQ(model.Forward(absl::MakeSpan(&step, 1), *pool, &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

}  // namespace
}  // namespace moeserve::runtime
