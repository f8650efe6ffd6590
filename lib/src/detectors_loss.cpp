// loss_spike, divergence, plateau, oscillation and chance_level: rules on the total loss.

#include <cmath>

#include "detail/detector.hpp"
#include "detail/rolling.hpp"

namespace losslens::detail {
namespace {

class loss_spike final : public detector {
 public:
  loss_spike(const detector_options& o, const sample_schema&)
      : o_(o.loss_spike), median_(static_cast<std::size_t>(o.loss_spike.window), 8),
        recent_(static_cast<std::size_t>(o.loss_spike.recent_window)) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    if (median_.count() < static_cast<std::size_t>(o_.warmup)) {
      push(x);
      return;
    }
    const double m = median_.median();
    const double z = median_.z(x);
    const double ratio = m > 0 ? x / m : nan;
    bool spike = z >= o_.z_threshold && (!(m > 0) || ratio >= o_.min_ratio);
    if (spike) {
      // An outlier for the median/MAD can still be an ordinary value when the loss swings
      // (a bimodal window); a spike must also stand above everything seen recently.
      double recent_max = -std::numeric_limits<double>::infinity();
      for (std::size_t i = 0; i < recent_.size(); ++i) recent_max = std::max(recent_max, recent_[i]);
      spike = x >= o_.recent_max_ratio * recent_max || (recent_max <= 0 && x > recent_max);
    }
    // While the loss swings or climbs, those rules describe it; single spikes would be noise.
    const std::int64_t step = ctx.s->step;
    if (spike && !ep_.continues(step, o_.merge_gap))
      for (const char* k : {"oscillation", "divergence"})
        if (log.last_step_of(k) >= step_diff(step, o_.unstable_lookback)) spike = false;
    if (!spike) {
      push(x);
      return;
    }
    // The raw value enters the baseline: the median/MAD ignore isolated outliers by
    // themselves, and a lasting level shift is absorbed after window/2 steps (the divergence and
    // oscillation rules take over from there).
    push(x);
    auto [f, is_new] = open_or_extend(log, this, ep_, step, o_.merge_gap, [&] {
      auto f = new_finding("loss_spike", severity::warning, step, step, "loss", "robust_zscore",
                           {{"window", double(o_.window)},
                            {"z_threshold", o_.z_threshold},
                            {"min_ratio", o_.min_ratio},
                            {"recent_window", double(o_.recent_window)},
                            {"recent_max_ratio", o_.recent_max_ratio}});
      f.evidence = {{"loss", x}, {"running_median", m},
                    {"robust_scale", median_.scale()}, {"log_scale", median_.log_scale() ? 1.0 : 0.0},
                    {"z", z},    {"ratio", ratio},      {"spike_steps", 0}};
      const std::int64_t gs = ctx.last_grad_spike_step;
      if (gs != std::numeric_limits<std::int64_t>::min() && step_diff(step, gs) >= 0 &&
          step_diff(step, gs) <= o_.grad_lookback) {
        f.evidence.emplace_back("grad_spike_step", double(gs));
        f.evidence.emplace_back("grad_norm", ctx.last_grad_spike_value);
        f.evidence.emplace_back("grad_norm_ratio", ctx.last_grad_spike_ratio);
      }
      if (std::isfinite(ctx.lr)) f.evidence.emplace_back("lr", ctx.lr);
      f.advice = format("clip gradients (clip_grad_norm_ 1.0) or %s; look at the batch at "
                        "step %lld for outliers or bad labels; trainers of large models skip "
                        "the update on such steps (attach option guard)",
                        lr_hint(ctx.lr).c_str(), static_cast<long long>(step));
      return f;
    });
    f.set_evidence("spike_steps", f.evidence_value("spike_steps") + 1);
    if (!is_new && z > f.evidence_value("z")) {
      f.set_evidence("loss", x);
      f.set_evidence("z", z);
      f.set_evidence("ratio", ratio);
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format("loss %.4g is %.2gx its running median %.4g (robust z-score %.1f%s)",
                       f.evidence_value("loss"), f.evidence_value("ratio"),
                       f.evidence_value("running_median"), f.evidence_value("z"),
                       f.evidence_value("log_scale") > 0 ? " on the log scale" : "");
    if (f.last_step == f.first_step)
      f.message += format(" at step %lld", static_cast<long long>(f.first_step));
    else
      f.message += format("; %g spiking steps between %lld and %lld",
                          f.evidence_value("spike_steps"), static_cast<long long>(f.first_step),
                          static_cast<long long>(f.last_step));
    const double gs = f.evidence_value("grad_spike_step");
    if (std::isfinite(gs))
      f.message += format("; preceded by a grad-norm spike at step %lld (%.3g, %.3gx its running "
                          "median)",
                          static_cast<long long>(gs), f.evidence_value("grad_norm"),
                          f.evidence_value("grad_norm_ratio"));
  }

 private:
  void push(double x) noexcept {
    median_.push(x);
    recent_.push(x);
  }

  detector_options::loss_spike_t o_;
  robust_baseline median_;
  ring recent_;
  episode ep_;
};

class divergence final : public detector {
 public:
  divergence(const detector_options& o, const sample_schema&)
      : o_(o.divergence), ema_(o.divergence.ema_alpha) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    const double e = ema_.push(x);
    const std::int64_t step = ctx.s->step;
    if (ema_.count() <= o_.warmup) {
      initial_sum_ += x;
      if (ema_.count() == o_.warmup) {
        initial_ = initial_sum_ / o_.warmup;
        best_ = e;
        best_step_ = step;
      }
      return;
    }
    if (e < best_) {
      best_ = e;
      best_step_ = step;
    }
    const double rise = e - best_;
    const bool up = (best_ <= 0 || e >= o_.rise_ratio * best_) &&
                    rise >= o_.min_rise_fraction * std::abs(initial_) && rise > 0;
    if (!up) {
      held_ = 0;
      return;
    }
    if (++held_ < o_.patience) return;
    // A dip below the threshold shorter than the patience does not end the episode.
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.patience), [&] {
      auto f = new_finding("divergence", severity::error, best_step_, step, "loss",
                           "smoothed_rise_over_best",
                           {{"ema_alpha", o_.ema_alpha},
                            {"rise_ratio", o_.rise_ratio},
                            {"min_rise_fraction", o_.min_rise_fraction},
                            {"patience", double(o_.patience)}});
      f.evidence = {{"best_smoothed", best_}, {"best_step", double(best_step_)},
                    {"initial_level", initial_}};
      if (std::isfinite(ctx.lr)) f.evidence.emplace_back("lr", ctx.lr);
      f.advice = format("%s and add gradient clipping (clip_grad_norm_ 1.0); if the rise "
                        "follows an LR warm-up or restart, lower its peak; check that the "
                        "data pipeline did not change (shuffling, corrupted shard)",
                        lr_hint(ctx.lr).c_str());
      return f;
    });
    f.set_evidence("smoothed", e);
    f.set_evidence("loss", x);
    f.set_evidence("ratio", best_ > 0 ? e / best_ : nan);
    f.set_evidence("steps_above", double(held_));
  }

  void describe(finding& f, const sample_schema&) const override {
    const double best = f.evidence_value("best_smoothed");
    f.message = format("smoothed loss rose from its best %.4g (step %lld) to %.4g", best,
                       static_cast<long long>(f.evidence_value("best_step")),
                       f.evidence_value("smoothed"));
    if (best > 0) f.message += format(" (%.3gx)", f.evidence_value("ratio"));
    f.message += format(" and has stayed above %.2gx the best for %g steps", o_.rise_ratio,
                        f.evidence_value("steps_above"));
  }

 private:
  detector_options::divergence_t o_;
  ema ema_;
  double initial_sum_ = 0, initial_ = 0, best_ = 0;
  std::int64_t best_step_ = 0, held_ = 0;
  episode ep_;
};

class plateau final : public detector {
 public:
  plateau(const detector_options& o, const sample_schema&)
      : o_(o.plateau), ema_(o.plateau.ema_alpha) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    const double e = ema_.push(x);
    const std::int64_t step = ctx.s->step;
    if (ema_.count() <= std::max(1, o_.warmup)) {
      best_ = initial_ = e;
      best_step_ = step;
      return;
    }
    if (better(e)) {
      best_ = e;
      best_step_ = step;
      bad_ = 0;
      if (ep_.open()) {
        ep_.close();
        cooldown_left_ = o_.cooldown;
      }
      return;
    }
    // A loss far above its best is rising, not flat: that is divergence's business.
    if (std::abs(e - best_) > o_.max_rise * std::abs(best_)) {
      bad_ = 0;
      ep_.close();
      return;
    }
    ++bad_;
    if (cooldown_left_ > 0) {  // as ReduceLROnPlateau: no bad steps counted while cooling down
      --cooldown_left_;
      bad_ = 0;
    }
    if (bad_ <= o_.patience) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 1, [&] {
      auto f = new_finding("plateau", severity::info, best_step_, step, "loss",
                           "reduce_lr_on_plateau",
                           {{"mode_max", o_.mode_max ? 1.0 : 0.0},
                            {"threshold", o_.threshold},
                            {"threshold_rel", o_.threshold_rel ? 1.0 : 0.0},
                            {"patience", double(o_.patience)},
                            {"cooldown", double(o_.cooldown)},
                            {"ema_alpha", o_.ema_alpha},
                            {"max_rise", o_.max_rise}});
      f.evidence = {{"best_smoothed", best_}, {"best_step", double(best_step_)}};
      if (std::isfinite(ctx.lr)) f.evidence.emplace_back("lr", ctx.lr);
      f.evidence.emplace_back("initial_smoothed", initial_);
      const bool never_moved = std::abs(best_ - initial_) < 0.1 * std::abs(initial_);
      if (never_moved)
        f.advice = std::isfinite(ctx.lr)
                       ? format("the loss has barely moved from where it started: the learning "
                                "rate %.3g may be too low (try %.3g), or gradients do not reach "
                                "the model; check that the model can overfit one batch",
                                ctx.lr, ctx.lr * 10)
                       : std::string("the loss has barely moved from where it started: the "
                                     "learning rate may be too low, or gradients do not reach "
                                     "the model; check that the model can overfit one batch");
      else
        f.advice = std::isfinite(ctx.lr)
                       ? format("reduce the learning rate (ReduceLROnPlateau-style, factor 0.1: "
                                "from %.3g to %.3g); if the loss is still high, check that every "
                                "layer gets gradient and that the model can overfit one batch",
                                ctx.lr, ctx.lr / 10)
                       : std::string("reduce the learning rate 10x (ReduceLROnPlateau-style); if "
                                     "the loss is still high, check that every layer gets "
                                     "gradient and that the model can overfit one batch");
      return f;
    });
    f.set_evidence("smoothed", e);
    f.set_evidence("steps_without_improvement", double(step_diff(step, best_step_)));
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format("smoothed loss %.4g has not improved on %.4g (step %lld) by more than "
                       "%g%s for %g steps",
                       f.evidence_value("smoothed"), f.evidence_value("best_smoothed"),
                       static_cast<long long>(f.evidence_value("best_step")),
                       o_.threshold_rel ? o_.threshold * 100 : o_.threshold,
                       o_.threshold_rel ? "%" : "", f.evidence_value("steps_without_improvement"));
  }

 private:
  bool better(double e) const {
    if (!o_.mode_max)
      return o_.threshold_rel ? e < best_ * (1 - o_.threshold) : e < best_ - o_.threshold;
    return o_.threshold_rel ? e > best_ * (1 + o_.threshold) : e > best_ + o_.threshold;
  }
  detector_options::plateau_t o_;
  ema ema_;
  double best_ = 0, initial_ = 0;
  std::int64_t best_step_ = 0, bad_ = 0, cooldown_left_ = 0;
  episode ep_;
};

class oscillation final : public detector {
 public:
  oscillation(const detector_options& o, const sample_schema&)
      : o_(o.oscillation), values_(std::size_t(o.oscillation.window)),
        steps_(std::size_t(o.oscillation.window)) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    values_.push(x);
    steps_.push(double(ctx.s->step));
    if (!values_.full() || ++since_ < o_.stride) return;
    since_ = 0;
    evaluate(ctx, log);
  }

 private:
  void evaluate(const step_context& ctx, finding_log& log) {
    const std::size_t n = values_.size();
    double level = 0, tv = 0, mean_d = 0;
    for (std::size_t i = 0; i < n; ++i) level += std::abs(values_[i]);
    level /= double(n);
    for (std::size_t i = 0; i + 1 < n; ++i) {
      const double d = values_[i + 1] - values_[i];
      tv += std::abs(d);
      mean_d += d;
    }
    const double nd = double(n - 1);
    mean_d /= nd;
    std::size_t pairs = 0, changes = 0;
    double num = 0, den = 0;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      const double d0 = values_[i + 1] - values_[i];
      den += (d0 - mean_d) * (d0 - mean_d);
      if (i + 2 >= n) break;
      const double d1 = values_[i + 2] - values_[i + 1];
      num += (d0 - mean_d) * (d1 - mean_d);
      if (d0 != 0 && d1 != 0) {
        ++pairs;
        if ((d0 > 0) != (d1 > 0)) ++changes;
      }
    }
    if (pairs == 0 || den <= 0 || level <= 0) return;
    const double rate = double(changes) / double(pairs);
    const double ac = num / den;
    const double amp = tv / nd / level;
    const double trend = std::abs(values_[n - 1] - values_[0]) / tv;
    const bool hit = rate >= o_.min_sign_change_rate && ac <= o_.max_lag1_autocorr &&
                     amp >= o_.min_amplitude_ratio && trend <= o_.max_trend_ratio;
    if (!hit) return;
    const std::int64_t step = ctx.s->step;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, o_.stride, [&] {
      auto f = new_finding("oscillation", severity::warning, std::int64_t(steps_[0]), step,
                           "loss", "sign_change_autocorr_amplitude",
                           {{"window", double(o_.window)},
                            {"min_sign_change_rate", o_.min_sign_change_rate},
                            {"max_lag1_autocorr", o_.max_lag1_autocorr},
                            {"min_amplitude_ratio", o_.min_amplitude_ratio},
                            {"max_trend_ratio", o_.max_trend_ratio}});
      if (std::isfinite(ctx.lr)) f.evidence.emplace_back("lr", ctx.lr);
      f.advice = format("%s, use a larger batch, and clip gradients (clip_grad_norm_ 1.0); if "
                        "the loss is computed on probabilities (BCE after sigmoid), switch to "
                        "the logits form; outliers in the data call for a robust loss (Huber)",
                        lr_hint(ctx.lr).c_str());
      return f;
    });
    f.set_evidence("sign_change_rate", rate);
    f.set_evidence("lag1_autocorr", ac);
    f.set_evidence("amplitude_ratio", amp);
    f.set_evidence("mean_abs_diff", tv / nd);
    f.set_evidence("mean_level", level);
    f.set_evidence("trend_ratio", trend);
  }

 public:
  void describe(finding& f, const sample_schema&) const override {
    f.message = format("loss swings by %.3g per step on average (%.0f%% of its level %.3g), "
                       "changing direction on %.0f%% of steps (lag-1 autocorrelation of the "
                       "differences %.2f), steps %lld-%lld",
                       f.evidence_value("mean_abs_diff"), 100 * f.evidence_value("amplitude_ratio"),
                       f.evidence_value("mean_level"), 100 * f.evidence_value("sign_change_rate"),
                       f.evidence_value("lag1_autocorr"), static_cast<long long>(f.first_step),
                       static_cast<long long>(f.last_step));
  }

 private:
  detector_options::oscillation_t o_;
  ring values_, steps_;
  int since_ = 0;
  episode ep_;
};

class chance_level final : public detector {
 public:
  chance_level(const detector_options& o, const sample_schema&)
      : o_(o.chance_level), target_(std::log(double(o.chance_level.num_classes))),
        ema_(o.chance_level.ema_alpha), acc_(o.chance_level.ema_alpha) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    const double e = ema_.push(x);
    if (finite(ctx.s->accuracy)) acc_.push(*ctx.s->accuracy);
    const std::int64_t step = ctx.s->step;
    if (std::abs(e - target_) <= o_.tolerance * target_) {
      if (streak_++ == 0) start_ = step;
    } else {
      streak_ = 0;
      return;
    }
    if (ema_.count() <= o_.warmup || streak_ < o_.patience) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.patience), [&] {
      auto f = new_finding("chance_level", severity::warning, start_, step, "loss",
                           "smoothed_loss_near_log_classes",
                           {{"num_classes", double(o_.num_classes)},
                            {"tolerance", o_.tolerance},
                            {"warmup", double(o_.warmup)},
                            {"patience", double(o_.patience)}});
      f.evidence = {{"chance_loss", target_}};
      if (std::isfinite(ctx.lr)) f.evidence.emplace_back("lr", ctx.lr);
      f.advice = "the model predicts the uniform distribution: ";
      if (std::isfinite(ctx.lr) && ctx.lr < 1e-5)
        f.advice += format("the learning rate %.3g is very low, try %.3g; ", ctx.lr, ctx.lr * 100);
      else
        f.advice += "check the learning rate (too low does not move, too high collapses); ";
      f.advice += "look for dead ReLUs (LeakyReLU, another init), check that gradients reach "
                  "every layer, that labels match their inputs, and that the model can "
                  "overfit a single batch";
      return f;
    });
    f.set_evidence("smoothed", e);
    f.set_evidence("steps", double(streak_));
    if (acc_.count() > 0) {
      f.set_evidence("accuracy", acc_.value());
      f.set_evidence("chance_accuracy", 1.0 / o_.num_classes);
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format("smoothed loss %.4g has stayed within %.0f%% of ln(%d) = %.4g, the loss "
                       "of a uniform guess, for %g steps",
                       f.evidence_value("smoothed"), o_.tolerance * 100, o_.num_classes, target_,
                       f.evidence_value("steps"));
    if (std::isfinite(f.evidence_value("accuracy")))
      f.message += format(" (accuracy %.3f, chance %.3f)", f.evidence_value("accuracy"),
                          1.0 / o_.num_classes);
  }

 private:
  detector_options::chance_level_t o_;
  double target_;
  ema ema_, acc_;
  std::int64_t streak_ = 0, start_ = 0;
  episode ep_;
};

}  // namespace

std::unique_ptr<detector> make_loss_spike(const detector_options& o, const sample_schema& s) {
  return std::make_unique<loss_spike>(o, s);
}
std::unique_ptr<detector> make_divergence(const detector_options& o, const sample_schema& s) {
  return std::make_unique<divergence>(o, s);
}
std::unique_ptr<detector> make_plateau(const detector_options& o, const sample_schema& s) {
  return std::make_unique<plateau>(o, s);
}
std::unique_ptr<detector> make_oscillation(const detector_options& o, const sample_schema& s) {
  return std::make_unique<oscillation>(o, s);
}
std::unique_ptr<detector> make_chance_level(const detector_options& o, const sample_schema& s) {
  return std::make_unique<chance_level>(o, s);
}

}  // namespace losslens::detail
