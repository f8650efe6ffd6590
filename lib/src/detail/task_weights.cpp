#include "detail/task_weights.hpp"

#include <algorithm>
#include <cmath>

#include "detail/detector.hpp"

namespace losslens::core::detail {

weight_fit::weight_fit(std::size_t tasks)
    : n_(tasks),
      xtx_(tasks * tasks, 0.0),
      xty_(tasks, 0.0),
      w_(tasks, 1.0),
      a_(tasks * tasks),
      b_(tasks),
      fit_(tasks) {}

void weight_fit::solve() {
  // Gaussian elimination with partial pivoting on a copy of the normal equations (in
  // buffers allocated once: this runs every 16 steps).
  std::vector<double>& a = a_;
  std::vector<double>& b = b_;
  std::copy(xtx_.begin(), xtx_.end(), a.begin());
  std::copy(xty_.begin(), xty_.end(), b.begin());
  for (std::size_t c = 0; c < n_; ++c) {
    std::size_t p = c;
    for (std::size_t r = c + 1; r < n_; ++r)
      if (std::abs(a[r * n_ + c]) > std::abs(a[p * n_ + c])) p = r;
    if (!(std::abs(a[p * n_ + c]) > 0)) return;
    for (std::size_t k = 0; k < n_; ++k) std::swap(a[c * n_ + k], a[p * n_ + k]);
    std::swap(b[c], b[p]);
    for (std::size_t r = c + 1; r < n_; ++r) {
      const double f = a[r * n_ + c] / a[c * n_ + c];
      for (std::size_t k = c; k < n_; ++k) a[r * n_ + k] -= f * a[c * n_ + k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double>& w = fit_;
  for (std::size_t c = n_; c-- > 0;) {
    double v = b[c];
    for (std::size_t k = c + 1; k < n_; ++k) v -= a[c * n_ + k] * w[k];
    w[c] = v / a[c * n_ + c];
  }
  // Residual sum of squares from the normal equations: y'y - 2 w'X'y + w'X'X w.
  double rss = yy_;
  for (std::size_t i = 0; i < n_; ++i) {
    rss -= 2 * w[i] * xty_[i];
    for (std::size_t j = 0; j < n_; ++j) rss += w[i] * xtx_[i * n_ + j] * w[j];
  }
  bool ok = yy_ > 0 && std::max(rss, 0.0) <= 1e-4 * yy_;
  for (double v : w) ok = ok && std::isfinite(v) && v > 0;
  fitted_ = ok;
  if (!ok) return;
  // Weights are set by people (1, 0.5, 10, 1e-3): rounded to 3 significant digits, float32
  // rounding of the logged losses does not move them (and a plain sum gives exactly 1).
  for (double& v : w) {
    const double scale = std::pow(10.0, std::floor(std::log10(v)) - 2);
    v = std::round(v / scale) * scale;
  }
  w_ = w;
}

bool task_weights::auxiliary(std::size_t i, double fraction) const noexcept {
  if (pending_ || !(weight_[i] > 0)) return false;
  double top = 0;
  for (double w : weight_) top = std::max(top, w);
  return weight_[i] <= fraction * top;
}

}  // namespace losslens::core::detail
