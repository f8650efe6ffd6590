#pragma once
/// \file multitask.hpp
/// Multi-task loss combiners: fixed weights, uncertainty weighting (Kendall et al. 2018) and
/// GradNorm (Chen et al. 2018). Each turns the raw per-task losses into the total to
/// back-propagate and exposes its current effective weights, so that the monitor can chart them
/// and the task_dominance detector can compare weighted shares (sample::task_weights).
///
/// \code
/// losslens::uncertainty_weighting mtl(2);
/// torch::optim::Adam opt(concat(model->parameters(), mtl.parameters()), 1e-3);
/// auto total = mtl.combine({l_cls, l_reg});
/// total.backward();
/// opt.step();
/// lens.step({{"cls", l_cls}, {"reg", l_reg}}, total);   // raw losses, weights from mtl
/// \endcode
///
/// Thread-safety: a combiner belongs to the training thread. combine() and weights() must not
/// run concurrently with each other or with an optimizer step on parameters(); weights() of
/// uncertainty_weighting reads the learnable tensor (one tiny device-to-host copy).

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

namespace torch::nn {
class Module;
}

namespace losslens {

/// Common interface of the combiners.
class task_weighting {
 public:
  virtual ~task_weighting() = default;

  /// The total loss to back-propagate from the raw (unweighted) task losses, each a
  /// one-element floating tensor, in task order. Throws losslens::error if the number of
  /// losses differs from num_tasks() or a loss is not a one-element floating tensor.
  virtual at::Tensor combine(const std::vector<at::Tensor>& losses) = 0;

  /// The current effective weight of each task: the factor multiplying its raw loss in the
  /// total. Sample::task_weights takes these as they are.
  virtual std::vector<double> weights() const = 0;

  /// Learnable tensors to add to the optimizer (empty for fixed weights and GradNorm, which
  /// updates its weights itself inside combine()).
  virtual std::vector<at::Tensor> parameters() const { return {}; }

  std::size_t num_tasks() const noexcept { return num_tasks_; }

 protected:
  explicit task_weighting(std::size_t num_tasks);
  /// Validates the losses passed to combine(); `who` names the combiner in the message.
  void check_losses(const std::vector<at::Tensor>& losses, std::string_view who) const;

 private:
  std::size_t num_tasks_;
};

/// total = sum_i w_i L_i with constant weights.
class fixed_weighting final : public task_weighting {
 public:
  /// Throws losslens::error if weights is empty or holds a negative or non-finite value.
  explicit fixed_weighting(std::vector<double> weights);
  at::Tensor combine(const std::vector<at::Tensor>& losses) override;
  std::vector<double> weights() const override { return weights_; }

 private:
  std::vector<double> weights_;
};

/// Options of uncertainty_weighting.
struct uncertainty_options {
  /// false: total = sum_i exp(-s_i) L_i + s_i (the common form, weight exp(-s_i)).
  /// true: total = sum_i 0.5 exp(-s_i) L_i + 0.5 s_i, Kendall et al.'s Gaussian-likelihood form
  /// 1 / (2 sigma^2) L + log sigma with s = log sigma^2 (weight 0.5 exp(-s_i)).
  /// Both have their optimum at exp(s_i) = L_i, which equalises the weighted losses.
  bool half = false;
  /// true: at the first combine(), s_i = log L_i (the optimum for those losses, so every
  /// weighted loss starts at 1); a non-finite or non-positive L_i keeps initial_log_variance.
  /// Starting from s = 0 instead, a loss in the thousands gives s a gradient of about -L at
  /// first, which inflates Adam's second-moment estimate for ~1000 steps and leaves s far
  /// from its optimum after a few hundred steps (docs/losses.md has the numbers).
  bool init_from_first_losses = true;
  double initial_log_variance = 0;    ///< s_i at the start otherwise (weights exp(-s_i) = 1)
  at::ScalarType dtype = at::kFloat;  ///< of the learnable s (a CPU tensor; 0-dim slices mix
                                      ///< with losses on any device)
};

/// Uncertainty weighting with one learnable log-variance s_i per task; add parameters() to the
/// optimizer (Adam at 1e-2 to 5e-2 lets s track the falling losses; the docs/losses.md demo
/// uses 5e-2). A task whose loss can reach 0 drives its weight exp(-s_i) without bound.
class uncertainty_weighting final : public task_weighting {
 public:
  /// Throws losslens::error if num_tasks is 0.
  explicit uncertainty_weighting(std::size_t num_tasks, uncertainty_options options = {});
  at::Tensor combine(const std::vector<at::Tensor>& losses) override;
  /// exp(-s_i), or 0.5 exp(-s_i) with options.half.
  std::vector<double> weights() const override;
  std::vector<at::Tensor> parameters() const override { return {log_variances_}; }
  /// The learned s_i = log sigma_i^2.
  std::vector<double> log_variances() const;

 private:
  uncertainty_options options_;
  at::Tensor log_variances_;  // [T], requires grad
  bool initialised_ = false;
};

/// Options of gradnorm_weighting.
struct gradnorm_options {
  double alpha = 1.5;        ///< asymmetry: how strongly slow tasks are pushed (0 = equal norms)
  double lr = 0.025;         ///< Adam step size of the weights
  double min_weight = 1e-3;  ///< weights are floored here before renormalising
};

/// GradNorm: weights w_i (summing to the number of tasks) are adjusted so that each task's
/// gradient norm on a shared layer, G_i = w_i ||d L_i / d W||, tracks the mean norm times
/// r_i^alpha, where r_i is the task's loss ratio L_i(t) / L_i(0) relative to the mean ratio.
/// combine() takes one extra gradient of each task loss with respect to W (the graph is
/// retained for the caller's backward()), updates w with Adam on sum_i |G_i - target_i|
/// (targets held constant, as in the paper) and returns sum_i w_i L_i with the weights it held
/// before the update. One host synchronisation per combine().
class gradnorm_weighting final : public task_weighting {
 public:
  /// shared: the parameters of the shared layer W (usually the last shared layer's weight).
  /// Throws losslens::error if num_tasks is 0, shared is empty or holds a tensor that does not
  /// require grad, or an option is out of range.
  gradnorm_weighting(std::size_t num_tasks, std::vector<at::Tensor> shared,
                     gradnorm_options options = {});
  /// The parameters of the named sub-module `layer` of model (e.g. "encoder.fc2": every
  /// parameter whose name is layer or starts with layer + "."). Throws losslens::error listing
  /// the available names when none matches.
  static gradnorm_weighting for_layer(const torch::nn::Module& model, std::string_view layer,
                                      std::size_t num_tasks, gradnorm_options options = {});

  at::Tensor combine(const std::vector<at::Tensor>& losses) override;
  std::vector<double> weights() const override { return weights_; }
  /// ||d L_i / d W|| of the raw losses at the last combine() (sample::task_grad_norms);
  /// empty before the first call.
  const std::vector<double>& task_grad_norms() const noexcept { return grad_norms_; }

 private:
  gradnorm_options options_;
  std::vector<at::Tensor> shared_;
  std::vector<double> weights_, initial_losses_, grad_norms_, adam_m_, adam_v_;
  std::int64_t updates_ = 0;
};

}  // namespace losslens
