// Compiled with -mavx2 -mfma -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2 where the build supports
// it (hooks/CMakeLists.txt); elsewhere available() is false and the loops are never called.
// Keep this file free of std:: templates and of inline functions shared with other sources (see
// loss_simd.hpp): only at::vec::AVX2 and the anonymous namespace below are instantiated here.

#include "loss_simd.hpp"

#include <cstdlib>

#ifdef CPU_CAPABILITY_AVX2
#include <ATen/cpu/vec/vec.h>
#endif

namespace losslens::hooks::detail::simd {

#ifdef CPU_CAPABILITY_AVX2

namespace {

using at::vec::Vectorized;

/// Partial sums of at most this many vectors stay in the row dtype before they go to a double:
/// 32 float terms per lane, so a float sum of positive terms errs by ~2^-19 at most.
constexpr std::int64_t block_vectors = 32;

// Cross-lane reductions and partial loads/stores: at::vec has no cheap ones, so these use the
// AVX2 intrinsics directly (Vectorized<float> and Vectorized<double> convert to __m256 and
// __m256d). On rows of ten classes they are most of the work.

double lane_sum(__m256d v) {
  const __m128d half = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(half, _mm_unpackhi_pd(half, half)));
}
double lane_sum(__m256 v) {  // summed in double
  return lane_sum(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}

/// Largest lane, NaN if any lane is NaN.
float lane_max(__m256 v) {
  if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) return __builtin_nanf("");
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}
double lane_max(__m256d v) {
  if (_mm256_movemask_pd(_mm256_cmp_pd(v, v, _CMP_UNORD_Q))) return __builtin_nan("");
  const __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}

/// Number of lanes set in a comparison mask.
int lane_count(__m256 mask) {
  return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(mask)));
}
int lane_count(__m256d mask) {
  return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_pd(mask)));
}

// Masks of the first n lanes (0 < n < lanes): all-ones words, then zeros. Constant data only:
// nothing compiled with AVX2 may run before the CPU has been checked.
constexpr std::int32_t mask_words32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
constexpr std::int64_t mask_words64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};

__m256i first_lanes(std::int64_t n, const float*) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask_words32 + 8 - n));
}
__m256i first_lanes(std::int64_t n, const double*) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask_words64 + 4 - n));
}

/// The first n elements of p, the other lanes from `fill`; reads nothing past p + n.
Vectorized<float> load_partial(const float* p, std::int64_t n, const Vectorized<float>& fill) {
  const __m256i m = first_lanes(n, p);
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
Vectorized<double> load_partial(const double* p, std::int64_t n, const Vectorized<double>& fill) {
  const __m256i m = first_lanes(n, p);
  return _mm256_blendv_pd(fill, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
}
void store_partial(float* p, std::int64_t n, const Vectorized<float>& v) {
  _mm256_maskstore_ps(p, first_lanes(n, p), v);
}
void store_partial(double* p, std::int64_t n, const Vectorized<double>& v) {
  _mm256_maskstore_pd(p, first_lanes(n, p), v);
}

template <class T>
T row_max(const T* r, std::int64_t n) {
  using V = Vectorized<T>;
  constexpr std::int64_t w = V::size();
  const V lowest(-__builtin_inf());
  // Two independent accumulators: max has a latency of several cycles.
  V m0 = lowest, m1 = lowest;
  std::int64_t c = 0;
  for (; c + 2 * w <= n; c += 2 * w) {
    m0 = at::vec::maximum(m0, V::loadu(r + c));
    m1 = at::vec::maximum(m1, V::loadu(r + c + w));
  }
  for (; c + w <= n; c += w) m0 = at::vec::maximum(m0, V::loadu(r + c));
  if (c < n) m1 = at::vec::maximum(m1, load_partial(r + c, n - c, lowest));
  return lane_max(at::vec::maximum(m0, m1));
}

template <class T>
T scalar_exp(T d) {
  if constexpr (sizeof(T) == sizeof(float))
    return __builtin_expf(d);
  else
    return __builtin_exp(d);
}

template <class T>
T scalar_log1p(T d) {
  if constexpr (sizeof(T) == sizeof(float))
    return __builtin_log1pf(d);
  else
    return __builtin_log1p(d);
}

template <class T>
softmax_row_stats row_stats(const T* r, std::int64_t n, const T* weight, bool want_gap, T* e_out) {
  using V = Vectorized<T>;
  constexpr std::int64_t w = V::size();
  const T m = row_max(r, n);
  const V vm(m), zero(T(0)), lowest(-__builtin_inf());
  // S' = (sum of e_c below the maximum) + (number of maxima - 1): the one excluded maximum
  // contributes exactly 1 to S, so no sum ever adds tiny terms to 1 and then subtracts it.
  V below(T(0)), gap(T(0));
  double below_d = 0, gap_d = 0;
  std::int64_t ties = 0, in_block = 0;
  // d = x - m for the exp and the maxima; dg = d where it enters the gap (0 in padding lanes).
  const auto add = [&](const V& d, const V& dg, const V& wv) {
    const V e = d.exp();
    below = below + V::blendv(zero, e, d < zero);
    ties += lane_count(d == zero);
    if (want_gap) gap = weight ? at::vec::fmadd(dg, wv, gap) : gap + dg;
    return e;
  };
  const auto flush = [&] {
    below_d += lane_sum(below);
    gap_d -= lane_sum(gap);
    below = gap = zero;
    in_block = 0;
  };
  std::int64_t c = 0;
  for (; c + w <= n; c += w) {
    const V d = V::loadu(r + c) - vm;
    const V e = add(d, d, weight ? V::loadu(weight + c) : zero);
    if (e_out) e.store(e_out + c);
    if (++in_block == block_vectors) flush();
  }
  if (c < n) {
    // Padding lanes hold -inf: their exp is 0 and they are not maxima.
    const V d = load_partial(r + c, n - c, lowest) - vm;
    const V e =
        add(d, V::set(zero, d, n - c), weight ? load_partial(weight + c, n - c, zero) : zero);
    if (e_out) store_partial(e_out + c, n - c, e);
  }
  flush();
  return {static_cast<double>(m), below_d + static_cast<double>(ties - 1), gap_d};
}

template <class T>
void row_grad(const T* e, std::int64_t n, const T* weight, T alpha, T beta, T* g) {
  using V = Vectorized<T>;
  constexpr std::int64_t w = V::size();
  const V va(alpha), vb(beta), zero(T(0)), one(T(1));
  const auto value = [&](const V& ev, const V& wv) {
    return beta == 0 ? va * ev : va * ev - vb * wv;
  };
  std::int64_t c = 0;
  for (; c + w <= n; c += w)
    value(V::loadu(e + c), weight ? V::loadu(weight + c) : one).store(g + c);
  if (c < n) {
    const V wv = weight ? load_partial(weight + c, n - c, zero) : one;
    store_partial(g + c, n - c, value(load_partial(e + c, n - c, zero), wv));
  }
}

template <class T>
void stats_rows(const T* x, std::int64_t rows, std::int64_t cols, const T* weight, bool want_gap,
                softmax_row_stats* out, T* exp_out) {
  for (std::int64_t i = 0; i < rows; ++i)
    out[i] =
        row_stats(x + i * cols, cols, weight, want_gap, exp_out ? exp_out + i * cols : nullptr);
}

template <class T>
void grad_rows(const T* e, std::int64_t rows, std::int64_t cols, const T* weight,
               const double* alpha, const double* beta, T* grad) {
  for (std::int64_t i = 0; i < rows; ++i)
    row_grad(e + i * cols, cols, weight, static_cast<T>(alpha[i]), static_cast<T>(beta[i]),
             grad + i * cols);
}

/// One element of BCE with logits, scalar (tails): returns l, writes dl/dx to *coeff.
template <class T>
T bce_one(T x, T y, T pw, T wt, T* coeff) {
  const T ax = x < 0 ? -x : x;
  const T e = scalar_exp(-ax), lg = scalar_log1p(e);
  const T relu = x > 0 ? x : T(0);
  const T l = wt * (pw * y * (relu - x + lg) + (T(1) - y) * (relu + lg));
  if (coeff) {
    const T inv = T(1) / (T(1) + e);
    const T sig = x >= 0 ? inv : e * inv, sig_neg = x >= 0 ? e * inv : inv;
    *coeff = wt * ((T(1) - y) * sig - pw * y * sig_neg);
  }
  return l;
}

template <class T>
double bce(const T* x, const T* y, const T* pos_weight, const T* weight, std::int64_t n, T* loss,
           T* coeff) {
  using V = Vectorized<T>;
  constexpr std::int64_t w = V::size();
  const V zero(T(0)), one(T(1));
  double sum = 0;
  std::int64_t i = 0;
  while (i + w <= n) {
    V acc(T(0));
    const std::int64_t end = n - i > block_vectors * w ? i + block_vectors * w : n;
    for (; i + w <= end; i += w) {
      const V xv = V::loadu(x + i), yv = V::loadu(y + i);
      // softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)): only non-positive numbers are
      // exponentiated.
      const V e = xv.abs().neg().exp(), lg = e.log1p();
      const V relu = at::vec::maximum(xv, zero);
      const V py = pos_weight ? V::loadu(pos_weight + i) * yv : yv;
      const V ny = one - yv;
      V l = at::vec::fmadd(py, relu - xv + lg, ny * (relu + lg));
      if (weight) l = l * V::loadu(weight + i);
      if (loss) l.store(loss + i);
      acc = acc + l;
      if (coeff) {
        const V inv = one / (one + e), e_inv = e * inv;
        const V nonneg = xv >= zero;
        V g = ny * V::blendv(e_inv, inv, nonneg) - py * V::blendv(inv, e_inv, nonneg);
        if (weight) g = g * V::loadu(weight + i);
        g.store(coeff + i);
      }
    }
    sum += lane_sum(acc);
  }
  for (; i < n; ++i) {
    const T l = bce_one(x[i], y[i], pos_weight ? pos_weight[i] : T(1), weight ? weight[i] : T(1),
                        coeff ? coeff + i : nullptr);
    if (loss) loss[i] = l;
    sum += static_cast<double>(l);
  }
  return sum;
}

}  // namespace

bool available() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void softmax_stats(const float* x, std::int64_t rows, std::int64_t cols, const float* weight,
                   bool want_gap, softmax_row_stats* out, float* exp_out) {
  stats_rows(x, rows, cols, weight, want_gap, out, exp_out);
}
void softmax_stats(const double* x, std::int64_t rows, std::int64_t cols, const double* weight,
                   bool want_gap, softmax_row_stats* out, double* exp_out) {
  stats_rows(x, rows, cols, weight, want_gap, out, exp_out);
}
void softmax_grad(const float* e, std::int64_t rows, std::int64_t cols, const float* weight,
                  const double* alpha, const double* beta, float* grad) {
  grad_rows(e, rows, cols, weight, alpha, beta, grad);
}
void softmax_grad(const double* e, std::int64_t rows, std::int64_t cols, const double* weight,
                  const double* alpha, const double* beta, double* grad) {
  grad_rows(e, rows, cols, weight, alpha, beta, grad);
}
double bce_logits(const float* x, const float* y, const float* pos_weight, const float* weight,
                  std::int64_t n, float* loss, float* coeff) {
  return bce(x, y, pos_weight, weight, n, loss, coeff);
}
double bce_logits(const double* x, const double* y, const double* pos_weight, const double* weight,
                  std::int64_t n, double* loss, double* coeff) {
  return bce(x, y, pos_weight, weight, n, loss, coeff);
}

#else  // no AVX2 build: available() is false, so the loops below are never reached.

bool available() { return false; }
void softmax_stats(const float*, std::int64_t, std::int64_t, const float*, bool, softmax_row_stats*,
                   float*) {
  std::abort();
}
void softmax_stats(const double*, std::int64_t, std::int64_t, const double*, bool,
                   softmax_row_stats*, double*) {
  std::abort();
}
void softmax_grad(const float*, std::int64_t, std::int64_t, const float*, const double*,
                  const double*, float*) {
  std::abort();
}
void softmax_grad(const double*, std::int64_t, std::int64_t, const double*, const double*,
                  const double*, double*) {
  std::abort();
}
double bce_logits(const float*, const float*, const float*, const float*, std::int64_t, float*,
                  float*) {
  std::abort();
}
double bce_logits(const double*, const double*, const double*, const double*, std::int64_t, double*,
                  double*) {
  std::abort();
}

#endif

}  // namespace losslens::hooks::detail::simd
