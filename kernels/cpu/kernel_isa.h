// Which SIMD path the hand-vectorised CPU kernels (paged attention) take, chosen at run time.
//
// MOESERVE_CPU_ISA=avx512|avx2|scalar forces a path, clamped to what this CPU (and OS) supports;
// unset, "auto" or an unknown value means the best supported one. Read once per process.
// avx512 needs x86-64-v4 (AVX-512 F/BW/DQ/VL), avx2 needs x86-64-v3 (AVX2 + FMA).
//
// The attention paths give identical bits (docs/cpu-kernels.md): the variable exists to test
// and time each path, not to change results.
#pragma once

#include <string_view>

namespace moeserve::kernels::cpu {

enum class KernelIsa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU runs.
KernelIsa SupportedKernelIsa();
// MOESERVE_CPU_ISA clamped to SupportedKernelIsa(); computed on first use.
KernelIsa ActiveKernelIsa();
// Parses a MOESERVE_CPU_ISA value and clamps it to `supported` (exposed for tests).
KernelIsa ClampKernelIsa(std::string_view requested, KernelIsa supported);
std::string_view KernelIsaName(KernelIsa isa);

}  // namespace moeserve::kernels::cpu
