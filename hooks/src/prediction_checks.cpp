#include "prediction_checks.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace losslens::hooks::detail {

namespace {

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

/// The most frequent predicted class and the distinct targets, from per-row tallies.
void finish_tally(prediction_tally& t, const std::vector<std::int64_t>& predicted) {
  for (std::size_t c = 0; c < predicted.size(); ++c)
    if (predicted[c] > t.top_count) {
      t.top_count = predicted[c];
      t.top_class = std::int64_t(c);
    }
  for (auto n : t.seen) t.distinct_targets += n > 0 ? 1 : 0;
}

}  // namespace

prediction_tally tally_class_rows(const std::vector<double>& logits, std::int64_t classes,
                                  const std::vector<double>& targets, std::int64_t ignore_index) {
  prediction_tally t;
  const auto C = std::size_t(std::max<std::int64_t>(classes, 1));
  t.seen.assign(C, 0);
  t.correct.assign(C, 0);
  std::vector<std::int64_t> predicted(C, 0);
  const std::size_t rows = std::min(logits.size() / C, targets.size());
  // Per-class sums over the rows for the spread (long double: logits can be large and close).
  std::vector<long double> sum(C, 0), sq(C, 0);
  long double abs_sum = 0, margin_sum = 0;
  std::int64_t used = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const double* row = logits.data() + r * C;
    std::size_t best = 0, second = C > 1 ? 1 : 0;
    bool finite = true;
    for (std::size_t c = 0; c < C; ++c) {
      if (!std::isfinite(row[c])) finite = false;
      if (row[c] > row[best]) best = c;
    }
    if (!finite) continue;  // non_finite_input reports these
    for (std::size_t c = 0; c < C; ++c)
      if (c != best && (second == best || row[c] > row[second])) second = c;
    const double y = targets[r];
    const auto k = static_cast<std::int64_t>(y);
    if (k == ignore_index || k < 0 || std::size_t(k) >= C || double(k) != y) continue;
    ++used;
    ++t.seen[std::size_t(k)];
    t.correct[std::size_t(k)] += best == std::size_t(k) ? 1 : 0;
    ++predicted[best];
    margin_sum += row[best] - row[second];
    for (std::size_t c = 0; c < C; ++c) {
      sum[c] += row[c];
      sq[c] += static_cast<long double>(row[c]) * row[c];
      abs_sum += std::abs(row[c]);
    }
  }
  t.rows = used;
  if (used > 0) {
    for (std::size_t c = 0; c < C; ++c) {
      const long double mean = sum[c] / used;
      const long double var = std::max<long double>(0, sq[c] / used - mean * mean);
      t.spread = std::max(t.spread, double(std::sqrt(var)));
    }
    t.scale = double(abs_sum / (used * long(C)));
    t.margin = double(margin_sum / used);
  }
  finish_tally(t, predicted);
  return t;
}

prediction_tally tally_binary(const std::vector<double>& logits,
                              const std::vector<double>& targets) {
  prediction_tally t;
  t.seen.assign(2, 0);
  t.correct.assign(2, 0);
  std::vector<std::int64_t> predicted(2, 0);
  long double abs_sum = 0;
  const std::size_t n = std::min(logits.size(), targets.size());
  for (std::size_t i = 0; i < n; ++i) {
    const double x = logits[i], y = targets[i];
    if (!std::isfinite(x) || !(y >= 0 && y <= 1)) continue;
    const std::size_t k = y >= 0.5 ? 1 : 0, p = x > 0 ? 1 : 0;
    ++t.rows;
    ++t.seen[k];
    t.correct[k] += p == k ? 1 : 0;
    ++predicted[p];
    abs_sum += std::abs(x);
  }
  if (t.rows > 0) t.scale = double(abs_sum / t.rows);
  finish_tally(t, predicted);
  return t;
}

pooled_metrics pool_metrics(const std::deque<std::vector<std::int64_t>>& seen,
                            const std::deque<std::vector<std::int64_t>>& correct) {
  pooled_metrics m;
  if (seen.empty()) return m;
  const std::size_t C = seen.back().size();
  std::vector<std::int64_t> s(C, 0), k(C, 0);
  for (std::size_t b = 0; b < seen.size() && b < correct.size(); ++b)
    for (std::size_t c = 0; c < C && c < seen[b].size() && c < correct[b].size(); ++c) {
      s[c] += seen[b][c];
      k[c] += correct[b][c];
    }
  m.recall.assign(C, nan);
  std::int64_t hits = 0, with_targets = 0;
  double sum = 0;
  for (std::size_t c = 0; c < C; ++c) {
    m.rows += s[c];
    hits += k[c];
    if (s[c] == 0) continue;
    m.recall[c] = double(k[c]) / double(s[c]);
    sum += m.recall[c];
    ++with_targets;
    if (std::isnan(m.recall[m.worst]) || m.recall[c] < m.recall[m.worst]) m.worst = c;
  }
  m.balanced_accuracy = with_targets ? sum / double(with_targets) : nan;
  m.accuracy = m.rows ? double(hits) / double(m.rows) : nan;
  return m;
}

finding_text constant_predictions_text(const std::string& task, const prediction_tally& t,
                                       std::int64_t majority, double imbalance_ratio,
                                       double imbalance_threshold, double spread_epsilon,
                                       double saturated_margin, const std::string& lower_lr) {
  finding_text out;
  const bool dead = t.spread <= spread_epsilon * std::max(1.0, t.scale);
  const bool saturated = !dead && t.margin >= saturated_margin;
  const bool shortcut =
      !dead && !saturated && t.top_class == majority && imbalance_ratio >= imbalance_threshold;
  out.evidence = {{"predicted_class", double(t.top_class)},
                  {"rows", double(t.rows)},
                  {"target_classes", double(t.distinct_targets)},
                  {"logit_spread", t.spread},
                  {"logit_scale", t.scale},
                  {"top_margin", t.margin},
                  {"dead", dead ? 1.0 : 0.0},
                  {"saturated", saturated ? 1.0 : 0.0}};
  if (std::isfinite(imbalance_ratio)) out.evidence.emplace_back("imbalance_ratio", imbalance_ratio);
  out.message = "every one of " + std::to_string(t.rows) + " sampled rows of task '" + task +
                "' predicts class " + std::to_string(t.top_class) + " while their targets hold " +
                std::to_string(t.distinct_targets) + " classes";
  if (dead) {
    out.message += "; the logits are the same for every input (largest spread across rows " +
                   num(t.spread) + "): the output no longer depends on the input";
    out.advice =
        "the units before the last layer are dead (ReLUs that only output 0, usually "
        "after a blow-up or a step too large early on): re-initialise, train with a "
        "smaller learning rate or a warm-up and gradient clipping, and consider "
        "LeakyReLU/GELU; check the first steps for exploding gradients";
    if (!lower_lr.empty()) out.advice += " (" + lower_lr + ")";
  } else if (saturated) {
    out.message += "; the logits are saturated (the top logit leads the next by " + num(t.margin) +
                   " on average)";
    out.advice = "the updates were too large and pushed the model onto one class: " + lower_lr +
                 ", clip gradients (clip_grad_norm_ 1.0), and restart from an earlier "
                 "checkpoint or a fresh initialisation";
  } else if (shortcut) {
    out.message +=
        "; it is the majority class of targets that are " + num(imbalance_ratio) + "x imbalanced";
    out.advice =
        "the model learned the majority-class shortcut: weight the loss by class "
        "(inverse frequency; see the class_imbalance finding), oversample the rare "
        "classes or use focal_loss, and judge it by balanced accuracy or per-class "
        "recall, not accuracy";
  } else {
    out.advice =
        "the inputs do move the logits but one class always wins: the output bias "
        "dominates (the model has not learned yet, or collapsed after a bad stretch). "
        "Check that labels match their inputs, that the model can overfit one batch "
        "(losslens::overfit_check), and the learning rate" +
        (lower_lr.empty() ? std::string() : " (" + lower_lr + ")");
  }
  if (majority >= 0) out.evidence.emplace_back("majority_class", double(majority));
  return out;
}

finding_text misleading_accuracy_text(const std::string& task, const pooled_metrics& m,
                                      std::int64_t majority, double imbalance_ratio) {
  finding_text out;
  out.evidence = {{"accuracy", m.accuracy},
                  {"balanced_accuracy", m.balanced_accuracy},
                  {"gap", m.accuracy - m.balanced_accuracy},
                  {"worst_class", double(m.worst)},
                  {"worst_recall", m.recall.empty() ? nan : m.recall[m.worst]},
                  {"majority_class", double(majority)},
                  {"imbalance_ratio", imbalance_ratio},
                  {"rows", double(m.rows)}};
  out.message = "on targets that are " + num(imbalance_ratio) + "x imbalanced the accuracy of " +
                "task '" + task + "' (" + num(m.accuracy) + " on " + std::to_string(m.rows) +
                " sampled rows) overstates the model: balanced accuracy " +
                num(m.balanced_accuracy) + ", recall of class " + std::to_string(m.worst) + " " +
                num(m.recall.empty() ? nan : m.recall[m.worst]);
  if (majority >= 0 && std::size_t(majority) < m.recall.size())
    out.message += ", of the majority class " + std::to_string(majority) + " " +
                   num(m.recall[std::size_t(majority)]);
  out.advice =
      "judge this model by balanced accuracy and per-class recall (the series "
      "balanced_accuracy and recall/<class>), or F1 / precision / recall, not by "
      "accuracy: predicting the majority class alone scores high; to improve the rare "
      "classes, weight the loss by class (see class_imbalance)";
  return out;
}

}  // namespace losslens::hooks::detail
