#include "runtime/model/expert_source.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/matmul_pack.h"
#include "runtime/model/random_model.h"
#include "runtime/model/weight_names.h"

namespace moeserve::runtime {
namespace {

constexpr size_t kAlign = 64;  // the loader's packed buffers are 64-byte aligned too
size_t Aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Packs w1, w3, w2 (host row-layout views) into one buffer, as PackCpuWeights does.
std::shared_ptr<PreparedExpert> Pack(int64_t layer, int64_t expert,
                                     const kernels::TensorView (&rows)[3]) {
  auto out = std::make_shared<PreparedExpert>();
  out->layer = layer;
  out->expert = expert;
  size_t total = 0;
  for (const kernels::TensorView& t : rows) {
    total += Aligned(kernels::cpu::PackedBytes(t.dtype, t.dim(0), t.dim(1)));
  }
  out->storage = kernels::DeviceBuffer(kernels::Device::kCpu, total);
  char* at = static_cast<char*>(out->storage.data());
  kernels::TensorView* dst[3] = {&out->weights.w1, &out->weights.w3, &out->weights.w2};
  for (int i = 0; i < 3; ++i) {
    const kernels::TensorView& t = rows[i];
    kernels::cpu::PackWeight(t.data, t.dtype, t.dim(0), t.dim(1), at);
    *dst[i] = kernels::TensorView{at, kernels::cpu::PackedDType(t.dtype), kernels::Device::kCpu,
                                  t.shape, kernels::WeightLayout::kCpuPanels};
    at += Aligned(kernels::cpu::PackedBytes(t.dtype, t.dim(0), t.dim(1)));
  }
  return out;
}

}  // namespace

absl::StatusOr<ExpertSource> MakeExpertSource(const LoadedModel& loaded,
                                              const kernels::Backend& backend) {
  if (backend.device() != kernels::Device::kCpu) {
    return absl::UnimplementedError(
        "expert replicas (EPLB) are prepared for CPU ranks only; this rank's backend is not the "
        "CPU");
  }
  if (loaded.model == nullptr) return absl::InvalidArgumentError("expert source: no model");
  const ModelConfig config = loaded.model->config();
  // [n, k] of w1, w3, w2 (torch.nn.Linear rows).
  const std::vector<int64_t> up = {config.intermediate_size, config.hidden_size};
  const std::vector<int64_t> down = {config.hidden_size, config.intermediate_size};
  if (loaded.checkpoint != nullptr) {
    Checkpoint* ckpt = loaded.checkpoint.get();
    return ExpertSource(
        [ckpt, up, down](int64_t layer,
                         int64_t expert) -> absl::StatusOr<std::shared_ptr<PreparedExpert>> {
          const std::string p = ExpertPrefix(layer, expert);
          MOESERVE_ASSIGN_OR_RETURN(kernels::TensorView w1, ckpt->Load(p + "w1.weight", up));
          MOESERVE_ASSIGN_OR_RETURN(kernels::TensorView w3, ckpt->Load(p + "w3.weight", up));
          MOESERVE_ASSIGN_OR_RETURN(kernels::TensorView w2, ckpt->Load(p + "w2.weight", down));
          const kernels::TensorView rows[3] = {w1, w3, w2};
          return Pack(layer, expert, rows);
        });
  }
  uint64_t seed = 0;
  absl::string_view source = loaded.source;
  if (source.rfind("embedded:", 0) == 0) {
    seed = kEmbeddedModelSeed;
  } else if (!absl::ConsumePrefix(&source, "random:") || !absl::SimpleAtoi(source, &seed)) {
    return absl::UnimplementedError(
        absl::StrCat("expert source: cannot read the experts of \"", loaded.source, "\" again"));
  }
  return ExpertSource(
      [config, seed, up, down](int64_t layer,
                               int64_t expert) -> absl::StatusOr<std::shared_ptr<PreparedExpert>> {
        const std::string p = ExpertPrefix(layer, expert);
        // The same pure function the loader used (random_model.h): the same bytes.
        const OwnedTensor t[3] = {
            MakeRandomTensor(p + "w1.weight", up, config.dtype, seed, config.hidden_size),
            MakeRandomTensor(p + "w3.weight", up, config.dtype, seed, config.hidden_size),
            MakeRandomTensor(p + "w2.weight", down, config.dtype, seed, config.hidden_size)};
        kernels::TensorView rows[3];
        for (int i = 0; i < 3; ++i) {
          rows[i] =
              kernels::TensorView{t[i].bytes.data(), t[i].dtype, kernels::Device::kCpu, t[i].shape};
        }
        return Pack(layer, expert, rows);
      });
}

}  // namespace moeserve::runtime
