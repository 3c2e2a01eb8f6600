#include "runtime/model/cpu_weights.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/matmul_pack.h"

namespace moeserve::runtime {
namespace {

// The matmul weights of w, in a fixed order.
std::vector<kernels::TensorView*> MatmulWeights(MixtralWeights& w) {
  std::vector<kernels::TensorView*> out;
  for (LayerWeights& layer : w.layers) {
    for (kernels::TensorView* t :
         {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.moe.gate}) {
      out.push_back(t);
    }
    for (parallel::ExpertWeights& e : layer.moe.experts) {
      if (!e.held()) continue;
      for (kernels::TensorView* t : {&e.w1, &e.w3, &e.w2}) out.push_back(t);
    }
  }
  out.push_back(&w.lm_head);
  return out;
}

size_t Aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

size_t PackedBytesOf(const kernels::TensorView& t) {
  return Aligned(kernels::cpu::PackedBytes(t.dtype, t.dim(0), t.dim(1)));
}

}  // namespace

size_t CpuPackedWeightBytes(const MixtralWeights& host) {
  MixtralWeights w = host;
  size_t bytes = 0;
  for (const kernels::TensorView* t : MatmulWeights(w)) bytes += PackedBytesOf(*t);
  return bytes;
}

absl::StatusOr<MixtralWeights> PackCpuWeights(const MixtralWeights& host,
                                              std::vector<kernels::DeviceBuffer>* storage) {
  MixtralWeights w = host;
  const std::vector<kernels::TensorView*> tensors = MatmulWeights(w);
  for (const kernels::TensorView* t : tensors) {
    if (t->device != kernels::Device::kCpu || t->shape.size() != 2 ||
        t->layout != kernels::WeightLayout::kRows || !kernels::IsFloat(t->dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cpu weight packing: expected a 2-D host weight in row layout, got ", t->ShapeString()));
    }
  }
  kernels::DeviceBuffer buffer(kernels::Device::kCpu, CpuPackedWeightBytes(host));
  char* at = static_cast<char*>(buffer.data());
  for (kernels::TensorView* t : tensors) {
    const size_t bytes = PackedBytesOf(*t);
    kernels::cpu::PackWeight(t->data, t->dtype, t->dim(0), t->dim(1), at);
    t->data = at;
    t->dtype = kernels::cpu::PackedDType(t->dtype);
    t->layout = kernels::WeightLayout::kCpuPanels;
    at += bytes;
  }
  storage->push_back(std::move(buffer));
  return w;
}

}  // namespace moeserve::runtime
