#include "loss_trend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace losslens::testing {

double finite_median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return !std::isfinite(x); });
  if (v.empty()) return std::nan("");
  const auto mid = v.begin() + std::ptrdiff_t(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  if (v.size() % 2) return *mid;
  return 0.5 * (*mid + *std::max_element(v.begin(), mid));
}

std::vector<double> tenth_medians(const std::vector<double>& losses) {
  const std::size_t parts = std::min<std::size_t>(10, losses.size());
  std::vector<double> out;
  for (std::size_t w = 0; w < parts; ++w) {
    const std::size_t a = losses.size() * w / parts, b = losses.size() * (w + 1) / parts;
    out.push_back(
        finite_median({losses.begin() + std::ptrdiff_t(a), losses.begin() + std::ptrdiff_t(b)}));
  }
  return out;
}

std::size_t first_rising_tenth(const std::vector<double>& medians, double rise, double floor) {
  for (std::size_t w = 1; w < medians.size(); ++w)
    if (medians[w] > (1 + rise) * medians[w - 1] && medians[w] > floor) return w + 1;
  return 0;
}

std::string medians_text(const std::vector<double>& medians) {
  std::string out;
  for (double m : medians) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.4g", out.empty() ? "" : " ", m);
    out += buf;
  }
  return out;
}

}  // namespace losslens::testing
