// initial_loss: the loss at the start of training against what an untrained model scores.

#include <algorithm>
#include <cmath>

#include "detail/detector.hpp"

namespace losslens::core::detail {
namespace {

class initial_loss final : public detector {
 public:
  initial_loss(const detector_options& o, const sample_schema& schema) : o_(o.initial_loss) {
    o_.window = std::max(o_.window, 4);
    // Where the expected level comes from, most explicit first: a given level is the total's;
    // a class count (--classes, or the class task's logits) predicts ln C for the class loss,
    // which is the total only when no other task is mixed into it (class_loss_index).
    if (o_.expected > 0) {
      expected_ = o_.expected;
    } else if (const int c = known_class_count(o, schema); c >= 2) {
      const auto task = class_loss_index(schema);
      if (!task) return;
      task_ = *task;
      classes_ = c;
    }
    if (classes_ >= 2) expected_ = std::log(double(classes_));
  }

  void observe(const step_context& ctx, finding_log& log) override {
    if (!(expected_ > 0) || done_) return;
    const sample& s = *ctx.s;
    const double v = task_ < 0 ? ctx.total_loss
                               : (std::size_t(task_) < s.task_losses.size() &&
                                          finite(s.task_losses[std::size_t(task_)])
                                      ? *s.task_losses[std::size_t(task_)]
                                      : nan);
    if (!std::isfinite(v)) return;
    const std::string series =
        task_ < 0 ? std::string("loss") : task_series(*ctx.schema, std::size_t(task_));
    if (seen_++ == 0) {
      // The first loss was computed before any update: what the initialisation scores.
      first_ = v;
      if (v >= o_.high_ratio * expected_) report(log, s.step, s.step, series, "above", v);
    }
    // The end of the first window: a fresh model cannot be far below chance by then unless the
    // answer reaches it without learning.
    if (seen_ == o_.window - 3) late_step_ = s.step;
    if (seen_ > o_.window - 4 && seen_ <= o_.window)
      late_[std::size_t(seen_ - (o_.window - 3))] = v;
    if (seen_ < o_.window) return;
    done_ = true;
    std::sort(late_, late_ + 4);
    const double m = 0.5 * (late_[1] + late_[2]);
    if (m <= o_.low_ratio * expected_) report(log, late_step_, s.step, series, "below", m);
  }

  void describe(finding& f, const sample_schema&) const override {
    const double expected = f.evidence_value("expected");
    const std::string basis =
        classes_ >= 2 ? format("the %.4g that an untrained %d-class model scores (ln %d)", expected,
                               classes_, classes_)
                      : format("the expected %.4g", expected);
    if (f.rule.name == "first_loss_far_above_expected") {
      f.message = format(
          "the first loss is %.4g at step %lld, %.3gx %s: the model's outputs "
          "start far from uniform",
          f.evidence_value("initial_loss"), static_cast<long long>(f.first_step),
          f.evidence_value("ratio"), basis.c_str());
      return;
    }
    f.message = format(
        "the median loss of steps %lld-%lld is %.3g, %.2g%% of %s: the model "
        "scored far better than chance before it could have learned",
        static_cast<long long>(f.evidence_value("window_first_step")),
        static_cast<long long>(f.last_step), f.evidence_value("window_loss"),
        100 * f.evidence_value("ratio"), basis.c_str());
  }

 private:
  void report(finding_log& log, std::int64_t first, std::int64_t last, const std::string& series,
              const char* side, double value) {
    const bool above = side[0] == 'a';
    auto f = new_finding("initial_loss", severity::warning, first, last, series,
                         above ? "first_loss_far_above_expected" : "early_loss_far_below_expected",
                         {{"expected", o_.expected},
                          {"high_ratio", o_.high_ratio},
                          {"low_ratio", o_.low_ratio},
                          {"window", double(o_.window)}});
    f.evidence = {{"expected", expected_}, {"initial_loss", first_}, {"ratio", value / expected_}};
    if (classes_ >= 2) f.evidence.emplace_back("classes", double(classes_));
    if (above) {
      f.advice = classes_ >= 2
                     ? "an untrained classifier should predict nearly uniform probabilities: "
                       "initialise the last layer with small weights (std about 0.01, or its "
                       "default init instead of a large one) and a zero bias, normalise the "
                       "inputs (scale pixels to [0, 1], standardise features), and pass the raw "
                       "logits (not scaled or summed values) to the loss; a start this far off "
                       "often blows up in the first steps"
                     : "the predictions start far from the targets: standardise the targets (or "
                       "initialise the output bias at their mean), initialise the last layer "
                       "with small weights and normalise the inputs";
    } else {
      f.evidence.emplace_back("window_loss", value);
      f.evidence.emplace_back("window_first_step", double(first));
      f.advice =
          "a freshly initialised model cannot learn this fast: check that the targets do "
          "not reach the model through its inputs (a label column left among the "
          "features, inputs built from the targets, an id that encodes the class) and "
          "that the loss compares the predictions with the real targets; when resuming "
          "from a checkpoint or fine-tuning pretrained weights, a low start is expected "
          "(set initial_loss.enabled = false)";
    }
    log.open(std::move(f), this);
  }

  detector_options::initial_loss_t o_;
  double expected_ = nan;
  int classes_ = 0;
  int task_ = -1;  // the task whose loss is judged; -1: the total
  std::int64_t seen_ = 0, late_step_ = 0;
  double first_ = nan;
  double late_[4] = {nan, nan, nan, nan};
  bool done_ = false;
};

}  // namespace

std::unique_ptr<detector> make_initial_loss(const detector_options& o, const sample_schema& s) {
  return std::make_unique<initial_loss>(o, s);
}

}  // namespace losslens::core::detail
