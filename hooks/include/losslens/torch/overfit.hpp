#pragma once
/// \file overfit.hpp
/// Can the model fit one batch? The methodology's last check before training: train on a single
/// batch for a few hundred steps. A pipeline that works drives the loss near 0; one that cannot
/// has a bug between the loss and the update (architecture, loss, training loop) that no amount
/// of data fixes; a loss that turns NaN is a numerics problem.
///
/// \code
/// auto batch = *loader->begin();
/// auto r = losslens::overfit_check(model, optimizer,
///     [&](const torch::Tensor& x, const torch::Tensor& y) {
///       return torch::nn::functional::cross_entropy(model->forward(x), y);
///     },
///     batch, {.steps = 200});
/// std::fputs(losslens::format_overfit_text(r).c_str(), stdout);
/// if (r.verdict != losslens::overfit_verdict::fits) return 1;
/// \endcode

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/data/example.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

namespace losslens {

/// Options of overfit_check().
struct overfit_options {
  int steps = 200;              ///< optimizer steps on the batch
  double fit_fraction = 0.05;   ///< fits: the lowest of the last 10 losses <= this x the first
  double target_loss = 0;       ///< ... or <= this (> 0: for losses with a floor above 0)
  double moved_fraction = 0.9;  ///< stuck without moving: the best loss >= this x the first
  bool restore = true;          ///< put the parameters, buffers, optimizer state and the CPU
                                ///< random generator back afterwards
};

/// What the check concluded.
enum class overfit_verdict {
  fits,       ///< the loss went near 0: the model, the loss and the update can learn
  stuck,      ///< it did not: a bug in the architecture, the loss or the training loop
  non_finite  ///< the loss turned NaN/Inf: numerics
};
/// "fits", "stuck", "non_finite".
std::string_view to_string(overfit_verdict v) noexcept;

/// The verdict, the loss curve and what to do.
struct overfit_result {
  overfit_verdict verdict = overfit_verdict::stuck;
  std::vector<double> losses;   ///< one per step taken (the batch's loss before each update)
  double first = 0;             ///< losses[0]: the untrained model's loss on the batch
  double best = 0;              ///< the lowest finite loss
  double last = 0;              ///< the last loss
  int steps = 0;                ///< steps taken (fewer than asked when the loss turned NaN)
  std::int64_t batch_size = 0;  ///< rows of the batch
  double lr = 0;                ///< the first param group's learning rate
  bool restored = false;        ///< the model and optimizer were put back as they were
  std::string message;          ///< what happened, with numbers
  std::string advice;           ///< what to do
};

/// The loss of one batch: runs the model's forward and the loss on (inputs, targets).
using overfit_loss_fn =
    std::function<torch::Tensor(const torch::Tensor& inputs, const torch::Tensor& targets)>;

/// Trains `model` with `optimizer` on `batch` alone for options.steps steps (zero_grad,
/// loss_fn, backward, step) and judges the loss curve. With options.restore (the default) the
/// model's parameters and buffers, the optimizer's state and the CPU generator are put back
/// afterwards, so the run trains as if the check had not happened (the check trains the model
/// in place and restores it: LibTorch modules cannot be copied in general). Call it before
/// attaching a monitor, on the training thread. Throws losslens::error on steps < 1 or an
/// undefined batch; what loss_fn throws passes through (after restoring).
overfit_result overfit_check_module(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                    const overfit_loss_fn& loss_fn,
                                    const torch::data::Example<>& batch,
                                    overfit_options options = {});

/// overfit_check_module() for a module holder (`torch::nn::Linear`, a TORCH_MODULE) or a
/// std::shared_ptr to a module.
template <class ModuleRef>
overfit_result overfit_check(ModuleRef& model, torch::optim::Optimizer& optimizer,
                             const overfit_loss_fn& loss_fn, const torch::data::Example<>& batch,
                             overfit_options options = {}) {
  return overfit_check_module(*model, optimizer, loss_fn, batch, options);
}

/// The result as `losslens analyze` prints findings: the verdict line, the message, the loss
/// curve at about ten points, and the advice. Never throws but std::bad_alloc.
std::string format_overfit_text(const overfit_result& r);

}  // namespace losslens
