#include "runtime/model/device_weights.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace moeserve::runtime {
namespace {

constexpr size_t kAlign = 256;
size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// The dense tensors of `w` (pointers into it), each once: a tied lm_head is the embedding.
std::vector<kernels::TensorView*> DenseTensors(MixtralWeights& w) {
  std::vector<kernels::TensorView*> t = {&w.embed_tokens, &w.final_norm};
  if (w.lm_head.data != w.embed_tokens.data) t.push_back(&w.lm_head);
  for (LayerWeights& l : w.layers) {
    for (kernels::TensorView* v : {&l.input_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                                   &l.post_attn_norm, &l.moe.gate}) {
      t.push_back(v);
    }
  }
  return t;
}

// The member of ExpertWeights for projection p (0: w1, 1: w3, 2: w2).
kernels::TensorView& Projection(parallel::ExpertWeights& e, int p) {
  return p == 0 ? e.w1 : (p == 1 ? e.w3 : e.w2);
}

std::string GiB(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  return buf;
}

}  // namespace

size_t DeviceWeightBytes(const MixtralWeights& host) {
  MixtralWeights w = host;
  size_t total = 0;
  for (kernels::TensorView* t : DenseTensors(w)) total += AlignUp(t->nbytes());
  for (LayerWeights& l : w.layers) {
    for (int p = 0; p < 3; ++p) {
      size_t stack = 0;
      for (parallel::ExpertWeights& e : l.moe.experts) {
        if (e.held()) stack += Projection(e, p).nbytes();
      }
      total += AlignUp(stack);
    }
  }
  return total;
}

absl::StatusOr<MixtralWeights> UploadWeights(kernels::Backend& backend, const MixtralWeights& host,
                                             std::vector<kernels::DeviceBuffer>* storage) {
  const size_t needed = DeviceWeightBytes(host);
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceMemoryInfo info, backend.MemoryInfo());
  if (needed > info.free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model weights need ", needed, " bytes (", GiB(needed), ") of device memory, but ",
        backend.Describe(), " has ", info.free_bytes, " bytes (", GiB(info.free_bytes),
        ") free; use more ranks (expert parallelism) or a smaller model"));
  }
  MixtralWeights w = host;
  const kernels::Device device = backend.device();
  // Dense tensors: one buffer.
  std::vector<kernels::TensorView*> dense = DenseTensors(w);
  size_t dense_bytes = 0;
  for (kernels::TensorView* t : dense) dense_bytes += AlignUp(t->nbytes());
  MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer dense_buf, backend.Allocate(dense_bytes));
  char* at = static_cast<char*>(dense_buf.data());
  for (kernels::TensorView* t : dense) {
    MOESERVE_RETURN_IF_ERROR(backend.CopyToDeviceAsync(at, t->data, t->nbytes()));
    t->data = at;
    t->device = device;
    at += AlignUp(t->nbytes());
  }
  if (host.lm_head.data == host.embed_tokens.data) w.lm_head = w.embed_tokens;
  storage->push_back(std::move(dense_buf));
  // Experts: per layer and projection, the held experts stacked [held, n, k].
  for (LayerWeights& l : w.layers) {
    for (int p = 0; p < 3; ++p) {
      size_t stack = 0;
      for (parallel::ExpertWeights& e : l.moe.experts) {
        if (e.held()) stack += Projection(e, p).nbytes();
      }
      if (stack == 0) continue;
      MOESERVE_ASSIGN_OR_RETURN(kernels::DeviceBuffer buf, backend.Allocate(AlignUp(stack)));
      char* dst = static_cast<char*>(buf.data());
      for (parallel::ExpertWeights& e : l.moe.experts) {
        if (!e.held()) continue;
        kernels::TensorView& t = Projection(e, p);
        MOESERVE_RETURN_IF_ERROR(backend.CopyToDeviceAsync(dst, t.data, t.nbytes()));
        t.data = dst;
        t.device = device;
        dst += t.nbytes();
      }
      storage->push_back(std::move(buf));
    }
  }
  MOESERVE_RETURN_IF_ERROR(backend.Synchronize());
  return w;
}

}  // namespace moeserve::runtime
