#include "kernels/tensor.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace moeserve::kernels {

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string TensorView::ShapeString() const { return ShapeToString(shape); }

DeviceBuffer::DeviceBuffer(Device device, size_t bytes) : bytes_(bytes), device_(device) {
  if (device != Device::kCpu) throw std::bad_alloc();  // CUDA buffers come from the CUDA backend.
  if (bytes == 0) return;
  constexpr size_t kAlign = 64;
  void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  if (p == nullptr) throw std::bad_alloc();
  ptr_ = std::unique_ptr<void, Deleter>(p, [](void* q) { std::free(q); });
}

DeviceBuffer DeviceBuffer::Adopt(Device device, void* ptr, size_t bytes, Deleter deleter) {
  DeviceBuffer b;
  b.ptr_ = std::unique_ptr<void, Deleter>(ptr, std::move(deleter));
  b.bytes_ = bytes;
  b.device_ = device;
  return b;
}

}  // namespace moeserve::kernels
