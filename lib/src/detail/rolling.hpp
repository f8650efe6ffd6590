#pragma once
// Fixed-memory rolling statistics used by the detectors.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace losslens::detail {

/// A ring buffer of the last `capacity` values; index 0 is the oldest.
class ring {
 public:
  explicit ring(std::size_t capacity) : buf_(capacity) {}
  void push(double x) noexcept {
    buf_[head_] = x;
    head_ = (head_ + 1) % buf_.size();
    if (size_ < buf_.size()) ++size_;
  }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return buf_.size(); }
  bool full() const noexcept { return size_ == buf_.size(); }
  double operator[](std::size_t i) const noexcept {
    return buf_[(head_ + buf_.size() - size_ + i) % buf_.size()];
  }
  double back() const noexcept { return (*this)[size_ - 1]; }
  void clear() noexcept { size_ = head_ = 0; }

 private:
  std::vector<double> buf_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

/// Median and MAD of the last `window` values, recomputed every `stride` pushes (and whenever
/// fewer than `window` values have been seen), so the cost is O(window / stride) amortized per
/// push: constant for fixed parameters. No allocation after construction.
class rolling_median {
 public:
  rolling_median(std::size_t window, std::size_t stride);
  void push(double x) noexcept;
  std::size_t count() const noexcept { return seen_; }
  double median() const noexcept { return median_; }
  double mad() const noexcept { return mad_; }

  /// Robust scale: 1.4826 x MAD, floored at rel_floor x |median| and a tiny absolute value so a
  /// constant series does not divide by zero.
  double scale(double rel_floor = 1e-3) const noexcept;
  /// Forgets every value.
  void clear() noexcept;

 private:
  void recompute() noexcept;
  ring values_;
  std::vector<double> scratch_;
  std::size_t stride_;
  std::size_t since_ = 0;
  std::size_t seen_ = 0;
  double median_ = 0;
  double mad_ = 0;
};

/// Robust baseline for outlier tests: median and MAD on the log scale while every value is
/// positive (batch losses and grad norms are right-skewed, close to log-normal), on the linear
/// scale from the first value <= 0 on (the baseline then restarts).
class robust_baseline {
 public:
  robust_baseline(std::size_t window, std::size_t stride) : median_(window, stride) {}
  void push(double x) noexcept;
  std::size_t count() const noexcept { return median_.count(); }
  /// The running median in the series' own units.
  double median() const noexcept;
  /// Robust z-score of x: (t(x) - median) / (1.4826 MAD) with t = log or identity.
  double z(double x) const noexcept;
  /// 1.4826 x MAD on the working scale (log units when log_scale()).
  double scale() const noexcept { return median_.scale(); }
  bool log_scale() const noexcept { return log_; }


 private:
  rolling_median median_;
  bool log_ = true;
};

/// The 99th percentile of a series' values from `lag` to `lag + window` pushes ago: the run's
/// own usual extremes, measured on values old enough that a burst now (5 high values are
/// already 1% of 512) does not raise the bar it is measured against.
class lagged_tail {
 public:
  /// The percentile is recomputed every `stride` pushes (one selection over the window).
  lagged_tail(std::size_t window, std::size_t lag, std::size_t stride)
      : delay_(lag), tail_(window), scratch_(window), stride_(stride) {}
  void push(double x) noexcept;
  /// Values that have reached the tail window.
  std::size_t count() const noexcept { return seen_; }
  double upper() const noexcept { return upper_; }

 private:
  ring delay_, tail_;
  std::vector<double> scratch_;
  std::size_t stride_, since_ = 0, seen_ = 0;
  double upper_ = 0;
};

/// The median of the last `window` values, computed only when asked (for rules that need it
/// rarely: a held episode deciding whether the series recovered).
class lazy_median {
 public:
  explicit lazy_median(std::size_t window) : values_(window), scratch_(window) {}
  void push(double x) noexcept { values_.push(x); }
  std::size_t count() const noexcept { return values_.size(); }
  /// NaN when empty.
  double median() noexcept;

 private:
  ring values_;
  std::vector<double> scratch_;
};

/// Exponential moving average that starts at the first value.
class ema {
 public:
  explicit ema(double alpha) : alpha_(alpha) {}
  double push(double x) noexcept {
    value_ = n_ == 0 ? x : value_ + alpha_ * (x - value_);
    ++n_;
    return value_;
  }
  double value() const noexcept { return value_; }
  std::int64_t count() const noexcept { return n_; }

 private:
  double alpha_;
  double value_ = 0;
  std::int64_t n_ = 0;
};

}  // namespace losslens::detail
