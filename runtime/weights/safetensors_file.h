// One .safetensors file, memory-mapped read-only, with its whole header validated at Open.
//
// Layout (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data section]
// The header is an object {"<tensor>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]},
// ..., "__metadata__": {"<key>": "<string>"}}; offsets are relative to the data section.
//
// Every header problem is reported at Open with the file path (and tensor name), so a bad
// checkpoint fails at start-up rather than as garbage logits later.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/tensor.h"
#include "nlohmann/json_fwd.hpp"

namespace moeserve::runtime {

struct TensorInfo {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  std::string file;             // path of the file holding it
  uint64_t begin = 0, end = 0;  // byte offsets relative to the start of the data section
};

// "F32" -> kF32 etc. Dtypes moeserve cannot compute with ("F8_E4M3", "F64", "U8", ...) are
// InvalidArgument "unsupported dtype".
absl::StatusOr<kernels::DType> ParseSafetensorsDType(const std::string& name);

// Thread-safety: immutable after Open; every const method may be called from any thread.
// Views returned by View() point into the mapping and stay valid for the object's lifetime.
class SafetensorsFile {
 public:
  // Headers larger than this are rejected (the reference implementation's limit too).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // __metadata__
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }

  // View into the mapping (no copy); Device::kCpu. NotFound if the file has no such tensor.
  absl::StatusOr<kernels::TensorView> View(const std::string& name) const;

 private:
  explicit SafetensorsFile(std::string path) : path_(std::move(path)) {}
  // Fills tensors_ and metadata_ from the parsed header; may throw nlohmann::json::exception.
  absl::Status ParseHeader(const nlohmann::json& header, uint64_t data_bytes);

  std::string path_;
  void* mapping_ = nullptr;  // the whole file, PROT_READ / MAP_PRIVATE
  size_t mapping_bytes_ = 0;
  const char* data_ = nullptr;  // start of the data section, inside the mapping
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace moeserve::runtime
