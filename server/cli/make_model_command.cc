// moeserve make-model --config <config.json | preset> --out DIR [--layers N] [--dtype ...]
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "absl/strings/str_join.h"
#include "runtime/model/random_model.h"
#include "server/cli/commands.h"
#include "server/cli/progress.h"

namespace moeserve::server {
namespace {

struct MakeModelFlags {
  std::string config;
  std::string out;
  int64_t layers = 0;
  std::string dtype;
  uint64_t seed = 0;
  bool shard_per_layer = false;
};

absl::StatusOr<runtime::ModelConfig> ResolveConfig(const MakeModelFlags& f) {
  runtime::ModelConfig c;
  if (std::filesystem::is_regular_file(f.config)) {
    std::ifstream in(f.config);
    std::stringstream ss;
    ss << in.rdbuf();
    absl::StatusOr<runtime::ModelConfig> parsed = runtime::ParseModelConfig(ss.str(), f.config);
    if (!parsed.ok()) return parsed.status();
    c = *parsed;
    if (f.layers > 0) c.num_hidden_layers = f.layers;
  } else {
    absl::StatusOr<runtime::ModelConfig> preset = runtime::PresetConfig(f.config, f.layers);
    if (!preset.ok()) return preset.status();
    c = *preset;
  }
  if (f.dtype == "bfloat16" || f.dtype == "bf16") {
    c.dtype = kernels::DType::kBF16;
  } else if (f.dtype == "float16" || f.dtype == "f16") {
    c.dtype = kernels::DType::kF16;
  } else if (f.dtype == "float32" || f.dtype == "f32") {
    c.dtype = kernels::DType::kF32;
  } else if (!f.dtype.empty()) {
    return absl::InvalidArgumentError("--dtype must be bfloat16, float16 or float32");
  }
  return c;
}

int RunMakeModel(const MakeModelFlags& f) {
  absl::StatusOr<runtime::ModelConfig> config = ResolveConfig(f);
  if (!config.ok()) {
    std::cerr << "error: " << config.status().message() << "\n";
    return 1;
  }
  // Per-layer shards keep memory bounded for large models (a Mixtral 8x7B layer is ~2.8 GB).
  const int64_t per_layer_bytes = 3 * config->num_local_experts * config->intermediate_size *
                                  config->hidden_size * kernels::DTypeSize(config->dtype);
  const bool shard = f.shard_per_layer || per_layer_bytes > (int64_t{256} << 20);
  std::optional<ProgressBar> bar;
  absl::Status st =
      runtime::WriteRandomModel(*config, f.seed, f.out, shard, [&](int64_t done, int64_t total) {
        if (!bar) bar.emplace("writing shards", total);
        bar->Update(done);
      });
  bar.reset();
  if (!st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << f.out << " (" << config->num_hidden_layers << " layers, hidden "
            << config->hidden_size << ", " << config->num_local_experts << " experts)\n";
  return 0;
}

}  // namespace

void AddMakeModelCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<MakeModelFlags>();
  CLI::App* cmd = app.add_subcommand(
      "make-model", "Write a random-init Mixtral-architecture model in the Hugging Face layout");
  cmd->add_option("--config", flags->config,
                  "A config.json file or a preset: " + absl::StrJoin(runtime::PresetNames(), ", "))
      ->required();
  cmd->add_option("--out", flags->out, "Output directory")->required();
  cmd->add_option("--layers", flags->layers, "Override the number of layers")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dtype", flags->dtype, "bfloat16 | float16 | float32 (default: the config's)");
  cmd->add_option("--seed", flags->seed, "Weight seed (same seed, same weights)");
  cmd->add_flag("--shard-per-layer", flags->shard_per_layer,
                "Write one safetensors shard per layer plus an index");
  cmd->callback([flags, exit_code]() { *exit_code = RunMakeModel(*flags); });
}

}  // namespace moeserve::server
