// Which SIMD path the hand-vectorised CPU kernels (paged attention) take, chosen at run time.
//
// MOESERVE_CPU_ISA=avx512|avx2|scalar forces a path, clamped to what this CPU (and OS) supports;
// unset, "auto" or an unknown value means the best supported one. Read once per process.
// avx512 needs AVX-512 F/BW/DQ/VL, avx2 needs AVX2 + FMA + F16C (cpu_features.cc).
//
// The attention paths give identical bits (docs/cpu-kernels.md): the variable exists to test
// and time each path, not to change results.
#pragma once

#include <string_view>

#include "kernels/cpu/cpu_features.h"

namespace moeserve::kernels::cpu {

// One choice for every hand-vectorised CPU kernel: the matmul's (cpu_features.h), detected and
// read from MOESERVE_CPU_ISA once, logged once.
using KernelIsa = CpuIsa;

// The best path this CPU runs.
inline KernelIsa SupportedKernelIsa() { return DetectCpuIsa(); }
// MOESERVE_CPU_ISA clamped to SupportedKernelIsa() (or what SetActiveCpuIsa chose).
inline KernelIsa ActiveKernelIsa() { return ActiveCpuIsa(); }
// Parses a MOESERVE_CPU_ISA value and clamps it to `supported` (exposed for tests); unknown
// values and "auto" mean `supported`.
KernelIsa ClampKernelIsa(std::string_view requested, KernelIsa supported);
inline std::string_view KernelIsaName(KernelIsa isa) { return CpuIsaName(isa); }

}  // namespace moeserve::kernels::cpu

// Loop kernels written in plain C++ with an explicit, width-independent lane structure
// (rmsnorm, moe combine, argmax) are compiled three times and picked by the CPU at load time.
// Their bits are the same on every clone: the kernels target is built with -ffp-contract=off and
// the vectoriser never reassociates, so each clone does the same IEEE operations per element.
// ThreadSanitizer builds use the baseline only: TSan instruments the ifunc resolver, which the
// loader runs before the sanitizer runtime is up.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOESERVE_KERNEL_NO_CLONES 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || !defined(__x86_64__)
#define MOESERVE_KERNEL_NO_CLONES 1
#endif
#ifdef MOESERVE_KERNEL_NO_CLONES
#define MOESERVE_KERNEL_CLONES
#else
#define MOESERVE_KERNEL_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
