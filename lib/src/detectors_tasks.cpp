// task_dominance and task_stalled: rules across the tasks of a multi-task loss.

#include <algorithm>
#include <cmath>
#include <limits>

#include "detail/detector.hpp"
#include "detail/evidence_slots.hpp"
#include "detail/rolling.hpp"
#include "detail/task_weights.hpp"

namespace losslens::core::detail {
namespace {

/// Smoothed shares of a set of per-task magnitudes, and how long one task has held more than
/// the threshold. Used twice: weighted losses and per-task gradient norms on shared parameters.
class share_tracker {
 public:
  share_tracker(std::size_t tasks, double alpha) : ema_(tasks, ema(alpha)), now_(tasks, nan) {}

  /// Updates from the magnitudes (NaN = missing). Returns false when fewer than two are usable.
  bool update(std::int64_t step, double threshold) {
    double total = 0;
    std::size_t usable = 0;
    for (double v : now_)
      if (std::isfinite(v) && v >= 0) {
        total += v;
        ++usable;
      }
    if (usable < 2 || total <= 0) return false;
    ++count_;
    std::size_t best = 0;
    for (std::size_t i = 0; i < now_.size(); ++i) {
      if (std::isfinite(now_[i]) && now_[i] >= 0) ema_[i].push(now_[i] / total);
      if (ema_[i].value() > ema_[best].value()) best = i;
    }
    if (ema_[best].value() >= threshold) {
      if (streak_ == 0 || best != dominant_) {
        dominant_ = best;
        streak_ = 0;
        start_ = step;
        ep.close();
      }
      ++streak_;
    } else {
      streak_ = 0;
    }
    return true;
  }

  std::vector<ema> ema_;
  std::vector<double> now_;
  std::size_t dominant_ = 0;
  std::int64_t streak_ = 0, start_ = 0, count_ = 0;
  episode ep;
  evidence_slots<6> ev;  // what report() writes at every step of ep
};

class task_dominance final : public detector {
 public:
  task_dominance(const detector_options& o, const sample_schema& schema)
      : o_(o.task_dominance),
        loss_(schema.tasks.size(), o.task_dominance.ema_alpha),
        grad_(schema.tasks.size(), o.task_dominance.ema_alpha),
        level_(schema.tasks.size(), ema(o.task_dominance.ema_alpha)),
        initial_(schema.tasks.size(), nan) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    const std::size_t t = level_.size();
    if (t == 0 || !ctx.weights) return;
    // The weights reported, else read off the total (task_weights); shares wait for the fit
    // while the total is no plain sum.
    const task_weights& w = *ctx.weights;
    if (w.pending()) return;
    const std::vector<double>& raw = w.raw();
    for (std::size_t i = 0; i < t; ++i) {
      loss_.now_[i] = w.weight(i) * raw[i];
      grad_.now_[i] = i < s.task_grad_norms.size() && finite(s.task_grad_norms[i])
                          ? *s.task_grad_norms[i]
                          : nan;
    }
    // Gradient shares on the shared parameters, when reported, are what decides which task
    // drives training (GradNorm balances those, not the losses): they take precedence.
    for (std::size_t i = 0; i < t; ++i)
      if (std::isfinite(raw[i])) {
        level_[i].push(raw[i]);
        if (level_[i].count() == o_.warmup) initial_[i] = level_[i].value();
      }
    const bool by_grad = grad_.update(s.step, o_.share_threshold);
    if (by_grad) report(ctx, log, grad_, true);
    const bool by_loss = loss_.update(s.step, o_.share_threshold) && !by_grad;
    if (by_loss && !scale_mismatch(ctx, log)) report(ctx, log, loss_, false);
  }

 private:
  // Raw task losses 100x or more apart with the large one owning the weighted total: reported
  // on the step it is seen (often step 0), because such a run can blow up before any patience
  // runs out (CE 2.3 + MSE on 0-255 pixels 14491 is Inf by step 6).
  bool scale_mismatch(const step_context& ctx, finding_log& log) {
    double lo = nan, hi = nan, total = 0;
    std::size_t hi_i = 0;
    const std::vector<double>& raw = ctx.weights->raw();
    for (std::size_t i = 0; i < raw.size(); ++i) {
      const double v = raw[i];
      if (!(std::isfinite(v) && v > 0)) continue;
      if (std::isnan(lo) || v < lo) lo = v;
      if (std::isnan(hi) || v > hi) {
        hi = v;
        hi_i = i;
      }
    }
    for (double v : loss_.now_)
      if (std::isfinite(v) && v >= 0) total += v;
    if (!(hi / lo >= o_.scale_ratio) || !(total > 0)) return false;
    const double share = loss_.now_[hi_i] / total;
    if (share < o_.share_threshold) return false;  // the weights already correct the scales
    // A gap the others trained into (a reconstruction down from 0.5 to 0.02 beside a
    // classifier at 2.3) is progress, not a mismatch of scales: it opens no episode (one
    // opened by the scales at the start goes on).
    if (!loss_.ep.continues(log, ctx.s->step, 2 * std::int64_t(o_.patience)) &&
        others_converged(hi_i))
      return false;
    auto [f, is_new] =
        open_or_extend(log, this, loss_.ep, ctx.s->step, 2 * std::int64_t(o_.patience), [&] {
          auto f = new_finding(
              "task_dominance", severity::warning, ctx.s->step, ctx.s->step,
              task_series(*ctx.schema, hi_i), "raw_scale_ratio",
              {{"scale_ratio", o_.scale_ratio}, {"share_threshold", o_.share_threshold}});
          f.evidence = {{"task_index", double(hi_i)}};
          return f;
        });
    if (!is_new && f.rule.name != "raw_scale_ratio") return false;
    double others = 0;
    for (std::size_t i = 0; i < loss_.now_.size(); ++i)
      if (i != hi_i && std::isfinite(loss_.now_[i])) others += loss_.now_[i];
    f.set_evidence("share", share);
    f.set_evidence("weighted_loss", loss_.now_[hi_i]);
    f.set_evidence("others_weighted_loss", others);
    f.set_evidence("scale_ratio", hi / lo);
    f.set_evidence("steps", double(step_diff(ctx.s->step, f.first_step) + 1));
    const double mine = loss_.now_[hi_i];
    f.set_evidence("suggested_weight_factor",
                   mine > 0 ? (others / double(raw.size() - 1)) / mine : nan);
    return true;
  }

  // The other tasks are small in the total through weights below 1 that they were given (or
  // that the fit reads off the total), and their own losses are within `scale_ratio` of the
  // dominant one's (smoothed): an auxiliary loss added on purpose (MoE load balancing or a
  // z-loss at 0.01 beside a language model's loss, which starts 10x above it), not a task
  // drowned by another's scale; weights above 1 on the dominant task are no such excuse.
  bool auxiliary_by_weight(const task_weights& w, std::size_t dominant) const {
    const double top = level_[dominant].value();
    if (!(w.weight(dominant) <= 1) || !(top > 0)) return false;
    for (std::size_t i = 0; i < level_.size(); ++i) {
      if (i == dominant) continue;
      const double v = level_[i].value();
      if (!(w.weight(i) < 1) || !(v > 0) || !(top < o_.scale_ratio * v)) return false;
    }
    return true;
  }

  // Every other task has come down to a fraction of its initial loss: it trained, and the
  // task left dominating the total is expected, not starving the others.
  bool others_converged(std::size_t dominant) const {
    for (std::size_t i = 0; i < level_.size(); ++i) {
      if (i == dominant) continue;
      if (!std::isfinite(initial_[i]) ||
          !(level_[i].value() <= o_.converged_fraction * initial_[i]))
        return false;
    }
    return true;
  }

 private:
  void report(const step_context& ctx, finding_log& log, share_tracker& tr, bool by_grad) {
    if (tr.count_ <= o_.warmup || tr.streak_ < o_.patience) return;
    const std::size_t d = tr.dominant_;
    if (others_converged(d)) return;
    if (!by_grad && auxiliary_by_weight(*ctx.weights, d)) return;
    const sample_schema& sc = *ctx.schema;
    // Raw scales: the largest and smallest unweighted task losses at this step.
    double lo = nan, hi = nan;
    for (double v : ctx.weights->raw())
      if (std::isfinite(v) && v > 0) {
        lo = std::isnan(lo) ? v : std::min(lo, v);
        hi = std::isnan(hi) ? v : std::max(hi, v);
      }
    const double scale_ratio = hi / lo;
    auto [f, is_new] =
        open_or_extend(log, this, tr.ep, ctx.s->step, 2 * std::int64_t(o_.patience), [&] {
          auto f = new_finding("task_dominance", severity::warning, tr.start_, ctx.s->step,
                               task_series(sc, d),
                               by_grad ? "grad_norm_share_on_shared_params" : "weighted_loss_share",
                               {{"share_threshold", o_.share_threshold},
                                {"patience", double(o_.patience)},
                                {"ema_alpha", o_.ema_alpha}});
          f.evidence = {{"task_index", double(d)}};
          return f;
        });
    const double share = tr.ema_[d].value();
    const double mine = tr.now_[d];
    double others = 0;
    for (std::size_t i = 0; i < tr.now_.size(); ++i)
      if (i != d && std::isfinite(tr.now_[i])) others += tr.now_[i];
    const std::size_t n_others = level_.size() - 1;
    // Written at every step of the episode: by place, not by name (see evidence_slots). f is
    // captured by a named reference: clang 14 cannot capture a structured binding.
    auto put = [&, &fd = f](std::size_t slot, std::string_view name, double v) {
      tr.ev.set(fd, tr.ep.index, slot, name, v);
    };
    put(0, "share", share);
    put(1, by_grad ? "grad_norm" : "weighted_loss", mine);
    put(2, by_grad ? "others_grad_norm" : "others_weighted_loss", others);
    put(3, "scale_ratio", scale_ratio);
    put(4, "steps", double(tr.streak_));
    // A weight that brings the dominant task to the mean of the others.
    const double suggested = mine > 0 ? (others / double(n_others)) / mine : nan;
    put(5, "suggested_weight_factor", suggested);
  }

 public:
  void describe(finding& f, const sample_schema& sc) const override {
    const bool by_grad = f.rule.name == "grad_norm_share_on_shared_params";
    const auto d = std::size_t(f.evidence_value("task_index"));
    const std::string& name = sc.tasks[d];
    const std::size_t n_others = sc.tasks.size() - 1;
    f.message = format(
        "%s makes up %.2f%% of the %s %s %g steps (%.3g vs %.3g for the other "
        "task%s)",
        name.c_str(), 100 * f.evidence_value("share"),
        by_grad ? "gradient norm on the shared parameters" : "weighted total loss",
        f.rule.name == "raw_scale_ratio" ? "from its first step, over" : "for",
        f.evidence_value("steps"), f.evidence_value(by_grad ? "grad_norm" : "weighted_loss"),
        f.evidence_value(by_grad ? "others_grad_norm" : "others_weighted_loss"),
        n_others > 1 ? "s" : "");
    const double scale_ratio = f.evidence_value("scale_ratio");
    if (std::isfinite(scale_ratio) && scale_ratio >= o_.scale_ratio)
      f.message += format("; the task losses are %.3gx apart in scale", scale_ratio);
    f.advice = format(
        "the other tasks barely train: scale %s%s by about %.2g (so its term "
        "matches the others) or normalise each task's loss by its initial value, "
        "or learn the weights (uncertainty weighting, GradNorm); keep charting "
        "each task's loss",
        by_grad ? "the loss of " : "", name.c_str(), f.evidence_value("suggested_weight_factor"));
  }

 private:
  detector_options::task_dominance_t o_;
  share_tracker loss_, grad_;
  std::vector<ema> level_;       // smoothed raw task losses
  std::vector<double> initial_;  // their level after warm-up
};

class task_stalled final : public detector {
 public:
  task_stalled(const detector_options& o, const sample_schema& schema)
      : o_(o.task_stalled),
        stride_(std::max(1, o.task_stalled.window / 4)),
        tasks_(schema.tasks.size(), ema(o.task_stalled.ema_alpha)),
        total_(o.task_stalled.ema_alpha),
        initial_(schema.tasks.size(), nan),
        eps_(schema.tasks.size()),
        snaps_(5 * (schema.tasks.size() + 2)) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    if (!std::isfinite(ctx.total_loss)) return;
    total_.push(ctx.total_loss);
    for (std::size_t i = 0; i < tasks_.size() && i < s.task_losses.size(); ++i)
      if (finite(s.task_losses[i])) {
        tasks_[i].push(*s.task_losses[i]);
        if (tasks_[i].count() == o_.warmup) initial_[i] = tasks_[i].value();
      }
    if (++since_ < stride_) return;
    since_ = 0;
    // Snapshot: step, total, tasks...; the oldest of five is `window` steps back.
    const std::size_t w = tasks_.size() + 2;
    const std::size_t slot = std::size_t(nsnaps_ % 5) * w;
    snaps_[slot] = double(s.step);
    snaps_[slot + 1] = total_.value();
    for (std::size_t i = 0; i < tasks_.size(); ++i)
      snaps_[slot + 2 + i] = tasks_[i].count() > 0 ? tasks_[i].value() : nan;
    ++nsnaps_;
    if (nsnaps_ < 5) return;
    const std::size_t old = std::size_t(nsnaps_ % 5) * w;  // the slot written 4 snapshots ago
    // The others learn when the total reaches a new low: measured from the lowest the smoothed
    // total had been until `window` steps ago, a total coming back down after a loss spike (an
    // LM's loss sent from 3.3 to 4.8 for 60 steps) is no drop. Every snapshot is folded in
    // once, when it becomes the oldest.
    best_total_ = std::min(best_total_, snaps_[old + 1]);
    const double total_then = best_total_, total_now = total_.value();
    const double total_drop = (total_then - total_now) / std::abs(total_then);
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
      const double then = snaps_[old + 2 + i], now = tasks_[i].value();
      const double change = std::abs(now - then) / std::max(std::abs(then), 1e-12);
      // A loss weighted down on purpose (a load-balancing loss at 0.01) is a regularizer that
      // sits at its floor (1.0 for balanced experts) while the task it serves learns.
      const bool stalled = std::isfinite(initial_[i]) && std::isfinite(then) &&
                           change <= o_.max_task_change && total_drop >= o_.min_total_drop &&
                           now >= o_.min_remaining * initial_[i] &&
                           !(ctx.weights && ctx.weights->auxiliary(i, o_.auxiliary_weight));
      if (!stalled) {
        eps_[i].close();
        continue;
      }
      auto [f, is_new] = open_or_extend(log, this, eps_[i], s.step, stride_, [&] {
        auto f = new_finding("task_stalled", severity::warning, std::int64_t(snaps_[old]), s.step,
                             task_series(*ctx.schema, i), "flat_task_falling_total",
                             {{"window", double(o_.window)},
                              {"max_task_change", o_.max_task_change},
                              {"min_total_drop", o_.min_total_drop},
                              {"min_remaining", o_.min_remaining}});
        f.advice = format(
            "%s no longer learns while the others do: check its weight (it may "
            "be drowned out; see task_dominance), that its head receives "
            "gradient, and its targets and loss scale; uncertainty weighting or "
            "GradNorm rebalance tasks automatically",
            ctx.schema->tasks[i].c_str());
        return f;
      });
      f.set_evidence("task_smoothed", now);
      f.set_evidence("task_change", change);
      f.set_evidence("task_initial", initial_[i]);
      f.set_evidence("total_smoothed", total_now);
      f.set_evidence("total_drop", total_drop);
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    const double initial = f.evidence_value("task_initial");
    f.message = format(
        "%s moved %.2g%% (smoothed %.4g) over the last %d steps while the "
        "total fell %.1f%% to a new low; it is still at %.0f%% of its initial %.4g",
        f.series.c_str() + 5, 100 * f.evidence_value("task_change"),
        f.evidence_value("task_smoothed"), 4 * stride_, 100 * f.evidence_value("total_drop"),
        100 * f.evidence_value("task_smoothed") / initial, initial);
  }

 private:
  detector_options::task_stalled_t o_;
  int stride_;
  std::vector<ema> tasks_;
  ema total_;
  std::vector<double> initial_;
  std::vector<episode> eps_;
  std::vector<double> snaps_;
  std::int64_t nsnaps_ = 0;
  double best_total_ = std::numeric_limits<double>::infinity();  // see observe()
  int since_ = 0;
};

}  // namespace

std::unique_ptr<detector> make_task_dominance(const detector_options& o, const sample_schema& s) {
  return std::make_unique<task_dominance>(o, s);
}
std::unique_ptr<detector> make_task_stalled(const detector_options& o, const sample_schema& s) {
  return std::make_unique<task_stalled>(o, s);
}

}  // namespace losslens::core::detail
