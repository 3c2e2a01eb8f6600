// Non-owning views of tensors and owning device buffers.
//
// A TensorView is a pointer + dtype + shape + the device the pointer lives on. Weights loaded from
// safetensors are views into the mmap'ed file (CPU) or into device memory (CUDA). Kernels never
// take a TensorView: they take raw pointers through their parameter structs, so the same struct
// serves the CPU reference and the CUDA launcher.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace moeserve::kernels {

enum class Device : uint8_t { kCpu, kCuda };

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  std::vector<int64_t> shape;  // logical shape ([n, k] for a matmul weight, whatever the layout)
  WeightLayout layout = WeightLayout::kRows;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int64_t dim(size_t i) const { return shape.at(i); }
  // Row r of a 2-D (or leading-dim) tensor: shape [rows, ...].
  const void* row(int64_t r) const {
    return static_cast<const char*>(data) + static_cast<size_t>(r) * (nbytes() / shape.at(0));
  }
  std::string ShapeString() const;
};

// Owning, aligned allocation on one device. CPU: 64-byte aligned host memory. CUDA buffers are
// created by the CUDA backend with the same interface (kernels/cuda/).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, size_t bytes);  // CPU only here; CUDA via MakeCudaBuffer.
  DeviceBuffer(DeviceBuffer&&) noexcept = default;
  DeviceBuffer& operator=(DeviceBuffer&&) noexcept = default;

  void* data() { return ptr_.get(); }
  const void* data() const { return ptr_.get(); }
  template <typename T>
  T* as() {
    return static_cast<T*>(ptr_.get());
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(ptr_.get());
  }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

  // Takes ownership of memory allocated elsewhere (e.g. cudaMalloc), freed by `deleter`. The
  // deleter may carry context (the CUDA backend's scratch buffers free themselves with
  // cudaFreeAsync on the backend's stream, which the deleter keeps alive).
  using Deleter = std::function<void(void*)>;
  static DeviceBuffer Adopt(Device device, void* ptr, size_t bytes, Deleter deleter);

 private:
  std::unique_ptr<void, Deleter> ptr_{nullptr, [](void*) {}};
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
};

std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace moeserve::kernels
