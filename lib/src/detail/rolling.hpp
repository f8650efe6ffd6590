#pragma once
// Fixed-memory rolling statistics used by the detectors.

#include <cstddef>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace losslens::core::detail {

/// A ring buffer of the last `capacity` values; index 0 is the oldest. (No modulo: a division
/// per access was a good part of the detectors' cost.)
class ring {
 public:
  explicit ring(std::size_t capacity) : buf_(capacity) {}
  void push(double x) noexcept {
    if (size_ < buf_.size()) {
      buf_[wrap(start_ + size_)] = x;
      ++size_;
      return;
    }
    buf_[start_] = x;  // overwrites the oldest
    start_ = wrap(start_ + 1);
  }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return buf_.size(); }
  bool full() const noexcept { return size_ == buf_.size(); }
  double operator[](std::size_t i) const noexcept { return buf_[wrap(start_ + i)]; }
  double back() const noexcept { return (*this)[size_ - 1]; }
  /// The largest value; -Inf when empty (NaN values are skipped). Order does not matter, so
  /// the filled part of the buffer is scanned as it lies, four running maxima side by side.
  double max() const noexcept {
    constexpr double none = -std::numeric_limits<double>::infinity();
    double m0 = none, m1 = none, m2 = none, m3 = none;
    const double* v = buf_.data();
    std::size_t i = 0;
    for (; i + 4 <= size_; i += 4) {
      m0 = v[i] > m0 ? v[i] : m0;
      m1 = v[i + 1] > m1 ? v[i + 1] : m1;
      m2 = v[i + 2] > m2 ? v[i + 2] : m2;
      m3 = v[i + 3] > m3 ? v[i + 3] : m3;
    }
    for (; i < size_; ++i) m0 = v[i] > m0 ? v[i] : m0;
    return std::max(std::max(m0, m1), std::max(m2, m3));
  }
  void clear() noexcept { size_ = start_ = 0; }
  /// Copies the values, oldest first, to out[0, size()).
  void copy_to(double* out) const noexcept {
    const std::size_t first = std::min(size_, buf_.size() - start_);
    std::copy(buf_.begin() + std::ptrdiff_t(start_), buf_.begin() + std::ptrdiff_t(start_ + first),
              out);
    std::copy(buf_.begin(), buf_.begin() + std::ptrdiff_t(size_ - first), out + first);
  }

 private:
  // i < 2 capacity here.
  std::size_t wrap(std::size_t i) const noexcept { return i >= buf_.size() ? i - buf_.size() : i; }

  std::vector<double> buf_;
  std::size_t start_ = 0;  // index of the oldest value
  std::size_t size_ = 0;
};

/// The last `window` values kept in arrival order and sorted at once, so that the median and
/// any order statistic are O(1) and the MAD O(log window) at every step, exactly; a push finds
/// where the oldest value leaves and the new one enters and moves the values between the two
/// places by one. No allocation after construction. Non-finite values are ignored (callers
/// filter them; NaN has no order).
class sorted_window {
 public:
  explicit sorted_window(std::size_t window);
  void push(double x) noexcept;
  std::size_t size() const noexcept { return order_.size(); }
  std::size_t capacity() const noexcept { return order_.capacity(); }
  bool full() const noexcept { return order_.full(); }
  /// The k-th smallest value (0-based, k < size()).
  double at(std::size_t k) const noexcept { return sorted_[k]; }
  /// Median (the mean of the two middle values for an even count); 0 when empty.
  double median() const noexcept {
    const std::size_t n = order_.size();
    if (n == 0) return 0;
    return n % 2 == 1 ? sorted_[n / 2] : 0.5 * (sorted_[n / 2 - 1] + sorted_[n / 2]);
  }
  /// Median absolute deviation from the median; 0 when empty.
  double mad() const noexcept;
  /// The q-quantile by nearest rank, as std::nth_element at round(q (n - 1)).
  double quantile(double q) const noexcept;
  /// The value pushed `age` pushes ago (0 = the latest).
  double recent(std::size_t age) const noexcept { return order_[order_.size() - 1 - age]; }
  void clear() noexcept;

 private:
  ring order_;  // arrival order; the oldest leaves first
  // The same values ascending in sorted_[0, size()), +Inf after them up to a multiple of 16
  // (so that a small window is ranked by counting over whole blocks, see rolling.cpp).
  std::vector<double> sorted_;
};

/// A series on the log scale while every value is positive (batch losses are close to
/// log-normal, so spreads and changes do not depend on the level) and on the linear scale from
/// the first value <= 0 on, with each value clipped to the median +- 8 robust scales of the
/// last 16: one outlier (a -50 batch, one corrupted batch) is flattened, a change that lasts
/// moves the median within a few steps.
class clipped_scale {
 public:
  clipped_scale() : window_(16) {}
  /// The working value of x (finite x only). Returns true when the scale switched from log to
  /// linear with this value: earlier working values are not comparable with later ones.
  bool push(double x, double& out) noexcept { return push(x, x > 0 ? std::log(x) : x, out); }
  /// push(x, out) with log_x = std::log(x) given (any value when x <= 0).
  bool push(double x, double log_x, double& out) noexcept;
  bool log_scale() const noexcept { return log_; }

 private:
  sorted_window window_;
  bool log_ = true;
};

/// Where a series changed from one straight line to another (t = the index). Two models are
/// fitted for every tau in [a + min_segment, b - min_segment]: a hinge (one line that bends at
/// tau: y = c0 + c1 t + c2 (t - tau)+, for a gradual change) and two separate lines (a jump at
/// tau); the model with the better BIC wins. Only changes for which `accept(slope before,
/// slope after, jump at tau)` holds count; returns a when none does. O(b - a).
template <class Accept>
std::size_t change_point(const double* y, std::size_t a, std::size_t b, std::size_t min_segment,
                         Accept&& accept);

/// Median and MAD of the last `window` values, exact at every push (a sorted_window); the MAD
/// is computed when first asked after a push. No allocation after construction.
class rolling_median {
 public:
  explicit rolling_median(std::size_t window) : values_(window) {}
  void push(double x) noexcept {
    values_.push(x);
    ++seen_;
    mad_valid_ = false;
  }
  std::size_t count() const noexcept { return seen_; }
  double median() const noexcept { return values_.median(); }
  double mad() const noexcept {
    if (!mad_valid_) {
      mad_ = values_.mad();
      mad_valid_ = true;
    }
    return mad_;
  }

  /// Robust scale: 1.4826 x MAD, floored at rel_floor x |median| and a tiny absolute value so a
  /// constant series does not divide by zero.
  double scale(double rel_floor = 1e-3) const noexcept;
  /// Forgets every value.
  void clear() noexcept {
    values_.clear();
    seen_ = 0;
    mad_valid_ = false;
  }

 private:
  sorted_window values_;
  std::size_t seen_ = 0;
  mutable double mad_ = 0;
  mutable bool mad_valid_ = false;
};

/// Robust baseline for outlier tests: median and MAD on the log scale while every value is
/// positive (batch losses and grad norms are right-skewed, close to log-normal), on the linear
/// scale from the first value <= 0 on (the baseline then restarts).
class robust_baseline {
 public:
  explicit robust_baseline(std::size_t window) : median_(window) {}
  void push(double x) noexcept { push(x, x > 0 ? std::log(x) : x); }
  /// push(x) for a caller that has log_x = std::log(x) already (any value when x <= 0).
  void push(double x, double log_x) noexcept;
  std::size_t count() const noexcept { return median_.count(); }
  /// The running median in the series' own units.
  double median() const noexcept;
  /// The running median on the working scale: log units while log_scale().
  double working_median() const noexcept { return median_.median(); }
  /// Robust z-score of x: (t(x) - median) / (1.4826 MAD) with t = log or identity.
  double z(double x) const noexcept { return z(x, x > 0 ? std::log(x) : x); }
  /// z(x) with log_x = std::log(x) given (any value when x <= 0).
  double z(double x, double log_x) const noexcept;
  /// max(z(x, log_x), 0), without computing the MAD when x is not above the median (half the
  /// steps of a flat series, most of a falling one).
  double upward_z(double x, double log_x) const noexcept;
  /// 1.4826 x MAD on the working scale (log units when log_scale()).
  double scale() const noexcept { return median_.scale(); }
  bool log_scale() const noexcept { return log_; }

 private:
  rolling_median median_;
  bool log_ = true;
  mutable double exp_of_ = 0, exp_ = 1;  // median() on the log scale: exp(exp_of_) = exp_
};

/// The 99th percentile of a series' values from `lag` to `lag + window` pushes ago: the run's
/// own usual extremes, measured on values old enough that a burst now (5 high values are
/// already 1% of 512) does not raise the bar it is measured against.
class lagged_tail {
 public:
  /// The percentile is recomputed every `stride` pushes. When the window is a whole number of
  /// strides and the percentile among the few largest (the 6th largest of 512), the window at
  /// each recomputation is a whole number of the stretches between recomputations, so each
  /// stretch keeps only its few largest values as they arrive and the percentile is taken from
  /// those (exact); otherwise the window is kept and selected over.
  lagged_tail(std::size_t window, std::size_t lag, std::size_t stride);
  void push(double x) noexcept;
  /// Values that have reached the tail window.
  std::size_t count() const noexcept { return seen_; }
  double upper() const noexcept { return upper_; }

 private:
  void recompute() noexcept;

  ring delay_, tail_;  // tail_ only without blocks
  std::vector<double> scratch_;
  std::size_t window_, stride_, since_ = 0, seen_ = 0;
  double upper_ = 0;
  // The stretches' largest values: block b holds its `top_` largest ascending in
  // tops_[b * top_, b * top_ + count), the block being filled is `current_`; `blocks_` slots
  // (the window's whole stretches plus the one being filled). top_ == 0: no blocks.
  std::size_t top_ = 0, blocks_ = 0, current_ = 0, completed_ = 0;
  std::vector<double> tops_;
  std::vector<std::size_t> counts_;
};

/// The median of the last `window` values, computed only when asked (for rules that need it
/// rarely: a held episode deciding whether the series recovered).
class lazy_median {
 public:
  explicit lazy_median(std::size_t window) : values_(window), scratch_(window), max_left_(window) {}
  void push(double x) noexcept {
    values_.push(x);
    // The largest value is kept as values come: a pass over the window only when it leaves.
    if (x >= max_) {
      max_ = x;
      max_left_ = values_.capacity();
    } else if (--max_left_ == 0) {
      rescan_max();
    }
  }
  std::size_t count() const noexcept { return values_.size(); }
  /// NaN when empty. The same value as sorted_window::median() of the same values.
  double median() noexcept;
  /// The largest value (-Inf when empty; NaN values are skipped), as ring::max() gives it: a
  /// bound on the median for rules that need the median only when it could cross a bar.
  /// O(1): kept up to date by push().
  double max() const noexcept { return max_; }

 private:
  void rescan_max() noexcept;

  ring values_;
  std::vector<double> scratch_;
  double max_ = -std::numeric_limits<double>::infinity();
  // Pushes until the value max_ was taken from leaves the window (its newest occurrence); at
  // first, until the window is full.
  std::size_t max_left_;
};

/// Exponential moving average with Adam's bias correction: the weights of the values seen so
/// far are normalised to 1, so the first value is the first average and, early on, the average
/// is close to the plain mean of what was seen. (An average that starts at the first value and
/// moves by alpha keeps (1 - alpha)^n of that one value: with alpha 0.01 still 60% after 50
/// steps, so one lucky first batch set the "best" of a flat run.)
class ema {
 public:
  explicit ema(double alpha) : alpha_(alpha) {}
  double push(double x) noexcept {
    raw_ += alpha_ * (x - raw_);
    if (decay_ != 0) {
      decay_ *= 1 - alpha_;
      const double w = 1 - decay_;
      // Once 1 - decay rounds to 1 it stays there: the division is exact (by 1) and skipped.
      if (w == 1) decay_ = 0;
      value_ = raw_ / w;
    } else {
      value_ = raw_;
    }
    ++n_;
    return value_;
  }
  double value() const noexcept { return value_; }
  std::int64_t count() const noexcept { return n_; }

 private:
  double alpha_;
  double raw_ = 0;    // the average started at 0
  double decay_ = 1;  // (1 - alpha)^n: the weight it still gives that 0
  double value_ = 0;
  std::int64_t n_ = 0;
};

template <class Accept>
std::size_t change_point(const double* y, std::size_t a, std::size_t b, std::size_t min_segment,
                         Accept&& accept) {
  if (b <= a || b - a < 2 * min_segment) return a;
  // Prefix sums relative to y[a] (keeps the differences of sums exact).
  struct sums {
    double n = 0, t = 0, tt = 0, y = 0, yy = 0, ty = 0;
  };
  std::vector<sums> p(b - a + 1);
  for (std::size_t i = a; i < b; ++i) {
    const double t = double(i - a), v = y[i] - y[a];
    sums q = p[i - a];
    q.n += 1;
    q.t += t;
    q.tt += t * t;
    q.y += v;
    q.yy += v * v;
    q.ty += t * v;
    p[i - a + 1] = q;
  }
  auto range = [&](std::size_t from, std::size_t to) {
    const sums& P = p[from - a];
    const sums& Q = p[to - a];
    return sums{Q.n - P.n, Q.t - P.t, Q.tt - P.tt, Q.y - P.y, Q.yy - P.yy, Q.ty - P.ty};
  };
  struct line {
    double sse, slope, icpt;
  };
  auto fit = [](const sums& s) {
    const double ctt = s.tt - s.t * s.t / s.n, cty = s.ty - s.t * s.y / s.n;
    const double slope = ctt > 0 ? cty / ctt : 0;
    return line{(s.yy - s.y * s.y / s.n) - slope * cty, slope, (s.y - slope * s.t) / s.n};
  };
  const sums all = range(a, b);
  const double n = all.n;
  double best_jump = std::numeric_limits<double>::infinity(), best_hinge = best_jump;
  std::size_t at_jump = a, at_hinge = a;
  for (std::size_t tau = a + min_segment; tau + min_segment <= b; ++tau) {
    const double t0 = double(tau - a);
    const sums suf = range(tau, b);
    // Two lines.
    const line l = fit(range(a, tau)), r = fit(suf);
    const double jump = (r.icpt + r.slope * t0) - (l.icpt + l.slope * t0);
    if (accept(l.slope, r.slope, jump) && l.sse + r.sse < best_jump) {
      best_jump = l.sse + r.sse;
      at_jump = tau;
    }
    // Hinge: regressors 1, t, h = (t - tau)+; normal equations solved by Cramer's rule.
    const double Sh = suf.t - t0 * suf.n, Shh = suf.tt - 2 * t0 * suf.t + t0 * t0 * suf.n,
                 Sth = suf.tt - t0 * suf.t, Shy = suf.ty - t0 * suf.y;
    const double m[3][3] = {{n, all.t, Sh}, {all.t, all.tt, Sth}, {Sh, Sth, Shh}};
    const double v[3] = {all.y, all.ty, Shy};
    auto det3 = [](const double(&q)[3][3]) {
      return q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1]) -
             q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0]) +
             q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0]);
    };
    const double d = det3(m);
    if (!(std::abs(d) > 0)) continue;
    double c[3];
    for (int k = 0; k < 3; ++k) {
      double q[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) q[i][j] = j == k ? v[i] : m[i][j];
      c[k] = det3(q) / d;
    }
    const double sse = all.yy - (c[0] * v[0] + c[1] * v[1] + c[2] * v[2]);
    if (accept(c[1], c[1] + c[2], 0.0) && sse < best_hinge) {
      best_hinge = sse;
      at_hinge = tau;
    }
  }
  if (at_jump == a) return at_hinge;
  if (at_hinge == a) return at_jump;
  // BIC: the jump model has one more parameter (5 with tau, against 4).
  const double floor = 1e-12 * (all.yy - all.y * all.y / n) + 1e-300;
  const double bic_jump = n * std::log(std::max(best_jump, floor) / n) + 5 * std::log(n);
  const double bic_hinge = n * std::log(std::max(best_hinge, floor) / n) + 4 * std::log(n);
  return bic_jump < bic_hinge ? at_jump : at_hinge;
}

}  // namespace losslens::core::detail
