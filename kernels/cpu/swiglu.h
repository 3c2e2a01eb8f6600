// The SwiGLU activation of the CPU backend, out = silu(gate) * up = gate / (1 + exp(-gate)) * up,
// shared by the SwiGlu op (moe.cc) and the fused gate/up GEMM epilogue (matmul.cc) so that the
// two give the same bits. exp is our own polynomial (SwiGluExp below), not libm's: it vectorises,
// and its bits are the same on every target_clones variant and in the scalar SiluMul.
#pragma once

#include <cstdint>

namespace moeserve::kernels::cpu {

// out[i] = silu(gate[i]) * up[i] for i < n (fp32; out may alias gate or up).
void SiluMulRow(const float* gate, const float* up, float* out, int64_t n);

// One element, the bits of SiluMulRow.
float SiluMul(float gate, float up);

}  // namespace moeserve::kernels::cpu
