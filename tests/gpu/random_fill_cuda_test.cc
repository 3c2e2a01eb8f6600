// CUDA random fill (kernels/cuda/random_fill.cu) against its CPU twin, bit for bit, through
// RandomFillOnBackend (the path `moeserve bench --preset` initialises weights with). Skips when
// no GPU is usable.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/random_fill.h"
#include "kernels/cuda/device.cuh"

namespace moeserve::kernels {
namespace {

class RandomFillCudaTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::DescribeDevice(0);
  }
};

TEST_P(RandomFillCudaTest, MatchesCpuTwinBitwise) {
  const DType dtype = GetParam();
  const int64_t numel = 3 * 65536 * 256 + 77;  // more than one grid-stride pass, odd tail
  const size_t bytes = static_cast<size_t>(numel) * DTypeSize(dtype);
  std::vector<uint8_t> expect(bytes), got(bytes);
  RandomFillParams p{.out = expect.data(),
                     .dtype = dtype,
                     .numel = numel,
                     .seed = 0xabcdef12345ull,
                     .center = 0.25f,
                     .half_range = 0.0625f};
  ASSERT_TRUE(Validate(p).ok());
  cpu::RandomFill(p);

  absl::StatusOr<std::unique_ptr<Backend>> be = MakeCudaBackend(0);
  ASSERT_TRUE(be.ok()) << be.status();
  absl::StatusOr<DeviceBuffer> buf = (*be)->Allocate(bytes);
  ASSERT_TRUE(buf.ok()) << buf.status();
  p.out = buf->data();
  ASSERT_TRUE(RandomFillOnBackend(**be, p).ok());
  ASSERT_TRUE((*be)->CopyToHost(got.data(), buf->data(), bytes).ok());
  EXPECT_EQ(std::memcmp(expect.data(), got.data(), bytes), 0);
}

INSTANTIATE_TEST_SUITE_P(DTypes, RandomFillCudaTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& param) {
                           return std::string(DTypeName(param.param));
                         });

}  // namespace
}  // namespace moeserve::kernels
