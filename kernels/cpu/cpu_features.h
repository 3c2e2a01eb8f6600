// Which instruction set the hand-vectorised CPU kernels (matmul, attention) use, chosen once at
// run time.
//
// Every path computes the same arithmetic (kernels/cpu/matmul_tile.h), so the choice changes
// speed, never bits. MOESERVE_CPU_ISA=avx512|avx2|scalar forces a path (clamped to what the CPU
// has); the path in use is logged once to stderr on first use.
//
// Thread safety: all functions may be called from any thread. SetActiveCpuIsa is for tests and
// benchmarks; call it while no kernel runs.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace moeserve::kernels::cpu {

// Ordered: a path needs everything the ones below it need.
enum class CpuIsa : int {
  kScalar = 0,  // portable C++ (std::fma), any CPU
  kAvx2 = 1,    // AVX2 + FMA + F16C
  kAvx512 = 2,  // AVX-512 F + BW + DQ + VL
};

std::string_view CpuIsaName(CpuIsa isa);

// "scalar", "avx2" or "avx512" (a MOESERVE_CPU_ISA value); nothing for any other text.
std::optional<CpuIsa> ParseCpuIsa(std::string_view name);
// A MOESERVE_CPU_ISA value clamped to `supported`; unset-like values ("", "auto", unknown text)
// mean `supported`.
CpuIsa ClampCpuIsa(std::string_view requested, CpuIsa supported);

// The best path this CPU (and this build) supports.
CpuIsa DetectCpuIsa();

// Every path this CPU supports, scalar first.
std::vector<CpuIsa> AvailableCpuIsas();

// The path the kernels use: DetectCpuIsa(), or MOESERVE_CPU_ISA clamped to it.
CpuIsa ActiveCpuIsa();

// Forces a path (clamped to DetectCpuIsa()); returns the path now in use.
CpuIsa SetActiveCpuIsa(CpuIsa wanted);

}  // namespace moeserve::kernels::cpu
