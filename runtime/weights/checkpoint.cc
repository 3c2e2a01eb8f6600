#include "runtime/weights/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";

std::string Join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

absl::StatusOr<std::map<std::string, std::string>> ParseWeightMap(const std::string& dir,
                                                                  const std::string& index_path,
                                                                  const json& index);

// Reads model.safetensors.index.json: tensor -> shard path. Checks every shard exists (a cheap
// stat), but maps none of them.
absl::StatusOr<std::map<std::string, std::string>> ParseIndex(const std::string& dir,
                                                              const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(index_path, ": cannot read"));
  std::stringstream text;
  text << in.rdbuf();
  json index;
  try {
    index = json::parse(text.str());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON: ", e.what()));
  }
  try {
    return ParseWeightMap(dir, index_path, index);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", e.what()));
  }
}

absl::StatusOr<std::map<std::string, std::string>> ParseWeightMap(const std::string& dir,
                                                                  const std::string& index_path,
                                                                  const json& index) {
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": expected an object with a \"weight_map\" object"));
  }
  std::map<std::string, std::string> file_of;
  std::map<std::string, bool> shard_exists;  // stat each shard once, not once per tensor
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map['", tensor,
                                                     "'] must be a file name, got ", file.dump()));
    }
    const std::string shard = file.get<std::string>();
    // Shards sit beside the index; a path here would let a checkpoint point anywhere on disk.
    if (shard.empty() || shard.find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map['", tensor, "'] = '", shard,
                       "' is not a file name in the checkpoint directory"));
    }
    const std::string path = Join(dir, shard);
    auto [it, inserted] = shard_exists.try_emplace(shard, false);
    if (inserted) {
      std::error_code ec;
      it->second = fs::is_regular_file(path, ec);
    }
    if (!it->second) {
      return absl::NotFoundError(absl::StrCat(index_path, ": weight_map maps '", tensor, "' to '",
                                              shard, "', but ", path, " does not exist"));
    }
    file_of.emplace(tensor, path);
  }
  return file_of;
}

// Every *.safetensors file in `dir`, sorted so errors and file order are deterministic.
absl::StatusOr<std::vector<std::string>> ListSafetensors(const std::string& dir) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors" && it->is_regular_file(ec)) {
      paths.push_back(it->path().string());
    }
  }
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a checkpoint directory"));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint(dir));
  const std::string index_path = Join(dir, kIndexName);
  if (fs::exists(index_path, ec)) {
    ckpt->source_ = index_path;
    MOESERVE_ASSIGN_OR_RETURN(ckpt->file_of_, ParseIndex(dir, index_path));
    return ckpt;  // shards are opened by FileFor
  }

  std::vector<std::string> paths;
  const std::string single_path = Join(dir, kSingleName);
  if (fs::exists(single_path, ec)) {
    ckpt->source_ = single_path;
    paths.push_back(single_path);
  } else {
    ckpt->source_ = Join(dir, "*.safetensors");
    MOESERVE_ASSIGN_OR_RETURN(paths, ListSafetensors(dir));
    if (paths.empty()) {
      return absl::NotFoundError(absl::StrCat(dir, ": no ", kIndexName, ", ", kSingleName,
                                              " or other *.safetensors file"));
    }
  }
  absl::MutexLock lock(&ckpt->mu_);
  for (const std::string& path : paths) {
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
    for (const auto& [name, info] : file->tensors()) {
      auto [it, inserted] = ckpt->file_of_.emplace(name, path);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": tensor '", name, "' is in both ", it->second, " and ", path));
      }
    }
    ckpt->AddFile(std::move(file));
  }
  return ckpt;
}

void Checkpoint::AddFile(std::unique_ptr<SafetensorsFile> file) const {
  ++stats_.files_opened;
  const std::string path = file->path();
  files_.emplace(path, std::move(file));
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::FileFor(const std::string& name) const {
  auto where = file_of_.find(name);
  if (where == file_of_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_,
                                            " (consulted ", source_, ")"));
  }
  const std::string& path = where->second;
  auto it = files_.find(path);
  if (it == files_.end()) {
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
    AddFile(std::move(file));
    it = files_.find(path);
  }
  const SafetensorsFile* file = it->second.get();
  if (!file->Has(name)) {  // only possible with an index that disagrees with its shards
    return absl::NotFoundError(
        absl::StrCat(path, ": no tensor '", name, "', though ", source_, " maps it to this file"));
  }
  return file;
}

absl::StatusOr<TensorInfo> Checkpoint::Info(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  MOESERVE_ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  return file->tensors().at(name);
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(file_of_.size());
  for (const auto& [name, path] : file_of_) names.push_back(name);  // std::map: already sorted
  return names;
}

absl::StatusOr<kernels::TensorView> Checkpoint::Load(const std::string& name,
                                                     const std::vector<int64_t>& expected_shape,
                                                     bool expected_float) {
  absl::MutexLock lock(&mu_);
  MOESERVE_ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  MOESERVE_ASSIGN_OR_RETURN(kernels::TensorView view, file->View(name));
  if (view.shape != expected_shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " in ", file->path(), ": shape ", kernels::ShapeToString(view.shape),
                     " but expected ", kernels::ShapeToString(expected_shape)));
  }
  if (expected_float && !kernels::IsFloat(view.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " in ", file->path(), ": dtype ", std::string(kernels::DTypeName(view.dtype)),
        " but a float dtype (F32, BF16, F16) was expected"));
  }
  ++stats_.tensors_loaded;
  stats_.bytes_loaded += static_cast<int64_t>(view.nbytes());
  loaded_names_.insert(name);
  return view;
}

std::vector<std::string> Checkpoint::LoadedTensorNames() const {
  absl::MutexLock lock(&mu_);
  return {loaded_names_.begin(), loaded_names_.end()};
}

LoadStats Checkpoint::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moeserve::runtime
