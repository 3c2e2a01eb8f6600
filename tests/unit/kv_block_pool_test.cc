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

namespace moeserve::runtime {
namespace {

TEST(KvBlockPoolTest, SlidingWindowReleasesBlocksThatLeftTheWindow) {
  auto backend = kernels::MakeCpuBackend(1);
  auto pool = KvBlockPool::Create(*backend, {1, 1, 1, /*block_size=*/4, /*num_blocks=*/8});
  ASSERT_TRUE(pool.ok()) << pool.status();
  SequenceKv seq;
  ASSERT_TRUE(pool->Reserve(seq, 10));  // blocks for positions 0..11
  seq.num_tokens = 10;
  // Window 5: the next query (position 10) sees keys 6..10, so block 0 (0..3) goes and block 1
  // (4..7) stays because it holds 6 and 7.
  EXPECT_EQ(pool->ReleaseOutOfWindow(seq, 5), 1);
  EXPECT_EQ(seq.block_table[0], -1);
  EXPECT_GE(seq.block_table[1], 0);
  EXPECT_EQ(KvBlockPool::LiveBlocks(seq), 2);
  EXPECT_EQ(pool->ReleaseOutOfWindow(seq, 5), 0);  // idempotent
  seq.num_tokens = 12;                             // next query 12 sees 8..12
  EXPECT_EQ(pool->ReleaseOutOfWindow(seq, 5), 1);
  EXPECT_EQ(pool->num_used_blocks(), 1);
  // Growing the sequence appends new blocks after the released entries; freed blocks are reused.
  ASSERT_TRUE(pool->Reserve(seq, 40));
  EXPECT_EQ(seq.block_table.size(), 10u);
  EXPECT_EQ(pool->num_used_blocks(), 8);
  pool->Release(seq);
  EXPECT_EQ(pool->num_used_blocks(), 0);
  EXPECT_EQ(pool->ReleaseOutOfWindow(seq, 0), 0);
}

}  // namespace
}  // namespace moeserve::runtime
