#include "runtime/model/cpu_weights.h"

#include "absl/strings/str_cat.h"
#include "kernels/base/buffer_sizes.h"
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

// A tensor's packed bytes, rounded so that the next one in the buffer stays aligned.
size_t PackedBytesOf(const kernels::TensorView& t) {
  return kernels::AlignedBytes(
      static_cast<int64_t>(kernels::cpu::PackedBytes(t.dtype, t.dim(0), t.dim(1))), 1);
}

}  // namespace

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
  size_t total = 0;
  for (const kernels::TensorView* t : tensors) total += PackedBytesOf(*t);
  kernels::DeviceBuffer buffer(kernels::Device::kCpu, total);
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
