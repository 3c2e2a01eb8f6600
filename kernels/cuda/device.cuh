// Device discovery: lets tests and `moeserve` report and skip cleanly on machines without a GPU.
#pragma once

#include <string>

namespace moeserve::kernels::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never an error).
int DeviceCount();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" or an explanation of why none is usable.
std::string DescribeDevice(int device);

}  // namespace moeserve::kernels::cuda
