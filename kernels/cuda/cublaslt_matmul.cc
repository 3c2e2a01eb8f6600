#include "kernels/cuda/cublaslt_matmul.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moeserve::kernels::cuda {
namespace {

constexpr int kMaxHeuristicResults = 16;
constexpr uintptr_t kRequiredAlignment = 16;  // bytes; also the heuristic's alignment preference

cudaDataType_t ToCudaType(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

absl::Status LtStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", cublasLtGetStatusName(st), " (",
                                          cublasLtGetStatusString(st), ")"));
}

// The descriptors of one call shape; destroyed with the object.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // w: k x n, ld k, used transposed
  cublasLtMatrixLayout_t b = nullptr;  // x: k x m, ld k
  cublasLtMatrixLayout_t d = nullptr;  // y: n x m, ld n (also C; beta = 0)

  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }

  cublasStatus_t Init(const MatmulParams& p, int64_t m) {
    cublasStatus_t st = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    const cublasOperation_t trans_a = CUBLAS_OP_T;
    const cublasOperation_t trans_b = CUBLAS_OP_N;
    st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a));
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b));
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    const auto k = static_cast<uint64_t>(p.k);
    const auto n = static_cast<uint64_t>(p.n);
    const auto rows = static_cast<uint64_t>(m);
    st = cublasLtMatrixLayoutCreate(&a, ToCudaType(p.w_dtype), k, n, static_cast<int64_t>(k));
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    st = cublasLtMatrixLayoutCreate(&b, ToCudaType(p.x_dtype), k, rows, static_cast<int64_t>(k));
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    return cublasLtMatrixLayoutCreate(&d, ToCudaType(p.y_dtype), n, rows, static_cast<int64_t>(n));
  }
};

bool Aligned(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kRequiredAlignment == 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<CublasLtMatmul>> CublasLtMatmul::Create(void* workspace,
                                                                       size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  absl::Status st = LtStatus(cublasLtCreate(&handle), "create");
  if (!st.ok()) return st;
  return std::unique_ptr<CublasLtMatmul>(new CublasLtMatmul(handle, workspace, workspace_bytes));
}

CublasLtMatmul::~CublasLtMatmul() {
  if (handle_) cublasLtDestroy(handle_);
}

bool CublasLtMatmul::SupportsDtypes(const MatmulParams& p) {
  if (p.x_dtype != p.w_dtype || !IsFloat(p.x_dtype)) return false;
  return p.y_dtype == DType::kF32 || p.y_dtype == p.x_dtype;
}

const std::optional<cublasLtMatmulAlgo_t>& CublasLtMatmul::Choose(const MatmulParams& p) {
  const Key key{p.n, p.k, p.x_dtype, p.w_dtype, p.y_dtype};
  auto it = algos_.find(key);
  if (it != algos_.end()) return it->second;
  std::optional<cublasLtMatmulAlgo_t> chosen;

  Descriptors at_heuristic_rows;
  Descriptors at_one_row;
  cublasLtMatmulPreference_t pref = nullptr;
  if (at_heuristic_rows.Init(p, kHeuristicRows) == CUBLAS_STATUS_SUCCESS &&
      at_one_row.Init(p, 1) == CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS) {
    const uint64_t max_workspace = workspace_bytes_;
    const uint32_t alignment = kRequiredAlignment;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &max_workspace, sizeof(max_workspace));
    // No reduction-scheme mask: whether a mask of NONE (= 0) filters everything out is not
    // documented. Split-K is switched off on each candidate below instead.
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof(alignment));
    }
    std::vector<cublasLtMatmulHeuristicResult_t> results(kMaxHeuristicResults);
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(handle_, at_heuristic_rows.op, at_heuristic_rows.a,
                                       at_heuristic_rows.b, at_heuristic_rows.d,
                                       at_heuristic_rows.d, pref, kMaxHeuristicResults,
                                       results.data(), &found) == CUBLAS_STATUS_SUCCESS) {
      for (int i = 0; i < found && !chosen; ++i) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
        cublasLtMatmulAlgo_t algo = results[i].algo;
        // Split-K off: one thread block reduces each output over all of k, in an order set by
        // the algorithm and k alone.
        const int32_t splitk = 1;
        const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
        if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                                 sizeof(splitk)) != CUBLAS_STATUS_SUCCESS ||
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                 &scheme,
                                                 sizeof(scheme)) != CUBLAS_STATUS_SUCCESS) {
          continue;
        }
        // The same algorithm must work for every m: check the extremes we can name.
        cublasLtMatmulHeuristicResult_t check{};
        if (cublasLtMatmulAlgoCheck(handle_, at_heuristic_rows.op, at_heuristic_rows.a,
                                    at_heuristic_rows.b, at_heuristic_rows.d, at_heuristic_rows.d,
                                    &algo, &check) != CUBLAS_STATUS_SUCCESS ||
            check.workspaceSize > workspace_bytes_) {
          continue;
        }
        if (cublasLtMatmulAlgoCheck(handle_, at_one_row.op, at_one_row.a, at_one_row.b,
                                    at_one_row.d, at_one_row.d, &algo,
                                    &check) != CUBLAS_STATUS_SUCCESS ||
            check.workspaceSize > workspace_bytes_) {
          continue;
        }
        chosen = algo;
      }
    }
  }
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  auto inserted = algos_.emplace(key, chosen);
  if (const char* log = std::getenv("MOESERVE_MATMUL_LOG"); log != nullptr && log[0] == '1') {
    // One line per shape, for the GPU check's logs (which kernel each shape runs).
    std::fprintf(stderr, "moeserve matmul n=%lld k=%lld x=%s w=%s y=%s: %s\n",
                 static_cast<long long>(p.n), static_cast<long long>(p.k),
                 std::string(DTypeName(p.x_dtype)).c_str(),
                 std::string(DTypeName(p.w_dtype)).c_str(),
                 std::string(DTypeName(p.y_dtype)).c_str(), DescribeChoice(p).c_str());
  }
  return inserted.first->second;
}

bool CublasLtMatmul::Run(const MatmulParams& p, cudaStream_t stream, absl::Status* error) {
  if (!SupportsDtypes(p) || !Aligned(p.x) || !Aligned(p.w) || !Aligned(p.y)) return false;
  const std::optional<cublasLtMatmulAlgo_t>& algo = Choose(p);
  if (!algo) return false;
  if (p.m_rows == 0) return true;
  Descriptors desc;
  absl::Status st = LtStatus(desc.Init(p, p.m_rows), "descriptors");
  if (st.ok()) {
    const float alpha = 1.0f;
    const float beta = 0.0f;
    st = LtStatus(cublasLtMatmul(handle_, desc.op, &alpha, p.w, desc.a, p.x, desc.b, &beta, p.y,
                                 desc.d, p.y, desc.d, &*algo, workspace_, workspace_bytes_, stream),
                  "matmul");
  }
  if (!st.ok()) {
    *error = absl::Status(
        st.code(), absl::StrCat(st.message(), " (m=", p.m_rows, " n=", p.n, " k=", p.k, ")"));
  }
  return true;
}

std::string CublasLtMatmul::DescribeChoice(const MatmulParams& p) {
  if (!SupportsDtypes(p)) return "plain kernel (dtypes)";
  const std::optional<cublasLtMatmulAlgo_t>& algo = Choose(p);
  if (!algo) return "plain kernel (no split-K-free cuBLASLt algorithm)";
  std::string out = "cuBLASLt";
  const std::pair<cublasLtMatmulAlgoConfigAttributes_t, const char*> attrs[] = {
      {CUBLASLT_ALGO_CONFIG_ID, "algo"},
      {CUBLASLT_ALGO_CONFIG_TILE_ID, "tile"},
      {CUBLASLT_ALGO_CONFIG_STAGES_ID, "stages"},
      {CUBLASLT_ALGO_CONFIG_SPLITK_NUM, "splitk"},
      {CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, "swizzle"},
      {CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, "custom"}};
  for (const auto& [attr, name] : attrs) {
    uint32_t value = 0;  // every attribute listed is a 32-bit integer
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&*algo, attr, &value, sizeof(value), &written) ==
        CUBLAS_STATUS_SUCCESS) {
      absl::StrAppend(&out, " ", name, "=", value);
    }
  }
  return out;
}

}  // namespace moeserve::kernels::cuda
