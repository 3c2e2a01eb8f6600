// Shared pieces of the backend-ops harness (tests/gpu/backend_ops*_test.cc), after llama.cpp's
// test-backend-ops: every Backend op runs through the Backend interface on every backend present
// and is compared with
//   (a) the CPU reference backend (for the CUDA backend), and
//   (b) a naive double-precision oracle written in the tests,
// on tables of cases. Inputs are bf16-representable, so an fp32 run and a bf16 run see the same
// numbers and differ only in rounding inside the op.
//
// Backends: "cpu" always; "cuda" when MakeCudaBackend(0) succeeds, otherwise every CUDA case is
// GTEST_SKIP'ed with the reason (reported as skipped, never passed; tools/gpu-check.sh counts a
// skip as a failure on the GPU machine).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace moeserve::kernels::testing {

// ---- Backends (created once per process: a CUDA context costs ~0.3 s).

inline Backend& CpuBackend() {
  static Backend* const cpu = MakeCpuBackend(0).release();
  return *cpu;
}

// The CUDA backend, or nullptr with *reason saying why there is none.
inline Backend* CudaBackendOrNull(std::string* reason) {
  static absl::StatusOr<std::unique_ptr<Backend>>* const cuda =
      new absl::StatusOr<std::unique_ptr<Backend>>(MakeCudaBackend(0));
  if (!cuda->ok()) {
    *reason = cuda->status().ToString();
    return nullptr;
  }
  return cuda->value().get();
}

// Names the test parameter: "cpu" or "cuda".
inline const std::vector<std::string>& BackendNames() {
  static const std::vector<std::string> names = {"cpu", "cuda"};
  return names;
}

// The backend called `name`; skips the current test (returns nullptr) when it is not present.
#define MOESERVE_GET_BACKEND_OR_SKIP(var, name)                                    \
  Backend* var = nullptr;                                                          \
  do {                                                                             \
    if ((name) == "cpu") {                                                         \
      var = &::moeserve::kernels::testing::CpuBackend();                           \
    } else {                                                                       \
      std::string _reason;                                                         \
      var = ::moeserve::kernels::testing::CudaBackendOrNull(&_reason);             \
      if (var == nullptr) GTEST_SKIP() << "CUDA backend unavailable: " << _reason; \
    }                                                                              \
  } while (0)

// ---- Data.

// Rounds v to what `dtype` can hold (fp32: unchanged).
inline float RoundTo(float v, DType dtype) {
  if (dtype == DType::kBF16) return Bf16ToF32(F32ToBf16(v));
  if (dtype == DType::kF16) return F16ToF32(F32ToF16(v));
  return v;
}

// Normal(0, stddev) values rounded to bf16, so every float dtype represents them exactly.
inline std::vector<float> RandomValues(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = RoundTo(dist(rng), DType::kBF16);
  return v;
}

inline std::vector<uint8_t> Encode(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> bytes(v.size() * DTypeSize(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kBF16 || dtype == DType::kF16) {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &v[i], 4);
    }
  }
  return bytes;
}

inline std::vector<float> Decode(const std::vector<uint8_t>& bytes, DType dtype) {
  std::vector<float> v(bytes.size() / DTypeSize(dtype));
  for (size_t i = 0; i < v.size(); ++i) v[i] = LoadAsF32(bytes.data(), dtype, i);
  return v;
}

inline void ThrowIfError(const absl::Status& st, const std::string& what) {
  if (!st.ok()) throw std::runtime_error(absl::StrCat(what, ": ", st.ToString()));
}

// Buffers on one backend for the duration of a test case. Failures throw (GoogleTest reports an
// exception as a test failure). Every buffer has at least 64 bytes, so empty tensors still get a
// valid, non-null pointer (the validators require one).
class DeviceArena {
 public:
  explicit DeviceArena(Backend& backend) : backend_(backend) {}
  Backend& backend() { return backend_; }

  void* Alloc(size_t bytes) {
    absl::StatusOr<DeviceBuffer> buf = backend_.Allocate(std::max<size_t>(bytes, 64));
    ThrowIfError(buf.status(), absl::StrCat("Allocate(", bytes, ")"));
    buffers_.push_back(std::move(*buf));
    return buffers_.back().data();
  }
  void* UploadBytes(const void* src, size_t bytes) {
    void* dst = Alloc(bytes);
    if (bytes > 0) ThrowIfError(backend_.CopyToDevice(dst, src, bytes), "CopyToDevice");
    return dst;
  }
  template <typename T>
  T* Upload(const std::vector<T>& v) {
    return static_cast<T*>(UploadBytes(v.data(), v.size() * sizeof(T)));
  }
  void* UploadAs(const std::vector<float>& v, DType dtype) {
    const std::vector<uint8_t> bytes = Encode(v, dtype);
    return UploadBytes(bytes.data(), bytes.size());
  }
  // `bytes` bytes, each set to `byte` (a sentinel pattern for "must stay untouched" checks).
  void* Filled(size_t bytes, int byte) {
    void* dst = Alloc(bytes);
    ThrowIfError(backend_.MemsetAsync(dst, byte, std::max<size_t>(bytes, 64)), "MemsetAsync");
    return dst;
  }

  // Waits for the enqueued work (surfacing its errors), then copies back.
  std::vector<uint8_t> DownloadBytes(const void* src, size_t bytes) {
    ThrowIfError(backend_.Synchronize(), "Synchronize");
    std::vector<uint8_t> out(bytes);
    if (bytes > 0) ThrowIfError(backend_.CopyToHost(out.data(), src, bytes), "CopyToHost");
    return out;
  }
  template <typename T>
  std::vector<T> Download(const T* src, size_t n) {
    const std::vector<uint8_t> bytes = DownloadBytes(src, n * sizeof(T));
    std::vector<T> out(n);
    if (n > 0) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  std::vector<float> DownloadAs(const void* src, size_t n, DType dtype) {
    return Decode(DownloadBytes(src, n * DTypeSize(dtype)), dtype);
  }

 private:
  Backend& backend_;
  std::vector<DeviceBuffer> buffers_;
};

// ---- Comparison.

// An oracle's answer: the exact (double) value of every element and a magnitude that bounds
// how much rounding inside the op can move it (for a sum: the sum of |terms|; else |value|).
struct Expected {
  std::vector<double> value;
  std::vector<double> magnitude;
  explicit Expected(size_t n = 0) : value(n, 0.0), magnitude(n, 0.0) {}
};

// |got - want| <= rel * |want| + acc * magnitude + 1e-30.
struct Tolerance {
  double rel = 0.0;
  double acc = 0.0;
};

// Half an ulp of the output dtype, doubled (two roundings may differ), as a relative error.
inline double OutputRel(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return 1.0 / 128;
    case DType::kF16:
      return 1.0 / 1024;
    default:
      return 2e-6;
  }
}

// Error of an fp32 sum of n terms (relative to the sum of |terms|), with room for a different
// summation order: a few eps * sqrt(n).
inline double Fp32SumAcc(int64_t n) {
  return 8.0 * 5.96e-8 * std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)));
}

// Checks every element; reports the worst ones (at most 8) with their index.
inline ::testing::AssertionResult AllClose(const std::vector<float>& got, const Expected& want,
                                           Tolerance tol) {
  if (got.size() != want.value.size()) {
    return ::testing::AssertionFailure()
           << "size " << got.size() << " != expected " << want.value.size();
  }
  size_t bad = 0;
  std::string report;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double w = want.value[i];
    const double err = std::fabs(static_cast<double>(got[i]) - w);
    const double bound = tol.rel * std::fabs(w) + tol.acc * want.magnitude[i] + 1e-30;
    if (!(err <= bound)) {  // also catches NaN
      if (bad < 8) {
        absl::StrAppend(&report, "\n  [", i, "] got ", got[i], " want ", w, " (err ", err,
                        " > bound ", bound, ")");
      }
      ++bad;
      worst = std::max(worst, err / bound);
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << got.size() << " elements out of tolerance (worst err/bound " << worst
         << "):" << report;
}

// The CPU reference's output as an Expected with the op's own magnitudes (comparison (a)).
inline Expected FromReference(const std::vector<float>& ref, const Expected& oracle) {
  Expected e(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    e.value[i] = ref[i];
    e.magnitude[i] = oracle.magnitude[i];
  }
  return e;
}

// Bitwise equality of two downloads (batch invariance).
inline ::testing::AssertionResult BitwiseEqual(const std::vector<uint8_t>& a,
                                               const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return ::testing::AssertionFailure() << "first difference at byte " << i;
  }
  return ::testing::AssertionSuccess();
}

inline const char* DTypeLabel(DType t) {
  switch (t) {
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF32:
      return "f32";
    default:
      return "int";
  }
}

// Test-name-safe label: letters, digits and '_' only.
inline std::string SafeName(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

inline double Silu(double x) { return x / (1.0 + std::exp(-x)); }

// The test parameter of every op table: (backend name, case).
template <typename Case>
using BackendAndCase = std::tuple<std::string, Case>;

// "cuda_rows7_hidden37_bf16": the backend name and the case's `name` field.
struct ParamName {
  template <typename Case>
  std::string operator()(const ::testing::TestParamInfo<BackendAndCase<Case>>& info) const {
    return SafeName(std::get<0>(info.param) + "_" + std::get<1>(info.param).name);
  }
};

// The two comparisons of one case on backend `b`: `run(backend)` enqueues the op on a backend
// and returns its output as floats. (b) vs the oracle; (a) on a non-CPU backend, vs the CPU
// reference run on the same inputs (twice the tolerance: both sides round).
template <typename RunFn>
void CheckOp(Backend& b, const Expected& want, Tolerance tol, RunFn run) {
  const std::vector<float> got = run(b);
  EXPECT_TRUE(AllClose(got, want, tol)) << b.name() << " vs the double-precision oracle";
  if (&b != &CpuBackend()) {
    const std::vector<float> ref = run(CpuBackend());
    const Tolerance twice{2 * tol.rel, 2 * tol.acc};
    EXPECT_TRUE(AllClose(got, FromReference(ref, want), twice))
        << b.name() << " vs the CPU reference";
  }
}

}  // namespace moeserve::kernels::testing
