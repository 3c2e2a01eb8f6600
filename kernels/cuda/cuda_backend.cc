// The CUDA backend: one device, one non-blocking stream, a stream-ordered scratch pool, cuBLASLt
// for dense matmuls, and each op forwarded to its launcher in kernels/cuda/<family>.cuh.
//
// Errors: a launcher's launch error (or a failed cuBLASLt call) is kept as the first error and
// returned by the next Synchronize(), which then clears it; errors of the kernels themselves
// (illegal address, ...) come from cudaStreamSynchronize. A context-corrupting error keeps
// coming back from CUDA on every later call: the backend is then unusable, as CUDA makes it.
//
// Memory: Allocate = cudaMalloc (weights, KV pool); AllocateScratch = cudaMallocFromPoolAsync on
// the backend's stream from the device's default memory pool with its release threshold raised
// to UINT64_MAX, so memory freed by a step stays in the pool and the next step's requests are
// served from it without asking the driver; AllocateHost = cudaHostAlloc (pinned). Scratch
// buffers free themselves with cudaFreeAsync on the backend's stream (the deleter keeps the
// stream alive, so a buffer may outlive the backend object). A scratch buffer allocated inside
// a graph capture must be freed inside it too, and one allocated outside must not be freed
// inside (CUDA graph memory-node rules). Allocate/AllocateHost and the freeing of their buffers
// (cudaMalloc/cudaFree, cudaHostAlloc/cudaFreeHost) must not happen during a capture at all: they
// are not stream operations and would invalidate it.
//
// Device selection: every entry point makes the backend's device current on the calling thread
// (cudaSetDevice only when it is not), because launches go to the current device.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/backend.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cublaslt_matmul.h"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/grouped_matmul.cuh"
#include "kernels/cuda/kv_write.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/moe_align.cuh"
#include "kernels/cuda/moe_permute.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/sampling.cuh"

namespace moeserve::kernels {
namespace {

// cuBLASLt workspace: NVIDIA recommends 32 MiB on Hopper (4 MiB suffices elsewhere).
constexpr size_t kCublasLtWorkspaceBytes = size_t{32} << 20;

void UseDevice(int device) {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device) cudaSetDevice(device);
}

std::string GiB(size_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (size_t{1} << 30));
}

// The stream, shared by the backend and the deleters of its scratch buffers.
struct StreamHolder {
  int device = 0;
  cudaStream_t stream = nullptr;
  StreamHolder() = default;
  StreamHolder(const StreamHolder&) = delete;
  StreamHolder& operator=(const StreamHolder&) = delete;
  ~StreamHolder() {
    if (stream == nullptr) return;
    UseDevice(device);
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
};

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(cudaEvent_t event) : event_(event) {}
  ~CudaEvent() override { cudaEventDestroy(event_); }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_;
};

class CudaGraph final : public Graph {
 public:
  CudaGraph(cudaGraph_t graph, cudaGraphExec_t exec) : graph_(graph), exec_(exec) {}
  ~CudaGraph() override {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  cudaGraphExec_t exec() const { return exec_; }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(int device_index);

  ~CudaBackend() override {
    UseDevice(device_);
    cudaStreamSynchronize(stream_);  // enqueued work may still use buffers owned by others
  }

  Device device() const override { return Device::kCuda; }
  std::string_view name() const override { return "cuda"; }
  std::string Describe() const override { return description_; }
  DType activation_dtype() const override { return DType::kBF16; }
  DType kv_dtype() const override { return DType::kBF16; }

  // ---- Memory.
  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override {
    UseDevice(device_);
    if (bytes == 0) return DeviceBuffer::Adopt(Device::kCuda, nullptr, 0, [](void*) {});
    void* ptr = nullptr;
    const cudaError_t err = cudaMalloc(&ptr, bytes);
    if (err == cudaErrorMemoryAllocation) return OutOfMemory("Allocate", bytes);
    MOESERVE_CUDA_RETURN_IF_ERROR(err);
    const int device = device_;
    return DeviceBuffer::Adopt(Device::kCuda, ptr, bytes, [device](void* p) {
      UseDevice(device);
      cudaFree(p);
    });
  }

  absl::StatusOr<DeviceBuffer> AllocateScratch(size_t bytes) override {
    UseDevice(device_);
    if (bytes == 0) return DeviceBuffer::Adopt(Device::kCuda, nullptr, 0, [](void*) {});
    void* ptr = nullptr;
    const cudaError_t err = cudaMallocFromPoolAsync(&ptr, bytes, pool_, stream_);
    if (err == cudaErrorMemoryAllocation) return OutOfMemory("AllocateScratch", bytes);
    MOESERVE_CUDA_RETURN_IF_ERROR(err);
    return DeviceBuffer::Adopt(Device::kCuda, ptr, bytes, [holder = stream_holder_](void* p) {
      UseDevice(holder->device);
      cudaFreeAsync(p, holder->stream);
    });
  }

  absl::StatusOr<DeviceBuffer> AllocateHost(size_t bytes) override {
    UseDevice(device_);
    if (bytes == 0) return DeviceBuffer::Adopt(Device::kCpu, nullptr, 0, [](void*) {});
    void* ptr = nullptr;
    const cudaError_t err = cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat(description_, ": cannot pin ", bytes,
                                                       " bytes (", GiB(bytes), ") of host memory"));
    }
    MOESERVE_CUDA_RETURN_IF_ERROR(err);
    return DeviceBuffer::Adopt(Device::kCpu, ptr, bytes, [](void* p) { cudaFreeHost(p); });
  }

  absl::StatusOr<DeviceMemoryInfo> MemoryInfo() const override {
    UseDevice(device_);
    DeviceMemoryInfo info;
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
    return info;
  }

  // ---- Copies. cudaMemcpyDefault: unified addressing tells host from device pointers.
  absl::Status CopyToDeviceAsync(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyToHostAsync(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyOnDeviceAsync(void* dst, const void* src, size_t bytes) override {
    return Copy(dst, src, bytes);
  }
  absl::Status MemsetAsync(void* dst, int value, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, value, bytes, stream_));
    return absl::OkStatus();
  }

  // ---- Events and synchronisation.
  absl::StatusOr<std::unique_ptr<Event>> CreateEvent() override {
    UseDevice(device_);
    cudaEvent_t event = nullptr;
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    return std::unique_ptr<Event>(new CudaEvent(event));
  }
  absl::Status RecordEvent(Event& event) override {
    auto* e = dynamic_cast<CudaEvent*>(&event);
    if (e == nullptr) return absl::InvalidArgumentError("RecordEvent: not a CUDA event");
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(e->get(), stream_));
    return absl::OkStatus();
  }
  absl::Status WaitEvent(Event& event) override {
    auto* e = dynamic_cast<CudaEvent*>(&event);
    if (e == nullptr) return absl::InvalidArgumentError("WaitEvent: not a CUDA event");
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(e->get()));
    return absl::OkStatus();
  }
  absl::Status Synchronize() override {
    if (capturing_) {
      return absl::FailedPreconditionError("Synchronize during a graph capture");
    }
    UseDevice(device_);
    const cudaError_t err = cudaStreamSynchronize(stream_);
    if (err != cudaSuccess) Fail(cuda::ToStatus(err, "cudaStreamSynchronize"));
    return TakeError();
  }

  // ---- Graphs. ThreadLocal capture: other threads (other ranks' backends) may keep calling
  // CUDA APIs that are unsafe during a global capture (cudaMalloc) while this one captures.
  bool SupportsGraphs() const override { return true; }
  absl::Status BeginCapture() override {
    if (capturing_) return absl::FailedPreconditionError("BeginCapture: already capturing");
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(
        cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Graph>> EndCapture() override {
    if (!capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
    UseDevice(device_);
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t end_err = cudaStreamEndCapture(stream_, &graph);
    absl::Status launch_error = TakeError();  // an op that failed while capturing
    if (end_err != cudaSuccess || !launch_error.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      if (!launch_error.ok()) return launch_error;
      return cuda::ToStatus(end_err, "cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst_err = cudaGraphInstantiate(&exec, graph, 0);
    if (inst_err != cudaSuccess) {
      cudaGraphDestroy(graph);
      return cuda::ToStatus(inst_err, "cudaGraphInstantiate");
    }
    return std::unique_ptr<Graph>(new CudaGraph(graph, exec));
  }
  absl::Status Replay(Graph& graph) override {
    auto* g = dynamic_cast<CudaGraph*>(&graph);
    if (g == nullptr) return absl::InvalidArgumentError("Replay: not a CUDA graph");
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g->exec(), stream_));
    return absl::OkStatus();
  }

  // ---- Ops.
  void Embedding(const EmbeddingParams& p) override {
    UseDevice(device_);
    Check(cuda::Embedding(p, stream_), "embedding");
  }
  void RmsNorm(const RmsNormParams& p) override {
    UseDevice(device_);
    Check(cuda::RmsNorm(p, stream_), "rmsnorm");
  }
  void Rope(const RopeParams& p) override {
    UseDevice(device_);
    Check(cuda::Rope(p, stream_), "rope");
  }
  // cuBLASLt with one batch-invariant algorithm per shape (kernels/cuda/cublaslt_matmul.h), or
  // the plain kernel when cuBLASLt cannot take the call (mixed dtypes, unaligned pointers).
  void Matmul(const MatmulParams& p) override {
    UseDevice(device_);
    if (p.m_rows == 0) return;
    if (p.w_layout != WeightLayout::kRows) return Fail(CpuPanelsError("matmul"));
    if (!force_simple_matmul_) {
      absl::Status error;
      if (cublaslt_->Run(p, stream_, &error)) {
        if (!error.ok()) Fail(std::move(error));
        return;
      }
    }
    Check(cuda::MatmulSimple(p, stream_), "matmul");
  }
  void KvWrite(const KvWriteParams& p) override {
    UseDevice(device_);
    Check(cuda::KvWrite(p, stream_), "kv_write");
  }
  void PagedAttention(const PagedAttentionParams& p) override {
    UseDevice(device_);
    Check(cuda::PagedAttention(p, stream_), "paged_attention");
  }
  void RouterTopK(const RouterTopKParams& p) override {
    UseDevice(device_);
    Check(cuda::RouterTopK(p, stream_), "router_topk");
  }
  void MoeAlign(const MoeAlignParams& p) override {
    UseDevice(device_);
    Check(cuda::MoeAlign(p, stream_), "moe_align");
  }
  void GatherRows(const GatherRowsParams& p) override {
    UseDevice(device_);
    Check(cuda::GatherRows(p, stream_), "gather_rows");
  }
  void GroupedMatmul(const GroupedMatmulParams& p) override {
    UseDevice(device_);
    if (p.w_layout != WeightLayout::kRows) return Fail(CpuPanelsError("grouped_matmul"));
    Check(cuda::GroupedMatmul(p, stream_), "grouped_matmul");
  }
  void SwiGlu(const SwiGluParams& p) override {
    UseDevice(device_);
    Check(cuda::SwiGlu(p, stream_), "swiglu");
  }
  void MoeCombine(const MoeCombineParams& p) override {
    UseDevice(device_);
    Check(cuda::MoeCombine(p, stream_), "moe_combine");
  }
  void AddInPlace(const AddInPlaceParams& p) override {
    UseDevice(device_);
    Check(cuda::AddInPlace(p, stream_), "add_in_place");
  }
  void Sample(const SampleParams& p) override {
    UseDevice(device_);
    Check(cuda::Sample(p, stream_), "sample");
  }

 private:
  CudaBackend() = default;

  absl::Status Copy(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return absl::OkStatus();
    UseDevice(device_);
    MOESERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
    return absl::OkStatus();
  }

  absl::Status OutOfMemory(const char* what, size_t bytes) const {
    cudaGetLastError();  // the allocation failure is not sticky; clear it
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return absl::ResourceExhaustedError(absl::StrCat(description_, ": ", what, " of ", bytes,
                                                     " bytes (", GiB(bytes), ") failed; free ",
                                                     GiB(free_bytes), " of ", GiB(total_bytes)));
  }

  void Check(cudaError_t err, const char* op) {
    if (err != cudaSuccess) Fail(cuda::ToStatus(err, op));
  }
  // Weights packed for the CPU matmul (kernels/cpu/matmul_pack.h) never reach a device backend:
  // the model loader packs only for the CPU. A caller that passes them anyway gets this error.
  static absl::Status CpuPanelsError(const char* op) {
    return absl::InvalidArgumentError(
        absl::StrCat(op,
                     ": weights packed for the CPU backend (WeightLayout::kCpuPanels) given "
                     "to the CUDA backend; it takes torch.nn.Linear rows"));
  }
  void Fail(absl::Status status) {
    if (first_error_.ok()) first_error_ = std::move(status);
  }
  absl::Status TakeError() { return std::exchange(first_error_, absl::OkStatus()); }

  int device_ = 0;
  std::string description_;
  std::shared_ptr<StreamHolder> stream_holder_;
  cudaStream_t stream_ = nullptr;  // stream_holder_->stream
  cudaMemPool_t pool_ = nullptr;   // the device's default pool (scratch)
  DeviceBuffer cublaslt_workspace_;
  std::unique_ptr<cuda::CublasLtMatmul> cublaslt_;  // declared after its workspace
  bool force_simple_matmul_ = false;                // MOESERVE_MATMUL=simple
  bool capturing_ = false;
  absl::Status first_error_;
};

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(int device_index) {
  int count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: ", cudaGetErrorName(count_err), " (",
                     cudaGetErrorString(count_err), ")"));
  }
  if (device_index < 0 || device_index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", device_index, " requested but ", count, " present"));
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device_index) != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("cuda:", device_index, ": ", cuda::DescribeDevice(device_index)));
  }
  // Kernels are built for sm_80 and sm_90a and use bf16 arithmetic.
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat("cuda:", device_index, " ", prop.name,
                                                      " is sm_", prop.major, prop.minor,
                                                      "; the CUDA backend needs sm_80 or newer"));
  }
  int pools_supported = 0;
  cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, device_index);
  if (!pools_supported) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda:", device_index, ": stream-ordered memory pools are not supported"));
  }

  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = device_index;
  b->description_ = absl::StrCat("cuda:", device_index, " ", cuda::DescribeDevice(device_index));
  UseDevice(device_index);
  auto holder = std::make_shared<StreamHolder>();
  holder->device = device_index;
  const cudaError_t stream_err = cudaStreamCreateWithFlags(&holder->stream, cudaStreamNonBlocking);
  if (stream_err != cudaSuccess) {
    // The first call that needs a context: a driver older than the runtime fails here.
    holder->stream = nullptr;
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat(b->description_, ": cannot create a stream: ", cudaGetErrorName(stream_err),
                     " (", cudaGetErrorString(stream_err), ")"));
  }
  b->stream_ = holder->stream;
  b->stream_holder_ = std::move(holder);

  MOESERVE_CUDA_RETURN_IF_ERROR(cudaDeviceGetDefaultMemPool(&b->pool_, device_index));
  // Keep freed scratch in the pool: the steady state then allocates nothing from the driver.
  uint64_t release_threshold = UINT64_MAX;
  MOESERVE_CUDA_RETURN_IF_ERROR(
      cudaMemPoolSetAttribute(b->pool_, cudaMemPoolAttrReleaseThreshold, &release_threshold));

  absl::StatusOr<DeviceBuffer> workspace = b->Allocate(kCublasLtWorkspaceBytes);
  if (!workspace.ok()) return workspace.status();
  b->cublaslt_workspace_ = std::move(*workspace);
  absl::StatusOr<std::unique_ptr<cuda::CublasLtMatmul>> lt =
      cuda::CublasLtMatmul::Create(b->cublaslt_workspace_.data(), b->cublaslt_workspace_.bytes());
  if (!lt.ok()) return lt.status();
  b->cublaslt_ = std::move(*lt);

  const char* matmul_env = std::getenv("MOESERVE_MATMUL");
  b->force_simple_matmul_ = matmul_env != nullptr && std::string(matmul_env) == "simple";
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_index) {
  return CudaBackend::Create(device_index);
}

}  // namespace moeserve::kernels
