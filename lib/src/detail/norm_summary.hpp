#pragma once
/// \file norm_summary.hpp
/// One pass over a step's per-parameter gradient norms for every rule that needs them.

#include <cstddef>
#include <limits>
#include <optional>

namespace losslens::core::detail {

/// What the rules read of a step's per-parameter norms.
/// Which parameter has the largest norm is asked rarely (by a rule that reports it): see
/// find_norm.
struct norm_summary {
  /// The largest and smallest finite norms; -Inf and +Inf when none is finite. (A zero's sign
  /// is either.)
  double max_norm = -std::numeric_limits<double>::infinity();
  double min_norm = std::numeric_limits<double>::infinity();
  int first_non_finite = -1;  ///< index of the first present NaN/Inf norm; -1 = none
};

/// Summarises norms[0, n): missing norms are skipped. Uses AVX2 where the CPU has it (four
/// norms per instruction), else summarize_norms_scalar. Thread-safe (pure).
norm_summary summarize_norms(const std::optional<double>* norms, std::size_t n) noexcept;
/// The same, one norm at a time (any CPU; what the tests compare the vector path against).
norm_summary summarize_norms_scalar(const std::optional<double>* norms, std::size_t n) noexcept;
/// The vector path alone; false when this build or CPU has no AVX2 (then `out` is untouched).
bool summarize_norms_avx2(const std::optional<double>* norms, std::size_t n,
                          norm_summary& out) noexcept;

/// The index of the first present norm equal to `value` (0 and -0 alike), n when none is.
/// With summarize_norms' max_norm: the parameter with the largest norm, the first of equals.
/// AVX2 where the CPU has it. Thread-safe (pure).
std::size_t find_norm(const std::optional<double>* norms, std::size_t n, double value) noexcept;

}  // namespace losslens::core::detail
