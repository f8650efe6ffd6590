#pragma once
/// \file losses.hpp
/// Numerically stable loss kernels, safe math helpers and class-weight helpers.
///
/// Every kernel takes logits (never probabilities, except binary_cross_entropy), works for
/// float32 and float64 on any device, is differentiable (twice), and stays finite for logits in
/// [-1e4, 1e4]. Cross-entropy, focal loss, BCE with logits and Dice have a closed-form backward
/// pass and, on CPUs with AVX2, vectorised loops: forward + backward take at most LibTorch's
/// built-in time (bench/losses). `at::Tensor` is the same type as `torch::Tensor`.
/// docs/losses.md gives each formula, the trick that keeps it stable and the error bound it
/// holds (relative, or absolute where the exact value is a difference that cancels).
///
/// \code
/// auto l_cls = losslens::cross_entropy(logits, y, {.label_smoothing = 0.1});
/// auto l_box = losslens::smooth_l1(pred_box, true_box, {.beta = 1.0});
/// \endcode
///
/// Errors: a wrong shape or dtype throws losslens::error naming what was expected and what
/// was given (before any computation). Values are not inspected (no host synchronisation;
/// red_flags.hpp checks the values), except class indices: outside [0, C) and not
/// ignore_index, they throw losslens::error on the vectorised CPU path (float32/float64) and
/// ATen's index error elsewhere, as in LibTorch.
///
/// Thread-safety: all functions are pure; call them from any thread.
///
/// Call the kernels qualified (losslens::cross_entropy): ATen declares functions of the same
/// names (at::binary_cross_entropy, ...) that argument-dependent lookup also finds.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace losslens {

/// How per-element losses are combined.
enum class loss_reduction {
  none,  ///< per-sample losses, shaped like the batch
  mean,  ///< the kernel's documented mean (weighted kernels divide by the weight sum)
  sum,   ///< plain sum (the loss then grows with the batch size)
};

// ---------------------------------------------------------------------------------------------
// Safe math helpers

/// Default epsilon of safe_log, safe_div and safe_sqrt. 1e-12 is far below any meaningful
/// probability or denominator in float32 (whose smallest normal is 1.2e-38), so it changes no
/// ordinary result, yet log(1e-12) = -27.6 and 1/1e-12 stay finite.
inline constexpr double default_eps = 1e-12;

/// log(max(x, eps)). Exact for x >= eps; below, the value is log(eps) and the gradient 0.
at::Tensor safe_log(const at::Tensor& x, double eps = default_eps);

/// num / den with |den| raised to at least eps, keeping the sign of den (den = 0 counts as
/// positive). Exact whenever |den| >= eps.
at::Tensor safe_div(const at::Tensor& num, const at::Tensor& den, double eps = default_eps);

/// sqrt(x) for x >= eps; x / sqrt(eps) on [0, eps) (continuous at eps); 0 for x < 0. The
/// gradient is finite everywhere: 1 / sqrt(eps) on [0, eps) (1e6 with the default), so the
/// norm of a zero vector can be differentiated. Supports double backward.
at::Tensor safe_sqrt(const at::Tensor& x, double eps = default_eps);

// ---------------------------------------------------------------------------------------------
// Classification

/// Options of binary_cross_entropy_with_logits().
struct bce_options {
  at::Tensor
      pos_weight{};     ///< weight of positive targets, broadcast over the last dim; undefined = 1
  at::Tensor weight{};  ///< per-element weight, broadcast to the logits; undefined = 1
  loss_reduction reduction = loss_reduction::mean;  ///< mean over elements
};

/// Binary cross-entropy from logits x and targets y in [0, 1] (soft targets allowed):
/// l = -pos_weight * y * log_sigmoid(x) - (1 - y) * log_sigmoid(-x). Matches
/// torch::nn::functional::binary_cross_entropy_with_logits; the target gets a gradient,
/// pos_weight and weight do not (as in LibTorch).
/// Throws losslens::error if target's shape differs from logits' or a dtype is not floating.
at::Tensor binary_cross_entropy_with_logits(const at::Tensor& logits, const at::Tensor& target,
                                            const bce_options& options = {});

/// Options of binary_cross_entropy() (on probabilities).
struct bce_probs_options {
  at::Tensor weight{};  ///< per-element weight; undefined = 1
  loss_reduction reduction = loss_reduction::mean;
  double eps = 1e-7;  ///< log p and log(1 - p) are each floored at log(eps)
};

/// Binary cross-entropy on probabilities p (for models that already end in a sigmoid):
/// -y log(max(p, eps)) - (1 - y) log(max(1 - p, eps)), with 1 - p formed exactly (log1p(-p)
/// below 0.5), so p = 0 or 1 gives a bounded loss, exactly -log(eps) = 16.118 in float32 and
/// float64, instead of Inf; the gradient is 0 where a floor applies. Prefer
/// binary_cross_entropy_with_logits on the logits: a saturated sigmoid has already lost the
/// gradient that the logits form keeps. red_flag_checker::check_probabilities() reports the use.
/// Throws losslens::error on a shape or dtype mismatch.
at::Tensor binary_cross_entropy(const at::Tensor& probs, const at::Tensor& target,
                                const bce_probs_options& options = {});

/// Options of cross_entropy().
struct cross_entropy_options {
  at::Tensor weight{};                              ///< class weights [C]; undefined = 1
  std::int64_t ignore_index = -100;                 ///< targets equal to this contribute nothing
  double label_smoothing = 0;                       ///< epsilon in [0, 1]
  loss_reduction reduction = loss_reduction::mean;  ///< mean: divided by the sum of the
                                                    ///< weights of the non-ignored targets
};

/// Cross-entropy from logits [N, C] or [N, C, d1, ...] and int64 class indices [N] or
/// [N, d1, ...]: l = (1 - eps) w_y (-log p_y) + eps / C * sum_c w_c (-log p_c), with
/// -log p_c = (m - x_c) + log1p(S') from the row maximum m and S' = sum of exp(x_c - m) over all
/// classes but one maximum (no rounded logsumexp is subtracted, so ties at |x| ~ 1e4 and p_y -> 1
/// keep their digits). Matches torch::nn::functional::cross_entropy, except that a mean over zero
/// non-ignored targets is 0 (PyTorch gives NaN). No gradient flows into weight.
/// Throws losslens::error if target is not an integer tensor (a float one-hot target gets a
/// message saying to pass target.argmax(1)), the shapes disagree, label_smoothing is outside
/// [0, 1], weight is not [C], or (float32/float64 on the CPU) a target lies outside [0, C) and
/// is not ignore_index.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& target,
                         const cross_entropy_options& options = {});

/// Options of binary_focal_loss() and focal_loss().
struct focal_options {
  double gamma = 2.0;  ///< focusing parameter (>= 0); 0 gives (alpha-weighted) cross-entropy
  /// Binary: weight of positives (negatives get 1 - alpha); < 0 = no alpha weighting.
  double alpha = 0.25;
  /// Multi-class: per-class alpha [C] (undefined = 1); the scalar alpha is ignored there.
  at::Tensor class_alpha{};
  std::int64_t ignore_index = -100;                 ///< multi-class only
  loss_reduction reduction = loss_reduction::mean;  ///< mean over (non-ignored) elements
};

/// Binary focal loss (Lin et al. 2017) from logits:
/// l = -alpha y (1 - p)^gamma log p - (1 - alpha)(1 - y) p^gamma log(1 - p), with
/// log p = log_sigmoid(x), log(1 - p) = log_sigmoid(-x) and the powers taken as
/// exp(gamma * log ...), so no probability is ever formed and then logged.
/// Throws losslens::error on a shape or dtype mismatch or gamma < 0.
at::Tensor binary_focal_loss(const at::Tensor& logits, const at::Tensor& target,
                             const focal_options& options = {});

/// Multi-class focal loss from logits [N, C, ...] and int64 targets [N, ...]:
/// l = -alpha_y (1 - p_y)^gamma log p_y, with -log p_y as in cross_entropy() and 1 - p_y as the
/// other classes' share of the softmax sum (exact even when p_y rounds to 1). Throws
/// losslens::error like cross_entropy() and if C < 2.
at::Tensor focal_loss(const at::Tensor& logits, const at::Tensor& target,
                      const focal_options& options = {});

/// Class counts of integer targets (values outside [0, num_classes) are not counted), as int64
/// on the CPU. Synchronises with the device. Throws losslens::error if targets are not integer.
std::vector<std::int64_t> class_counts(const at::Tensor& target, std::int64_t num_classes);

/// Inverse-frequency class weights w_c = (1 / n_c) normalised so that the weights of the
/// present classes sum to C; classes with n_c = 0 get 0. Throws losslens::error when counts
/// is empty or all zero, or a count is negative.
std::vector<double> inverse_frequency_weights(const std::vector<std::int64_t>& counts);

/// Class-balanced weights of Cui et al. (2019): effective number E_c = (1 - beta^n_c) /
/// (1 - beta), w_c proportional to 1 / E_c, normalised like inverse_frequency_weights.
/// beta in [0, 1): 0 gives equal weights, beta -> 1 approaches inverse frequency. Computed
/// with expm1 so beta = 0.9999 keeps full precision. Throws losslens::error on a bad beta or
/// counts.
std::vector<double> effective_number_weights(const std::vector<std::int64_t>& counts,
                                             double beta = 0.999);

/// pos_weight for binary_cross_entropy_with_logits: negatives / positives (e.g. 950 / 50 = 19).
/// Throws losslens::error if positives <= 0 or negatives < 0.
double pos_weight_for(std::int64_t negatives, std::int64_t positives);

// ---------------------------------------------------------------------------------------------
// Segmentation

/// Options of dice_loss() and bce_dice_loss().
struct dice_options {
  double smooth = 1.0;       ///< added to numerator and denominator: an empty mask predicted
                             ///< empty scores dice 1 and the ratio never divides by 0
  double eps = default_eps;  ///< floor of the denominator (matters when smooth = 0)
  loss_reduction reduction = loss_reduction::mean;  ///< over samples (and classes)
  double bce_weight = 1.0;                          ///< bce_dice_loss(): weight of the BCE term
  double dice_weight = 1.0;                         ///< bce_dice_loss(): weight of the Dice term
  at::Tensor pos_weight{};                          ///< bce_dice_loss(): BCE pos_weight
};

/// Soft Dice loss, 1 - (2 sum(p t) + smooth) / (sum p + sum t + smooth), per sample and
/// channel, sums over the spatial dims. Computed without the cancellation of 1 - ratio as
/// (sum p (1 - t) + t (1 - p)) / max(sum p + sum t + smooth, eps), 1 - p from the complement
/// (sigmoid(-x), or the other classes' softmax terms), so saturated predictions keep their
/// digits. With smooth = 0, a sample whose sum p + sum t is below eps scores the numerator / eps
/// (0 for an empty mask predicted empty, where 1 - dice would say 1).
///  - Float target shaped like the logits [N, C, ...] (binary or multi-label masks):
///    p = sigmoid(logits), one score per sample and channel.
///  - Integer target [N, ...] with logits [N, C, ...] (C >= 2, multi-class): p = softmax over
///    C, t = one_hot(target), one score per sample and class.
/// Throws losslens::error on a shape or dtype mismatch or smooth < 0.
at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& target,
                     const dice_options& options = {});

/// bce_weight * binary_cross_entropy_with_logits + dice_weight * dice_loss (float masks only).
at::Tensor bce_dice_loss(const at::Tensor& logits, const at::Tensor& target,
                         const dice_options& options = {});

// ---------------------------------------------------------------------------------------------
// Regression

/// Smooth L1: 0.5 d^2 / beta for |d| < beta, else |d| - 0.5 beta (d = pred - target); beta = 0
/// is L1. Matches torch::nn::functional::smooth_l1_loss.
struct smooth_l1_options {
  double beta = 1.0;
  loss_reduction reduction = loss_reduction::mean;
};
at::Tensor smooth_l1(const at::Tensor& pred, const at::Tensor& target,
                     const smooth_l1_options& options = {});

/// Huber: 0.5 d^2 for |d| <= delta, else delta (|d| - 0.5 delta) = delta * smooth_l1(beta =
/// delta). Matches torch::nn::functional::huber_loss.
struct huber_options {
  double delta = 1.0;
  loss_reduction reduction = loss_reduction::mean;
};
at::Tensor huber(const at::Tensor& pred, const at::Tensor& target,
                 const huber_options& options = {});

/// Weighted MSE: sum(w (pred - target)^2) / (sum(w) + eps) with w broadcast to pred (mean:
/// the weighted average; sum: the numerator; none: w (pred - target)^2). An all-zero weight
/// gives 0, not NaN. Throws losslens::error on shapes that do not broadcast or negative eps.
at::Tensor weighted_mse(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& weight,
                        double eps = default_eps, loss_reduction reduction = loss_reduction::mean);

/// Options of contrastive_loss().
struct contrastive_options {
  double margin = 1.0;
  double eps = default_eps;                         ///< of the safe_sqrt in the distance
  loss_reduction reduction = loss_reduction::mean;  ///< mean over pairs
};

/// Contrastive loss (Hadsell et al. 2006) of embedding pairs a, b [N, D] with same [N]
/// (1 = similar pair, 0 = dissimilar): l = 0.5 same d^2 + 0.5 (1 - same) max(0, margin - d)^2,
/// d = ||a - b||. d^2 is taken from the sum of squares directly and d through safe_sqrt, so
/// identical embeddings (d = 0) have a finite gradient.
at::Tensor contrastive_loss(const at::Tensor& a, const at::Tensor& b, const at::Tensor& same,
                            const contrastive_options& options = {});

}  // namespace losslens
