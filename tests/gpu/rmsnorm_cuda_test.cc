// CUDA RMSNorm against its CPU twin (kernels/cpu/rmsnorm.cc). Skips when no GPU is usable, so it
// builds and runs everywhere; tools/gpu-check.sh runs it on a GPU machine.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/rmsnorm.h"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/dtype.h"

namespace moeserve::kernels {
namespace {

class RmsNormCudaTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << cuda::DescribeDevice(0);
  }
};

TEST_P(RmsNormCudaTest, MatchesCpuTwin) {
  const int64_t hidden = GetParam();
  const int64_t rows = 7;
  std::mt19937 rng(static_cast<uint32_t>(hidden));
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(rows * hidden));
  for (float& v : x) v = dist(rng);
  std::vector<uint16_t> w(static_cast<size_t>(hidden));
  for (uint16_t& v : w) v = F32ToBf16(1.0f + 0.1f * dist(rng));

  std::vector<float> expect(x.size());
  RmsNormParams p{.x = x.data(),
                  .weight = w.data(),
                  .weight_dtype = DType::kBF16,
                  .out = expect.data(),
                  .rows = rows,
                  .hidden = hidden,
                  .eps = 1e-5f};
  ASSERT_TRUE(Validate(p).ok());
  cpu::RmsNorm(p);

  float *dx = nullptr, *dout = nullptr;
  void* dw = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dout, x.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dw, w.size() * sizeof(uint16_t)), cudaSuccess);
  cudaMemcpy(dx, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(dw, w.data(), w.size() * sizeof(uint16_t), cudaMemcpyHostToDevice);
  RmsNormParams dp = p;
  dp.x = dx;
  dp.weight = dw;
  dp.out = dout;
  ASSERT_EQ(cuda::RmsNorm(dp, nullptr), cudaSuccess);
  std::vector<float> got(x.size());
  ASSERT_EQ(cudaMemcpy(got.data(), dout, got.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(dx);
  cudaFree(dout);
  cudaFree(dw);

  // Both sum squares in fp32 but in a different order (tree vs. lanes): a few ulps apart.
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expect[i], 1e-5f * (1.0f + std::fabs(expect[i]))) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, RmsNormCudaTest, ::testing::Values(64, 200, 4096, 4099));

}  // namespace
}  // namespace moeserve::kernels
