#include "detail/rolling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace losslens::detail {

rolling_median::rolling_median(std::size_t window, std::size_t stride)
    : values_(window), scratch_(window), stride_(std::max<std::size_t>(1, stride)) {}

void rolling_median::push(double x) noexcept {
  values_.push(x);
  ++seen_;
  // While the window fills, recompute every push so early estimates are exact.
  if (++since_ >= stride_ || !values_.full()) {
    since_ = 0;
    recompute();
  }
}

double rolling_median::scale(double rel_floor) const noexcept {
  return std::max({1.4826 * mad_, rel_floor * std::abs(median_), 1e-9});
}

void rolling_median::clear() noexcept {
  values_.clear();
  since_ = seen_ = 0;
  median_ = mad_ = 0;
}

void robust_baseline::push(double x) noexcept {
  if (log_ && !(x > 0)) {
    log_ = false;
    median_.clear();
  }
  median_.push(log_ ? std::log(x) : x);
}

double robust_baseline::median() const noexcept {
  return log_ ? std::exp(median_.median()) : median_.median();
}

double robust_baseline::z(double x) const noexcept {
  if (log_ && !(x > 0)) return 0;  // not an upward outlier on the log scale
  return ((log_ ? std::log(x) : x) - median_.median()) / median_.scale();
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

void rolling_median::recompute() noexcept {
  const std::size_t n = values_.size();
  if (n == 0) return;
  for (std::size_t i = 0; i < n; ++i) scratch_[i] = values_[i];
  median_ = median_of(scratch_, n);
  for (std::size_t i = 0; i < n; ++i) scratch_[i] = std::abs(values_[i] - median_);
  mad_ = median_of(scratch_, n);
}

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

}  // namespace losslens::detail
