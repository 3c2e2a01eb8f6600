#include "kernels/cpu/kernel_isa.h"

#include <algorithm>
#include <cstdlib>

namespace moeserve::kernels::cpu {

KernelIsa SupportedKernelIsa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's checks include the OS's XSAVE support for the AVX/AVX-512 register state.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return KernelIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KernelIsa::kAvx2;
#endif
  return KernelIsa::kScalar;
}

KernelIsa ClampKernelIsa(std::string_view requested, KernelIsa supported) {
  KernelIsa want = supported;
  if (requested == "scalar") want = KernelIsa::kScalar;
  if (requested == "avx2") want = KernelIsa::kAvx2;
  if (requested == "avx512") want = KernelIsa::kAvx512;
  return std::min(want, supported);
}

KernelIsa ActiveKernelIsa() {
  static const KernelIsa isa = [] {
    const char* env = std::getenv("MOESERVE_CPU_ISA");
    return ClampKernelIsa(env != nullptr ? env : "auto", SupportedKernelIsa());
  }();
  return isa;
}

std::string_view KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512:
      return "avx512";
    case KernelIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

}  // namespace moeserve::kernels::cpu
