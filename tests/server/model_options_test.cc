// The decode-graph and KV-memory flags of server/cli/model_options.h, with their env mirrors.
#include <cstdlib>
#include <vector>

#include "CLI/CLI.hpp"
#include "gtest/gtest.h"
#include "server/cli/model_options.h"

namespace moeserve::server {
namespace {

ModelOptions Parse(std::vector<const char*> args) {
  CLI::App app("test");
  ModelOptions o;
  o.AddTo(app);
  args.insert(args.begin(), "test");
  app.parse(static_cast<int>(args.size()), args.data());
  return o;
}

TEST(ModelOptionsTest, DecodeGraphDefaults) {
  const ModelOptions o = Parse({});
  auto g = o.decode_graphs();
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->enabled);
  EXPECT_EQ(g->sizes, (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_DOUBLE_EQ(o.gpu_memory_utilization, 0.9);
}

TEST(ModelOptionsTest, FlagsAndEnvironment) {
  ModelOptions o =
      Parse({"--no-cuda-graphs", "--cuda-graph-sizes", "4,1", "--gpu-memory-utilization", "0.5"});
  auto g = o.decode_graphs();
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->enabled);
  EXPECT_EQ(g->sizes, (std::vector<int64_t>{1, 4}));
  EXPECT_DOUBLE_EQ(o.gpu_memory_utilization, 0.5);

  setenv("MOESERVE_NO_CUDA_GRAPHS", "1", 1);
  setenv("MOESERVE_CUDA_GRAPH_SIZES", "2,8", 1);
  setenv("MOESERVE_GPU_MEMORY_UTILIZATION", "0.75", 1);
  o = Parse({});
  unsetenv("MOESERVE_NO_CUDA_GRAPHS");
  unsetenv("MOESERVE_CUDA_GRAPH_SIZES");
  unsetenv("MOESERVE_GPU_MEMORY_UTILIZATION");
  g = o.decode_graphs();
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->enabled);
  EXPECT_EQ(g->sizes, (std::vector<int64_t>{2, 8}));
  EXPECT_DOUBLE_EQ(o.gpu_memory_utilization, 0.75);

  EXPECT_FALSE(Parse({"--cuda-graph-sizes", "0,2"}).decode_graphs().ok());
  EXPECT_THROW(Parse({"--gpu-memory-utilization", "1.5"}), CLI::ValidationError);
}

}  // namespace
}  // namespace moeserve::server
