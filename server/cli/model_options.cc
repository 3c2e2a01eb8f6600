#include "server/cli/model_options.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>

#include "kernels/base/status_macros.h"
#include "runtime/engine/rank_set.h"
#include "server/cli/progress.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {

void ModelOptions::AddTo(CLI::App& cmd) {
  cmd.add_option("--model", model_dir,
                 "Hugging Face Mixtral model directory (config.json + *.safetensors); "
                 "default: the embedded tiny model")
      ->envname("MOESERVE_MODEL");
  cmd.add_option("--tokenizer", tokenizer_path,
                 "SentencePiece tokenizer.model; default: <model>/tokenizer.model if present, "
                 "else the embedded Mixtral v1 tokenizer")
      ->envname("MOESERVE_TOKENIZER");
  cmd.add_option("--threads", threads, "CPU threads for the CPU backend (0: all cores)")
      ->envname("MOESERVE_THREADS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--kv-block-size", kv_block_size, "Tokens per KV cache block")
      ->envname("MOESERVE_KV_BLOCK_SIZE")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  cmd.add_option("--kv-blocks", kv_blocks,
                 "KV cache blocks (0: enough for one full-context sequence, at most 4096)")
      ->envname("MOESERVE_KV_BLOCKS")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--check-weights", check_weights,
                 "Scan checkpoint weights for NaN/Inf at load: warn = every tensor but the "
                 "experts' (~3.5% of Mixtral's bytes), a warning per bad tensor; full = every "
                 "tensor, a bad one is an error; off")
      ->envname("MOESERVE_CHECK_WEIGHTS")
      ->check(CLI::IsMember({"off", "warn", "full"}))
      ->capture_default_str();
  cmd.add_option("--device", device,
                 "Compute backend: cuda, cpu, or auto (cuda when a GPU and a CUDA build are "
                 "there, else cpu)")
      ->envname("MOESERVE_DEVICE")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd.add_option("--cuda-graph-sizes", cuda_graph_sizes,
                 "Batch sizes (comma-separated) whose decode steps are captured as CUDA graphs; a "
                 "decode batch is padded to the next size, larger ones run eagerly")
      ->envname("MOESERVE_CUDA_GRAPH_SIZES")
      ->capture_default_str();
  cmd.add_flag("--no-cuda-graphs", no_cuda_graphs,
               "Run every step eagerly (no CUDA graphs, no decode padding)")
      ->envname("MOESERVE_NO_CUDA_GRAPHS");
  cmd.add_option("--gpu-memory-utilization", gpu_memory_utilization,
                 "CUDA: fraction of the GPU's memory the process may use; the KV cache gets what "
                 "the weights leave of it (when --kv-blocks is 0)")
      ->envname("MOESERVE_GPU_MEMORY_UTILIZATION")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
}

absl::StatusOr<runtime::DecodeGraphOptions> ModelOptions::decode_graphs() const {
  runtime::DecodeGraphOptions o;
  MOESERVE_ASSIGN_OR_RETURN(o.sizes, runtime::ParseGraphSizes(cuda_graph_sizes));
  o.enabled = !no_cuda_graphs;
  return o;
}

runtime::WeightCheck ModelOptions::weight_check() const {
  // AddTo's IsMember check admits only valid names; "warn" for anything else set in code.
  return runtime::ParseWeightCheck(check_weights).value_or(runtime::WeightCheck::kWarn);
}

absl::StatusOr<std::unique_ptr<runtime::Tokenizer>> LoadTokenizerFor(const ModelOptions& options) {
  std::string tok_path = options.tokenizer_path;
  if (tok_path.empty() && !options.model_dir.empty() &&
      std::filesystem::exists(options.model_dir + "/tokenizer.model")) {
    tok_path = options.model_dir + "/tokenizer.model";
  }
  if (tok_path.empty()) return runtime::Tokenizer::LoadEmbedded();
  return runtime::Tokenizer::Load(tok_path);
}

absl::StatusOr<ModelSession> OpenModelSession(const ModelOptions& options) {
  ModelSession s;
  MOESERVE_ASSIGN_OR_RETURN(s.backend, runtime::MakeBackend(options.device, options.threads));
  std::cerr << "backend: " << s.backend->Describe() << "\n";  // stdout is the command's result
  if (options.model_dir.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(s.loaded, runtime::LoadEmbeddedModel(s.backend.get()));
  } else {
    std::optional<ProgressBar> bar;  // created on the first callback, when the total is known
    runtime::ModelLoadOptions load;
    load.weight_check = options.weight_check();
    load.progress = [&](int64_t done, int64_t total) {
      if (!bar) bar.emplace("loading tensors", total);
      bar->Update(done);
    };
    MOESERVE_ASSIGN_OR_RETURN(s.loaded,
                              runtime::LoadModelDir(options.model_dir, s.backend.get(), load));
  }
  MOESERVE_ASSIGN_OR_RETURN(s.tokenizer, LoadTokenizerFor(options));
  const runtime::ModelConfig& c = s.loaded->model->config();
  if (s.tokenizer->vocab_size() > c.vocab_size) {
    spdlog::warn("tokenizer has {} pieces but the model's vocab_size is {}",
                 s.tokenizer->vocab_size(), c.vocab_size);
  }
  MOESERVE_ASSIGN_OR_RETURN(runtime::DecodeGraphOptions graphs, options.decode_graphs());
  graphs.enabled = graphs.enabled && s.backend->SupportsGraphs();
  s.model().SetDecodeGraphs(graphs);
  int64_t blocks = options.kv_blocks;
  if (blocks == 0 && s.backend->device() == kernels::Device::kCuda) {
    MOESERVE_ASSIGN_OR_RETURN(blocks,
                              runtime::KvBlocksForMemoryUtilization(
                                  *s.backend, s.model().KvShape(options.kv_block_size, 0),
                                  options.gpu_memory_utilization, c.max_position_embeddings));
    spdlog::info("kv cache: {} blocks of {} tokens from --gpu-memory-utilization={}", blocks,
                 options.kv_block_size, options.gpu_memory_utilization);
  } else if (blocks == 0) {
    blocks = std::min<int64_t>(
        4096, (c.max_position_embeddings + options.kv_block_size - 1) / options.kv_block_size);
  }
  MOESERVE_ASSIGN_OR_RETURN(
      runtime::KvBlockPool pool,
      runtime::KvBlockPool::Create(*s.backend, s.model().KvShape(options.kv_block_size, blocks)));
  s.pool = std::make_unique<runtime::KvBlockPool>(std::move(pool));
  return s;
}

}  // namespace moeserve::server
