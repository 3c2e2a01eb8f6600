#include "kernels/cpu/kernel_isa.h"

#include <algorithm>

namespace moeserve::kernels::cpu {

KernelIsa ClampKernelIsa(std::string_view requested, KernelIsa supported) {
  KernelIsa want = supported;
  if (requested == "scalar") want = KernelIsa::kScalar;
  if (requested == "avx2") want = KernelIsa::kAvx2;
  if (requested == "avx512") want = KernelIsa::kAvx512;
  return std::min(want, supported);
}

}  // namespace moeserve::kernels::cpu
