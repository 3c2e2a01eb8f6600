#include "runtime/model/device_random_model.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/random_fill.h"
#include "runtime/model/cpu_weights.h"
#include "runtime/model/weight_names.h"

namespace moeserve::runtime {
namespace {

constexpr size_t kAlign = 256;
size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

size_t TensorBytes(const WeightSpec& spec, kernels::DType dtype) {
  int64_t n = 1;
  for (int64_t d : spec.shape) n *= d;
  return static_cast<size_t>(n) * kernels::DTypeSize(dtype);
}

// The buffer a tensor goes to: its layer, or -1 (embeddings, final norm, LM head).
int64_t GroupOf(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  return std::stoll(name.substr(prefix.size()));
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint64_t HashName(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// MakeRandomTensor's per-role scales (random_model.cc).
void RoleScale(const std::string& name, const std::vector<int64_t>& shape, int64_t hidden,
               float* center, float* half) {
  *center = 0.0f;
  if (EndsWith(name, "norm.weight")) {
    *center = 1.0f;
    *half = 0.1f;
  } else if (name == "model.embed_tokens.weight") {
    *half = std::sqrt(3.0f);
  } else if (EndsWith(name, "gate.weight")) {
    *half = std::sqrt(3.0f) * 4.0f / std::sqrt(static_cast<float>(hidden));
  } else {
    *half = std::sqrt(3.0f) / std::sqrt(static_cast<float>(shape.back()));
  }
}

std::string GiB(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  return buf;
}

}  // namespace

size_t DeviceRandomModelBytes(const ModelConfig& config) {
  size_t total = 0;
  for (const WeightSpec& spec : AllWeightSpecs(config)) {
    total += AlignUp(TensorBytes(spec, config.dtype));
  }
  return total;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> MakeDeviceRandomModel(const ModelConfig& config,
                                                                   uint64_t seed,
                                                                   kernels::Backend* backend,
                                                                   size_t reserve_bytes,
                                                                   MixtralWeights* weights_out) {
  MOESERVE_RETURN_IF_ERROR(config.Validate());
  const size_t needed = DeviceRandomModelBytes(config);
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceMemoryInfo info, backend->MemoryInfo());
  if (needed + reserve_bytes > info.free_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("random model weights need ", GiB(needed), " and the benchmark another ",
                     GiB(reserve_bytes), ", but ", backend->Describe(), " has ",
                     GiB(info.free_bytes), " free; use --layers to benchmark fewer layers"));
  }
  const std::vector<WeightSpec> specs = AllWeightSpecs(config);
  std::map<int64_t, size_t> group_bytes;
  for (const WeightSpec& spec : specs) {
    group_bytes[GroupOf(spec.name)] += AlignUp(TensorBytes(spec, config.dtype));
  }
  auto loaded = std::make_unique<LoadedModel>();
  loaded->source = absl::StrCat("device-random:", seed);
  std::map<int64_t, char*> group_next;
  for (const auto& [group, bytes] : group_bytes) {
    MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf, backend->Allocate(bytes));
    group_next[group] = static_cast<char*>(buf.data());
    loaded->device_weights.push_back(std::move(buf));
  }
  std::map<std::string, kernels::TensorView> views;
  for (const WeightSpec& spec : specs) {
    char*& at = group_next[GroupOf(spec.name)];
    kernels::RandomFillParams p;
    p.out = at;
    p.dtype = config.dtype;
    p.numel = 1;
    for (int64_t d : spec.shape) p.numel *= d;
    p.seed = HashName(spec.name, seed);
    RoleScale(spec.name, spec.shape, config.hidden_size, &p.center, &p.half_range);
    MOESERVE_RETURN_IF_ERROR(kernels::RandomFillOnBackend(*backend, p));
    views[spec.name] = kernels::TensorView{at, config.dtype, backend->device(), spec.shape};
    at += AlignUp(TensorBytes(spec, config.dtype));
  }
  auto load = [&](const std::string& name,
                  const std::vector<int64_t>& shape) -> absl::StatusOr<kernels::TensorView> {
    auto it = views.find(name);
    if (it == views.end() || it->second.shape != shape) {
      return absl::InternalError(absl::StrCat("device random model: no tensor ", name));
    }
    return it->second;
  };
  MOESERVE_ASSIGN_OR_RETURN(MixtralWeights weights, BindMixtralWeights(config, load));
  if (backend->device() == kernels::Device::kCpu) {  // the CPU matmul's packed panels
    MOESERVE_ASSIGN_OR_RETURN(weights, PackCpuWeights(weights, &loaded->device_weights));
  }
  if (weights_out != nullptr) *weights_out = weights;
  loaded->model = std::make_unique<MixtralModel>(config, std::move(weights), backend);
  return loaded;
}

}  // namespace moeserve::runtime
