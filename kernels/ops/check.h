// Small helpers for parameter validation: each failed check becomes an InvalidArgument naming the
// op and the condition, e.g. "rmsnorm: hidden > 0 (hidden=0)".
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define MOESERVE_PARAM_CHECK(op, cond, ...)                               \
  do {                                                                    \
    if (!(cond)) {                                                        \
      return absl::InvalidArgumentError(                                  \
          absl::StrCat(op, ": ", #cond, " " __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                     \
  } while (0)
