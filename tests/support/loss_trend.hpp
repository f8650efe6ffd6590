#pragma once
// Whether a run's loss is healthy by looking at it: the median of each tenth of the run falls or
// stays flat at its floor. Tests and benches that call a run healthy check it with this (a run
// that looked healthy by its first and last loss was slowly degrading).

#include <cstddef>
#include <string>
#include <vector>

namespace losslens::testing {

/// The median of the finite values of v (NaN when there are none).
double finite_median(std::vector<double> v);

/// The median loss of each tenth of the run (fewer parts when there are fewer than 10 losses).
std::vector<double> tenth_medians(const std::vector<double>& losses);

/// The first tenth (1-based) whose median is more than `rise` (default 20%) above the previous
/// tenth's and above `floor` (a loss near zero may double in noise), or 0 when there is none.
std::size_t first_rising_tenth(const std::vector<double>& medians, double rise = 0.2,
                               double floor = 0.05);

/// "0.41 0.33 ... 0.02": the medians, for a test's INFO line.
std::string medians_text(const std::vector<double>& medians);

}  // namespace losslens::testing
