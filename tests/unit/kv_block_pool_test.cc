#include "runtime/kv/kv_block_pool.h"

#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

TEST(KvBlockPoolTest, ReserveIsAllOrNothingAndReleaseReturnsBlocks) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {2, 2, 4, /*block_size=*/4, /*num_blocks=*/5});
  ASSERT_TRUE(pool.ok()) << pool.status();
  SequenceKv a, b;
  EXPECT_TRUE(pool->Reserve(a, 9));  // 3 blocks
  EXPECT_EQ(a.block_table.size(), 3u);
  EXPECT_EQ(pool->num_free_blocks(), 2);
  EXPECT_TRUE(pool->Reserve(a, 12));  // still 3 blocks
  EXPECT_EQ(pool->num_free_blocks(), 2);
  EXPECT_FALSE(pool->Reserve(b, 13));  // needs 4: nothing taken
  EXPECT_TRUE(b.block_table.empty());
  EXPECT_EQ(pool->num_free_blocks(), 2);
  EXPECT_TRUE(pool->Reserve(b, 8));
  EXPECT_FALSE(pool->AllocateBlock().has_value());
  pool->Release(a);
  EXPECT_EQ(pool->num_free_blocks(), 3);
  EXPECT_EQ(a.num_tokens, 0);
  pool->Release(b);
  EXPECT_EQ(pool->num_used_blocks(), 0);
}

TEST(KvBlockPoolTest, RejectsEmptyShapes) {
  auto backend = kernels::MakeCpuBackend(1);
  EXPECT_FALSE(KvBlockPool::Create(*backend, {2, 2, 4, 16, 0}).ok());
  EXPECT_FALSE(KvBlockPool::Create(*backend, {2, 2, 4, 0, 8}).ok());
}

}  // namespace
}  // namespace moeserve::runtime
