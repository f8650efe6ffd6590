#include "losslens/torch/overfit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "losslens/error.hpp"
#include "losslens/finding.hpp"
#include "losslens/report.hpp"

namespace losslens {

std::string_view to_string(overfit_verdict v) noexcept {
  switch (v) {
    case overfit_verdict::fits:
      return "fits";
    case overfit_verdict::stuck:
      return "stuck";
    case overfit_verdict::non_finite:
      return "non_finite";
  }
  return "stuck";
}

namespace {

std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

/// What the check changes, kept to put back: parameter and buffer values (deep copies), the
/// optimizer's state (serialized, so in-place updates of its buffers cannot reach the copy) and
/// the CPU generator's state (dropout and the like draw from it).
class snapshot {
 public:
  snapshot(torch::nn::Module& model, torch::optim::Optimizer& opt) : model_(model), opt_(opt) {
    torch::NoGradGuard no_grad;
    for (const auto& p : model.parameters()) params_.push_back(p.detach().clone());
    for (const auto& b : model.buffers()) buffers_.push_back(b.detach().clone());
    try {
      torch::serialize::OutputArchive archive;
      opt.save(archive);
      std::ostringstream out;
      archive.save_to(out);
      optimizer_ = out.str();
      has_optimizer_ = true;
    } catch (const std::exception&) {
      has_optimizer_ = false;  // an optimizer that cannot save its state: state is cleared
    }
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    rng_ = gen.get_state();
  }

  /// Puts everything back; true when the optimizer's state was restored too.
  bool restore() {
    torch::NoGradGuard no_grad;
    auto params = model_.parameters();
    for (std::size_t i = 0; i < params.size() && i < params_.size(); ++i) {
      params[i].copy_(params_[i]);
      params[i].mutable_grad() = torch::Tensor();
    }
    auto buffers = model_.buffers();
    for (std::size_t i = 0; i < buffers.size() && i < buffers_.size(); ++i)
      buffers[i].copy_(buffers_[i]);
    // State the check created (momentum, Adam's moments) goes; what was there comes back.
    opt_.state().clear();
    bool ok = !has_optimizer_;
    if (has_optimizer_) {
      torch::serialize::InputArchive archive;
      std::istringstream in(optimizer_);
      archive.load_from(in);
      opt_.load(archive);
      ok = true;
    }
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng_);
    return ok;
  }

 private:
  torch::nn::Module& model_;
  torch::optim::Optimizer& opt_;
  std::vector<torch::Tensor> params_, buffers_;
  std::string optimizer_;
  bool has_optimizer_ = false;
  at::Tensor rng_;
};

/// The verdict, message and advice from the curve.
void judge(overfit_result& r, const overfit_options& o) {
  const std::string lr = r.lr > 0 ? " (learning rate " + num(r.lr) + ")" : std::string();
  if (r.verdict == overfit_verdict::non_finite) {
    r.message = "the loss on one batch became " + num(r.last) + " at step " +
                std::to_string(r.steps - 1) + " (first " + num(r.first) + ", best " + num(r.best) +
                ")";
    r.advice =
        "numerics, not data: look for log or sqrt of 0, divisions without an epsilon, "
        "exp overflow, a sigmoid or softmax before a loss that expects logits, and a "
        "learning rate too large for this model" +
        lr + "; fix it before training on the full data";
    return;
  }
  const std::size_t tail = std::min<std::size_t>(10, r.losses.size());
  const double end = *std::min_element(r.losses.end() - std::ptrdiff_t(tail), r.losses.end());
  const bool fits = end <= o.fit_fraction * r.first || (o.target_loss > 0 && end <= o.target_loss);
  r.verdict = fits ? overfit_verdict::fits : overfit_verdict::stuck;
  r.message = "the loss on one batch of " + std::to_string(r.batch_size) + " went from " +
              num(r.first) + " to " + num(end) + " in " + std::to_string(r.steps) + " steps (" +
              num(100 * end / r.first) + "% of the start)";
  if (fits) {
    r.advice =
        "the model, the loss and the update can fit one batch, so the pipeline can "
        "learn; if the full run does not, look at the data (labels, shuffling, "
        "augmentation), the learning-rate schedule and the regularisation";
    return;
  }
  if (r.best >= o.moved_fraction * r.first) {
    r.message += ": it barely moved";
    r.advice =
        "a model that cannot fit one batch has a bug no data will fix: check that "
        "gradients reach the parameters (no detach(), NoGradGuard or .data in "
        "forward), that optimizer.step() runs after backward() on this model's "
        "parameters, that the learning rate is not tiny or 0" +
        lr +
        ", and that the loss matches the task (logits into cross_entropy, no softmax "
        "before it)";
    return;
  }
  r.message += ": it fell, but not near 0";
  r.advice =
      "either the loss has a floor above 0 (a softmax or sigmoid before a loss that "
      "applies its own, label smoothing: then set target_loss), the model is too small "
      "for even one batch, or the steps are too few or too small" +
      lr + "; a pipeline that learns fits one batch to a small fraction of its first loss";
}

}  // namespace

overfit_result overfit_check_module(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                    const overfit_loss_fn& loss_fn,
                                    const torch::data::Example<>& batch, overfit_options o) {
  if (o.steps < 1) throw error("overfit_check: steps must be >= 1");
  if (!batch.data.defined()) throw error("overfit_check: the batch has no inputs");
  if (!loss_fn) throw error("overfit_check: no loss function given");
  overfit_result r;
  r.batch_size = batch.data.dim() > 0 ? batch.data.size(0) : 1;
  try {
    if (!optimizer.param_groups().empty()) r.lr = optimizer.param_groups()[0].options().get_lr();
  } catch (const std::exception&) {
    r.lr = 0;  // an optimizer without a learning rate
  }
  std::optional<snapshot> saved;
  if (o.restore) saved.emplace(model, optimizer);
  const bool was_training = model.is_training();
  model.train();
  try {
    r.losses.reserve(std::size_t(o.steps));
    for (int i = 0; i < o.steps; ++i) {
      optimizer.zero_grad();
      auto loss = loss_fn(batch.data, batch.target);
      const double v = loss.detach().to(torch::kDouble).item<double>();
      r.losses.push_back(v);
      ++r.steps;
      if (!std::isfinite(v)) {
        r.verdict = overfit_verdict::non_finite;
        break;
      }
      loss.backward();
      optimizer.step();
    }
  } catch (...) {
    if (saved) saved->restore();
    model.train(was_training);
    throw;
  }
  if (saved) r.restored = saved->restore();
  model.train(was_training);
  r.first = r.losses.front();
  r.last = r.losses.back();
  r.best = std::numeric_limits<double>::infinity();
  for (double v : r.losses)
    if (std::isfinite(v)) r.best = std::min(r.best, v);
  if (!std::isfinite(r.best)) r.best = r.first;
  judge(r, o);
  return r;
}

std::string format_overfit_text(const overfit_result& r) {
  std::string out = "overfit check: " + std::to_string(r.steps) + " steps on one batch of " +
                    std::to_string(r.batch_size) + ": " + std::string(to_string(r.verdict)) + "\n";
  // About ten points of the curve, the last step included.
  out += "  loss by step:";
  const std::size_t n = r.losses.size();
  const std::size_t every = std::max<std::size_t>(1, (n + 9) / 10);
  for (std::size_t i = 0; i < n; i += every)
    out += " " + std::to_string(i) + ":" + num(r.losses[i]);
  if (n > 0 && (n - 1) % every != 0)
    out += " " + std::to_string(n - 1) + ":" + num(r.losses[n - 1]);
  out += "\n";
  // The verdict as a finding block, as `losslens analyze` prints them.
  finding f;
  f.kind = "overfit_one_batch";
  f.level = r.verdict == overfit_verdict::fits ? severity::info : severity::error;
  f.first_step = 0;
  f.last_step = std::max(0, r.steps - 1);
  f.series = "loss";
  f.rule = {"overfit_one_batch", {{"steps", double(r.steps)}}};
  f.evidence = {{"first", r.first},
                {"best", r.best},
                {"last", r.last},
                {"ratio", r.first != 0 ? r.best / r.first : std::nan("")}};
  if (r.lr > 0) f.evidence.emplace_back("lr", r.lr);
  f.message = r.message;
  f.advice = r.advice;
  std::string block = format_findings_text({f}, r.steps);
  // Without its "1 finding in N steps" heading line.
  const auto nl = block.find("\n\n");
  out += nl == std::string::npos ? block : block.substr(nl + 2);
  if (!r.restored) out += "  (the model and optimizer were left as the check trained them)\n";
  return out;
}

}  // namespace losslens
