#pragma once
// The weights of a multi-task loss, one set per analyzer: what task_dominance weighs the task
// losses with, and what tells task_stalled an auxiliary loss from a task.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "detail/detector.hpp"
#include "losslens/sample.hpp"

namespace losslens::core::detail {

/// The task weights of a total loss, fitted from the samples: total = sum_i w_i L_i by least
/// squares (no intercept) over every step where all are finite. Used only when the fit is
/// exact to 1% (a weighted sum, not a coincidence) and every weight is positive; otherwise all
/// weights are 1, as the detectors assumed before.
class weight_fit {
 public:
  explicit weight_fit(std::size_t tasks);

  /// Adds a step: the total and the task losses (NaN when missing: the step is left out).
  void observe(double total, const std::vector<double>& losses);
  /// The fitted weight of task i (1 while there is no fit).
  double weight(std::size_t i) const noexcept { return fitted_ ? w_[i] : 1.0; }
  /// Not fitted yet, and the total is not the plain sum of the losses: the weights are not
  /// all 1, and shares cannot be judged until the fit (a few steps).
  bool pending(double total, const std::vector<double>& losses) const noexcept;

 private:
  void solve();

  std::size_t n_;
  std::vector<double> xtx_, xty_, w_;
  std::vector<double> a_, b_, fit_;  // solve()'s working copies
  double yy_ = 0;
  std::int64_t count_ = 0;
  bool fitted_ = false;
};

/// This step's task losses and weights: the weights the sample reports, else those fitted from
/// its total (weight_fit), else 1 each. The analyzer updates it before the rules run (rules
/// thread only); rules read it through step_context::weights.
class task_weights {
 public:
  explicit task_weights(std::size_t tasks) : fit_(tasks), raw_(tasks), weight_(tasks, 1.0) {}

  /// Takes this step's task losses (NaN when missing or not finite) and weights from s.
  void update(const sample& s);
  /// The task losses at this step, unweighted (NaN where missing or not finite).
  const std::vector<double>& raw() const noexcept { return raw_; }
  /// Task i's weight at this step.
  double weight(std::size_t i) const noexcept { return weight_[i]; }
  /// No weights reported, none fitted yet, and the total is no plain sum: the weights are
  /// unknown at this step (weight() says 1).
  bool pending() const noexcept { return pending_; }
  /// Task i was weighted down on purpose: its weight is at most `fraction` x the largest (an
  /// MoE load-balancing loss or a z-loss at 0.01 beside a language model's loss at 1).
  bool auxiliary(std::size_t i, double fraction) const noexcept;

 private:
  weight_fit fit_;
  std::vector<double> raw_, weight_;
  bool pending_ = false;
};

// The per-step parts, inline: they run at every step of a multi-task run.

inline void weight_fit::observe(double total, const std::vector<double>& losses) {
  if (n_ < 2 || !std::isfinite(total)) return;
  for (double v : losses)
    if (!std::isfinite(v)) return;
  for (std::size_t i = 0; i < n_; ++i) {
    xty_[i] += losses[i] * total;
    for (std::size_t j = 0; j < n_; ++j) xtx_[i * n_ + j] += losses[i] * losses[j];
  }
  yy_ += total * total;
  ++count_;
  if (count_ >= std::int64_t(n_) + 8 && (count_ - std::int64_t(n_)) % 16 == 0) solve();
}

inline bool weight_fit::pending(double total, const std::vector<double>& losses) const noexcept {
  if (fitted_ || n_ < 2 || !std::isfinite(total)) return false;
  double sum = 0;
  for (double v : losses) sum += v;
  return std::isfinite(sum) && std::abs(sum - total) > 0.01 * std::abs(total);
}

inline void task_weights::update(const sample& s) {
  const std::size_t t = raw_.size();
  for (std::size_t i = 0; i < t; ++i)
    raw_[i] = i < s.task_losses.size() && finite(s.task_losses[i]) ? *s.task_losses[i] : nan;
  // Without reported weights (a CSV of a weighted run), the weights are read off the total:
  // total = sum w_i L_i fitted over the steps so far. 1 each when that does not fit.
  pending_ = false;
  if (s.task_weights.empty() && finite(s.loss)) {
    fit_.observe(*s.loss, raw_);
    pending_ = fit_.pending(*s.loss, raw_);
  }
  for (std::size_t i = 0; i < t; ++i)
    weight_[i] = i < s.task_weights.size() ? s.task_weights[i] : fit_.weight(i);
}

}  // namespace losslens::core::detail
