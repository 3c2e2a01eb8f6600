// Backends for the runtime-level tests (tests/golden/*, tests/unit/engine_test.cc): every such
// test is parameterised over "cpu" (always present) and "cuda" (present when
// runtime::MakeBackend("cuda", ...) succeeds). Without a GPU, or in a build without CUDA, every
// CUDA case is GTEST_SKIP'ed with the reason, so it is reported as skipped, never as passed;
// tools/gpu-check.sh counts such a skip as a failure on the GPU machine.
//
// Test data: MOESERVE_TEST_DATA_DIR is compiled in as an absolute path of the build machine. The
// environment variable of the same name overrides it (tools/gpu-check.sh points it at the copy of
// tests/data that travels with the device call).
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/engine/rank_set.h"

namespace moeserve::runtime::backend_test {

// tests/data: $MOESERVE_TEST_DATA_DIR when set, else the path compiled in.
inline std::string TestDataDir() {
  const char* env = std::getenv("MOESERVE_TEST_DATA_DIR");
  return env != nullptr && env[0] != '\0' ? std::string(env) : std::string(MOESERVE_TEST_DATA_DIR);
}

// Starts the message of a skip that is by design on every machine (a case that does not apply to
// its parameters, or a feature the backend does not have yet, named in the message), as opposed
// to a backend missing from this machine. tools/gpu-check.sh lists these separately and does not
// count them as failures; every other skip of a CUDA case fails it.
inline constexpr char kNotApplicable[] = "[expected skip] ";

// The test parameter: the backends a test runs on.
inline std::vector<std::string> BackendNames() { return {"cpu", "cuda"}; }

// Whether `name` is present; *reason says why not. The CUDA probe runs once per process.
inline bool BackendAvailable(const std::string& name, std::string* reason) {
  if (name == "cpu") return true;
  static const std::string* const cuda_error = [] {
    absl::StatusOr<std::unique_ptr<kernels::Backend>> b = MakeBackend("cuda", 1);
    return b.ok() ? nullptr : new std::string(b.status().ToString());
  }();
  if (cuda_error == nullptr) return true;
  *reason = *cuda_error;
  return false;
}

// A new backend of `name` (the CPU one with cpu_threads threads, 0: all cores). REQUIRES:
// BackendAvailable(name).
inline std::unique_ptr<kernels::Backend> NewBackend(const std::string& name, int cpu_threads) {
  absl::StatusOr<std::unique_ptr<kernels::Backend>> b = MakeBackend(name, cpu_threads);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : nullptr;
}

// "cpu" / "cuda" as the test name suffix.
inline std::string BackendParamName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

}  // namespace moeserve::runtime::backend_test

// Skips the current test (from a test body or SetUp) when backend `name` is not present.
#define MOESERVE_SKIP_UNLESS_BACKEND(name)                                                     \
  do {                                                                                         \
    std::string moeserve_skip_reason;                                                          \
    if (!::moeserve::runtime::backend_test::BackendAvailable((name), &moeserve_skip_reason)) { \
      GTEST_SKIP() << "backend " << (name) << " unavailable: " << moeserve_skip_reason;        \
    }                                                                                          \
  } while (0)
