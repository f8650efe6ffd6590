#pragma once
/// \file series_key.hpp
/// The series of a run, named in one place: what each measures (its kind) and whose it is (a
/// task or a parameter). Detectors, the red flags, the rank rules, the run history and the
/// dashboard all take their names from here.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens {

/// What a series measures. Decides its name, the column in CSV export, "best" in comparisons
/// (lower is better for losses, higher for accuracy) and the dashboard chart it goes in.
enum class series_kind {
  loss,             ///< the total loss: "loss"
  task_loss,        ///< a task's loss: "loss/<task>"
  grad_norm,        ///< the total gradient norm: "grad_norm"
  param_grad_norm,  ///< a parameter's gradient norm: "grad_norm/<parameter>"
  task_grad_norm,   ///< a task's gradient norm on the shared parameters: "task_grad_norm/<task>"
  lr,               ///< the learning rate: "lr"
  accuracy,         ///< batch accuracy: "accuracy"
  lr_group,         ///< a logged param group's learning rate: "lr/<group>" (readers put it in the
                    ///< sample's lr_min / lr_max; the first group is the "lr" series)
  other             ///< anything else (per-rank series, a user's): the name as given
};
/// "loss", "task_loss", "grad_norm", "param_grad_norm", "task_grad_norm", "lr", "accuracy",
/// "lr_group", "other".
std::string_view to_string(series_kind k) noexcept;
/// Inverse of to_string; throws losslens::error on an unknown kind.
series_kind parse_series_kind(std::string_view s);

/// One series: its kind and, for the per-task and per-parameter kinds, the task or parameter
/// (for `other`, the whole name).
struct series_key {
  series_kind kind = series_kind::other;
  std::string owner;

  /// The series' name: "loss", "loss/cls", "grad_norm/fc1.weight", "lr", ... (see
  /// series_kind); the names `losslens analyze` reads as CSV columns.
  std::string name() const;
  /// Inverse of name(): a name of no known form is kind `other`. Never throws but bad_alloc.
  static series_key parse(std::string_view name);

  friend bool operator==(const series_key&, const series_key&) = default;
};

/// The series of one rank's `what` ("loss", "grad_norm", "step_time") in a multi-rank run:
/// "rank/<rank>/<what>", kind other.
series_key rank_series(std::size_t rank, std::string_view what);

/// The balanced accuracy of the schema's class task: "balanced_accuracy", kind other.
series_key balanced_accuracy_series();
/// The recall of class `c` of the schema's class task: "recall/<c>", kind other (the
/// dashboard draws every "recall/<n>" in one chart).
series_key class_recall_series(std::size_t c);

/// The series that a sample fills, in a fixed order: loss, loss/<task>..., grad_norm,
/// grad_norm/<parameter>..., task_grad_norm/<task>..., lr, accuracy, and with
/// schema.classes > 0 balanced_accuracy and recall/<class> for the first max_class_recall
/// classes. A series' index here is
/// its handle in the run history (storage::run_writer), so samples map to handles by these
/// functions and never by names.
class series_layout {
 public:
  /// Classes with a recall series of their own (balanced_accuracy covers them all).
  static constexpr std::size_t max_class_recall = 64;

  explicit series_layout(const sample_schema& schema);
  const std::vector<series_key>& keys() const noexcept { return keys_; }
  std::size_t size() const noexcept { return keys_.size(); }
  std::size_t loss() const noexcept { return 0; }
  std::size_t task(std::size_t i) const noexcept { return 1 + i; }
  std::size_t grad_norm() const noexcept { return 1 + tasks_; }
  std::size_t param(std::size_t i) const noexcept { return 2 + tasks_ + i; }
  std::size_t task_grad_norm(std::size_t i) const noexcept { return 2 + tasks_ + params_ + i; }
  std::size_t lr() const noexcept { return 2 + 2 * tasks_ + params_; }
  std::size_t accuracy() const noexcept { return 3 + 2 * tasks_ + params_; }
  /// Whether the class task's series are there (schema.classes > 0); only then:
  bool has_class_metrics() const noexcept { return class_metrics_; }
  std::size_t balanced_accuracy() const noexcept { return 4 + 2 * tasks_ + params_; }
  std::size_t class_recall(std::size_t c) const noexcept { return 5 + 2 * tasks_ + params_ + c; }
  /// Classes with a recall series: min(schema.classes, max_class_recall).
  std::size_t recalls() const noexcept { return recalls_; }

 private:
  std::size_t tasks_ = 0, params_ = 0, recalls_ = 0;
  bool class_metrics_ = false;
  std::vector<series_key> keys_;
};

}  // namespace losslens
