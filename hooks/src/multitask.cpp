#include "losslens/torch/multitask.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/module.h>

#include "losslens/error.hpp"
#include "tensor_checks.hpp"

namespace losslens {

using hooks::detail::fail;

task_weighting::task_weighting(std::size_t num_tasks) : num_tasks_(num_tasks) {
  if (num_tasks == 0) throw losslens::error("losslens::task_weighting: need at least one task");
}

void task_weighting::check_losses(const std::vector<at::Tensor>& losses,
                                  std::string_view who) const {
  if (losses.size() != num_tasks_)
    fail(who, "expected " + std::to_string(num_tasks_) + " task losses, got " +
                  std::to_string(losses.size()));
  for (std::size_t i = 0; i < losses.size(); ++i) {
    const auto name = "loss " + std::to_string(i);
    hooks::detail::require_floating(losses[i], who, name);
    if (losses[i].numel() != 1)
      fail(who, name + " must hold one element (a reduced loss), got " +
                    hooks::detail::describe(losses[i]));
  }
}

namespace {

/// sum_i w_i L_i with constant weights.
at::Tensor weighted_sum(const std::vector<at::Tensor>& losses, const std::vector<double>& w) {
  auto total = w[0] * losses[0].reshape({});
  for (std::size_t i = 1; i < losses.size(); ++i) total = total + w[i] * losses[i].reshape({});
  return total;
}

std::vector<double> to_doubles(const at::Tensor& t) {
  auto c = t.detach().to(at::kCPU).to(at::kDouble).contiguous();
  const auto* p = c.data_ptr<double>();
  return {p, p + c.numel()};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

fixed_weighting::fixed_weighting(std::vector<double> weights)
    : task_weighting(weights.size()), weights_(std::move(weights)) {
  for (auto w : weights_)
    if (!(w >= 0) || !std::isfinite(w))
      fail("fixed_weighting", "weights must be finite and >= 0, got " + std::to_string(w));
}

at::Tensor fixed_weighting::combine(const std::vector<at::Tensor>& losses) {
  check_losses(losses, "fixed_weighting::combine");
  return weighted_sum(losses, weights_);
}

// ---------------------------------------------------------------------------------------------

uncertainty_weighting::uncertainty_weighting(std::size_t num_tasks, uncertainty_options options)
    : task_weighting(num_tasks), options_(options) {
  if (!std::isfinite(options.initial_log_variance))
    fail("uncertainty_weighting", "initial_log_variance must be finite");
  log_variances_ = at::full({static_cast<std::int64_t>(num_tasks)}, options.initial_log_variance,
                            at::TensorOptions().dtype(options.dtype))
                       .set_requires_grad(true);
}

at::Tensor uncertainty_weighting::combine(const std::vector<at::Tensor>& losses) {
  check_losses(losses, "uncertainty_weighting::combine");
  if (!initialised_ && options_.init_from_first_losses) {
    std::vector<at::Tensor> detached;
    for (const auto& l : losses)
      detached.push_back(l.detach().reshape({}).to(at::kCPU, at::kDouble));
    const auto first = to_doubles(at::stack(detached));
    c10::AutoGradMode no_grad(false);
    for (std::size_t i = 0; i < first.size(); ++i)
      if (first[i] > 0 && std::isfinite(first[i]))
        log_variances_.select(0, static_cast<std::int64_t>(i)).fill_(std::log(first[i]));
  }
  initialised_ = true;
  const double c = options_.half ? 0.5 : 1.0;
  at::Tensor total;
  for (std::size_t i = 0; i < losses.size(); ++i) {
    auto s = log_variances_.select(0, static_cast<std::int64_t>(i));
    auto term = c * ((-s).exp() * losses[i].reshape({}) + s);
    total = total.defined() ? total + term : term;
  }
  return total;
}

std::vector<double> uncertainty_weighting::weights() const {
  auto w = to_doubles(log_variances_);
  for (auto& x : w) x = (options_.half ? 0.5 : 1.0) * std::exp(-x);
  return w;
}

std::vector<double> uncertainty_weighting::log_variances() const {
  return to_doubles(log_variances_);
}

// ---------------------------------------------------------------------------------------------

gradnorm_weighting::gradnorm_weighting(std::size_t num_tasks, std::vector<at::Tensor> shared,
                                       gradnorm_options options)
    : task_weighting(num_tasks),
      options_(options),
      shared_(std::move(shared)),
      weights_(num_tasks, 1.0),
      adam_m_(num_tasks, 0.0),
      adam_v_(num_tasks, 0.0) {
  constexpr const char* fn = "gradnorm_weighting";
  if (shared_.empty()) fail(fn, "needs at least one shared parameter");
  for (const auto& p : shared_)
    if (!p.defined() || !p.requires_grad())
      fail(fn, "shared parameters must require grad, got " + hooks::detail::describe(p));
  if (!(options_.alpha >= 0)) fail(fn, "alpha must be >= 0");
  if (!(options_.lr > 0)) fail(fn, "lr must be > 0");
  if (!(options_.min_weight > 0 && options_.min_weight < 1))
    fail(fn, "min_weight must be in (0, 1)");
}

gradnorm_weighting gradnorm_weighting::for_layer(const torch::nn::Module& model,
                                                 std::string_view layer, std::size_t num_tasks,
                                                 gradnorm_options options) {
  std::vector<at::Tensor> shared;
  std::string names;
  const std::string prefix = std::string(layer) + ".";
  for (const auto& item : model.named_parameters()) {
    const auto& name = item.key();
    if (name == layer || name.rfind(prefix, 0) == 0) shared.push_back(item.value());
    names += (names.empty() ? "" : ", ") + name;
  }
  if (shared.empty())
    fail("gradnorm_weighting::for_layer",
         "no parameter named '" + std::string(layer) + "' or under it; parameters: " + names);
  return gradnorm_weighting(num_tasks, std::move(shared), options);
}

at::Tensor gradnorm_weighting::combine(const std::vector<at::Tensor>& losses) {
  check_losses(losses, "gradnorm_weighting::combine");
  const auto n = losses.size();
  std::vector<at::Tensor> scalars;  // ||dL_i/dW|| then L_i, read back in one copy
  for (const auto& loss : losses) {
    auto grads = torch::autograd::grad({loss.reshape({})}, shared_, {}, /*retain_graph=*/true,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    at::Tensor sq;
    for (const auto& g : grads) {
      if (!g.defined()) continue;
      auto s = g.to(at::kDouble).pow(2).sum();
      sq = sq.defined() ? sq + s : s;
    }
    scalars.push_back(sq.defined() ? sq.sqrt()
                                   : at::full({}, 0.0, loss.options().dtype(at::kDouble)));
  }
  for (const auto& loss : losses)
    scalars.push_back(loss.detach().reshape({}).to(scalars[0].options()));
  const auto values = to_doubles(at::stack(scalars));

  auto total = weighted_sum(losses, weights_);

  grad_norms_.assign(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n));
  const std::vector<double> loss_now(values.begin() + static_cast<std::ptrdiff_t>(n), values.end());
  if (initial_losses_.empty()) initial_losses_ = loss_now;

  // Inverse training rates r_i and the targets mean(G) * r_i^alpha.
  std::vector<double> ratio(n), weighted_norm(n);
  double mean_ratio = 0, mean_norm = 0;
  for (std::size_t i = 0; i < n; ++i) {
    ratio[i] = initial_losses_[i] > 0 ? loss_now[i] / initial_losses_[i] : 1.0;
    weighted_norm[i] = weights_[i] * grad_norms_[i];
    mean_ratio += ratio[i] / static_cast<double>(n);
    mean_norm += weighted_norm[i] / static_cast<double>(n);
  }
  bool finite = std::isfinite(mean_ratio) && std::isfinite(mean_norm) && mean_ratio > 0;
  if (!finite) return total;  // a non-finite loss or gradient: keep the weights as they are

  // d/dw_i sum_j |w_j g_j - target_j| = sign(w_i g_i - target_i) g_i; one Adam step.
  ++updates_;
  constexpr double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  const double c1 = 1 - std::pow(beta1, static_cast<double>(updates_));
  const double c2 = 1 - std::pow(beta2, static_cast<double>(updates_));
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double target = mean_norm * std::pow(ratio[i] / mean_ratio, options_.alpha);
    const double diff = weighted_norm[i] - target;
    const double grad = (diff > 0 ? 1.0 : diff < 0 ? -1.0 : 0.0) * grad_norms_[i];
    adam_m_[i] = beta1 * adam_m_[i] + (1 - beta1) * grad;
    adam_v_[i] = beta2 * adam_v_[i] + (1 - beta2) * grad * grad;
    weights_[i] -= options_.lr * (adam_m_[i] / c1) / (std::sqrt(adam_v_[i] / c2) + adam_eps);
    weights_[i] = std::max(weights_[i], options_.min_weight);
    sum += weights_[i];
  }
  for (auto& w : weights_) w *= static_cast<double>(n) / sum;
  return total;
}

}  // namespace losslens
