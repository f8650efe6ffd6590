#pragma once
// Vectorised CPU loops of the fused loss kernels (fused_losses.cpp): AVX2 + FMA through ATen's
// at::vec and SLEEF, the same vector exp/log1p that LibTorch's own CPU kernels use.
//
// loss_simd.cpp is the only source compiled with -mavx2 -mfma (hooks/CMakeLists.txt). So that no
// AVX2 code leaks into functions that other sources share (an inline function emitted by two
// objects may end up as either copy), this interface takes raw pointers only and loss_simd.cpp
// instantiates nothing outside at::vec::AVX2 and its own anonymous namespace. Callers must
// check available() first; on other CPUs the portable ATen path runs instead.
//
// Thread-safety: pure functions of their arguments; callers split rows between threads.

#include <cstdint>

namespace losslens::hooks::detail::simd {

/// True when the loops were compiled in (x86-64 with SLEEF) and this CPU has AVX2 and FMA.
bool available();

/// Per-row sums of a softmax over one row x[0..cols), exact to a few units of the row dtype's
/// rounding (partial sums of at most 256 terms are carried to double).
struct softmax_row_stats {
  double max;   ///< m = max_c x_c (NaN if the row holds a NaN)
  double rest;  ///< S' = sum_c exp(x_c - m) over every class but one maximum: S = 1 + S'
  double gap;   ///< U = sum_c w_c (m - x_c), w_c = 1 without weights; 0 unless requested
};

/// Statistics of `rows` rows of `cols` logits (row-major, contiguous). weight: [cols] or null.
/// exp_out (null or like x) receives e = exp(x - m) for the backward pass, which then needs no
/// exponential of its own.
void softmax_stats(const float* x, std::int64_t rows, std::int64_t cols, const float* weight,
                   bool want_gap, softmax_row_stats* out, float* exp_out);
void softmax_stats(const double* x, std::int64_t rows, std::int64_t cols, const double* weight,
                   bool want_gap, softmax_row_stats* out, double* exp_out);

/// grad[r, c] = alpha[r] e[r, c] - beta[r] w_c (w_c = 1 without weights), e from softmax_stats.
void softmax_grad(const float* e, std::int64_t rows, std::int64_t cols, const float* weight,
                  const double* alpha, const double* beta, float* grad);
void softmax_grad(const double* e, std::int64_t rows, std::int64_t cols, const double* weight,
                  const double* alpha, const double* beta, double* grad);

/// Binary cross-entropy with logits over n elements: l = w (pw y softplus(-x) + (1 - y)
/// softplus(x)). pos_weight and weight are null or n elements. Writes l to loss and
/// dl/dx = w ((1 - y) sigmoid(x) - pw y sigmoid(-x)) to coeff when they are not null; returns
/// the sum of l.
double bce_logits(const float* x, const float* y, const float* pos_weight, const float* weight,
                  std::int64_t n, float* loss, float* coeff);
double bce_logits(const double* x, const double* y, const double* pos_weight, const double* weight,
                  std::int64_t n, double* loss, double* coeff);

}  // namespace losslens::hooks::detail::simd
