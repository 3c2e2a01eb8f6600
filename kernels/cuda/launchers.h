// The CUDA op launchers the backend forwards to, one per op family (kernels/cuda/<family>.cuh,
// written in parallel by the kernel engineers). Each real header is included when present; the
// declarations below repeat their signatures so the backend compiles before every header has
// landed (repeating a declaration is legal C++, and a mismatch with a real header is a compile
// error, which is the check we want). TEMPORARY: drop the declarations once every header exists.
#pragma once

#include <cuda_runtime.h>

#include "kernels/ops/attention.h"
#include "kernels/ops/elementwise.h"
#include "kernels/ops/embedding.h"
#include "kernels/ops/moe.h"
#include "kernels/ops/rmsnorm.h"
#include "kernels/ops/rope.h"
#include "kernels/ops/router.h"
#include "kernels/ops/sampling.h"

#if __has_include("kernels/cuda/attention.cuh")
#include "kernels/cuda/attention.cuh"
#endif
#if __has_include("kernels/cuda/elementwise.cuh")
#include "kernels/cuda/elementwise.cuh"
#endif
#if __has_include("kernels/cuda/embedding.cuh")
#include "kernels/cuda/embedding.cuh"
#endif
#if __has_include("kernels/cuda/grouped_matmul.cuh")
#include "kernels/cuda/grouped_matmul.cuh"
#endif
#if __has_include("kernels/cuda/kv_write.cuh")
#include "kernels/cuda/kv_write.cuh"
#endif
#if __has_include("kernels/cuda/moe_align.cuh")
#include "kernels/cuda/moe_align.cuh"
#endif
#if __has_include("kernels/cuda/moe_permute.cuh")
#include "kernels/cuda/moe_permute.cuh"
#endif
#if __has_include("kernels/cuda/rmsnorm.cuh")
#include "kernels/cuda/rmsnorm.cuh"
#endif
#if __has_include("kernels/cuda/rope.cuh")
#include "kernels/cuda/rope.cuh"
#endif
#if __has_include("kernels/cuda/router.cuh")
#include "kernels/cuda/router.cuh"
#endif
#if __has_include("kernels/cuda/sampling.cuh")
#include "kernels/cuda/sampling.cuh"
#endif

namespace moeserve::kernels::cuda {

cudaError_t Embedding(const EmbeddingParams& p, cudaStream_t stream);
cudaError_t RmsNorm(const RmsNormParams& p, cudaStream_t stream);
cudaError_t Rope(const RopeParams& p, cudaStream_t stream);
cudaError_t KvWrite(const KvWriteParams& p, cudaStream_t stream);
cudaError_t PagedAttention(const PagedAttentionParams& p, cudaStream_t stream);
cudaError_t RouterTopK(const RouterTopKParams& p, cudaStream_t stream);
cudaError_t MoeAlign(const MoeAlignParams& p, cudaStream_t stream);
cudaError_t GatherRows(const GatherRowsParams& p, cudaStream_t stream);
cudaError_t GroupedMatmul(const GroupedMatmulParams& p, cudaStream_t stream);
cudaError_t SwiGlu(const SwiGluParams& p, cudaStream_t stream);
cudaError_t MoeCombine(const MoeCombineParams& p, cudaStream_t stream);
cudaError_t AddInPlace(const AddInPlaceParams& p, cudaStream_t stream);
cudaError_t Sample(const SampleParams& p, cudaStream_t stream);

}  // namespace moeserve::kernels::cuda
