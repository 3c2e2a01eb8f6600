// Flags shared by the commands that run a model (generate, bench), and loading what they name.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/kv/kv_block_pool.h"
#include "runtime/model/decode_graphs.h"
#include "runtime/model/model_loader.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::server {

struct ModelOptions {
  std::string model_dir;       // empty: the embedded default model
  std::string tokenizer_path;  // empty: <model>/tokenizer.model if present, else embedded v1
  int threads = 0;             // 0: all cores
  int64_t kv_block_size = 16;
  int64_t kv_blocks = 0;  // 0: enough for max_position_embeddings tokens (capped at 4096 blocks)
  // NaN / Inf scan of the checkpoint at load: "off", "warn" (non-expert tensors, warning) or
  // "full" (every tensor, error). See runtime::WeightCheck and docs/checkpoints.md.
  std::string check_weights = "warn";
  std::string device = "auto";  // cpu | cuda | auto (runtime::MakeBackend)
  // Decode steps as CUDA graphs at these batch-size buckets (runtime/model/decode_graphs.h);
  // only on backends with graphs.
  bool no_cuda_graphs = false;  // --no-cuda-graphs / MOESERVE_NO_CUDA_GRAPHS=1
  std::string cuda_graph_sizes = "1,2,4,8,16,32,64,128,256";
  // CUDA: the KV pool takes this fraction of the GPU's memory, less what is in use after the
  // weights are loaded (used when --kv-blocks is 0). The CPU keeps the --kv-blocks default.
  double gpu_memory_utilization = 0.9;

  // --cuda-graph-sizes parsed; --no-cuda-graphs gives enabled = false.
  absl::StatusOr<runtime::DecodeGraphOptions> decode_graphs() const;

  runtime::WeightCheck weight_check() const;

  // Registers --model, --tokenizer, --threads, --kv-block-size, --kv-blocks, --check-weights,
  // --device, --cuda-graph-sizes, --no-cuda-graphs, --gpu-memory-utilization (with MOESERVE_*
  // env).
  void AddTo(CLI::App& cmd);
};

// Everything a command needs to run the model.
struct ModelSession {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<runtime::LoadedModel> loaded;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  std::unique_ptr<runtime::KvBlockPool> pool;

  runtime::MixtralModel& model() { return *loaded->model; }
};

// The tokenizer for `options`: --tokenizer, else <model>/tokenizer.model when present, else the
// embedded Mixtral v1 tokenizer.
absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> LoadTokenizerFor(const ModelOptions& options);

// Loads model, tokenizer and KV pool; shows progress on a terminal.
absl::StatusOr<ModelSession> OpenModelSession(const ModelOptions& options);

}  // namespace moeserve::server
