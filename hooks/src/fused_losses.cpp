#include "fused_losses.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "loss_simd.hpp"
#include "tensor_checks.hpp"

namespace losslens::hooks::detail {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

thread_local int portable_depth = 0;

/// The vectorised loops apply: float32 or float64 strided CPU tensors, on a CPU with AVX2.
bool use_simd(const at::Tensor& x) {
  static const bool cpu_has_simd = simd::available();
  return cpu_has_simd && portable_depth == 0 && x.device().is_cpu() && x.layout() == at::kStrided &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

/// dtype of the portable path: float64 stays, everything else is computed in float32.
at::ScalarType compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

/// A per-class tensor in the dtype and on the device of `like`, contiguous (or undefined).
at::Tensor per_class(const at::Tensor& w, const at::Tensor& like) {
  return w.defined() ? w.to(like.options()).contiguous() : at::Tensor();
}

/// Rows to give one thread: about 16k elements.
std::int64_t grain_rows(std::int64_t cols) {
  return std::max<std::int64_t>(1, 16384 / std::max<std::int64_t>(cols, 1));
}

/// The reduced value: none keeps the per-row losses, mean divides by den (0 over nothing).
at::Tensor reduce_by(const at::Tensor& rows, const at::Tensor& den, loss_reduction r) {
  if (r == loss_reduction::none) return rows;
  if (r == loss_reduction::sum) return rows.sum();
  return ratio_or_zero(rows.sum(), den);
}

/// The gradient of the reduced value with respect to each row's loss (broadcastable to rows).
at::Tensor row_grad_scale(const at::Tensor& grad, const at::Tensor& den, loss_reduction r) {
  return r == loss_reduction::mean ? ratio_or_zero(grad, den) : grad;
}

/// In a backward with create_graph: the gradient through `value` (an ATen formula of the saved
/// inputs), so that it can be differentiated again.
variable_list graph_gradient(const at::Tensor& value, const variable_list& inputs,
                             const at::Tensor& grad) {
  return torch::autograd::grad({value}, inputs, {grad}, /*retain_graph=*/true,
                               /*create_graph=*/true, /*allow_unused=*/true);
}

// ---------------------------------------------------------------------------------------------
// Softmax family. Per row, with m = max_c x_c, e_c = exp(x_c - m), S = sum_c e_c = 1 + S':
//   -log p_y = (m - x_y) + log1p(S')      (two non-negative terms: no cancellation, no rounding
//                                          of a large logsumexp before the subtraction)
//   1 - p_y  = (sum_{c != y} e_c) / S     (S' when y is a maximum, else 1 + (S' - e_y) >= 1)
// The gradient is alpha e_c - beta w_c off the target and a separate value at the target.
// finish_row() is written once for scalars (V = double: the vectorised path) and for tensors of
// rows (V = at::Tensor: the portable path).

double select(bool c, double a, double b) { return c ? a : b; }
at::Tensor select(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
  return at::where(c, a, b);
}
at::Tensor select(const at::Tensor& c, const at::Tensor& a, double b) {
  return at::where(c, a, at::scalar_tensor(b, a.options()));
}
double constant_like(double, double v) { return v; }
at::Tensor constant_like(const at::Tensor& like, double v) { return at::full_like(like, v); }

template <class V, class B>
struct softmax_row {
  V max, rest, gap;  // m, S' = S - 1, U = sum_c w_c (m - x_c)
  V x_y, e_y, w_y;   // target logit, exp(x_y - m), target weight (class weight or focal alpha)
  B y_is_max;        // x_y == m
};

/// Loss of a row and its gradient for a unit upstream gradient: dl/dx_c = alpha e_c - beta w_c
/// for c != y, dl/dx_y = at_target.
template <class V>
struct softmax_row_out {
  V loss, alpha, beta, at_target;
};

struct softmax_consts {
  bool focal = false;
  double gamma = 0;
  double target_share = 1;  // cross-entropy: 1 - label_smoothing
  double smooth_share = 0;  // cross-entropy: label_smoothing / C
};

softmax_consts consts_of(const softmax_loss_spec& s, std::int64_t num_classes) {
  return {s.focal, s.gamma, 1 - s.label_smoothing,
          s.focal ? 0.0 : s.label_smoothing / static_cast<double>(num_classes)};
}

/// W, the sum of the class weights, is a double or a 0-dim tensor.
template <class V, class B, class W>
softmax_row_out<V> finish_row(const softmax_row<V, B>& r, const softmax_consts& k,
                              const W& weight_sum) {
  using std::log1p;
  using std::pow;
  const V s = r.rest + 1.0;
  const V others = select(r.y_is_max, r.rest, (r.rest - r.e_y) + 1.0);
  const V nll = (r.max - r.x_y) + log1p(r.rest);
  const V p = r.e_y / s, q = others / s;
  if (k.focal) {
    // l = alpha_y q^gamma nll; dl/dz = -alpha_y q^gamma (q + gamma p nll) for the target's
    // log-odds z, and dz/dx_c = -e_c / others off the target.
    const V scale = k.gamma == 0 ? r.w_y : r.w_y * pow(q, k.gamma);
    // nll / others -> 1 as others -> 0 (y is then the maximum and nll = log1p(others)).
    const V ratio = select(others > 0, nll / select(others > 0, others, 1.0), 1.0);
    return {scale * nll, scale * (1.0 / s + k.gamma * p * ratio), constant_like(s, 0.0),
            -scale * (q + k.gamma * p * nll)};
  }
  // l = (1 - eps) w_y nll + eps / C sum_c w_c (-log p_c), sum_c w_c (-log p_c) = U + W log S.
  const V a = r.w_y * k.target_share;
  if (k.smooth_share == 0) return {a * nll, a / s, constant_like(s, 0.0), -a * q};
  const double b = k.smooth_share;
  return {a * nll + b * (r.gap + weight_sum * log1p(r.rest)), (a + b * weight_sum) / s,
          constant_like(s, b), -a * q + b * (weight_sum * p - r.w_y)};
}

/// Forward of the softmax family. coeff [4, R] holds m, alpha, beta, at_target per row (only
/// when need_grad); den is the mean's denominator: a tensor on the portable path, a double on
/// the vectorised one (which stays clear of ATen's per-op overhead on small batches).
struct softmax_forward_out {
  at::Tensor value, coeff, den;
  at::Tensor exp;  // vectorised path with need_grad: exp(x - m) shaped like the logits, so
                   // that the backward pass needs no exponential (LibTorch computes two)
  double den_value = 0;
};

template <class T>
softmax_forward_out softmax_forward_simd(const at::Tensor& logits, const at::Tensor& target,
                                         const softmax_loss_spec& spec, bool need_grad) {
  const auto x = logits.contiguous();
  const auto t = target.to(at::kLong).contiguous();
  const std::int64_t rows = x.size(0), cols = x.size(1);
  const auto w = per_class(spec.class_weight, x);
  const auto alpha = per_class(spec.class_alpha, x);
  const T* xp = x.data_ptr<T>();
  const std::int64_t* tp = t.data_ptr<std::int64_t>();
  const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
  const T* ap = alpha.defined() ? alpha.data_ptr<T>() : nullptr;
  const auto k = consts_of(spec, cols);
  const bool want_gap = k.smooth_share > 0;

  softmax_forward_out out;
  if (need_grad) out.exp = at::empty_like(x);
  T* ep = need_grad ? out.exp.data_ptr<T>() : nullptr;
  std::vector<simd::softmax_row_stats> stats(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, grain_rows(cols), [&](std::int64_t b, std::int64_t e) {
    simd::softmax_stats(xp + b * cols, e - b, cols, wp, want_gap, stats.data() + b,
                        ep ? ep + b * cols : nullptr);
  });
  double weight_sum = static_cast<double>(cols);
  if (wp) {
    weight_sum = 0;
    for (std::int64_t c = 0; c < cols; ++c) weight_sum += static_cast<double>(wp[c]);
  }

  at::Tensor per_row;
  if (spec.reduction == loss_reduction::none) per_row = at::empty({rows}, x.options());
  if (need_grad) out.coeff = at::empty({4, rows}, x.options().dtype(at::kDouble));
  T* lp = per_row.defined() ? per_row.data_ptr<T>() : nullptr;
  double* cp = out.coeff.defined() ? out.coeff.data_ptr<double>() : nullptr;
  double total = 0, den = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t y = tp[r];
    softmax_row_out<double> o{0, 0, 0, 0};
    if (y != spec.ignore_index) {
      if (y < 0 || y >= cols)
        fail(spec.fn, "target " + std::to_string(y) + " at row " + std::to_string(r) +
                          " is outside [0, " + std::to_string(cols) + ") and is not ignore_index " +
                          std::to_string(spec.ignore_index));
      const auto& st = stats[static_cast<std::size_t>(r)];
      const double x_y = static_cast<double>(xp[r * cols + y]);
      const bool y_is_max = x_y == st.max;
      const T* wy = spec.focal ? ap : wp;
      const double w_y = wy ? static_cast<double>(wy[y]) : 1.0;
      const double e_y = y_is_max ? 1.0 : std::exp(x_y - st.max);
      const softmax_row<double, bool> row{st.max, st.rest, st.gap, x_y, e_y, w_y, y_is_max};
      o = finish_row(row, k, weight_sum);
      total += o.loss;
      den += spec.focal ? 1.0 : w_y;
    }
    if (lp) lp[r] = static_cast<T>(o.loss);
    if (cp) {
      cp[r] = stats[static_cast<std::size_t>(r)].max;
      cp[rows + r] = o.alpha;
      cp[2 * rows + r] = o.beta;
      cp[3 * rows + r] = o.at_target;
    }
  }
  out.den_value = den;
  if (spec.reduction == loss_reduction::none)
    out.value = per_row;
  else if (spec.reduction == loss_reduction::sum)
    out.value = at::scalar_tensor(total, x.options());
  else
    out.value = at::scalar_tensor(den > 0 ? total / den : 0.0, x.options());
  return out;
}

/// m, d = x - m, e = exp(d), the maxima and S' over dim 1 (kept), from differentiable ATen ops:
/// the maxima's e_c = 1 are summed as tensors (not counted), so autograd sees every term of S.
struct softmax_parts {
  at::Tensor max, d, e, at_max, rest;
};

softmax_parts softmax_parts_of(const at::Tensor& x) {
  softmax_parts s;
  s.max = x.amax(1, true);
  s.d = x - s.max;
  s.e = s.d.exp();
  s.at_max = s.d == 0;
  s.rest =
      s.e.masked_fill(s.at_max, 0).sum(1, true) + (s.e.masked_fill(~s.at_max, 0).sum(1, true) - 1);
  return s;
}

/// Portable forward: ATen ops on logits [R, C] in the compute dtype, differentiable (used again
/// with autograd for double backward).
softmax_forward_out softmax_forward_portable(const at::Tensor& logits, const at::Tensor& target,
                                             const softmax_loss_spec& spec, bool need_grad) {
  const auto x = logits.to(compute_type(logits));
  const auto t = target.to(at::kLong);
  const auto keep = t != spec.ignore_index;
  const auto idx = t.masked_fill(~keep, 0);
  const auto k = consts_of(spec, x.size(1));
  const auto w = spec.class_weight.defined() ? spec.class_weight.to(x.options()) : at::Tensor();
  const auto alpha = spec.class_alpha.defined() ? spec.class_alpha.to(x.options()) : at::Tensor();

  const auto parts = softmax_parts_of(x);
  const auto m = parts.max.squeeze(1);
  const auto x_y = x.gather(1, idx.unsqueeze(1)).squeeze(1);
  const auto& wt = spec.focal ? alpha : w;
  const auto gap =
      k.smooth_share > 0 ? -(w.defined() ? parts.d * w : parts.d).sum(1) : at::zeros_like(m);
  const auto w_y = wt.defined() ? wt.take(idx) : at::ones_like(m);
  const softmax_row<at::Tensor, at::Tensor> row{
      m, parts.rest.squeeze(1), gap, x_y, (x_y - m).exp(), w_y, x_y == m};
  const auto o = w.defined() && !spec.focal ? finish_row(row, k, w.sum())
                                            : finish_row(row, k, static_cast<double>(x.size(1)));

  softmax_forward_out out;
  const auto per_row = select(keep, o.loss, 0.0);
  out.den = spec.focal ? keep.sum().to(x.scalar_type()) : select(keep, row.w_y, 0.0).sum();
  out.value = reduce_by(per_row, out.den, spec.reduction).to(logits.scalar_type());
  if (need_grad)
    out.coeff = at::stack(
        {m, select(keep, o.alpha, 0.0), select(keep, o.beta, 0.0), select(keep, o.at_target, 0.0)});
  return out;
}

softmax_forward_out softmax_forward(const at::Tensor& logits, const at::Tensor& target,
                                    const softmax_loss_spec& spec, bool need_grad) {
  if (!use_simd(logits)) return softmax_forward_portable(logits, target, spec, need_grad);
  if (logits.scalar_type() == at::kFloat)
    return softmax_forward_simd<float>(logits, target, spec, need_grad);
  return softmax_forward_simd<double>(logits, target, spec, need_grad);
}

template <class T>
at::Tensor softmax_backward_simd(const at::Tensor& exp, const at::Tensor& target,
                                 const at::Tensor& weight, const at::Tensor& coeff,
                                 const at::Tensor& grad, double den, loss_reduction reduction) {
  const auto t = target.to(at::kLong).contiguous();
  const std::int64_t rows = exp.size(0), cols = exp.size(1);
  const auto w = per_class(weight, exp);
  const double* cp = coeff.data_ptr<double>();
  // Upstream gradient per row: one number for sum and mean, one per row for none.
  double g_all = 0;
  at::Tensor g_rows;
  if (reduction == loss_reduction::none) {
    g_rows = grad.to(at::kDouble).contiguous();
  } else {
    g_all = grad.item<double>();
    if (reduction == loss_reduction::mean) g_all = den > 0 ? g_all / den : 0.0;
  }
  const double* gp = g_rows.defined() ? g_rows.data_ptr<double>() : nullptr;
  std::vector<double> alpha(static_cast<std::size_t>(rows)), beta(static_cast<std::size_t>(rows)),
      at_target(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double g = gp ? gp[r] : g_all;
    const auto i = static_cast<std::size_t>(r);
    alpha[i] = cp[rows + r] * g;
    beta[i] = cp[2 * rows + r] * g;
    at_target[i] = cp[3 * rows + r] * g;
  }
  auto out = at::empty_like(exp);
  const T* ep = exp.data_ptr<T>();
  const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  const std::int64_t* tp = t.data_ptr<std::int64_t>();
  at::parallel_for(0, rows, grain_rows(cols), [&](std::int64_t b, std::int64_t e) {
    simd::softmax_grad(ep + b * cols, e - b, cols, wp, alpha.data() + b, beta.data() + b,
                       op + b * cols);
    // Ignored rows have zero coefficients; their target (ignore_index) may lie outside [0, C).
    for (std::int64_t r = b; r < e; ++r)
      if (tp[r] >= 0 && tp[r] < cols)
        op[r * cols + tp[r]] = static_cast<T>(at_target[static_cast<std::size_t>(r)]);
  });
  return out;
}

at::Tensor softmax_backward_portable(const at::Tensor& logits, const at::Tensor& target,
                                     const at::Tensor& weight, const at::Tensor& coeff,
                                     const at::Tensor& scale) {
  const auto x = logits.to(compute_type(logits));
  const auto c = coeff.to(x.scalar_type());
  const auto g = scale.to(x.scalar_type());
  const auto t = target.to(at::kLong);
  const auto idx = t.masked_fill((t < 0) | (t >= x.size(1)), 0).unsqueeze(1);
  auto grad = (c[1] * g).unsqueeze(1) * (x - c[0].unsqueeze(1)).exp();
  if (weight.defined())
    grad = grad - (c[2] * g).unsqueeze(1) * weight.to(x.options());
  else
    grad = grad - (c[2] * g).unsqueeze(1);
  return grad.scatter(1, idx, (c[3] * g).unsqueeze(1)).to(logits.scalar_type());
}

/// The spec in three entries of saved_data (each entry is a hash-map insert: on small batches
/// they add up): the per-class tensor in use, the integers and the reals.
void save_spec(AutogradContext* ctx, const softmax_loss_spec& s) {
  ctx->saved_data["weights"] = s.focal ? s.class_alpha : s.class_weight;
  ctx->saved_data["ints"] =
      std::vector<std::int64_t>{s.ignore_index, static_cast<std::int64_t>(s.reduction), s.focal};
  ctx->saved_data["reals"] = std::vector<double>{s.label_smoothing, s.gamma};
}

softmax_loss_spec load_spec(AutogradContext* ctx) {
  softmax_loss_spec s;
  const auto ints = ctx->saved_data["ints"].toIntVector();
  const auto reals = ctx->saved_data["reals"].toDoubleVector();
  s.ignore_index = ints[0];
  s.reduction = static_cast<loss_reduction>(ints[1]);
  s.focal = ints[2] != 0;
  (s.focal ? s.class_alpha : s.class_weight) = ctx->saved_data["weights"].toTensor();
  s.label_smoothing = reals[0];
  s.gamma = reals[1];
  return s;
}

/// Saves the logits (for double backward and the portable path), the targets, the spec, the
/// per-row coefficients and, on the vectorised path, exp(x - m).
struct softmax_function : torch::autograd::Function<softmax_function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& target, const softmax_loss_spec& spec) {
    auto out = softmax_forward(logits, target, spec, true);
    ctx->save_for_backward({logits, target});
    save_spec(ctx, spec);
    ctx->saved_data["coeff"] = out.coeff;
    // The vectorised path saves exp(x - m) and its double denominator, the portable one a tensor.
    if (out.exp.defined()) ctx->saved_data["exp"] = out.exp;
    ctx->saved_data["den"] = out.exp.defined() ? c10::IValue(out.den_value) : c10::IValue(out.den);
    return out.value;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto spec = load_spec(ctx);
    if (at::GradMode::is_enabled()) {
      const auto value = softmax_forward_portable(saved[0], saved[1], spec, false).value;
      return {graph_gradient(value, {saved[0]}, grads[0])[0], {}, {}};
    }
    const auto coeff = ctx->saved_data["coeff"].toTensor();
    const auto& den = ctx->saved_data["den"];
    const auto& weight = spec.focal ? at::Tensor() : spec.class_weight;
    if (!den.isDouble()) {
      const auto scale = row_grad_scale(grads[0], den.toTensor(), spec.reduction);
      return {softmax_backward_portable(saved[0], saved[1], weight, coeff, scale), {}, {}};
    }
    const auto exp = ctx->saved_data["exp"].toTensor();
    const auto backward = exp.scalar_type() == at::kFloat ? softmax_backward_simd<float>
                                                          : softmax_backward_simd<double>;
    return {
        backward(exp, saved[1], weight, coeff, grads[0], den.toDouble(), spec.reduction), {}, {}};
  }
};

// ---------------------------------------------------------------------------------------------
// Binary cross-entropy with logits: l = w (pw y softplus(-x) + (1 - y) softplus(x)), both terms
// non-negative; dl/dx = w ((1 - y) sigmoid(x) - pw y sigmoid(-x)), computed in the forward pass.

struct bce_forward_out {
  at::Tensor value, coeff;
};

at::Tensor expand_like(const at::Tensor& t, const at::Tensor& like) {
  return t.defined() ? t.to(like.options()).expand(like.sizes()).contiguous() : at::Tensor();
}

template <class T>
bce_forward_out bce_forward_simd(const at::Tensor& logits, const at::Tensor& target,
                                 const at::Tensor& pos_weight, const at::Tensor& weight,
                                 loss_reduction reduction, bool need_grad) {
  const auto x = logits.contiguous();
  const auto y = target.contiguous();
  const auto pw = expand_like(pos_weight, x), w = expand_like(weight, x);
  const std::int64_t n = x.numel();
  bce_forward_out out;
  at::Tensor per_el;
  if (reduction == loss_reduction::none) per_el = at::empty_like(x);
  if (need_grad) out.coeff = at::empty_like(x);
  const T* xp = x.data_ptr<T>();
  const T* yp = y.data_ptr<T>();
  const T* pwp = pw.defined() ? pw.data_ptr<T>() : nullptr;
  const T* wp = w.defined() ? w.data_ptr<T>() : nullptr;
  T* lp = per_el.defined() ? per_el.data_ptr<T>() : nullptr;
  T* cp = out.coeff.defined() ? out.coeff.data_ptr<T>() : nullptr;
  // Fixed blocks, summed in order: the result does not depend on the number of threads.
  constexpr std::int64_t block = 16384;
  const std::int64_t blocks = (n + block - 1) / block;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  at::parallel_for(0, blocks, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const std::int64_t lo = i * block, len = std::min(block, n - lo);
      partial[static_cast<std::size_t>(i)] =
          simd::bce_logits(xp + lo, yp + lo, pwp ? pwp + lo : nullptr, wp ? wp + lo : nullptr, len,
                           lp ? lp + lo : nullptr, cp ? cp + lo : nullptr);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  if (reduction == loss_reduction::none)
    out.value = per_el;
  else if (reduction == loss_reduction::sum)
    out.value = at::scalar_tensor(total, x.options());
  else
    out.value = at::scalar_tensor(total / static_cast<double>(n), x.options());  // NaN if empty
  return out;
}

/// The loss by ATen ops (differentiable in logits and target).
at::Tensor bce_elements(const at::Tensor& x, const at::Tensor& y, const at::Tensor& pw,
                        const at::Tensor& w) {
  auto pos = y * -at::log_sigmoid(x);
  if (pw.defined()) pos = pos * pw;
  auto l = pos + (1 - y) * -at::log_sigmoid(-x);
  return w.defined() ? l * w : l;
}

bce_forward_out bce_forward_portable(const at::Tensor& logits, const at::Tensor& target,
                                     const at::Tensor& pos_weight, const at::Tensor& weight,
                                     loss_reduction reduction, bool need_grad) {
  const auto x = logits.to(compute_type(logits));
  const auto y = target.to(x.scalar_type());
  const auto pw = pos_weight.defined() ? pos_weight.to(x.options()) : at::Tensor();
  const auto w = weight.defined() ? weight.to(x.options()) : at::Tensor();
  bce_forward_out out;
  out.value = reduce(bce_elements(x, y, pw, w), reduction).to(logits.scalar_type());
  if (need_grad) {
    auto c = (1 - y) * at::sigmoid(x) - (pw.defined() ? pw * y : y) * at::sigmoid(-x);
    out.coeff = (w.defined() ? c * w : c).to(logits.scalar_type());
  }
  return out;
}

/// Mixed dtypes (promoted by ATen) and other devices take the portable path.
bce_forward_out bce_forward(const at::Tensor& logits, const at::Tensor& target,
                            const at::Tensor& pos_weight, const at::Tensor& weight,
                            loss_reduction reduction, bool need_grad) {
  const bool simd = use_simd(logits) && target.scalar_type() == logits.scalar_type() &&
                    target.device() == logits.device();
  const auto forward = !simd                                ? bce_forward_portable
                       : logits.scalar_type() == at::kFloat ? bce_forward_simd<float>
                                                            : bce_forward_simd<double>;
  return forward(logits, target, pos_weight, weight, reduction, need_grad);
}

/// pos_weight and weight travel outside the tensor arguments: they may be undefined, which a
/// custom function's inputs may not, and they take no gradient.
struct bce_weights {
  at::Tensor pos_weight, weight;
};

/// Saves the logits and targets (for the target's gradient and double backward), the weights
/// and dl/dx per element.
struct bce_function : torch::autograd::Function<bce_function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& target, const bce_weights& weights,
                            loss_reduction reduction) {
    auto out = bce_forward(logits, target, weights.pos_weight, weights.weight, reduction,
                           logits.requires_grad());
    ctx->save_for_backward({logits, target});
    ctx->saved_data["coeff"] = out.coeff;
    ctx->saved_data["pos_weight"] = weights.pos_weight;
    ctx->saved_data["weight"] = weights.weight;
    ctx->saved_data["reduction"] = static_cast<std::int64_t>(reduction);
    return out.value;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& y = saved[1];
    const auto conv = [&](const char* key) {
      const auto t = ctx->saved_data[key].toTensor();
      return t.defined() ? t.to(x.options()) : t;
    };
    const auto pw = conv("pos_weight"), w = conv("weight");
    const auto reduction = static_cast<loss_reduction>(ctx->saved_data["reduction"].toInt());
    const bool want_x = ctx->needs_input_grad(0), want_y = ctx->needs_input_grad(1);
    if (at::GradMode::is_enabled()) {
      auto value = reduce(bce_elements(x, y.to(x.scalar_type()), pw, w), reduction);
      std::vector<at::Tensor> inputs;
      if (want_x) inputs.push_back(x);
      if (want_y) inputs.push_back(y);
      auto g = graph_gradient(value, inputs, grads[0]);
      return {want_x ? g.front() : at::Tensor(), want_y ? g.back() : at::Tensor(), {}, {}};
    }
    auto scale = grads[0];
    if (reduction == loss_reduction::mean) scale = scale / static_cast<double>(x.numel());
    at::Tensor gx, gy;
    if (want_x) gx = ctx->saved_data["coeff"].toTensor() * scale;
    if (want_y) {
      // dl/dy = w (pw softplus(-x) - softplus(x)) = w (log_sigmoid(-x) - pw log_sigmoid(x))
      auto pos = at::log_sigmoid(x);
      if (pw.defined()) pos = pos * pw;
      auto d = at::log_sigmoid(-x) - pos;
      if (w.defined()) d = d * w;
      gy = (d * scale).to(y.scalar_type());
    }
    return {gx, gy, {}, {}};
  }
};

// ---------------------------------------------------------------------------------------------
// Dice: l = N / D_f, N = sum p(1 - t) + t(1 - p) (non-negative terms, = D - smooth - 2 I),
// D_f = max(sum p + sum t + smooth, eps). With l' = l where D >= eps (else 0, the floor is
// constant) and t_c in {0, 1}: (1 - 2t) - l' = (1 - t) A - t (1 + l'), A = 1 - l' = (2I + s) / D.

/// Per-group sums and the probabilities they came from; shapes keep the summed dims.
struct dice_parts {
  at::Tensor p;       // probabilities
  at::Tensor q;       // binary: sigmoid(-x) = 1 - p
  at::Tensor target;  // float mask, or bool one-hot (multi-class)
  at::Tensor num, inter, den_f, active, loss;
  softmax_parts soft;  // multi-class only
};

std::vector<std::int64_t> dice_dims(const at::Tensor& logits) {
  std::vector<std::int64_t> dims;
  for (std::int64_t d = logits.dim() >= 3 ? 2 : 1; d < logits.dim(); ++d) dims.push_back(d);
  return dims;
}

dice_parts dice_parts_of(const at::Tensor& logits, const at::Tensor& target, double smooth,
                         double eps) {
  const auto x = logits.to(compute_type(logits));
  const auto dims = dice_dims(x);
  dice_parts d;
  if (target.is_floating_point()) {
    d.p = at::sigmoid(x);
    d.q = at::sigmoid(-x);
    d.target = target.to(x.scalar_type());
    d.num = (d.p * (1 - d.target) + d.q * d.target).sum(dims, true);
    d.inter = (d.p * d.target).sum(dims, true);
    d.den_f = d.p.sum(dims, true) + d.target.sum(dims, true);
  } else {
    d.soft = softmax_parts_of(x);
    const auto s = d.soft.rest + 1;
    d.p = d.soft.e / s;
    const auto idx = target.to(at::kLong).unsqueeze(1);
    d.target = at::zeros_like(x, x.options().dtype(at::kBool)).scatter(1, idx, true);
    // 1 - p_y per pixel from the other classes' terms (no cancellation when p_y -> 1).
    const auto e_y = d.soft.e.gather(1, idx);
    const auto others =
        at::where(d.soft.at_max.gather(1, idx), d.soft.rest, (d.soft.rest - e_y) + 1);
    d.num = at::where(d.target, others / s, d.p).sum(dims, true);
    d.inter = d.p.masked_fill(~d.target, 0).sum(dims, true);
    d.den_f = d.p.sum(dims, true) + d.target.sum(dims, true).to(x.scalar_type());
  }
  d.den_f = d.den_f + smooth;
  d.active = d.den_f >= eps;
  d.den_f = d.den_f.clamp_min(eps);
  d.loss = d.num / d.den_f;
  return d;
}

/// The per-group losses, shaped [N, C] or [N].
at::Tensor dice_groups(const at::Tensor& logits, const at::Tensor& loss) {
  return loss.reshape(logits.sizes().slice(0, logits.dim() >= 3 ? 2 : 1));
}

/// The analytic gradient (recomputing the sums); the target's too when grad_target is given.
at::Tensor dice_backward(const at::Tensor& logits, const at::Tensor& target, double smooth,
                         double eps, loss_reduction reduction, const at::Tensor& grad,
                         at::Tensor* grad_target) {
  const auto d = dice_parts_of(logits, target, smooth, eps);
  const auto groups = d.loss.numel();
  at::Tensor g = reduction == loss_reduction::none ? grad.reshape(d.loss.sizes()) : grad;
  if (reduction == loss_reduction::mean) g = g / static_cast<double>(groups);
  g = g.to(d.p.scalar_type()) / d.den_f;
  const auto l_act = at::where(d.active, d.loss, at::zeros_like(d.loss));
  const auto one_minus =
      at::where(d.active, (2 * d.inter + smooth) / d.den_f, at::ones_like(d.loss));
  at::Tensor gx;
  if (target.is_floating_point()) {
    const auto& t = d.target;
    gx = g * d.p * d.q * ((1 - t) * one_minus - t * (1 + l_act));
    if (grad_target) *grad_target = (g * ((d.q - d.p) - l_act)).to(target.scalar_type());
  } else {
    // dl/dx_k = p_k (G_k - sum_c G_c p_c). For a maximum k the bracket is taken as
    // G_k (1 - p_k) - sum_{c != k} G_c p_c, both small when p_k -> 1.
    const auto G = g * at::where(d.target, -(1 + l_act), one_minus);
    const auto gp = G * d.p;
    const auto& at_max = d.soft.at_max;
    const auto below = gp.masked_fill(at_max, 0).sum(1, true);
    const auto ties = gp.masked_fill(~at_max, 0).sum(1, true);
    const auto q_max = d.soft.rest / (d.soft.rest + 1);
    gx = d.p * at::where(at_max, G * q_max - (below + (ties - gp)), G - (below + ties));
  }
  return gx.to(logits.scalar_type());
}

at::Tensor dice_value(const at::Tensor& logits, const at::Tensor& target, double smooth, double eps,
                      loss_reduction reduction) {
  return reduce(dice_groups(logits, dice_parts_of(logits, target, smooth, eps).loss), reduction)
      .to(logits.scalar_type());
}

/// Saves the logits and targets; the backward pass recomputes the sums.
struct dice_function : torch::autograd::Function<dice_function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits,
                            const at::Tensor& target, double smooth, double eps,
                            loss_reduction reduction) {
    ctx->save_for_backward({logits, target});
    ctx->saved_data["smooth"] = smooth;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["reduction"] = static_cast<std::int64_t>(reduction);
    return dice_value(logits, target, smooth, eps, reduction);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& t = saved[1];
    const double smooth = ctx->saved_data["smooth"].toDouble();
    const double eps = ctx->saved_data["eps"].toDouble();
    const auto reduction = static_cast<loss_reduction>(ctx->saved_data["reduction"].toInt());
    const bool want_x = ctx->needs_input_grad(0), want_t = ctx->needs_input_grad(1);
    if (at::GradMode::is_enabled()) {
      std::vector<at::Tensor> inputs;
      if (want_x) inputs.push_back(x);
      if (want_t) inputs.push_back(t);
      auto g = graph_gradient(dice_value(x, t, smooth, eps, reduction), inputs, grads[0]);
      return {want_x ? g.front() : at::Tensor(), want_t ? g.back() : at::Tensor(), {}, {}, {}};
    }
    at::Tensor gt;
    auto gx = dice_backward(x, t, smooth, eps, reduction, grads[0], want_t ? &gt : nullptr);
    return {want_x ? gx : at::Tensor(), gt, {}, {}, {}};
  }
};

bool needs_graph(const at::Tensor& a, const at::Tensor& b) {
  return at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
}

}  // namespace

at::Tensor softmax_loss(const at::Tensor& logits, const at::Tensor& target,
                        const softmax_loss_spec& spec) {
  if (!needs_graph(logits, logits)) return softmax_forward(logits, target, spec, false).value;
  return softmax_function::apply(logits, target, spec);
}

at::Tensor bce_with_logits(const at::Tensor& logits, const at::Tensor& target,
                           const at::Tensor& pos_weight, const at::Tensor& weight,
                           loss_reduction reduction) {
  if (!needs_graph(logits, target))
    return bce_forward(logits, target, pos_weight, weight, reduction, false).value;
  return bce_function::apply(logits, target, bce_weights{pos_weight, weight}, reduction);
}

at::Tensor dice(const at::Tensor& logits, const at::Tensor& target, double smooth, double eps,
                loss_reduction reduction) {
  if (!needs_graph(logits, target)) {
    at::NoGradGuard no_grad;
    return dice_value(logits, target, smooth, eps, reduction);
  }
  return dice_function::apply(logits, target, smooth, eps, reduction);
}

portable_kernels_scope::portable_kernels_scope() { ++portable_depth; }
portable_kernels_scope::~portable_kernels_scope() { --portable_depth; }

}  // namespace losslens::hooks::detail
