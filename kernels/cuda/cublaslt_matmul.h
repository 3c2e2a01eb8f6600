// Dense Matmul (kernels/ops/matmul.h) through cuBLASLt, batch invariant.
//
// Why one fixed algorithm per shape: cuBLASLt's heuristic picks a kernel (tile, stages, split-K,
// stream-K-like reductions) by the problem size, so asking it per call would let the number of
// rows m change how each output's k-sum is split and ordered: a sequence's logits would then
// depend on which other sequences share its batch. We ask the heuristic once per
// (n, k, x/w/y dtype) at a fixed m (kHeuristicRows), keep only algorithms with no
// split-K and no reduction scheme, check the choice for m = 1 and m = kHeuristicRows, cache it, and
// use it for every m. Each output element is then reduced over k by one thread block in an order
// set by the algorithm and k alone. tests/gpu/backend_ops_test.cc checks bitwise invariance.
//
// Layout: torch.nn.Linear, y [m, n] = x [m, k] @ w [n, k]^T, row-major. cuBLASLt is
// column-major, so we compute the column-major y^T [n, m] = op_T(w^T [k, n]) * x^T [k, m]:
// A = w (k x n, ld k, transposed), B = x (k x m, ld k), D = y (n x m, ld n).
//
// MOESERVE_MATMUL_LOG=1 prints each shape's choice to stderr once (tools/gpu-check.sh sets it).
//
// Threading: one instance per backend, used by that backend's thread only.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops/matmul.h"

namespace moeserve::kernels::cuda {

class CublasLtMatmul {
 public:
  // The heuristic's m: mid-size, between decode (m ~ 1..64) and prefill (m ~ 512..8192).
  static constexpr int64_t kHeuristicRows = 128;

  // `workspace` (device memory of `workspace_bytes`) is owned by the caller and must outlive
  // this object; all calls go to one stream, so one workspace suffices.
  static absl::StatusOr<std::unique_ptr<CublasLtMatmul>> Create(void* workspace,
                                                                size_t workspace_bytes);
  ~CublasLtMatmul();
  CublasLtMatmul(const CublasLtMatmul&) = delete;
  CublasLtMatmul& operator=(const CublasLtMatmul&) = delete;

  // Whether cuBLASLt takes these dtypes at all: x_dtype == w_dtype (bf16, fp16 or fp32) and
  // y_dtype fp32 or x_dtype.
  static bool SupportsDtypes(const MatmulParams& p);

  // Enqueues y = x @ w^T on `stream`. Returns false (nothing enqueued) when cuBLASLt cannot take
  // the call batch-invariantly (unsupported dtypes, pointers not 16-byte aligned, no algorithm
  // without split-K for this shape): the caller then uses the plain kernel. Whether it returns
  // false depends on (n, k, dtypes, alignment) only, never on m_rows. An error of an enqueued
  // cuBLASLt call comes back in `error`.
  bool Run(const MatmulParams& p, cudaStream_t stream, absl::Status* error);

  // "algo 21 tile 18 stages 12 ..." for the cached choice of a shape (tests and logs).
  std::string DescribeChoice(const MatmulParams& p);

 private:
  CublasLtMatmul(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}

  using Key = std::tuple<int64_t, int64_t, DType, DType, DType>;  // n, k, x, w, y
  // nullopt: no batch-invariant algorithm for this shape (cached too, so we ask only once).
  const std::optional<cublasLtMatmulAlgo_t>& Choose(const MatmulParams& p);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> algos_;
};

}  // namespace moeserve::kernels::cuda
