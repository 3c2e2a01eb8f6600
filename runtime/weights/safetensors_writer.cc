#include "runtime/weights/safetensors_writer.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/tensor.h"
#include "nlohmann/json.hpp"

namespace moeserve::runtime {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; tensors are written as they lie in memory");

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in the given order, matching the data layout.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor name '", t.name, "' is empty, reserved or repeated"));
    }
    uint64_t bytes = kernels::DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "': shape ",
                                                       kernels::ShapeToString(t.shape),
                                                       " has a negative dimension"));
      }
      bytes *= static_cast<uint64_t>(d);
    }
    if (bytes > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' has ", bytes, " bytes but no data"));
    }
    header[t.name] = {{"dtype", std::string(kernels::DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.resize((header_text.size() + 7) / 8 * 8, ' ');
  const uint64_t header_bytes = header_text.size();

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  out.write(reinterpret_cast<const char*>(&header_bytes), sizeof(header_bytes));
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (sizes[i] == 0) continue;
    out.write(static_cast<const char*>(tensors[i].data), static_cast<std::streamsize>(sizes[i]));
  }
  out.close();
  if (!out) {
    return absl::DataLossError(absl::StrCat(path, ": write failed (disk full?)"));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::runtime
