#include "detail/norm_summary.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LOSSLENS_NORMS_AVX2 1
#endif

namespace losslens::core::detail {

norm_summary summarize_norms_scalar(const std::optional<double>* norms, std::size_t n) noexcept {
  // Two chains of max and min side by side (they do not depend on the order), without a
  // branch on the values.
  norm_summary out;
  const double inf = std::numeric_limits<double>::infinity();
  double hi0 = -inf, hi1 = -inf, lo0 = inf, lo1 = inf;
  // A missing or non-finite norm (rare) leaves the chains as they are.
  auto take = [&](std::size_t i, double& hi, double& lo) {
    if (!norms[i]) return;
    const double v = *norms[i];
    if (!std::isfinite(v)) {
      if (out.first_non_finite < 0) out.first_non_finite = int(i);
      return;
    }
    hi = std::max(hi, v);
    lo = std::min(lo, v);
  };
  std::size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    take(i, hi0, lo0);
    take(i + 1, hi1, lo1);
  }
  if (i < n) take(i, hi0, lo0);
  out.max_norm = std::max(hi0, hi1);
  out.min_norm = std::min(lo0, lo1);
  return out;
}

#ifdef LOSSLENS_NORMS_AVX2
namespace {
// The vector path reads each std::optional<double> as its two 8-byte halves: the value, then a
// word whose low byte is the engaged flag (libstdc++'s layout). Checked once at run time rather
// than assumed; another layout takes the scalar path.
bool layout_is_value_then_flag() noexcept {
  if constexpr (sizeof(std::optional<double>) != 16 || alignof(std::optional<double>) != 8) {
    return false;
  } else {
    const std::optional<double> engaged = 2.5, empty;
    unsigned char e[16], m[16];
    std::memcpy(e, &engaged, 16);
    std::memcpy(m, &empty, 16);
    double v = 0;
    std::memcpy(&v, e, 8);
    return v == 2.5 && e[8] == 1 && m[8] == 0;
  }
}

// find_norm over the whole blocks of four: the first candidate, or where the blocks end. The
// caller's scalar loop goes on from there and confirms it: a missing norm can hold a stale
// value equal to `value`, and no present match lies before the first candidate.
__attribute__((target("avx2"))) std::size_t find_norm_avx2(const std::optional<double>* norms,
                                                           std::size_t n, double value) noexcept {
  // The 8-byte words compared whole: bits 0, 2, 4, 6 of the mask are the values, the flag
  // words in between are ignored.
  const double* p = reinterpret_cast<const double*>(norms);
  const __m256d t = _mm256_set1_pd(value);
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const int lo = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(p + 2 * j), t, _CMP_EQ_OQ));
    const int hi = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(p + 2 * j + 4), t, _CMP_EQ_OQ));
    const unsigned m = unsigned(lo | hi << 4) & 0x55u;
    if (m != 0) return j + std::size_t(__builtin_ctz(m)) / 2;
  }
  return j;
}

// The whole blocks of four (norms[0, n - n % 4)): their largest and smallest finite norms into
// `top` and `min`. False when a present norm there is NaN/Inf.
__attribute__((target("avx2"))) bool summarize_avx2(const std::optional<double>* norms,
                                                    std::size_t n, double& top,
                                                    double& min) noexcept {
  const double inf = std::numeric_limits<double>::infinity();
  const double* p = reinterpret_cast<const double*>(norms);
  const __m256d neg_inf = _mm256_set1_pd(-inf), pos_inf = _mm256_set1_pd(inf);
  const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffff));
  const __m256i flag_byte = _mm256_set1_epi64x(0xff), zero = _mm256_setzero_si256();
  // Lane k sees norms i + {0, 2, 1, 3}[k], the order unpacking two pairs gives; max and min do
  // not care.
  __m256d hi = neg_inf, lo = pos_inf;
  __m256d good = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));  // every lane absent or finite
  for (std::size_t i = 0; i + 4 <= n; i += 4) {
    const __m256d a = _mm256_loadu_pd(p + 2 * i), b = _mm256_loadu_pd(p + 2 * i + 4);
    const __m256d v = _mm256_unpacklo_pd(a, b);
    const __m256i flags = _mm256_castpd_si256(_mm256_unpackhi_pd(a, b));
    const __m256d absent =
        _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(flags, flag_byte), zero));
    const __m256d finite = _mm256_cmp_pd(_mm256_and_pd(v, abs_mask), pos_inf, _CMP_LT_OQ);
    good = _mm256_and_pd(good, _mm256_or_pd(absent, finite));
    const __m256d ok = _mm256_andnot_pd(absent, finite);
    hi = _mm256_max_pd(hi, _mm256_blendv_pd(neg_inf, v, ok));
    lo = _mm256_min_pd(lo, _mm256_blendv_pd(pos_inf, v, ok));
  }
  alignas(32) double his[4], los[4];
  _mm256_store_pd(his, hi);
  _mm256_store_pd(los, lo);
  top = std::max(std::max(his[0], his[1]), std::max(his[2], his[3]));
  min = std::min(std::min(los[0], los[1]), std::min(los[2], los[3]));
  return _mm256_movemask_pd(good) == 0xf;
}

bool vector_path() noexcept {
  static const bool usable = __builtin_cpu_supports("avx2") && layout_is_value_then_flag();
  return usable;
}
}  // namespace
#endif

bool summarize_norms_avx2(const std::optional<double>* norms, std::size_t n,
                          norm_summary& out) noexcept {
#ifdef LOSSLENS_NORMS_AVX2
  if (!vector_path()) return false;
  double top = 0, min = 0;
  if (!summarize_avx2(norms, n, top, min)) {
    out = summarize_norms_scalar(norms, n);  // rare: a NaN/Inf norm, which that pass names
    return true;
  }
  // The last n % 4 one at a time, merged.
  const std::size_t blocks = n - n % 4;
  const norm_summary rest = summarize_norms_scalar(norms + blocks, n - blocks);
  out.max_norm = std::max(top, rest.max_norm);
  out.min_norm = std::min(min, rest.min_norm);
  out.first_non_finite = rest.first_non_finite < 0 ? -1 : int(blocks) + rest.first_non_finite;
  return true;
#else
  (void)norms;
  (void)n;
  (void)out;
  return false;
#endif
}

norm_summary summarize_norms(const std::optional<double>* norms, std::size_t n) noexcept {
  norm_summary out;
  if (n < 4 || !summarize_norms_avx2(norms, n, out)) out = summarize_norms_scalar(norms, n);
  return out;
}

std::size_t find_norm(const std::optional<double>* norms, std::size_t n, double value) noexcept {
  std::size_t i = 0;
#ifdef LOSSLENS_NORMS_AVX2
  if (vector_path()) i = find_norm_avx2(norms, n, value);  // the first candidate
#endif
  while (i < n && !(norms[i] && *norms[i] == value)) ++i;
  return i;
}

}  // namespace losslens::core::detail
