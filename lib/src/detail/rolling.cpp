#include "detail/rolling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace losslens::core::detail {

namespace {
// std::lower_bound / std::upper_bound without branches on the data (the comparisons of a
// median window are coin flips, and every mispredicted one cost more than the search).
double* lower_bound_of(double* v, std::size_t n, double x) noexcept {
  if (n == 0) return v;
  while (n > 1) {
    const std::size_t half = n / 2;
    v = v[half - 1] < x ? v + half : v;
    n -= half;
  }
  return v + (*v < x ? 1 : 0);
}
double* upper_bound_of(double* v, std::size_t n, double x) noexcept {
  if (n == 0) return v;
  while (n > 1) {
    const std::size_t half = n / 2;
    v = !(x < v[half - 1]) ? v + half : v;
    n -= half;
  }
  return v + (!(x < *v) ? 1 : 0);
}
}  // namespace

void sorted_window::push(double x) noexcept {
  if (!std::isfinite(x)) return;
  const std::size_t n = order_.size();
  double* v = sorted_.data();
  if (!order_.full()) {
    double* at = upper_bound_of(v, n, x);
    std::copy_backward(at, v + n, v + n + 1);
    *at = x;
    order_.push(x);
    return;
  }
  // Full: the oldest value leaves and x enters; only the values between the two places move,
  // by one.
  double* out = lower_bound_of(v, n, order_[0]);
  double* in = upper_bound_of(v, n, x);
  if (in > out) {
    std::copy(out + 1, in, out);
    in[-1] = x;
  } else {
    std::copy_backward(in, out, out + 1);
    *in = x;
  }
  order_.push(x);
}

double sorted_window::median() const noexcept {
  const std::size_t n = order_.size();
  if (n == 0) return 0;
  return n % 2 == 1 ? sorted_[n / 2] : 0.5 * (sorted_[n / 2 - 1] + sorted_[n / 2]);
}

double sorted_window::quantile(double q) const noexcept {
  const std::size_t n = order_.size();
  if (n == 0) return 0;
  const auto k = std::min(n - 1, static_cast<std::size_t>(q * double(n - 1) + 0.5));
  return sorted_[k];
}

namespace {
// The k-th smallest (0-based) of two ascending sequences, the distances from the median going
// left (m - lo[-1 - i], i < nl) and right (hi[j] - m, j < nr): binary search on how many of
// the k + 1 smallest come from the left.
double kth_distance(const double* lo, std::size_t nl, const double* hi, std::size_t nr, double m,
                    std::size_t k) noexcept {
  std::size_t a = k + 1 > nr ? k + 1 - nr : 0, b = std::min(k + 1, nl);
  while (a < b) {
    const std::size_t i = (a + b) / 2, j = k + 1 - i;  // j >= 1 here
    if (hi[j - 1] - m > m - lo[-1 - std::ptrdiff_t(i)])
      a = i + 1;
    else
      b = i;
  }
  const std::size_t j = k + 1 - a;
  const double l = a > 0 ? m - lo[-std::ptrdiff_t(a)] : -1;
  const double r = j > 0 ? hi[j - 1] - m : -1;
  return std::max(l, r);
}
}  // namespace

double sorted_window::mad() const noexcept {
  const std::size_t n = order_.size();
  if (n == 0) return 0;
  const double m = median();
  const double* v = sorted_.data();
  // Values left of p are below the median, from p on at or above it.
  const std::size_t p = std::size_t(std::lower_bound(v, v + n, m) - v);
  const double* lo = v + p;  // lo[-1] is the closest below
  if (n % 2 == 1) return kth_distance(lo, p, v + p, n - p, m, n / 2);
  return 0.5 * (kth_distance(lo, p, v + p, n - p, m, n / 2 - 1) +
                kth_distance(lo, p, v + p, n - p, m, n / 2));
}

bool clipped_scale::push(double x, double log_x, double& out) noexcept {
  bool switched = false;
  if (log_ && !(x > 0)) {
    log_ = false;
    window_.clear();
    switched = true;
  }
  double y = log_ ? log_x : x;
  const double raw = y;
  if (window_.size() >= 8) {
    const double m = window_.median();
    const double floor = log_ ? 0.05 : 1e-3 * std::abs(m) + 1e-12;
    // Within 8 floors of the median nothing is clipped, whatever the MAD: most values.
    if (std::abs(y - m) > 8 * floor) {
      const double r = 8 * std::max(1.4826 * window_.mad(), floor);
      y = std::clamp(y, m - r, m + r);
    }
  }
  window_.push(raw);
  out = y;
  return switched;
}

double rolling_median::scale(double rel_floor) const noexcept {
  return std::max({1.4826 * mad(), rel_floor * std::abs(median()), 1e-9});
}

void robust_baseline::push(double x, double log_x) noexcept {
  if (log_ && !(x > 0)) {
    log_ = false;
    median_.clear();
  }
  median_.push(log_ ? log_x : x);
}

double robust_baseline::median() const noexcept {
  return log_ ? std::exp(median_.median()) : median_.median();
}

double robust_baseline::z(double x, double log_x) const noexcept {
  if (log_ && !(x > 0)) return 0;  // not an upward outlier on the log scale
  return ((log_ ? log_x : x) - median_.median()) / median_.scale();
}

namespace {
double median_of(std::vector<double>& v, std::size_t n) noexcept {
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(n / 2);
  std::nth_element(v.begin(), mid, v.begin() + static_cast<std::ptrdiff_t>(n));
  double hi = *mid;
  if (n % 2 == 1) return hi;
  double lo = *std::max_element(v.begin(), mid);
  return 0.5 * (lo + hi);
}
}  // namespace

void lagged_tail::push(double x) noexcept {
  if (delay_.full()) {
    tail_.push(delay_[0]);
    ++seen_;
    if (++since_ >= stride_ || seen_ <= 1) {
      since_ = 0;
      const std::size_t n = tail_.size();
      for (std::size_t i = 0; i < n; ++i) scratch_[i] = tail_[i];
      const auto k = std::min(n - 1, static_cast<std::size_t>(0.99 * double(n - 1) + 0.5));
      std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(k),
                       scratch_.begin() + static_cast<std::ptrdiff_t>(n));
      upper_ = scratch_[k];
    }
  }
  delay_.push(x);
}

double lazy_median::median() noexcept {
  const std::size_t n = values_.size();
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  for (std::size_t i = 0; i < n; ++i) scratch_[i] = values_[i];
  return median_of(scratch_, n);
}

}  // namespace losslens::core::detail
