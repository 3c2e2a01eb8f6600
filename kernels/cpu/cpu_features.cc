#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#if defined(MOESERVE_X86_KERNELS)
#include <cpuid.h>
#endif

namespace moeserve::kernels::cpu {
namespace {

#if defined(MOESERVE_X86_KERNELS)
// clang 14's __builtin_cpu_supports does not know "f16c": CPUID leaf 1, ECX bit 29.
bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

CpuIsa Detect() {
#if defined(MOESERVE_X86_KERNELS)
  // libgcc / compiler-rt check both the CPUID bits and that the OS saves the registers (XGETBV).
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && HasF16c();
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512) return CpuIsa::kAvx512;
  if (avx2) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kScalar;
}

CpuIsa Clamp(CpuIsa wanted) {
  const CpuIsa best = DetectCpuIsa();
  return static_cast<int>(wanted) > static_cast<int>(best) ? best : wanted;
}

// -1 until first use; then a CpuIsa value.
std::atomic<int> g_active{-1};

}  // namespace

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

std::optional<CpuIsa> ParseCpuIsa(std::string_view name) {
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (name == CpuIsaName(isa)) return isa;
  }
  return std::nullopt;
}

CpuIsa ClampCpuIsa(std::string_view requested, CpuIsa supported) {
  const std::optional<CpuIsa> isa = ParseCpuIsa(requested);
  return isa && static_cast<int>(*isa) < static_cast<int>(supported) ? *isa : supported;
}

CpuIsa DetectCpuIsa() {
  static const CpuIsa detected = Detect();
  return detected;
}

std::vector<CpuIsa> AvailableCpuIsas() {
  std::vector<CpuIsa> out;
  for (int i = 0; i <= static_cast<int>(DetectCpuIsa()); ++i) out.push_back(static_cast<CpuIsa>(i));
  return out;
}

CpuIsa ActiveCpuIsa() {
  const int active = g_active.load(std::memory_order_acquire);
  if (active >= 0) return static_cast<CpuIsa>(active);
  static std::once_flag once;
  std::call_once(once, [] {
    const CpuIsa detected = DetectCpuIsa();
    CpuIsa chosen = detected;
    std::string note;
    if (const char* env = std::getenv("MOESERVE_CPU_ISA"); env != nullptr && *env != '\0') {
      const std::string_view want(env);
      chosen = ClampCpuIsa(want, detected);
      note = ParseCpuIsa(want) ? " (MOESERVE_CPU_ISA=" + std::string(want) + ")"
                               : " (MOESERVE_CPU_ISA=" + std::string(want) +
                                     " is not one of avx512, avx2, scalar: ignored)";
    }
    int expected = -1;
    g_active.compare_exchange_strong(expected, static_cast<int>(chosen));
    std::fprintf(stderr, "moeserve: CPU kernel path %s, CPU supports %s%s\n",
                 std::string(CpuIsaName(ActiveCpuIsa())).c_str(),
                 std::string(CpuIsaName(detected)).c_str(), note.c_str());
  });
  return static_cast<CpuIsa>(g_active.load(std::memory_order_acquire));
}

CpuIsa SetActiveCpuIsa(CpuIsa wanted) {
  ActiveCpuIsa();  // log the default once, and let a later first use not override this choice
  const CpuIsa chosen = Clamp(wanted);
  g_active.store(static_cast<int>(chosen), std::memory_order_release);
  return chosen;
}

}  // namespace moeserve::kernels::cpu
