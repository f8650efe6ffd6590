#include "losslens/torch/red_flags.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>

#include "losslens/lr_advice.hpp"
#include "losslens/series_key.hpp"
#include "losslens/torch/losses.hpp"
#include "prediction_checks.hpp"
#include "tensor_checks.hpp"

namespace losslens {

namespace {

using hooks::detail::fail;

std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

/// A weight as "19.0" or "0.0857": 3 significant digits, never a bare integer.
std::string weight_text(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

/// Leading rows of t (rows of `row_len` values), at most max_elements values, as doubles.
std::vector<double> host_values(const at::Tensor& t, std::int64_t row_len,
                                std::int64_t max_elements) {
  auto flat = t.detach().reshape({-1, std::max<std::int64_t>(row_len, 1)});
  const auto rows = std::max<std::int64_t>(1, max_elements / std::max<std::int64_t>(row_len, 1));
  auto c = flat.slice(0, 0, std::min(rows, flat.size(0))).to(at::kCPU).to(at::kDouble).contiguous();
  const auto* p = c.data_ptr<double>();
  return {p, p + c.numel()};
}

/// Summary of finite values plus counts of NaN and Inf.
struct value_stats {
  std::int64_t count = 0, nan = 0, inf = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double mean = 0, std = 0;
};

value_stats summarise(const std::vector<double>& v) {
  value_stats s;
  long double sum = 0;
  for (double x : v) {
    if (std::isnan(x)) {
      ++s.nan;
      continue;
    }
    if (std::isinf(x)) {
      ++s.inf;
      continue;
    }
    ++s.count;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
    sum += x;
  }
  if (s.count == 0) return s;
  s.mean = static_cast<double>(sum / s.count);
  long double sq = 0;
  for (double x : v)
    if (std::isfinite(x)) sq += (x - s.mean) * (x - s.mean);
  s.std = static_cast<double>(std::sqrt(sq / s.count));
  return s;
}

std::string series_of(std::string_view task) {
  return series_key{series_kind::task_loss, std::string(task)}.name();
}

/// Row sums of a row-major [rows, row_len] block: the largest |sum - 1|, or Inf if a value is
/// negative or not finite.
double max_row_sum_error(const std::vector<double>& v, std::int64_t row_len) {
  double worst = 0;
  for (std::size_t r = 0; r + static_cast<std::size_t>(row_len) <= v.size();
       r += static_cast<std::size_t>(row_len)) {
    double sum = 0;
    for (std::int64_t c = 0; c < row_len; ++c) {
      const double x = v[r + static_cast<std::size_t>(c)];
      if (!(x >= 0) || !std::isfinite(x)) return std::numeric_limits<double>::infinity();
      sum += x;
    }
    worst = std::max(worst, std::abs(sum - 1));
  }
  return worst;
}

/// Whether each row is one-hot (one 1, the rest 0).
bool rows_one_hot(const std::vector<double>& v, std::int64_t row_len) {
  if (v.empty()) return false;
  for (std::size_t r = 0; r + static_cast<std::size_t>(row_len) <= v.size();
       r += static_cast<std::size_t>(row_len)) {
    int ones = 0;
    for (std::int64_t c = 0; c < row_len; ++c) {
      const double x = v[r + static_cast<std::size_t>(c)];
      if (x == 1)
        ++ones;
      else if (x != 0)
        return false;
    }
    if (ones != 1) return false;
  }
  return true;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct red_flag_checker::task_state {
  std::int64_t last_checked = std::numeric_limits<std::int64_t>::min();
  bool checked = false;
  std::deque<std::vector<std::int64_t>> class_counts;   // per sampled batch
  std::deque<std::pair<std::int64_t, double>> batches;  // (batch size, loss)
  // Predictions of the sampled rows, per sampled batch (the same window as class_counts).
  std::deque<std::vector<std::int64_t>> seen, correct;
  int one_class_streak = 0;  // sampled checks in a row where every row predicted one class
};

/// Episodes opened or extended by one call, and whether each is new, for the listener.
struct red_flag_checker::published {
  std::vector<finding> found;
  std::vector<bool> is_new;
  std::optional<class_metrics> metrics;  // for the class-metrics listener
};

/// What a sampled tensor check found, handed to the locked part.
struct red_flag_checker::sampled {
  std::vector<finding> found;
  std::vector<std::int64_t> counts;  // binary: {negatives, positives}; classes: per class
  bool binary = false;
  std::optional<hooks::detail::prediction_tally> tally;  // class or binary logits
};

red_flag_checker::red_flag_checker(red_flag_options options) : options_(options) {
  constexpr const char* fn = "red_flag_checker";
  if (options_.every_n_steps < 1) fail(fn, "every_n_steps must be >= 1");
  if (options_.max_elements < 1) fail(fn, "max_elements must be >= 1");
  if (options_.imbalance_window < 1) fail(fn, "imbalance_window must be >= 1");
  if (!(options_.imbalance_ratio > 1)) fail(fn, "imbalance_ratio must be > 1");
  if (options_.reduction_window < 2) fail(fn, "reduction_window must be >= 2");
  if (!(options_.min_batch_ratio > 1)) fail(fn, "min_batch_ratio must be > 1");
  if (!(options_.target_scale_ratio > 1)) fail(fn, "target_scale_ratio must be > 1");
}

red_flag_checker::~red_flag_checker() = default;

red_flag_checker::task_state& red_flag_checker::state_for(std::string_view task) {
  auto it = tasks_.find(task);
  if (it == tasks_.end())
    it = tasks_.emplace(std::string(task), std::make_unique<task_state>()).first;
  return *it->second;
}

bool red_flag_checker::due_now(std::string_view task, std::int64_t step) {
  std::lock_guard lock(mu_);
  auto& s = state_for(task);
  if (s.checked && step - s.last_checked < options_.every_n_steps && step >= s.last_checked)
    return false;
  s.checked = true;
  s.last_checked = step;
  return true;
}

void red_flag_checker::open_or_extend(finding f, published& out) {
  const auto key = f.kind + '\n' + f.series;
  auto it = episode_index_.find(key);
  if (it == episode_index_.end()) {
    f.id = episodes_.size() + 1;
    episode_index_.emplace(key, episodes_.size());
    episodes_.push_back(f);
    out.found.push_back(std::move(f));
    out.is_new.push_back(true);
    return;
  }
  auto& e = episodes_[it->second];
  e.last_step = std::max(e.last_step, f.last_step);
  e.first_step = std::min(e.first_step, f.first_step);
  e.level = std::max(e.level, f.level);
  e.evidence = std::move(f.evidence);
  e.message = std::move(f.message);
  e.advice = std::move(f.advice);
  out.found.push_back(e);
  out.is_new.push_back(false);
}

std::vector<finding> red_flag_checker::notify(published out) {
  std::function<void(const finding&, bool)> cb;
  {
    std::lock_guard lock(mu_);
    cb = listener_;
  }
  if (cb)
    for (std::size_t i = 0; i < out.found.size(); ++i) cb(out.found[i], out.is_new[i]);
  if (out.metrics) {
    std::function<void(const class_metrics&)> mcb;
    {
      std::lock_guard lock(mu_);
      mcb = metrics_listener_;
    }
    if (mcb) mcb(*out.metrics);
  }
  return std::move(out.found);
}

void red_flag_checker::on_finding(std::function<void(const finding&, bool is_new)> cb) {
  std::lock_guard lock(mu_);
  listener_ = std::move(cb);
}

std::vector<finding> red_flag_checker::findings() const {
  std::lock_guard lock(mu_);
  return episodes_;
}

// ---------------------------------------------------------------------------------------------
// The individual rules. Each appends at most one finding to `out`.

namespace {

finding make_finding(std::string kind, severity level, std::string_view task, std::int64_t step,
                     std::string rule, std::vector<named_number> params,
                     std::vector<named_number> evidence, std::string message, std::string advice) {
  finding f;
  f.kind = std::move(kind);
  f.level = level;
  f.first_step = f.last_step = step;
  f.series = series_of(task);
  f.rule = {std::move(rule), std::move(params)};
  f.evidence = std::move(evidence);
  f.message = std::move(message);
  f.advice = std::move(advice);
  return f;
}

/// non_finite_input for one tensor (`what`: "logits", "target", ...).
/// `lower_lr`: lr advice for a model output that went non-finite (see lower_lr()).
std::vector<finding> non_finite_rule(std::string_view task, std::string_view what, bool is_output,
                                     const value_stats& s, std::int64_t step,
                                     const std::string& lower_lr = {}) {
  if (s.nan + s.inf == 0) return {};
  const auto total = static_cast<double>(s.count + s.nan + s.inf);
  std::string message = std::to_string(s.nan) + " NaN and " + std::to_string(s.inf) +
                        " Inf among " + std::to_string(s.count + s.nan + s.inf) +
                        " sampled values of the " + std::string(what) + " of task '" +
                        std::string(task) + "' at step " + std::to_string(step);
  std::string advice =
      is_output ? "the model's output is already non-finite: check for earlier non_finite or "
                  "exploding_gradients findings, clip gradients or " +
                      lower_lr
                : "clean the data pipeline: drop or impute the non-finite " + std::string(what) +
                      " values (e.g. torch::nan_to_num, or a mask with the loss's weight) "
                      "before they reach the loss";
  return {make_finding("non_finite_input", severity::error, task, step, "any_non_finite_value", {},
                       {{"nan_count", static_cast<double>(s.nan)},
                        {"inf_count", static_cast<double>(s.inf)},
                        {"non_finite_fraction", static_cast<double>(s.nan + s.inf) / total},
                        {"input_is_target", is_output ? 0.0 : 1.0}},
                       std::move(message), std::move(advice))};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

namespace {

std::vector<finding>& append(std::vector<finding>& a, std::vector<finding> b) {
  for (auto& f : b) a.push_back(std::move(f));
  return a;
}

/// A sampled model output (logits, probabilities, predictions) and its summary; reports
/// non_finite_input for it into `found`.
struct host_sample {
  std::vector<double> values;
  value_stats stats;
};

host_sample read_output(std::string_view task, std::string_view what, const at::Tensor& t,
                        std::int64_t row_len, std::int64_t max_elements, std::int64_t step,
                        std::vector<finding>& found, const std::string& lower_lr) {
  host_sample h{host_values(t, row_len, max_elements), {}};
  h.stats = summarise(h.values);
  append(found, non_finite_rule(task, what, true, h.stats, step, lower_lr));
  return h;
}

/// target_out_of_range and counts for targets in [0, 1].
void binary_targets(std::string_view task, const std::vector<double>& t, std::int64_t step,
                    std::vector<finding>& found, std::vector<std::int64_t>& counts) {
  const auto ts = summarise(t);
  append(found, non_finite_rule(task, "target", false, ts, step));
  std::int64_t below = 0, above = 0, pos = 0, neg = 0;
  for (double x : t) {
    if (!std::isfinite(x)) continue;
    if (x < 0)
      ++below;
    else if (x > 1)
      ++above;
    (x >= 0.5 ? pos : neg) += 1;
  }
  if (below + above > 0)
    found.push_back(make_finding(
        "target_out_of_range", severity::error, task, step, "binary_target_outside_0_1", {},
        {{"target_min", ts.min},
         {"target_max", ts.max},
         {"out_of_range_count", static_cast<double>(below + above)}},
        std::to_string(below + above) + " of " + std::to_string(ts.count) +
            " binary targets lie outside [0, 1] (min " + num(ts.min) + ", max " + num(ts.max) + ")",
        ts.max > 1 && ts.min >= 0 && ts.max == std::floor(ts.max)
            ? "targets look like class indices (max " + num(ts.max) +
                  "): use cross_entropy with int64 targets, or map the labels to 0/1"
            : "binary targets must be probabilities in [0, 1]: rescale or threshold the labels"));
  counts = {neg, pos};
}

}  // namespace

std::vector<finding> red_flag_checker::check_binary_logits(std::string_view task,
                                                           const at::Tensor& logits,
                                                           const at::Tensor& target,
                                                           std::int64_t step) {
  constexpr const char* fn = "red_flag_checker::check_binary_logits";
  hooks::detail::require_floating_pair(logits, target, fn, "logits", "target");
  if (!due_now(task, step)) return {};
  sampled in;
  const auto [xv, xs] =
      read_output(task, "logits", logits, 1, options_.max_elements, step, in.found, lower_lr());
  if (xs.count >= options_.min_elements && xs.nan + xs.inf == 0 && xs.min >= 0 && xs.max <= 1)
    in.found.push_back(make_finding(
        "probabilities_as_logits", severity::warning, task, step, "all_logits_in_unit_interval",
        {{"min_elements", static_cast<double>(options_.min_elements)}},
        {{"logit_min", xs.min}, {"logit_max", xs.max}, {"values", static_cast<double>(xs.count)}},
        "all " + std::to_string(xs.count) + " sampled logits of task '" + std::string(task) +
            "' lie in [0, 1] (min " + num(xs.min) + ", max " + num(xs.max) +
            "): they look like sigmoid outputs fed to a loss that applies the sigmoid again",
        "remove the final sigmoid from the model and pass the raw logits to "
        "binary_cross_entropy_with_logits; apply sigmoid only for predictions"));
  const auto t = host_values(target, 1, options_.max_elements);
  binary_targets(task, t, step, in.found, in.counts);
  in.tally = hooks::detail::tally_binary(xv, t);
  in.binary = true;
  return finish(task, step, in);
}

std::vector<finding> red_flag_checker::check_class_logits(std::string_view task,
                                                          const at::Tensor& logits,
                                                          const at::Tensor& target,
                                                          std::int64_t step,
                                                          std::int64_t ignore_index) {
  constexpr const char* fn = "red_flag_checker::check_class_logits";
  // One-hot targets shaped like the logits are a red flag to report, not a shape error.
  const bool one_hot_shape = target.defined() && logits.defined() &&
                             target.sizes() == logits.sizes() && logits.dim() >= 2 &&
                             target.scalar_type() != at::kBool;
  if (one_hot_shape)
    hooks::detail::require_floating(logits, fn, "logits");
  else
    hooks::detail::require_class_target(logits, target, fn);
  if (!due_now(task, step)) return {};
  const auto num_classes = logits.size(1);
  sampled in;
  const auto [x, xs] = read_output(task, "logits", logits.detach().movedim(1, -1), num_classes,
                                   options_.max_elements, step, in.found, lower_lr());
  if (xs.count >= options_.min_elements && xs.nan + xs.inf == 0 && xs.min >= 0 && xs.max <= 1) {
    const double row_err = max_row_sum_error(x, num_classes);
    const bool softmax = row_err <= options_.row_sum_tolerance;
    in.found.push_back(make_finding(
        "probabilities_as_logits", severity::warning, task, step,
        softmax ? "logit_rows_sum_to_one" : "all_logits_in_unit_interval",
        {{"min_elements", static_cast<double>(options_.min_elements)},
         {"row_sum_tolerance", options_.row_sum_tolerance}},
        {{"logit_min", xs.min},
         {"logit_max", xs.max},
         {"max_row_sum_error", row_err},
         {"values", static_cast<double>(xs.count)}},
        softmax ? "every sampled row of the logits of task '" + std::string(task) +
                      "' is non-negative and sums to 1 (largest error " + num(row_err) +
                      "): softmax was applied before a loss that applies log_softmax itself"
                : "all " + std::to_string(xs.count) + " sampled logits of task '" +
                      std::string(task) + "' lie in [0, 1] (min " + num(xs.min) + ", max " +
                      num(xs.max) + "): they look like sigmoid outputs",
        softmax ? "remove the softmax at the end of the model and pass the raw logits to "
                  "cross_entropy; the double softmax squashes the gradient (at most 1 / " +
                      std::to_string(num_classes) + " per class)"
                : "pass raw, unbounded logits (remove the final sigmoid) to cross_entropy"));
  }

  if (one_hot_shape) {
    const auto t = host_values(target.detach().movedim(1, -1), num_classes, options_.max_elements);
    const bool one_hot = rows_one_hot(t, num_classes);
    const double row_err = max_row_sum_error(t, num_classes);
    if (one_hot || target.is_floating_point() == false)
      in.found.push_back(make_finding(
          "one_hot_targets", severity::warning, task, step, "targets_shaped_like_logits", {},
          {{"num_classes", static_cast<double>(num_classes)},
           {"rows_one_hot", one_hot ? 1.0 : 0.0},
           {"max_row_sum_error", row_err}},
          std::string(one_hot ? "one-hot" : "dense") + " " + c10::toString(target.scalar_type()) +
              " targets shaped like the logits [" + std::to_string(logits.size(0)) + ", " +
              std::to_string(num_classes) + ", ...] where int64 class indices belong",
          "pass class indices: target.argmax(1) (int64, values 0.." +
              std::to_string(num_classes - 1) +
              "); this also enables ignore_index and class weights and takes " +
              std::to_string(num_classes) + "x less memory"));
    return finish(task, step, in);
  }

  const auto t = host_values(target, 1, options_.max_elements);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(num_classes), 0);
  std::int64_t bad = 0;
  double bad_min = std::numeric_limits<double>::infinity(), bad_max = -bad_min;
  for (double v : t) {
    const auto c = static_cast<std::int64_t>(v);
    if (c == ignore_index) continue;
    if (c < 0 || c >= num_classes) {
      ++bad;
      bad_min = std::min(bad_min, v);
      bad_max = std::max(bad_max, v);
      continue;
    }
    ++counts[static_cast<std::size_t>(c)];
  }
  in.tally = hooks::detail::tally_class_rows(x, num_classes, t, ignore_index);
  if (bad > 0) {
    const bool one_based = bad_min == static_cast<double>(num_classes) && bad_max == bad_min;
    in.found.push_back(make_finding(
        "target_out_of_range", severity::error, task, step, "class_index_outside_0_C",
        {{"ignore_index", static_cast<double>(ignore_index)}},
        {{"out_of_range_count", static_cast<double>(bad)},
         {"bad_min", bad_min},
         {"bad_max", bad_max},
         {"num_classes", static_cast<double>(num_classes)}},
        std::to_string(bad) + " of " + std::to_string(t.size()) + " sampled targets of task '" +
            std::string(task) + "' are outside [0, " + std::to_string(num_classes - 1) +
            "] (from " + num(bad_min) + " to " + num(bad_max) + ")",
        one_based ? "labels look 1-based (the largest is " + num(bad_max) + " = C): subtract 1"
                  : "the model has " + std::to_string(num_classes) +
                        " outputs: remap the labels to 0.." + std::to_string(num_classes - 1) +
                        ", widen the output layer, or mark padding with ignore_index (" +
                        std::to_string(ignore_index) + ")"));
  }
  in.counts = std::move(counts);
  return finish(task, step, in);
}

std::vector<finding> red_flag_checker::check_regression(std::string_view task,
                                                        const at::Tensor& pred,
                                                        const at::Tensor& target,
                                                        std::int64_t step) {
  constexpr const char* fn = "red_flag_checker::check_regression";
  hooks::detail::require_floating_pair(pred, target, fn, "pred", "target");
  if (!due_now(task, step)) return {};
  sampled in;
  const auto ps =
      read_output(task, "predictions", pred, 1, options_.max_elements, step, in.found, lower_lr())
          .stats;
  const auto ts = summarise(host_values(target, 1, options_.max_elements));
  append(in.found, non_finite_rule(task, "target", false, ts, step));
  const double t_scale = std::max(std::abs(ts.mean), ts.std);
  const double p_scale = std::max(std::abs(ps.mean), ps.std);
  if (ts.count > 0 && ps.count > 0 && t_scale >= options_.target_scale_min &&
      t_scale >= options_.target_scale_ratio * p_scale) {
    const double sd = ts.std > 0 ? ts.std : 1.0;
    in.found.push_back(make_finding(
        "unnormalized_targets", severity::warning, task, step, "target_scale_far_from_predictions",
        {{"target_scale_min", options_.target_scale_min},
         {"target_scale_ratio", options_.target_scale_ratio}},
        {{"target_mean", ts.mean},
         {"target_std", ts.std},
         {"pred_mean", ps.mean},
         {"pred_std", ps.std},
         {"scale_ratio",
          p_scale > 0 ? t_scale / p_scale : std::numeric_limits<double>::infinity()}},
        "regression targets of task '" + std::string(task) + "' have mean " + num(ts.mean) +
            " and std " + num(ts.std) + " while the predictions have mean " + num(ps.mean) +
            " and std " + num(ps.std) +
            ": the loss and its gradients are dominated by the scale gap",
        "standardise targets: mean " + num(ts.mean) + ", std " + num(sd) + " (train on (y - " +
            num(ts.mean) + ") / " + num(sd) + " and predict y = " + num(sd) + " * output + " +
            num(ts.mean) + "); compute the two numbers once on the training set"));
  }
  return finish(task, step, in);
}

std::vector<finding> red_flag_checker::check_probabilities(std::string_view task,
                                                           const at::Tensor& probs,
                                                           const at::Tensor& target,
                                                           std::int64_t step) {
  constexpr const char* fn = "red_flag_checker::check_probabilities";
  hooks::detail::require_floating_pair(probs, target, fn, "probs", "target");
  if (!due_now(task, step)) return {};
  sampled in;
  const auto [p, ps] = read_output(task, "probabilities", probs, 1, options_.max_elements, step,
                                   in.found, lower_lr());
  std::int64_t saturated = 0, outside = 0;
  for (double v : p) {
    if (!std::isfinite(v)) continue;
    if (v < 0 || v > 1)
      ++outside;
    else if (v <= options_.saturation_eps || v >= 1 - options_.saturation_eps)
      ++saturated;
  }
  const double n = static_cast<double>(std::max<std::int64_t>(ps.count, 1));
  std::string message = "plain binary cross-entropy on probabilities for task '" +
                        std::string(task) + "': " + std::to_string(saturated) + " of " +
                        std::to_string(ps.count) + " sampled probabilities are within " +
                        num(options_.saturation_eps) +
                        " of 0 or 1, where the sigmoid's gradient has vanished";
  if (outside > 0)
    message += "; " + std::to_string(outside) + " values lie outside [0, 1] (min " + num(ps.min) +
               ", max " + num(ps.max) + "): these are logits, not probabilities";
  in.found.push_back(make_finding(
      "bce_on_probabilities", outside > 0 ? severity::error : severity::warning, task, step,
      "bce_called_on_probabilities", {{"saturation_eps", options_.saturation_eps}},
      {{"saturated_fraction", static_cast<double>(saturated) / n},
       {"outside_unit_count", static_cast<double>(outside)},
       {"prob_min", ps.min},
       {"prob_max", ps.max}},
      std::move(message),
      "drop the final sigmoid and call binary_cross_entropy_with_logits on the logits (log_sigmoid "
      "keeps the gradient for any logit; BCE on probabilities is clamped at -log(1e-7) = 16.1 and "
      "its gradient is lost once the sigmoid saturates)"));
  binary_targets(task, host_values(target, 1, options_.max_elements), step, in.found, in.counts);
  in.binary = true;
  return finish(task, step, in);
}

std::vector<finding> red_flag_checker::finish(std::string_view task, std::int64_t step,
                                              sampled& in) {
  published out;
  {
    std::lock_guard lock(mu_);
    for (auto& f : in.found) open_or_extend(std::move(f), out);
    rate_imbalance(task, step, in, out);
    rate_predictions(task, step, in, out);
  }
  return notify(std::move(out));
}

void red_flag_checker::rate_imbalance(std::string_view task, std::int64_t step, sampled& in,
                                      published& out) {
  if (in.counts.empty()) return;
  auto& s = state_for(task);

  // Pool the counts of the last imbalance_window sampled batches (restart on a class-count change).
  if (!s.class_counts.empty() && s.class_counts.front().size() != in.counts.size())
    s.class_counts.clear();
  s.class_counts.push_back(std::move(in.counts));
  while (static_cast<int>(s.class_counts.size()) > options_.imbalance_window)
    s.class_counts.pop_front();
  std::vector<std::int64_t> counts(s.class_counts.back().size(), 0);
  for (const auto& c : s.class_counts)
    for (std::size_t i = 0; i < c.size(); ++i) counts[i] += c[i];

  std::int64_t total = 0, present = 0;
  std::size_t hi = 0, lo = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    total += counts[i];
    if (counts[i] == 0) continue;
    if (present++ == 0 || counts[i] > counts[hi]) hi = i;
    if (present == 1 || counts[i] < counts[lo]) lo = i;
  }
  if (total < options_.imbalance_min_targets || present == 0) return;
  // A binary task without one of its classes is the extreme of imbalance; with C > 2 an absent
  // class may just be rare, so only present classes are compared.
  const bool missing_binary = in.binary && present == 1;
  const double ratio = missing_binary
                           ? std::numeric_limits<double>::infinity()
                           : static_cast<double>(counts[hi]) / static_cast<double>(counts[lo]);
  if (ratio < options_.imbalance_ratio) return;

  std::vector<named_number> evidence = {
      {"targets", static_cast<double>(total)},
      {"majority_class", static_cast<double>(hi)},
      {"majority_count", static_cast<double>(counts[hi])},
      {"minority_class", static_cast<double>(missing_binary ? 1 - hi : lo)},
      {"minority_count", static_cast<double>(missing_binary ? 0 : counts[lo])},
      {"ratio", ratio},
      {"absent_classes", static_cast<double>(static_cast<std::int64_t>(counts.size()) - present)}};
  std::string message, advice;
  const std::string window =
      " over the last " + std::to_string(s.class_counts.size()) + " sampled batches";
  if (in.binary) {
    const auto neg = counts[0], pos = counts[1];
    message = "task '" + std::string(task) + "': " + std::to_string(neg) + " negative and " +
              std::to_string(pos) + " positive targets" + window;
    if (pos == 0) {
      advice = "no positive targets at all: check the labels and the sampler before training";
    } else if (neg == 0) {
      advice = "no negative targets at all: check the labels and the sampler before training";
    } else {
      const double pw = pos_weight_for(neg, pos);
      evidence.emplace_back("pos_weight", pw);
      advice = "pos_weight = " + weight_text(pw) + " (" + std::to_string(neg) + " negatives / " +
               std::to_string(pos) +
               " positives) in binary_cross_entropy_with_logits, or "
               "binary_focal_loss; judge the model by precision/recall, not accuracy";
    }
  } else {
    message = "task '" + std::string(task) + "': class " + std::to_string(hi) + " has " +
              std::to_string(counts[hi]) + " targets and class " + std::to_string(lo) + " only " +
              std::to_string(counts[lo]) + " (ratio " + num(ratio) + ")" + window;
    const auto w = inverse_frequency_weights(counts);
    advice =
        "class weights (inverse frequency, summing to " + std::to_string(counts.size()) + "): ";
    if (w.size() <= 20) {
      advice += "[";
      for (std::size_t i = 0; i < w.size(); ++i) advice += (i ? ", " : "") + weight_text(w[i]);
      advice += "]";
    } else {
      advice += "class " + std::to_string(lo) + " -> " + weight_text(w[lo]) + ", class " +
                std::to_string(hi) + " -> " + weight_text(w[hi]) +
                " (all: inverse_frequency_weights)";
    }
    advice +=
        " as cross_entropy's weight; for extreme imbalance effective_number_weights(counts, "
        "0.999) or focal_loss";
  }
  open_or_extend(
      make_finding("class_imbalance", severity::warning, task, step, "target_count_ratio",
                   {{"imbalance_ratio", options_.imbalance_ratio},
                    {"imbalance_window", static_cast<double>(options_.imbalance_window)},
                    {"imbalance_min_targets", static_cast<double>(options_.imbalance_min_targets)}},
                   std::move(evidence), std::move(message), std::move(advice)),
      out);
  return;
}

std::vector<finding> red_flag_checker::check_loss_scale(std::string_view task, double loss,
                                                        std::int64_t batch_size,
                                                        std::int64_t step) {
  if (!(loss > 0) || !std::isfinite(loss) || batch_size < 1) return {};
  published out;
  {
    std::lock_guard lock(mu_);
    rate_loss_scale(task, loss, batch_size, step, out);
  }
  return notify(std::move(out));
}

void red_flag_checker::rate_loss_scale(std::string_view task, double loss, std::int64_t batch_size,
                                       std::int64_t step, published& out) {
  auto& s = state_for(task);
  // The usual batch size: the most frequent one in the window.
  std::map<std::int64_t, int> freq;
  for (const auto& b : s.batches) ++freq[b.first];
  std::int64_t usual = 0;
  int usual_n = 0;
  for (const auto& [b, n] : freq)
    if (n > usual_n || (n == usual_n && b > usual)) usual = b, usual_n = n;

  const double size_ratio =
      usual > 0 ? static_cast<double>(batch_size) / static_cast<double>(usual) : 1.0;
  if (usual_n >= 4 &&
      (size_ratio >= options_.min_batch_ratio || size_ratio <= 1 / options_.min_batch_ratio)) {
    std::vector<double> usual_losses;
    for (const auto& b : s.batches)
      if (b.first == usual) usual_losses.push_back(b.second);
    const double ref = median(usual_losses);
    const double slope = std::log(loss / ref) / std::log(size_ratio);
    if (slope >= options_.sum_slope_threshold) {
      open_or_extend(
          make_finding(
              "sum_reduction", severity::warning, task, step, "loss_follows_batch_size",
              {{"sum_slope_threshold", options_.sum_slope_threshold},
               {"min_batch_ratio", options_.min_batch_ratio}},
              {{"batch_size", static_cast<double>(batch_size)},
               {"usual_batch_size", static_cast<double>(usual)},
               {"loss", loss},
               {"usual_loss", ref},
               {"slope", slope},
               {"loss_per_sample", loss / static_cast<double>(batch_size)}},
              "the loss of task '" + std::string(task) + "' follows the batch size: " + num(loss) +
                  " at batch " + std::to_string(batch_size) + " against a median of " + num(ref) +
                  " at batch " + std::to_string(usual) + " (log-log slope " + num(slope) +
                  "; a mean is independent of the batch size)",
              "reduce with the mean (divide the summed loss by the batch size, " +
                  std::to_string(usual) + "): with a sum the effective learning rate is " +
                  std::to_string(usual) +
                  "x larger and changes with every batch size; or keep the sum and divide the "
                  "learning rate by " +
                  std::to_string(usual)),
          out);
    }
  }
  s.batches.emplace_back(batch_size, loss);
  while (static_cast<int>(s.batches.size()) > options_.reduction_window) s.batches.pop_front();
}

// ---------------------------------------------------------------------------------------------
// What the sampled logits predict (prediction_checks.hpp): class metrics, constant_predictions,
// misleading_accuracy.

void red_flag_checker::on_class_metrics(std::function<void(const class_metrics&)> cb) {
  std::lock_guard lock(mu_);
  metrics_listener_ = std::move(cb);
}

void red_flag_checker::note_accuracy_reported() noexcept {
  accuracy_reported_.store(true, std::memory_order_relaxed);
}

void red_flag_checker::set_learning_rate_source(std::function<learning_rate_info()> source) {
  std::lock_guard lock(mu_);
  lr_source_ = std::move(source);
}

namespace {
/// "lower the learning rate 10x (from ...)" with what `source` says (generic without one).
std::string lower_lr_text(const std::function<learning_rate_info()>& source) {
  learning_rate_info lr;
  if (source) {
    try {
      lr = source();
    } catch (...) {
      // An optimizer that cannot say: advice without the numbers.
    }
  }
  return lower_lr_hint(lr.optimizer, lr.lr, lr.lr_min, lr.lr_max);
}
}  // namespace

std::string red_flag_checker::lower_lr() {
  std::function<learning_rate_info()> source;
  {
    std::lock_guard lock(mu_);
    source = lr_source_;
  }
  return lower_lr_text(source);
}

void red_flag_checker::rate_predictions(std::string_view task, std::int64_t step, sampled& in,
                                        published& out) {
  if (!in.tally) return;
  const auto& t = *in.tally;
  auto& s = state_for(task);
  // Pooled like the class counts (same window; restart when the class count changes).
  if (!s.seen.empty() && s.seen.back().size() != t.seen.size()) {
    s.seen.clear();
    s.correct.clear();
  }
  s.seen.push_back(t.seen);
  s.correct.push_back(t.correct);
  while (static_cast<int>(s.seen.size()) > options_.imbalance_window) {
    s.seen.pop_front();
    s.correct.pop_front();
  }
  const auto m = hooks::detail::pool_metrics(s.seen, s.correct);
  out.metrics =
      class_metrics{std::string(task), step, m.recall, m.balanced_accuracy, m.accuracy, m.rows};

  // The targets' imbalance, as class_imbalance measures it (pooled counts of present classes).
  std::int64_t majority = -1, total = 0;
  double ratio = std::numeric_limits<double>::quiet_NaN();
  if (!s.class_counts.empty()) {
    std::vector<std::int64_t> counts(s.class_counts.back().size(), 0);
    for (const auto& c : s.class_counts)
      for (std::size_t i = 0; i < c.size() && i < counts.size(); ++i) counts[i] += c[i];
    std::int64_t lo = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      total += counts[i];
      if (counts[i] == 0) continue;
      if (majority < 0 || counts[i] > counts[std::size_t(majority)]) majority = std::int64_t(i);
      if (lo == 0 || counts[i] < lo) lo = counts[i];
    }
    if (majority >= 0 && lo > 0) ratio = double(counts[std::size_t(majority)]) / double(lo);
  }
  const bool imbalanced =
      total >= options_.imbalance_min_targets && ratio >= options_.imbalance_ratio;

  if (imbalanced && accuracy_reported_.load(std::memory_order_relaxed) &&
      m.accuracy - m.balanced_accuracy >= options_.accuracy_gap) {
    auto text = hooks::detail::misleading_accuracy_text(std::string(task), m, majority, ratio);
    open_or_extend(
        make_finding("misleading_accuracy", severity::warning, task, step,
                     "accuracy_above_balanced_accuracy",
                     {{"accuracy_gap", options_.accuracy_gap},
                      {"imbalance_ratio", options_.imbalance_ratio}},
                     std::move(text.evidence), std::move(text.message), std::move(text.advice)),
        out);
  }

  // constant_predictions: class logits only (a binary model that says "negative" for a while
  // is the early phase of an imbalanced task, not a collapse).
  if (in.binary) return;
  const bool one_class = t.rows >= options_.min_elements && t.distinct_targets >= 2 &&
                         t.top_count == t.rows && step >= options_.constant_warmup;
  s.one_class_streak = one_class ? s.one_class_streak + 1 : 0;
  if (s.one_class_streak < options_.constant_patience) return;
  // Under mu_ (the source reads the optimizer, never the checker).
  auto text = hooks::detail::constant_predictions_text(
      std::string(task), t, majority, ratio, options_.imbalance_ratio, options_.spread_epsilon,
      options_.saturated_margin, lower_lr_text(lr_source_));
  open_or_extend(
      make_finding("constant_predictions", severity::warning, task, step, "one_class_for_every_row",
                   {{"constant_warmup", double(options_.constant_warmup)},
                    {"constant_patience", double(options_.constant_patience)},
                    {"spread_epsilon", options_.spread_epsilon},
                    {"saturated_margin", options_.saturated_margin}},
                   std::move(text.evidence), std::move(text.message), std::move(text.advice)),
      out);
}

}  // namespace losslens
