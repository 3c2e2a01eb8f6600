#include "runtime/weights/weight_check.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve::runtime {
namespace {

// An IEEE value is NaN or Inf exactly when all its exponent bits are set; counting by masks keeps
// the loop free of float arithmetic and branches, so it runs at memory speed.
template <typename Bits>
int64_t CountAllOnesExponent(const void* data, int64_t n, Bits exponent_mask) {
  const char* bytes = static_cast<const char*>(data);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    Bits v;
    std::memcpy(&v, bytes + i * sizeof(Bits), sizeof(Bits));  // the mapping may be unaligned
    count += (v & exponent_mask) == exponent_mask;
  }
  return count;
}

}  // namespace

absl::StatusOr<WeightCheck> ParseWeightCheck(std::string_view name) {
  for (WeightCheck c : {WeightCheck::kOff, WeightCheck::kWarn, WeightCheck::kFull}) {
    if (name == WeightCheckName(c)) return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--check-weights: \"", std::string(name), "\" is not one of off, warn, full"));
}

std::string_view WeightCheckName(WeightCheck check) {
  switch (check) {
    case WeightCheck::kOff:
      return "off";
    case WeightCheck::kWarn:
      return "warn";
    case WeightCheck::kFull:
      return "full";
  }
  return "?";
}

int64_t CountNonFinite(const kernels::TensorView& view) {
  const int64_t n = view.numel();
  switch (view.dtype) {
    case kernels::DType::kF32:
      return CountAllOnesExponent<uint32_t>(view.data, n, 0x7F800000u);
    case kernels::DType::kBF16:
      return CountAllOnesExponent<uint16_t>(view.data, n, uint16_t{0x7F80});
    case kernels::DType::kF16:
      return CountAllOnesExponent<uint16_t>(view.data, n, uint16_t{0x7C00});
    default:
      return 0;
  }
}

}  // namespace moeserve::runtime
