#include "grad_norms.hpp"

#include <cmath>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>

namespace losslens::hooks::detail {

namespace {
template <class T>
double sum_sq_scalar(const T* p, std::int64_t n) noexcept {
  // Four independent accumulators so the loop pipelines.
  double a = 0, b = 0, c = 0, d = 0;
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += double(p[i]) * double(p[i]);
    b += double(p[i + 1]) * double(p[i + 1]);
    c += double(p[i + 2]) * double(p[i + 2]);
    d += double(p[i + 3]) * double(p[i + 3]);
  }
  for (; i < n; ++i) a += double(p[i]) * double(p[i]);
  return (a + b) + (c + d);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The compiler does not vectorise a double reduction by itself (it would reorder the sum), so
// the lanes are written out. Four float -> double widenings and four FMAs per 16 elements keep
// up with the L3 cache; the memory, not the arithmetic, is the limit for large gradients.
__attribute__((target("avx2,fma"))) double horizontal_sum(__m256d a, __m256d b, __m256d c,
                                                          __m256d d) noexcept {
  const __m256d s = _mm256_add_pd(_mm256_add_pd(a, b), _mm256_add_pd(c, d));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

__attribute__((target("avx2,fma"))) double sum_sq_avx2(const float* p, std::int64_t n) noexcept {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(p + i));
    const __m256d d1 = _mm256_cvtps_pd(_mm_loadu_ps(p + i + 4));
    const __m256d d2 = _mm256_cvtps_pd(_mm_loadu_ps(p + i + 8));
    const __m256d d3 = _mm256_cvtps_pd(_mm_loadu_ps(p + i + 12));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  return horizontal_sum(a0, a1, a2, a3) + sum_sq_scalar(p + i, n - i);
}

__attribute__((target("avx2,fma"))) double sum_sq_avx2(const double* p, std::int64_t n) noexcept {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256d d0 = _mm256_loadu_pd(p + i), d1 = _mm256_loadu_pd(p + i + 4);
    const __m256d d2 = _mm256_loadu_pd(p + i + 8), d3 = _mm256_loadu_pd(p + i + 12);
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  return horizontal_sum(a0, a1, a2, a3) + sum_sq_scalar(p + i, n - i);
}

bool have_avx2() noexcept {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
}
#endif

template <class T>
double sum_sq(const T* p, std::int64_t n) noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  if (n >= 16 && have_avx2()) return sum_sq_avx2(p, n);
#endif
  return sum_sq_scalar(p, n);
}
}  // namespace

double sum_of_squares(const float* p, std::int64_t n) noexcept { return sum_sq(p, n); }
double sum_of_squares(const double* p, std::int64_t n) noexcept { return sum_sq(p, n); }

bool sum_of_squares_ok(const at::Tensor& t) noexcept {
  return t.device().is_cpu() && t.layout() == at::kStrided && t.is_contiguous() &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

double sum_of_squares_cpu(const at::Tensor& t) noexcept {
  if (t.scalar_type() == at::kFloat) return sum_sq(t.data_ptr<float>(), t.numel());
  return sum_sq(t.data_ptr<double>(), t.numel());
}

norm_engine::group& norm_engine::group_for(const at::Tensor& t) {
  for (auto& g : groups_)
    if (g.device == t.device() && g.dtype == t.scalar_type()) return g;
  groups_.push_back(group{t.device(), t.scalar_type(), {}, {}});  // first step of a new kind only
  return groups_.back();
}

norm_engine::device_batch& norm_engine::batch_for(c10::Device d) {
  for (auto& b : batches_)
    if (b.device == d) return b;
  batches_.push_back(device_batch{d, {}, {}});
  return batches_.back();
}

void norm_engine::compute(const std::vector<at::Tensor>& grads, std::vector<double>& norms,
                          std::vector<std::uint8_t>& has_norm,
                          const std::vector<const at::Tensor*>& scalars,
                          std::vector<double>& scalar_out, const std::vector<std::uint8_t>* skip) {
  for (auto& g : groups_) {
    g.tensors.clear();
    g.index.clear();
  }
  for (auto& b : batches_) {
    b.parts.clear();
    b.targets.clear();
  }
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (skip && (*skip)[i]) continue;
    const at::Tensor& g = grads[i];
    has_norm[i] = g.defined() ? 1 : 0;
    norms[i] = std::numeric_limits<double>::quiet_NaN();
    if (!g.defined()) continue;
    if (sum_of_squares_ok(g)) {
      norms[i] = std::sqrt(sum_of_squares_cpu(g));
      continue;
    }
    auto& grp = group_for(g);
    grp.tensors.push_back(g);
    grp.index.push_back(i);
  }
  for (auto& grp : groups_) {
    if (grp.tensors.empty()) continue;
    auto per_tensor = at::_foreach_norm(grp.tensors, 2);
    auto& b = batch_for(grp.device);
    b.parts.push_back(at::stack(per_tensor).to(at::kDouble));
    for (std::size_t k : grp.index) b.targets.push_back(&norms[k]);
  }
  for (std::size_t j = 0; j < scalars.size(); ++j) {
    const at::Tensor& s = *scalars[j];
    if (s.numel() == 1 && sum_of_squares_ok(s)) {
      scalar_out[j] =
          s.scalar_type() == at::kFloat ? double(*s.data_ptr<float>()) : *s.data_ptr<double>();
      continue;
    }
    auto& b = batch_for(s.device());
    b.parts.push_back(s.detach().reshape({1}).to(at::kDouble));
    b.targets.push_back(&scalar_out[j]);
  }
  for (auto& b : batches_) {
    if (b.parts.empty()) continue;
    // One host copy per device for every number of this step.
    at::Tensor host =
        (b.parts.size() == 1 ? b.parts[0] : at::cat(b.parts)).to(at::kCPU).contiguous();
    const double* v = host.data_ptr<double>();
    for (std::size_t k = 0; k < b.targets.size(); ++k) *b.targets[k] = v[k];
  }
}

}  // namespace losslens::hooks::detail
