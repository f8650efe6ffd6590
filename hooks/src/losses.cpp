#include "losslens/torch/losses.hpp"

#include <cmath>
#include <limits>

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/where.h>

#include "fused_losses.hpp"
#include "tensor_checks.hpp"

namespace losslens {

using hooks::detail::fail;

// ---------------------------------------------------------------------------------------------
// Safe math

at::Tensor safe_log(const at::Tensor& x, double eps) { return x.clamp_min(eps).log(); }

at::Tensor safe_div(const at::Tensor& num, const at::Tensor& den, double eps) {
  return num / at::where(den >= 0, den.clamp_min(eps), den.clamp_max(-eps));
}

at::Tensor safe_sqrt(const at::Tensor& x, double eps) {
  // Both branches are evaluated; each sees only inputs on which it is smooth, so neither
  // produces an Inf or NaN gradient that where() would multiply by 0 (0 * Inf = NaN).
  auto above = x >= eps;
  auto root = at::where(above, x, at::ones_like(x)).sqrt();
  auto linear = x.clamp(0, eps) / std::sqrt(eps);
  return at::where(above, root, linear);
}

// ---------------------------------------------------------------------------------------------
// Binary classification

namespace {

void check_binary(const at::Tensor& logits, const at::Tensor& target, const char* fn) {
  hooks::detail::require_floating_pair(logits, target, fn, "logits", "target");
}

at::Tensor as_options(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() ? t.to(like.options()) : t;
}

}  // namespace

at::Tensor binary_cross_entropy_with_logits(const at::Tensor& logits, const at::Tensor& target,
                                            const bce_options& options) {
  constexpr const char* fn = "binary_cross_entropy_with_logits";
  check_binary(logits, target, fn);
  if (options.pos_weight.defined())
    hooks::detail::require_broadcastable(options.pos_weight, logits, fn, "pos_weight", "logits");
  if (options.weight.defined())
    hooks::detail::require_broadcastable(options.weight, logits, fn, "weight", "logits");
  return hooks::detail::bce_with_logits(logits, target, options.pos_weight, options.weight,
                                        options.reduction);
}

at::Tensor binary_cross_entropy(const at::Tensor& probs, const at::Tensor& target,
                                const bce_probs_options& options) {
  constexpr const char* fn = "binary_cross_entropy";
  hooks::detail::require_floating_pair(probs, target, fn, "probs", "target");
  if (!(options.eps > 0 && options.eps < 0.5))
    fail(fn, "eps must be in (0, 0.5), got " + std::to_string(options.eps));
  if (options.weight.defined())
    hooks::detail::require_broadcastable(options.weight, probs, fn, "weight", "probs");
  // log p and log(1 - p), each floored at log(eps). 1 - p is exact for p >= 0.5 (so p = 1 gives
  // exactly -log(eps), not the log of a float32 1 - eps rounded to 1 - 1.19e-7), and log1p(-p)
  // keeps small p. Each where() branch is finite with a finite gradient on every input.
  const auto log_p = probs.clamp_min(options.eps).log();
  const auto log_q = at::where(probs < 0.5, (-probs.clamp_max(0.5)).log1p(),
                               (1 - probs).clamp_min(options.eps).log());
  auto l = -(target * log_p + (1 - target) * log_q);
  if (options.weight.defined()) l = l * as_options(options.weight, probs);
  return hooks::detail::reduce(l, options.reduction);
}

namespace {

/// -alpha_t (1 - p_t)^gamma log p_t for one side, from log p_t and log(1 - p_t).
at::Tensor focal_term(const at::Tensor& log_p, const at::Tensor& log_1mp, double gamma) {
  if (gamma == 0) return -log_p;
  return -(gamma * log_1mp).exp() * log_p;
}

void check_gamma(double gamma, const char* fn) {
  if (!(gamma >= 0) || !std::isfinite(gamma))
    fail(fn, "gamma must be finite and >= 0, got " + std::to_string(gamma));
}

}  // namespace

at::Tensor binary_focal_loss(const at::Tensor& logits, const at::Tensor& target,
                             const focal_options& options) {
  constexpr const char* fn = "binary_focal_loss";
  check_binary(logits, target, fn);
  check_gamma(options.gamma, fn);
  auto log_p = at::log_sigmoid(logits);
  auto log_1mp = at::log_sigmoid(-logits);
  auto pos = target * focal_term(log_p, log_1mp, options.gamma);
  auto neg = (1 - target) * focal_term(log_1mp, log_p, options.gamma);
  if (options.alpha >= 0) {
    pos = options.alpha * pos;
    neg = (1 - options.alpha) * neg;
  }
  return hooks::detail::reduce(pos + neg, options.reduction);
}

// ---------------------------------------------------------------------------------------------
// Multi-class

namespace {

/// Logits [N, C, d1, ...] as rows [N d1 ..., C] and targets [N, d1, ...] as [N d1 ...].
at::Tensor class_rows(const at::Tensor& logits) {
  return logits.dim() == 2 ? logits : logits.movedim(1, -1).reshape({-1, logits.size(1)});
}

/// Cross-entropy or focal loss (spec), with the fields both have.
at::Tensor softmax_family(const at::Tensor& logits, const at::Tensor& target,
                          hooks::detail::softmax_loss_spec spec, const char* fn,
                          std::int64_t ignore_index, loss_reduction reduction) {
  spec.fn = fn;
  spec.ignore_index = ignore_index;
  spec.reduction = reduction;
  auto l = hooks::detail::softmax_loss(class_rows(logits), target.reshape({-1}), spec);
  return spec.reduction == loss_reduction::none ? l.reshape(target.sizes()) : l;
}

}  // namespace

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& target,
                         const cross_entropy_options& options) {
  constexpr const char* fn = "cross_entropy";
  hooks::detail::require_class_target(logits, target, fn);
  hooks::detail::require_per_class(options.weight, logits.size(1), fn, "weight");
  const double eps = options.label_smoothing;
  if (!(eps >= 0 && eps <= 1))
    fail(fn, "label_smoothing must be in [0, 1], got " + std::to_string(eps));
  hooks::detail::softmax_loss_spec spec;
  spec.class_weight = options.weight;
  spec.label_smoothing = eps;
  return softmax_family(logits, target, spec, fn, options.ignore_index, options.reduction);
}

at::Tensor focal_loss(const at::Tensor& logits, const at::Tensor& target,
                      const focal_options& options) {
  constexpr const char* fn = "focal_loss";
  hooks::detail::require_class_target(logits, target, fn);
  hooks::detail::require_per_class(options.class_alpha, logits.size(1), fn, "class_alpha");
  check_gamma(options.gamma, fn);
  hooks::detail::softmax_loss_spec spec;
  spec.class_alpha = options.class_alpha;
  spec.focal = true;
  spec.gamma = options.gamma;
  return softmax_family(logits, target, spec, fn, options.ignore_index, options.reduction);
}

// ---------------------------------------------------------------------------------------------
// Class weights

std::vector<std::int64_t> class_counts(const at::Tensor& target, std::int64_t num_classes) {
  if (!target.defined() || target.is_floating_point() || target.is_complex())
    fail("class_counts",
         "target must be an integer tensor, got " + hooks::detail::describe(target));
  if (num_classes < 1) fail("class_counts", "num_classes must be >= 1");
  std::vector<std::int64_t> counts(static_cast<std::size_t>(num_classes), 0);
  auto t = target.detach().reshape(-1).to(at::kCPU).to(at::kLong).contiguous();
  const auto* p = t.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i)
    if (p[i] >= 0 && p[i] < num_classes) ++counts[static_cast<std::size_t>(p[i])];
  return counts;
}

namespace {

/// Scales the raw weights of the present classes so that they sum to C; absent classes get 0.
std::vector<double> normalise_to_classes(const std::vector<std::int64_t>& counts,
                                         const std::vector<long double>& raw, const char* fn) {
  long double total = 0;
  for (std::size_t c = 0; c < counts.size(); ++c)
    if (counts[c] > 0) total += raw[c];
  if (!(total > 0)) fail(fn, "every class count is 0");
  std::vector<double> w(counts.size(), 0.0);
  const auto scale = static_cast<long double>(counts.size()) / total;
  for (std::size_t c = 0; c < counts.size(); ++c)
    if (counts[c] > 0) w[c] = static_cast<double>(raw[c] * scale);
  return w;
}

void check_counts(const std::vector<std::int64_t>& counts, const char* fn) {
  if (counts.empty()) fail(fn, "counts must not be empty");
  for (auto n : counts)
    if (n < 0) fail(fn, "counts must be >= 0, got " + std::to_string(n));
}

}  // namespace

std::vector<double> inverse_frequency_weights(const std::vector<std::int64_t>& counts) {
  constexpr const char* fn = "inverse_frequency_weights";
  check_counts(counts, fn);
  std::vector<long double> raw(counts.size(), 0);
  for (std::size_t c = 0; c < counts.size(); ++c)
    if (counts[c] > 0) raw[c] = 1.0L / static_cast<long double>(counts[c]);
  return normalise_to_classes(counts, raw, fn);
}

std::vector<double> effective_number_weights(const std::vector<std::int64_t>& counts, double beta) {
  constexpr const char* fn = "effective_number_weights";
  check_counts(counts, fn);
  if (!(beta >= 0 && beta < 1)) fail(fn, "beta must be in [0, 1), got " + std::to_string(beta));
  std::vector<long double> raw(counts.size(), 0);
  for (std::size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] <= 0) continue;
    if (beta == 0) {
      raw[c] = 1;
      continue;
    }
    // (1 - beta) / (1 - beta^n) with 1 - beta^n = -expm1(n log beta), no cancellation.
    const long double one_minus_beta_n =
        -std::expm1(static_cast<long double>(counts[c]) * std::log(static_cast<long double>(beta)));
    raw[c] = (1.0L - beta) / one_minus_beta_n;
  }
  return normalise_to_classes(counts, raw, fn);
}

double pos_weight_for(std::int64_t negatives, std::int64_t positives) {
  if (positives <= 0 || negatives < 0)
    fail("pos_weight_for", "need positives > 0 and negatives >= 0, got " +
                               std::to_string(negatives) + " negatives / " +
                               std::to_string(positives) + " positives");
  return static_cast<double>(negatives) / static_cast<double>(positives);
}

// ---------------------------------------------------------------------------------------------
// Segmentation

at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& target,
                     const dice_options& options) {
  constexpr const char* fn = "dice_loss";
  if (!(options.smooth >= 0))
    fail(fn, "smooth must be >= 0, got " + std::to_string(options.smooth));
  if (target.defined() && target.is_floating_point()) {
    hooks::detail::require_floating(logits, fn, "logits");
    hooks::detail::require_same_shape(logits, target, fn, "logits", "target");
    if (logits.dim() < 2)
      fail(fn, "logits must be [N, d] or [N, C, d1, ...], got " + hooks::detail::describe(logits));
  } else {
    hooks::detail::require_class_target(logits, target, fn);
  }
  return hooks::detail::dice(logits, target, options.smooth, options.eps, options.reduction);
}

at::Tensor bce_dice_loss(const at::Tensor& logits, const at::Tensor& target,
                         const dice_options& options) {
  if (options.reduction == loss_reduction::none)
    fail("bce_dice_loss", "reduction none is not supported (the two terms have different shapes)");
  if (!target.defined() || !target.is_floating_point())
    fail("bce_dice_loss", "target must be a float mask shaped like the logits, got " +
                              hooks::detail::describe(target));
  bce_options bce;
  bce.pos_weight = options.pos_weight;
  bce.reduction = options.reduction;
  return options.bce_weight * binary_cross_entropy_with_logits(logits, target, bce) +
         options.dice_weight * dice_loss(logits, target, options);
}

// ---------------------------------------------------------------------------------------------
// Regression

namespace {

at::Tensor regression_diff(const at::Tensor& pred, const at::Tensor& target, const char* fn) {
  hooks::detail::require_floating_pair(pred, target, fn, "pred", "target");
  return pred - target;
}

}  // namespace

at::Tensor smooth_l1(const at::Tensor& pred, const at::Tensor& target,
                     const smooth_l1_options& options) {
  constexpr const char* fn = "smooth_l1";
  if (!(options.beta >= 0)) fail(fn, "beta must be >= 0, got " + std::to_string(options.beta));
  auto d = regression_diff(pred, target, fn);
  auto ad = d.abs();
  if (options.beta == 0) return hooks::detail::reduce(ad, options.reduction);
  auto l = at::where(ad < options.beta, (0.5 / options.beta) * d * d, ad - 0.5 * options.beta);
  return hooks::detail::reduce(l, options.reduction);
}

at::Tensor huber(const at::Tensor& pred, const at::Tensor& target, const huber_options& options) {
  constexpr const char* fn = "huber";
  if (!(options.delta > 0)) fail(fn, "delta must be > 0, got " + std::to_string(options.delta));
  auto d = regression_diff(pred, target, fn);
  auto ad = d.abs();
  auto l = at::where(ad <= options.delta, 0.5 * d * d, options.delta * (ad - 0.5 * options.delta));
  return hooks::detail::reduce(l, options.reduction);
}

at::Tensor weighted_mse(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& weight,
                        double eps, loss_reduction reduction) {
  constexpr const char* fn = "weighted_mse";
  if (!(eps >= 0)) fail(fn, "eps must be >= 0, got " + std::to_string(eps));
  auto d = regression_diff(pred, target, fn);
  hooks::detail::require_floating(weight, fn, "weight");
  hooks::detail::require_broadcastable(weight, pred, fn, "weight", "pred");
  auto w = weight.to(pred.options()).expand(pred.sizes());
  auto l = w * d * d;
  if (reduction != loss_reduction::mean) return hooks::detail::reduce(l, reduction);
  return hooks::detail::ratio_or_zero(l.sum(), w.sum() + eps);
}

at::Tensor contrastive_loss(const at::Tensor& a, const at::Tensor& b, const at::Tensor& same,
                            const contrastive_options& options) {
  constexpr const char* fn = "contrastive_loss";
  hooks::detail::require_floating_pair(a, b, fn, "a", "b");
  if (a.dim() != 2)
    fail(fn, "a and b must be [N, D] embeddings, got " + hooks::detail::describe(a));
  if (!same.defined() || same.dim() != 1 || same.size(0) != a.size(0))
    fail(fn, "same must be [" + std::to_string(a.size(0)) + "] (1 = similar pair), got " +
                 hooks::detail::describe(same));
  auto y = same.to(a.scalar_type());
  auto d2 = (a - b).pow(2).sum(1);
  auto d = safe_sqrt(d2, options.eps);
  auto gap = at::relu(options.margin - d);
  auto l = 0.5 * (y * d2 + (1 - y) * gap * gap);
  return hooks::detail::reduce(l, options.reduction);
}

}  // namespace losslens
