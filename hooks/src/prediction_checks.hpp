#pragma once
// What the sampled logits predict, against their targets: per-class recall, balanced accuracy,
// and whether the model predicts one class for everything. The red flag checker tallies each
// sampled batch here and pools the tallies over its imbalance window.

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "losslens/finding.hpp"

namespace losslens::hooks::detail {

/// One sampled batch's predictions against its targets.
struct prediction_tally {
  std::vector<std::int64_t> seen, correct;  ///< per class: rows with that target, and hits
  std::int64_t rows = 0;                    ///< rows with a valid target
  std::int64_t top_class = -1;              ///< the class predicted most often
  std::int64_t top_count = 0;               ///< ... and how often
  std::int64_t distinct_targets = 0;        ///< classes among the targets
  double spread = 0;  ///< the largest standard deviation of one class's logit across rows
  double scale = 0;   ///< mean |logit|
  double margin = 0;  ///< mean gap between the top two logits of a row
};

/// Row-major logits [rows, C] against class indices (values equal to ignore_index, or outside
/// [0, C), are skipped); rows beyond the shorter of the two are ignored.
prediction_tally tally_class_rows(const std::vector<double>& logits, std::int64_t classes,
                                  const std::vector<double>& targets, std::int64_t ignore_index);
/// Binary logits against targets in [0, 1] (>= 0.5 is the positive class 1).
prediction_tally tally_binary(const std::vector<double>& logits,
                              const std::vector<double>& targets);

/// Recall per class, balanced accuracy (mean recall over the classes that had targets) and
/// plain accuracy, pooled over sampled batches.
struct pooled_metrics {
  std::vector<double> recall;  ///< NaN for a class without targets
  double balanced_accuracy = 0;
  double accuracy = 0;
  std::int64_t rows = 0;
  std::size_t worst = 0;  ///< the class with the lowest recall
};
pooled_metrics pool_metrics(const std::deque<std::vector<std::int64_t>>& seen,
                            const std::deque<std::vector<std::int64_t>>& correct);

/// Text and numbers of a finding, before the checker adds its identity.
struct finding_text {
  std::vector<named_number> evidence;
  std::string message, advice;
};

/// constant_predictions: every sampled row predicts `t.top_class` while the targets hold
/// several classes. `majority`: the pooled targets' most frequent class and how imbalanced
/// they are (ratio; NaN when not known).
/// `lower_lr`: how to lower the learning rate, quoting it ("lower the learning rate 10x (from
/// 0.5 to 0.05)...").
finding_text constant_predictions_text(const std::string& task, const prediction_tally& t,
                                       std::int64_t majority, double imbalance_ratio,
                                       double imbalance_threshold, double spread_epsilon,
                                       double saturated_margin, const std::string& lower_lr);
/// misleading_accuracy: accuracy on imbalanced targets well above the balanced accuracy.
finding_text misleading_accuracy_text(const std::string& task, const pooled_metrics& m,
                                      std::int64_t majority, double imbalance_ratio);

}  // namespace losslens::hooks::detail
