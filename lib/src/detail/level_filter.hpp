#pragma once
// The loss winsorized against its recent median and MAD: the level the rules on a loss's
// level (divergence, plateau, oscillation, chance_level) read.

#include <algorithm>
#include <cmath>

#include "detail/detector.hpp"
#include "detail/rolling.hpp"

namespace losslens::core::detail {

/// The loss winsorized against its recent median and MAD (see step_context::level_loss); the
/// analyzer keeps one for the total, chance_level one for a class task's own loss.
class level_filter {
 public:
  level_filter() : median_(64), slow_(0.01) {}
  double update(double x) {
    if (!std::isfinite(x)) return nan;
    double out = x;
    if (median_.count() >= 16) {
      // The bound is max(5 robust scales, half the median): within half the median of it no
      // value is clipped, and the MAD is not needed.
      const double m = median_.median();
      if (std::abs(x - m) > 0.5 * std::abs(m)) {
        const double s = std::max(5 * median_.scale(), 0.5 * std::abs(m));
        out = std::clamp(x, m - s, m + s);
      }
    }
    median_.push(x);
    const double e = slow_.push(out);
    if (slow_.count() <= 50) {
      initial_sum_ += out;
      initial_ = initial_sum_ / double(slow_.count());
      best_ = e;
    }
    best_ = std::min(best_, e);
    return out;
  }
  double range() const noexcept {
    if (slow_.count() < 50) return nan;
    return initial_ - best_ > 0 ? initial_ - best_ : std::abs(initial_);
  }

 private:
  rolling_median median_;
  ema slow_;
  double initial_sum_ = 0, initial_ = 0, best_ = 0;
};

}  // namespace losslens::core::detail
