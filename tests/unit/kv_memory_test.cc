// KV pool sizing from --gpu-memory-utilization (runtime/kv/kv_block_pool.h).
#include <string>

#include "gtest/gtest.h"
#include "runtime/kv/kv_block_pool.h"

namespace moeserve::runtime {
namespace {

KvCacheShape Shape() {
  KvCacheShape s;
  s.num_layers = 2;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.block_size = 16;
  s.kv_dtype = kernels::DType::kBF16;  // 256 bytes per block and layer; 1024 with K, V, 2 layers
  return s;
}

TEST(KvMemoryTest, BlocksAreWhatTheUtilizationLeavesAfterWhatIsUsed) {
  // 100 KiB total, 40 KiB in use: 0.9 * 102400 - 40960 = 51200 bytes = 50 blocks.
  const kernels::DeviceMemoryInfo mem{/*free_bytes=*/61440, /*total_bytes=*/102400};
  auto blocks = KvBlocksForMemoryUtilization(mem, Shape(), 0.9, /*max_seq_len=*/64);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_EQ(*blocks, 50);
}

TEST(KvMemoryTest, TooLittleForOneMaxLengthSequenceNamesTheNumbers) {
  const kernels::DeviceMemoryInfo mem{61440, 102400};
  // 0.5 * 102400 - 40960 = 10240 bytes = 10 blocks; 4096 tokens need 256 + 1.
  auto blocks = KvBlocksForMemoryUtilization(mem, Shape(), 0.5, 4096);
  ASSERT_FALSE(blocks.ok());
  EXPECT_EQ(blocks.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string msg(blocks.status().message());
  EXPECT_NE(msg.find("10 KV blocks"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs 257 blocks"), std::string::npos) << msg;
  EXPECT_NE(msg.find("40960 bytes in use"), std::string::npos) << msg;
  // Already over the budget: zero blocks, still a clear error.
  EXPECT_FALSE(KvBlocksForMemoryUtilization(mem, Shape(), 0.3, 64).ok());
  EXPECT_FALSE(KvBlocksForMemoryUtilization(mem, Shape(), 1.5, 64).ok());
}

}  // namespace
}  // namespace moeserve::runtime
