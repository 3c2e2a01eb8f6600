#include "runtime/weights/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::runtime {
namespace {

using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; views alias the file bytes directly");

// All header errors read "<path>: tensor '<name>': <what>" so the user knows where to look.
absl::Status TensorError(const std::string& path, const std::string& name,
                         const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", what));
}

// A JSON integer that fits int64 (safetensors writes dims and offsets as JSON numbers).
bool AsInt64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
  } else if (!v.is_number_integer()) {
    return false;
  }
  *out = v.get<int64_t>();
  return true;
}

// Parses and validates one header entry against a data section of `data_bytes`.
absl::StatusOr<TensorInfo> ParseEntry(const std::string& path, const std::string& name,
                                      const json& entry, uint64_t data_bytes) {
  if (!entry.is_object()) return TensorError(path, name, "entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return TensorError(path, name, absl::StrCat("missing \"", key, "\""));
  }
  TensorInfo info;
  info.name = name;
  info.file = path;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return TensorError(path, name, absl::StrCat("\"dtype\" must be a string, got ", dtype.dump()));
  }
  absl::StatusOr<kernels::DType> parsed = ParseSafetensorsDType(dtype.get<std::string>());
  if (!parsed.ok()) return TensorError(path, name, std::string(parsed.status().message()));
  info.dtype = *parsed;

  const json& shape = entry["shape"];
  if (!shape.is_array()) {
    return TensorError(path, name, absl::StrCat("\"shape\" must be an array, got ", shape.dump()));
  }
  // numel * dtype size, checked for overflow so a hostile header cannot wrap the length check.
  uint64_t nbytes = kernels::DTypeSize(info.dtype);
  for (const json& d : shape) {
    int64_t dim = 0;
    if (!AsInt64(d, &dim)) {
      return TensorError(path, name,
                         absl::StrCat("\"shape\" must hold integers, got ", shape.dump()));
    }
    if (dim < 0) {
      return TensorError(path, name, absl::StrCat("negative dimension in shape ", shape.dump()));
    }
    if (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(dim), &nbytes)) {
      return TensorError(path, name, absl::StrCat("shape ", shape.dump(), " overflows 64 bits"));
    }
    info.shape.push_back(dim);
  }

  const json& offsets = entry["data_offsets"];
  int64_t begin = 0, end = 0;
  if (!offsets.is_array() || offsets.size() != 2 || !AsInt64(offsets[0], &begin) ||
      !AsInt64(offsets[1], &end) || begin < 0 || end < 0) {
    return TensorError(path, name,
                       absl::StrCat("\"data_offsets\" must be [begin, end] with non-negative "
                                    "integers, got ",
                                    offsets.dump()));
  }
  info.begin = static_cast<uint64_t>(begin);
  info.end = static_cast<uint64_t>(end);
  if (info.end < info.begin) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets end ", info.end, " < begin ", info.begin));
  }
  if (info.end > data_bytes) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                                    "] out of range of the ", data_bytes, "-byte data section"));
  }
  if (info.end - info.begin != nbytes) {
    return TensorError(
        path, name,
        absl::StrCat("data_offsets span ", info.end - info.begin, " bytes but shape ",
                     kernels::ShapeToString(info.shape), " of ",
                     std::string(kernels::DTypeName(info.dtype)), " needs ", nbytes));
  }
  return info;
}

absl::Status ParseMetadata(const std::string& path, const json& j,
                           std::map<std::string, std::string>* out) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"__metadata__\" must be an object of strings"));
  }
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"__metadata__\" value for '", key,
                                                     "' must be a string, got ", value.dump()));
    }
    (*out)[key] = value.get<std::string>();
  }
  return absl::OkStatus();
}

// Rejects two tensors sharing bytes: a view must never alias another tensor's data.
absl::Status CheckNoOverlap(const std::string& path,
                            const std::map<std::string, TensorInfo>& tensors) {
  std::vector<const TensorInfo*> by_offset;
  for (const auto& [name, info] : tensors) {
    if (info.end > info.begin) by_offset.push_back(&info);  // empty ranges overlap nothing
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    const TensorInfo& cur = *by_offset[i];
    if (cur.begin < prev.end) {
      return TensorError(path, cur.name,
                         absl::StrCat("bytes [", cur.begin, ", ", cur.end, ") overlap tensor '",
                                      prev.name, "' at [", prev.begin, ", ", prev.end, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<kernels::DType> ParseSafetensorsDType(const std::string& name) {
  using kernels::DType;
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64}) {
    if (name == kernels::DTypeName(t)) return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", name, "\" (moeserve reads F32, BF16, F16, I32, I64)"));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string what = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(what) : absl::PermissionDeniedError(what);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat failed: ", std::strerror(err)));
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": truncated: ", file_bytes, " bytes, shorter than the 8-byte header length"));
  }
  // The mapping outlives the descriptor; pages are read on first touch, not here.
  void* mapping = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(mmap_errno)));
  }
  // From here the destructor unmaps on every error path.
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path));
  file->mapping_ = mapping;
  file->mapping_bytes_ = file_bytes;
  const char* bytes = static_cast<const char*>(mapping);

  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes, sizeof(header_bytes));  // little-endian host (static_assert)
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " exceeds the ", kMaxHeaderBytes,
                                                   "-byte limit (corrupt or not safetensors)"));
  }
  if (header_bytes > file_bytes - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " runs past the end of the ", file_bytes,
                                                   "-byte file (truncated?)"));
  }
  // Writers pad the header to a multiple of 8 so the data section (and each tensor) is aligned;
  // an unpadded file still works on x86, where unaligned loads are legal.
  file->data_ = bytes + 8 + header_bytes;
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;

  // nlohmann reports problems as exceptions, and not only parse_error: a number that overflows a
  // double is out_of_range. Every one becomes a Status naming the file.
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_bytes);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not valid JSON: ", e.what()));
  }
  try {
    MOESERVE_RETURN_IF_ERROR(file->ParseHeader(header, data_bytes));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad header: ", e.what()));
  }
  return file;
}

absl::Status SafetensorsFile::ParseHeader(const nlohmann::json& header, uint64_t data_bytes) {
  const std::string& path = path_;
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header must be a JSON object, got ",
                                                   std::string(header.type_name())));
  }
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      MOESERVE_RETURN_IF_ERROR(ParseMetadata(path, entry, &metadata_));
      continue;
    }
    MOESERVE_ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(path, name, entry, data_bytes));
    tensors_.emplace(name, std::move(info));
  }
  return CheckNoOverlap(path, tensors_);
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
}

absl::StatusOr<kernels::TensorView> SafetensorsFile::View(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  const TensorInfo& info = it->second;
  kernels::TensorView view;
  view.data = data_ + info.begin;
  view.dtype = info.dtype;
  view.device = kernels::Device::kCpu;
  view.shape = info.shape;
  return view;
}

}  // namespace moeserve::runtime
