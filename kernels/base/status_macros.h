// Status propagation helpers for every moeserve target (kernels is the bottom of the dependency
// graph, so they live here).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOESERVE_RETURN_IF_ERROR(expr)           \
  do {                                           \
    ::absl::Status _moeserve_st = (expr);        \
    if (!_moeserve_st.ok()) return _moeserve_st; \
  } while (0)

#define MOESERVE_CONCAT_INNER(a, b) a##b
#define MOESERVE_CONCAT(a, b) MOESERVE_CONCAT_INNER(a, b)

// MOESERVE_ASSIGN_OR_RETURN(auto x, MakeX());
#define MOESERVE_ASSIGN_OR_RETURN(lhs, expr) \
  MOESERVE_ASSIGN_OR_RETURN_IMPL(MOESERVE_CONCAT(_moeserve_or_, __LINE__), lhs, expr)
#define MOESERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()
