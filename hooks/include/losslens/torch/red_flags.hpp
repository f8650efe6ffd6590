#pragma once
/// \file red_flags.hpp
/// Cheap checks of what goes into a loss: the mistakes that quietly ruin training (sigmoid or
/// softmax applied twice, one-hot targets, labels out of range, class imbalance, targets on a
/// raw scale, NaN inputs, sum reduction, plain BCE on probabilities). Each check produces
/// losslens::finding objects with evidence and a concrete fix.
///
/// \code
/// losslens::red_flag_checker flags({.every_n_steps = 50});
/// for (std::int64_t step = 0; ...; ++step) {
///   auto logits = model->forward(x);
///   for (auto& f : flags.check_class_logits("cls", logits, y, step)) report(f);
///   auto loss = losslens::cross_entropy(logits, y);
///   flags.check_loss_scale("cls", loss.item<double>(), x.size(0), step);
/// }
/// \endcode
///
/// Sampling: the tensor checks of one task run on the first call and then once every
/// options.every_n_steps steps; calls in between return at once without touching the tensors.
/// A check that runs copies at most options.max_elements values of each tensor to the host
/// (one device-to-host copy per tensor). check_loss_scale() takes a number and always runs.
///
/// Findings: one episode per (kind, task). The first time a condition is seen the episode opens
/// (a new id); later sightings extend last_step and refresh evidence, message and advice. Each
/// check returns the episodes it opened or extended in that call; findings() returns them all.
/// The series is "loss/<task>". Ids count from 1 within one checker.
///
/// Thread-safety: every member function may be called from any thread; one mutex guards the
/// state, and tensor values are copied to the host outside it.
///
/// Errors: a wrong shape or dtype (e.g. targets [N] for logits [N, C, H, W] or float class
/// labels) throws losslens::error naming what was expected and what was given, whether or not
/// the step is sampled, so a mistake surfaces at the first step.

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "losslens/detector_options.hpp"
#include "losslens/finding.hpp"

namespace losslens {

/// Options of red_flag_checker (rule parameters; they are reported in finding::rule.params).
struct red_flag_options {
  std::int64_t every_n_steps = 50;      ///< tensor checks of a task run at most this often
  std::int64_t max_elements = 1 << 16;  ///< values copied per tensor (leading rows only)

  /// probabilities_as_logits: at least this many values, all in [0, 1] (or rows summing to 1
  /// within row_sum_tolerance, for class logits).
  std::int64_t min_elements = 16;
  double row_sum_tolerance = 1e-3;

  /// class_imbalance: target counts pooled over the last imbalance_window sampled batches;
  /// fires when at least imbalance_min_targets targets were seen and the most frequent class
  /// is at least imbalance_ratio times as frequent as the rarest present one.
  int imbalance_window = 20;
  std::int64_t imbalance_min_targets = 200;
  double imbalance_ratio = 5.0;

  /// unnormalized_targets: target scale max(|mean|, std) at least target_scale_min and at least
  /// target_scale_ratio times the prediction scale.
  double target_scale_min = 10.0;
  double target_scale_ratio = 10.0;

  /// sum_reduction: a batch whose size differs from the usual one by at least min_batch_ratio
  /// (e.g. an epoch's last, partial batch) with a loss that follows the batch size: log-log
  /// slope of loss against batch size at or above sum_slope_threshold (mean reduction: ~0,
  /// sum: 1), against the median loss of the last reduction_window batches of the usual size.
  int reduction_window = 32;
  double min_batch_ratio = 1.5;
  double sum_slope_threshold = 0.7;

  /// bce_on_probabilities: probabilities within this of 0 or 1 count as saturated.
  double saturation_eps = 1e-6;

  /// constant_predictions (class logits): every sampled row of at least min_elements values
  /// predicts the same class while the targets hold several, on constant_patience sampled
  /// checks in a row, from step constant_warmup on. The logits count as input-independent
  /// (dead units) when their largest spread across rows is below spread_epsilon x max(1, mean
  /// |logit|), as saturated when the top logit leads the next by saturated_margin on average.
  std::int64_t constant_warmup = 100;
  int constant_patience = 2;
  double spread_epsilon = 1e-6;
  double saturated_margin = 20;

  /// misleading_accuracy: with class_imbalance's condition met and accuracy reported
  /// (note_accuracy_reported), the accuracy of the sampled rows exceeds their balanced accuracy
  /// by at least accuracy_gap.
  double accuracy_gap = 0.1;
};

/// The class task's predictions on the sampled rows, pooled over the last imbalance_window
/// sampled batches (what the series balanced_accuracy and recall/<class> show).
struct class_metrics {
  std::string task;
  std::int64_t step = 0;         ///< the step of the latest sampled batch
  std::vector<double> recall;    ///< per class; NaN for a class without sampled targets
  double balanced_accuracy = 0;  ///< mean recall over the classes with targets
  double accuracy = 0;           ///< plain accuracy of the same rows
  std::int64_t rows = 0;         ///< rows pooled
};

/// The optimizer's learning rates as advice quotes them (see losslens/lr_advice.hpp).
struct learning_rate_info {
  optimizer_kind optimizer = optimizer_kind::unknown;
  double lr = std::numeric_limits<double>::quiet_NaN();      ///< first param group
  double lr_min = std::numeric_limits<double>::quiet_NaN();  ///< over several param groups
  double lr_max = std::numeric_limits<double>::quiet_NaN();
};

/// Samples loss inputs and reports red flags as findings.
class red_flag_checker {
 public:
  /// Throws losslens::error on an option out of range (every_n_steps < 1, ...).
  explicit red_flag_checker(red_flag_options options = {});
  ~red_flag_checker();
  red_flag_checker(const red_flag_checker&) = delete;
  red_flag_checker& operator=(const red_flag_checker&) = delete;

  /// Inputs of binary_cross_entropy_with_logits / binary_focal_loss: logits and float targets
  /// of the same shape. Kinds: non_finite_input, probabilities_as_logits (all logits in [0, 1]:
  /// a sigmoid was applied before a logits loss), target_out_of_range (targets outside [0, 1]),
  /// class_imbalance (targets >= 0.5 count as positive; advice gives pos_weight),
  /// misleading_accuracy. Updates the class metrics (classes 0 = negative, 1 = positive).
  std::vector<finding> check_binary_logits(std::string_view task, const at::Tensor& logits,
                                           const at::Tensor& target, std::int64_t step);

  /// Inputs of cross_entropy / focal_loss: logits [N, C, ...] and int64 targets [N, ...].
  /// Kinds: non_finite_input, probabilities_as_logits (rows sum to 1: softmax applied before
  /// the loss; or all values in [0, 1]: sigmoid), one_hot_targets (one-hot targets shaped like
  /// the logits, float or integer; reported instead of throwing), target_out_of_range (an
  /// index outside [0, C) other than ignore_index), class_imbalance (advice: class weights),
  /// constant_predictions (every sampled row predicts one class), misleading_accuracy.
  /// Updates the class metrics (per-class recall, balanced accuracy) of the task.
  std::vector<finding> check_class_logits(std::string_view task, const at::Tensor& logits,
                                          const at::Tensor& target, std::int64_t step,
                                          std::int64_t ignore_index = -100);

  /// Inputs of a regression loss: predictions and targets of the same shape. Kinds:
  /// non_finite_input, unnormalized_targets (advice: the mean and std to standardise with).
  std::vector<finding> check_regression(std::string_view task, const at::Tensor& pred,
                                        const at::Tensor& target, std::int64_t step);

  /// Inputs of plain BCE on probabilities (binary_cross_entropy): reports
  /// bce_on_probabilities each sampled step (with the fraction of saturated probabilities,
  /// whose gradient is lost), plus the checks of check_binary_logits on the targets.
  std::vector<finding> check_probabilities(std::string_view task, const at::Tensor& probs,
                                           const at::Tensor& target, std::int64_t step);

  /// The reduced loss of a batch and its size (never sampled; no tensors). Kind: sum_reduction.
  std::vector<finding> check_loss_scale(std::string_view task, double loss, std::int64_t batch_size,
                                        std::int64_t step);

  /// Every episode so far, in the order they opened.
  std::vector<finding> findings() const;

  /// Calls cb(finding, is_new) for every episode a check opens (is_new) or extends, on the
  /// thread that ran the check, after the checker's lock is released (cb may call the
  /// checker). Replaces the previous listener; an empty function removes it. This is how a
  /// monitor forwards red flags into its own finding stream.
  void on_finding(std::function<void(const finding&, bool is_new)> cb);

  /// Calls cb(metrics) after every sampled check of class or binary logits, on the thread that
  /// ran the check, outside the checker's lock. Replaces the previous callback.
  void on_class_metrics(std::function<void(const class_metrics&)> cb);
  /// The trainer reports accuracy (the monitor calls this when step_extras::accuracy is set):
  /// misleading_accuracy is said only then. Any thread; never throws.
  void note_accuracy_reported() noexcept;
  /// Where advice that mentions the learning rate reads it: called when a sampled check runs,
  /// on its thread (the monitor reads its optimizer's param groups). Replaces the previous one.
  void set_learning_rate_source(std::function<learning_rate_info()> source);

  const red_flag_options& options() const noexcept { return options_; }

 private:
  struct task_state;
  struct sampled;    // what one sampled tensor check found; see red_flags.cpp
  struct published;  // the episodes one call opened or extended
  /// "lower the learning rate 10x (from ...)..." from the learning-rate source (takes mu_).
  std::string lower_lr();
  void rate_predictions(std::string_view task, std::int64_t step, sampled& in,
                        published& out);         // mu_
  task_state& state_for(std::string_view task);  // requires mu_
  /// Takes mu_; true (and the step is recorded) if the task's tensor checks are due.
  bool due_now(std::string_view task, std::int64_t step);
  void open_or_extend(finding f, published& out);  // requires mu_
  /// Records the findings of a sampled check and rates class_imbalance (takes mu_), then
  /// notifies.
  std::vector<finding> finish(std::string_view task, std::int64_t step, sampled& in);
  void rate_imbalance(std::string_view task, std::int64_t step, sampled& in,
                      published& out);  // mu_
  void rate_loss_scale(std::string_view task, double loss, std::int64_t batch_size,
                       std::int64_t step,
                       published& out);  // requires mu_
  /// Calls the listener (outside mu_) and returns the findings.
  std::vector<finding> notify(published out);

  red_flag_options options_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<task_state>, std::less<>> tasks_;
  std::vector<finding> episodes_;
  std::map<std::string, std::size_t> episode_index_;  // kind + '\n' + series -> episodes_
  std::function<void(const finding&, bool)> listener_;
  std::function<void(const class_metrics&)> metrics_listener_;
  std::function<learning_rate_info()> lr_source_;
  std::atomic<bool> accuracy_reported_{false};
};

}  // namespace losslens
