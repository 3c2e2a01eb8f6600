// A model directory of safetensors weights, as Hugging Face lays it out. Open looks for, in order:
//   1. model.safetensors.index.json  {"metadata": {...}, "weight_map": {"<tensor>": "<file>"}}
//      Shards are opened (mmap'ed, header parsed) lazily, on the first Info/Load of one of their
//      tensors, so an expert-parallel rank that loads only its own experts never maps the rest.
//   2. model.safetensors             one file, opened at Open.
//   3. every *.safetensors in the dir  (fallback) all opened at Open; a tensor in two files is an
//      error.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/tensor.h"
#include "runtime/weights/safetensors_file.h"

namespace moeserve::runtime {

struct LoadStats {
  int64_t tensors_loaded = 0;  // successful Load calls (a tensor loaded twice counts twice)
  int64_t bytes_loaded = 0;    // bytes of the views handed out (mapped, not necessarily paged in)
  int64_t files_opened = 0;    // files mmap'ed so far, at Open or lazily
};

// Thread-safety: every method may be called concurrently from any thread; mu_ guards the lazily
// opened shards and the stats. Views returned by Load point into mappings that live as long as
// the Checkpoint (shards are never closed early).
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const { return file_of_.count(name) != 0; }
  // Dtype, shape and location of a tensor; opens its shard if it is not open yet.
  absl::StatusOr<TensorInfo> Info(const std::string& name) const;
  std::vector<std::string> TensorNames() const;  // sorted
  int64_t num_tensors() const { return static_cast<int64_t>(file_of_.size()); }

  // Returns a view of the tensor and checks its shape equals expected_shape (and that it is a
  // float dtype when expected_float is true). Opens/mmaps the shard lazily on first use. Counts
  // the tensor in stats().
  absl::StatusOr<kernels::TensorView> Load(const std::string& name,
                                           const std::vector<int64_t>& expected_shape,
                                           bool expected_float = true);
  LoadStats stats() const;
  // Names of the tensors Load has handed out so far, sorted (read counters by name: an
  // expert-parallel rank must never touch another rank's experts).
  std::vector<std::string> LoadedTensorNames() const;

 private:
  explicit Checkpoint(std::string dir) : dir_(std::move(dir)) {}

  // The open file holding `name`, opening it on first use. REQUIRES: mu_ held.
  absl::StatusOr<const SafetensorsFile*> FileFor(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds an opened file to files_ and counts it. REQUIRES: mu_ held.
  void AddFile(std::unique_ptr<SafetensorsFile> file) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  // What was consulted to map names to files (the index path, model.safetensors, or the
  // "*.safetensors" glob); named in "tensor not found" errors.
  std::string source_;
  std::map<std::string, std::string> file_of_;  // tensor -> file path; immutable after Open

  mutable absl::Mutex mu_;
  // Lazily filled, hence mutable: opening a shard does not change what the checkpoint holds.
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_ ABSL_GUARDED_BY(mu_);
  mutable LoadStats stats_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> loaded_names_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moeserve::runtime
