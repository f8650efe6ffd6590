#include "detail/rolling.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace losslens::core::detail {

namespace {
// Windows up to this many values are ranked by rank_pair, larger ones by binary searches.
constexpr std::size_t count_limit = 256;
constexpr double inf = std::numeric_limits<double>::infinity();

constexpr std::size_t block = 16;

// c ? t : f without a branch: on a coin flip, GCC turned ?: and std::min into one, mispredicted
// at every other call.
std::size_t select(bool c, std::size_t t, std::size_t f) noexcept {
  const std::size_t m = std::size_t(0) - std::size_t(c);  // all ones when c
  return (t & m) | (f & ~m);
}

// How many of v[i, i + block) are below a (or not above a, with `upto`).
template <bool upto>
std::size_t count_in_block(const double* v, double a) noexcept {
#if defined(__SSE2__)
  const __m128d va = _mm_set1_pd(a);
  __m128i c0 = _mm_setzero_si128(), c1 = c0;
#pragma GCC unroll 4  // -O2 does not unroll: the loop's own counting was a quarter of it
  for (std::size_t i = 0; i < block; i += 4) {
    const __m128d x0 = _mm_loadu_pd(v + i), x1 = _mm_loadu_pd(v + i + 2);
    // A true compare is all ones, i.e. -1: subtracting it counts.
    c0 = _mm_sub_epi64(c0, _mm_castpd_si128(upto ? _mm_cmple_pd(x0, va) : _mm_cmplt_pd(x0, va)));
    c1 = _mm_sub_epi64(c1, _mm_castpd_si128(upto ? _mm_cmple_pd(x1, va) : _mm_cmplt_pd(x1, va)));
  }
  const __m128i c = _mm_add_epi64(c0, c1);
  return std::size_t(_mm_cvtsi128_si64(c) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(c, c)));
#else
  std::size_t c = 0;
  for (std::size_t i = 0; i < block; ++i) c += upto ? v[i] <= a : v[i] < a;
  return c;
#endif
}

// How many of the ascending v[0, n) (n a multiple of `block`) are below a, and how many are
// not above b: the indexes std::lower_bound(a) and std::upper_bound(b) return. The first
// values of the blocks say which block holds each boundary (all compared, no chain of
// dependent loads and mispredicted branches as in a binary search); that block is counted.
void rank_pair(const double* v, std::size_t n, double a, double b, std::size_t& below_a,
               std::size_t& upto_b) noexcept {
  std::size_t ja = 0, jb = 0;  // blocks after the first that start below a / not above b
  for (std::size_t j = block; j < n; j += block) {
    ja += v[j] < a;
    jb += v[j] <= b;
  }
  below_a = ja * block + count_in_block<false>(v + ja * block, a);
  upto_b = jb * block + count_in_block<true>(v + jb * block, b);
}

// std::lower_bound / std::upper_bound without branches on the data (the comparisons of a
// median window are coin flips, and every mispredicted one cost more than the search), for
// windows above count_limit.
std::size_t lower_bound_of(const double* v, std::size_t n, double x) noexcept {
  if (n == 0) return 0;
  const double* p = v;
  while (n > 1) {
    const std::size_t half = n / 2;
    p += std::size_t(p[half - 1] < x) * half;
    n -= half;
  }
  return std::size_t(p - v) + std::size_t(*p < x);
}
std::size_t upper_bound_of(const double* v, std::size_t n, double x) noexcept {
  if (n == 0) return 0;
  const double* p = v;
  while (n > 1) {
    const std::size_t half = n / 2;
    p += std::size_t(!(x < p[half - 1])) * half;
    n -= half;
  }
  return std::size_t(p - v) + std::size_t(!(x < *p));
}

std::size_t padded(std::size_t window) noexcept { return (window + block - 1) / block * block; }
}  // namespace

sorted_window::sorted_window(std::size_t window)
    : order_(window), sorted_(std::max(padded(window), block), inf) {}

void sorted_window::clear() noexcept {
  std::fill(sorted_.begin(), sorted_.begin() + std::ptrdiff_t(order_.size()), inf);
  order_.clear();
}

void sorted_window::push(double x) noexcept {
  if (!std::isfinite(x)) return;
  const std::size_t n = order_.size();
  double* v = sorted_.data();
  const bool full = order_.full();
  // The oldest value leaves (when full) at `out`, x enters before `in`: indexes in the array
  // as it is now.
  const double old = full ? order_[0] : x;
  std::size_t out = 0, in = 0;
  if (sorted_.size() <= count_limit) {
    rank_pair(v, sorted_.size(), old, x, out, in);
  } else {
    out = lower_bound_of(v, n, old);
    in = upper_bound_of(v, n, x);
  }
  if (!full) {
    std::memmove(v + in + 1, v + in, (n - in) * sizeof(double));
    v[in] = x;
    order_.push(x);
    return;
  }
  // Only the values between the two places move, by one: left (r = 1) when x enters above
  // the place the oldest leaves, else right. Which way is a coin flip (see select).
  const bool left = in > out;
  const std::size_t r = left, lo = select(left, out, in), span = select(left, in - out, out - in);
  std::memmove(v + lo + 1 - r, v + lo + r, (span - r) * sizeof(double));
  v[in - r] = x;
  order_.push(x);
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
// the k + 1 smallest come from the left (without branches: each comparison is a coin flip).
// With `next`, also the (k + 1)-th smallest: the smaller of the first distances not taken on
// either side (every distance taken is at most every one not taken).
double kth_distance(const double* lo, std::size_t nl, const double* hi, std::size_t nr, double m,
                    std::size_t k, double* next = nullptr) noexcept {
  std::size_t a = k + 1 > nr ? k + 1 - nr : 0, b = std::min(k + 1, nl);
  while (a < b) {
    const std::size_t i = (a + b) / 2, j = k + 1 - i;  // j >= 1 here
    const bool left = hi[j - 1] - m > m - lo[-1 - std::ptrdiff_t(i)];
    a = select(left, i + 1, a);
    b = select(left, b, i);
  }
  const std::size_t j = k + 1 - a;
  const double l = a > 0 ? m - lo[-std::ptrdiff_t(a)] : -1;
  const double r = j > 0 ? hi[j - 1] - m : -1;
  if (next) {
    constexpr double none = std::numeric_limits<double>::infinity();
    *next = std::min(a < nl ? m - lo[-1 - std::ptrdiff_t(a)] : none, j < nr ? hi[j] - m : none);
  }
  return std::max(l, r);
}
}  // namespace

double sorted_window::mad() const noexcept {
  const std::size_t n = order_.size();
  if (n == 0) return 0;
  const double m = median();
  const double* v = sorted_.data();
  // Values left of p are below the median, from p on at or above it: p is n / 2 but for ties
  // around the middle, so it is found from there.
  std::size_t p = n / 2;
  while (p > 0 && !(v[p - 1] < m)) --p;
  while (p < n && v[p] < m) ++p;
  const double* lo = v + p;  // lo[-1] is the closest below
  if (n % 2 == 1) return kth_distance(lo, p, v + p, n - p, m, n / 2);
  double upper = 0;
  const double lower = kth_distance(lo, p, v + p, n - p, m, n / 2 - 1, &upper);
  return 0.5 * (lower + upper);
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
  const double m = median_.median();
  if (!log_) return m;
  // The middle of the window stays put on about half the pushes: exp only when it moved.
  if (!(m == exp_of_) || std::signbit(m) != std::signbit(exp_of_)) {
    exp_of_ = m;
    exp_ = std::exp(m);
  }
  return exp_;
}

double robust_baseline::z(double x, double log_x) const noexcept {
  if (log_ && !(x > 0)) return 0;  // not an upward outlier on the log scale
  return ((log_ ? log_x : x) - median_.median()) / median_.scale();
}

double robust_baseline::upward_z(double x, double log_x) const noexcept {
  if (log_ && !(x > 0)) return 0;
  const double d = (log_ ? log_x : x) - median_.median();
  return d > 0 ? d / median_.scale() : 0;
}

namespace {
// The median of v[0, n) (n > 0) as sorted_window::median() takes it; v is reordered.
double median_of(double* v, std::size_t n) noexcept {
  double* mid = v + n / 2;
  std::nth_element(v, mid, v + n);
  const double hi = *mid;
  if (n % 2 == 1) return hi;
  const double lo = *std::max_element(v, mid);
  return 0.5 * (lo + hi);
}
}  // namespace

namespace {
// Offers x to top[0, m), the m largest values so far in ascending order: x takes its place
// when it is above the smallest of them, which drops out.
void offer_largest(double* top, std::size_t m, double x) noexcept {
  if (!(x > top[0])) return;
  std::size_t j = 1;
  for (; j < m && top[j] < x; ++j) top[j - 1] = top[j];
  top[j - 1] = x;
}

// The k-th smallest (0-based) of v[0, n), as std::nth_element gives it. When k is among the
// last few (the 99th percentile: the 6th largest of 512), one pass keeps the n - k largest
// seen so far, most values failing a single comparison; else a selection. v is reordered.
double kth_smallest(double* v, std::size_t n, std::size_t k) noexcept {
  constexpr std::size_t max_top = 16;
  const std::size_t m = n - k;  // the answer is the m-th largest
  if (m > max_top) {
    std::nth_element(v, v + k, v + n);
    return v[k];
  }
  double top[max_top] = {};  // the m largest so far, ascending: top[0] is the m-th largest
  std::copy(v, v + m, top);
  std::sort(top, top + m);
  auto offer = [&](double x) { offer_largest(top, m, x); };
  std::size_t i = m;
  // Four at a time: most blocks have no value above the bar (one branch for the four).
  for (; i + 4 <= n; i += 4) {
    if (!(std::max(std::max(v[i], v[i + 1]), std::max(v[i + 2], v[i + 3])) > top[0])) continue;
    for (std::size_t j = i; j < i + 4; ++j) offer(v[j]);
  }
  for (; i < n; ++i) offer(v[i]);
  return top[0];
}
}  // namespace

namespace {
// The percentile's index in an ascending window of n values (nearest rank).
std::size_t p99_index(std::size_t n) noexcept {
  return std::min(n - 1, static_cast<std::size_t>(0.99 * double(n - 1) + 0.5));
}
// Blocks are used when every window size up to `window` asks for at most this many of the
// largest values and the window holds at most this many blocks.
constexpr std::size_t max_block_top = 16, max_blocks = 64;
}  // namespace

lagged_tail::lagged_tail(std::size_t window, std::size_t lag, std::size_t stride)
    : delay_(lag), tail_(0), window_(window), stride_(stride) {
  std::size_t need = 0;  // the most of the largest values any window size asks for
  for (std::size_t n = 1; n <= window; ++n) need = std::max(need, n - p99_index(n));
  const std::size_t blocks = stride > 0 ? window / stride : 0;
  if (stride > 0 && window % stride == 0 && blocks >= 1 && blocks <= max_blocks &&
      need <= max_block_top) {
    top_ = need;
    blocks_ = blocks + 1;
    tops_.assign(blocks_ * top_, 0.0);
    counts_.assign(blocks_, 0);
    scratch_.resize(blocks * top_);
  } else {
    tail_ = ring(window);
    scratch_.resize(window);
  }
}

void lagged_tail::push(double x) noexcept {
  if (delay_.full()) {
    const double v = delay_[0];
    ++seen_;
    if (top_ > 0) {
      // Keep the block's top_ largest, ascending: most values fail the first comparison.
      double* t = tops_.data() + current_ * top_;
      std::size_t& c = counts_[current_];
      if (c < top_) {
        std::size_t j = c++;
        for (; j > 0 && t[j - 1] > v; --j) t[j] = t[j - 1];
        t[j] = v;
      } else {
        offer_largest(t, top_, v);
      }
    } else {
      tail_.push(v);
    }
    if (++since_ >= stride_ || seen_ <= 1) {
      since_ = 0;
      recompute();
    }
  }
  delay_.push(x);
}

void lagged_tail::recompute() noexcept {
  if (top_ == 0) {
    const std::size_t n = tail_.size();
    tail_.copy_to(scratch_.data());
    upper_ = kth_smallest(scratch_.data(), n, p99_index(n));
    return;
  }
  // The block just completed closes a stretch; the window is the last blocks_ - 1 of them
  // (the first holds one value, the others stride_), or all while fewer.
  ++completed_;
  const std::size_t n = std::min(seen_, window_);
  const std::size_t want = n - p99_index(n);  // the want-th largest, want <= top_
  const std::size_t in_window = std::min(completed_, blocks_ - 1);
  std::size_t total = 0;
  for (std::size_t k = 0, b = current_; k < in_window; ++k, b = b == 0 ? blocks_ - 1 : b - 1) {
    const double* t = tops_.data() + b * top_;
    std::copy(t, t + counts_[b], scratch_.data() + total);
    total += counts_[b];
  }
  upper_ = kth_smallest(scratch_.data(), total, total - want);
  current_ = current_ + 1 == blocks_ ? 0 : current_ + 1;
  counts_[current_] = 0;
}

void lazy_median::rescan_max() noexcept {
  // Only called on a full window (max_left_ counts from capacity): the value at index i (0 the
  // oldest) leaves after i + 1 more pushes. Ties take the newest, which stays longest.
  max_ = -std::numeric_limits<double>::infinity();
  max_left_ = values_.capacity();  // none found (all NaN): look again after a window
  for (std::size_t i = 0; i < values_.size(); ++i)
    if (values_[i] >= max_) {
      max_ = values_[i];
      max_left_ = i + 1;
    }
}

double lazy_median::median() noexcept {
  const std::size_t n = values_.size();
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  values_.copy_to(scratch_.data());
  return median_of(scratch_.data(), n);
}

}  // namespace losslens::core::detail
