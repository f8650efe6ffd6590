// loss_spike, divergence, plateau, oscillation and chance_level: rules on the total loss.

#include <array>
#include <cmath>
#include <limits>

#include "detail/detector.hpp"
#include "detail/rolling.hpp"

namespace losslens::detail {
namespace {

class loss_spike final : public detector {
 public:
  loss_spike(const detector_options& o, const sample_schema&)
      : o_(o.loss_spike), median_(static_cast<std::size_t>(o.loss_spike.window), 8),
        recent_(static_cast<std::size_t>(o.loss_spike.recent_window)),
        tail_(static_cast<std::size_t>(o.loss_spike.tail_window), 64, 64),
        after_(std::size_t(std::max<std::int64_t>(4, o.loss_spike.confirm_steps))),
        gate_(o.loss_spike.confirm_steps, o.loss_spike.max_wait) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    after_.push(x);
    // A held spike settles once the loss has had confirm_steps to come back down.
    const double range = std::isfinite(ctx.loss_range) ? ctx.loss_range : 0.0;
    if (gate_.waiting(ctx.s->step))
      gate_.check(log, ctx.s->step, after_.median(), 0.05 * range, 1.5, 2, 0.25 * range);
    if (median_.count() < static_cast<std::size_t>(o_.warmup)) {
      push(x);
      return;
    }
    const double m = median_.median();
    const double z = median_.z(x);
    const double ratio = m > 0 ? x / m : nan;
    // The z-score has to stand out from this run's own extremes too (see tail_window).
    const double z_needed =
        tail_.count() >= std::size_t(o_.tail_warmup)
            ? std::max(o_.z_threshold, o_.tail_factor * tail_.upper())
            : o_.z_threshold;
    if (std::isfinite(z)) tail_.push(std::min(z, 1e6));
    // And it has to matter against the run's progress (float32 losses near zero jump from
    // 7e-9 to 1e-7 with an enormous z-score).
    const bool matters = !std::isfinite(ctx.loss_range) || x - m >= o_.min_range_fraction * ctx.loss_range;
    bool spike = z >= z_needed && (!(m > 0) || ratio >= o_.min_ratio) && matters;
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
                    {"z", z},    {"ratio", ratio},      {"spike_steps", 0},
                    {"z_needed", z_needed}};
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
    // Only a run whose own losses are heavy-tailed (a memorising run's hard batches) has
    // transients worth waiting for; elsewhere a spike is reported on its step.
    const bool heavy = tail_.count() >= std::size_t(o_.tail_warmup) && tail_.upper() >= o_.heavy_tail_z;
    gate_.hit(log, ep_.index, is_new, step, m, std::isfinite(ctx.loss_range) && heavy);
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
    if (f.evidence_value("recovered") > 0)
      f.message += format("; transient: the loss was back at %.4g %g steps later",
                          f.evidence_value("recovered_level"), f.evidence_value("recovered_after"));
  }

 private:
  void push(double x) noexcept {
    median_.push(x);
    recent_.push(x);
  }

  detector_options::loss_spike_t o_;
  robust_baseline median_;
  ring recent_;
  lagged_tail tail_;  // z-scores of earlier losses against their running median
  lazy_median after_;  // the last confirm_steps losses, to tell a transient
  recovery_gate gate_;
  episode ep_;
};

class divergence final : public detector {
 public:
  divergence(const detector_options& o, const sample_schema&)
      : o_(o.divergence), ema_(o.divergence.ema_alpha), slow_(o.divergence.ema_alpha / 5),
        spread_(64, 32) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.level_loss;
    if (!std::isfinite(x)) return;
    const double e = ema_.push(x);
    // The best is taken on a slower average: the minimum of a noisy average over a long run
    // sits several of its standard deviations below the level, and the rise would be noise.
    const double slow = slow_.push(x);
    spread_.push(x);
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
    if (slow < best_) {
      best_ = slow;
      best_step_ = step;
    }
    // The fast average's own noise: batch noise x sqrt(alpha / (2 - alpha)).
    const double a = o_.ema_alpha;
    const double noise = spread_.scale() * std::sqrt(a / (2 - a));
    // A rise matters against the progress the run has made (initial level minus best), or
    // against the level itself when it made none; a ratio to the best only means something for
    // a positive loss (NLL of densities, ELBOs and RL objectives go negative).
    const double range = initial_ - best_ > 0 ? initial_ - best_ : std::abs(initial_);
    const double needed = std::max(o_.min_rise_fraction * range, o_.noise_z * noise);
    const double rise = e - best_;
    const bool ratio_ok = best_ <= 0 || e >= o_.rise_ratio * best_;
    // Once open, the episode holds until the smoothed loss comes back below half the rise that
    // opened it: a loss hovering around the threshold is one episode, not dozens.
    const bool up = rise > 0 && (ep_.open() ? rise >= 0.5 * needed
                                            : rise >= needed && ratio_ok);
    if (!up) {
      held_ = 0;
      if (ep_.open() && step_diff(step, ep_.last_hit) > 4 * std::int64_t(o_.patience)) ep_.close();
      return;
    }
    if (++held_ < o_.patience && !ep_.open()) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 4 * std::int64_t(o_.patience), [&] {
      const std::int64_t onset = best_step_;  // where the rise began
      auto f = new_finding("divergence", severity::error, onset, step, "loss",
                           "smoothed_rise_over_best",
                           {{"ema_alpha", o_.ema_alpha},
                            {"rise_ratio", o_.rise_ratio},
                            {"min_rise_fraction", o_.min_rise_fraction},
                            {"patience", double(o_.patience)}});
      f.evidence = {{"best_smoothed", best_}, {"best_step", double(onset)},
                    {"initial_level", initial_}, {"peak", 0}};
      return f;
    });
    if (std::isfinite(ctx.lr)) f.set_evidence("lr", ctx.lr);
    f.set_evidence("smoothed", e);
    f.set_evidence("loss", ctx.total_loss);
    if (best_ > 0) f.set_evidence("ratio", e / best_);
    // How much of the progress has been given back: the measure of how bad it is.
    f.set_evidence("peak", std::max(f.evidence_value("peak"), range > 0 ? rise / range : 0));
    f.set_evidence("steps_rising", double(step_diff(step, std::int64_t(f.evidence_value("best_step")))));
  }

  void describe(finding& f, const sample_schema&) const override {
    const double best = f.evidence_value("best_smoothed");
    const auto best_step = static_cast<long long>(f.evidence_value("best_step"));
    const double rising = f.evidence_value("steps_rising");
    f.message = format("the loss has been rising since its best: smoothed %.4g at step %lld, "
                       "%.4g now",
                       best, best_step, f.evidence_value("smoothed"));
    if (best > 0) f.message += format(" (%.3gx)", f.evidence_value("ratio"));
    f.message += format(", %g steps later; %.0f%% of the progress from the initial %.4g is lost",
                        rising, 100 * std::min(f.evidence_value("peak"), 99.99),
                        f.evidence_value("initial_level"));
    const double lr = f.evidence_value("lr");
    const std::string lower = lr_hint(lr);
    if (rising >= 1000)
      // Slow degradation: the step size is too large for the noise of this batch size.
      f.advice = format("a slow rise over many steps means the updates are too large for the "
                        "gradient noise of this batch: %s (or decay it from step %lld on), or "
                        "raise the batch size (with momentum m the step is about LR / (1 - m)); "
                        "keep the checkpoint from step %lld",
                        lower.c_str(), best_step, best_step);
    else
      f.advice = format("%s and add gradient clipping (clip_grad_norm_ 1.0); if the rise "
                        "follows an LR warm-up, restart or change, lower its peak; check that "
                        "the data pipeline did not change (shuffling, corrupted shard)",
                        lower.c_str());
  }

 private:
  detector_options::divergence_t o_;
  ema ema_, slow_;
  rolling_median spread_;
  double initial_sum_ = 0, initial_ = 0, best_ = 0;
  std::int64_t best_step_ = 0, held_ = 0;
  episode ep_;
};

class plateau final : public detector {
 public:
  plateau(const detector_options& o, const sample_schema&)
      : o_(o.plateau), ema_(o.plateau.ema_alpha) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.level_loss;
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
    // A long run earns a longer patience: a slow decay over a million steps improves by 1%
    // per many thousand steps and is not a plateau.
    const std::int64_t patience =
        std::max<std::int64_t>(o_.patience, std::int64_t(o_.patience_fraction * double(ema_.count())));
    if (bad_ <= patience) return;
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
        steps_(std::size_t(o.oscillation.window)), history_(8),
        resid_(std::size_t(o.oscillation.window)) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.level_loss;
    if (!std::isfinite(x)) return;
    values_.push(x);
    steps_.push(double(ctx.s->step));
    if (!values_.full() || ++since_ < o_.stride) return;
    since_ = 0;
    evaluate(ctx, log);
  }

 private:
  // Two shapes that batch noise does not have. (a) Alternation: the loss detrended over the
  // window is anti-correlated with itself one step later (period-2 bouncing); i.i.d. noise
  // gives a lag-1 autocorrelation of the levels near 0 (+-2/sqrt(n)), whereas the
  // differences of pure noise already have -0.5, which is why the rule looks at levels.
  // (b) Growing swings: the detrended spread is several times what it was a few windows
  // ago while the smoothed loss no longer improves (instability after an LR change).
  void evaluate(const step_context& ctx, finding_log& log) {
    const std::size_t n = values_.size();
    // Least-squares line through the window.
    double sx = 0, sy = 0, sxx = 0, sxy = 0, level = 0, tv = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double t = double(i), y = values_[i];
      sx += t;
      sy += y;
      sxx += t * t;
      sxy += t * y;
      level += std::abs(y);
      if (i + 1 < n) tv += std::abs(values_[i + 1] - y);
    }
    const double nn = double(n);
    const double slope = (nn * sxy - sx * sy) / (nn * sxx - sx * sx);
    const double icpt = (sy - slope * sx) / nn;
    level /= nn;
    const double mean = sy / nn;
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) resid_[i] = values_[i] - (icpt + slope * double(i));
    for (std::size_t i = 0; i < n; ++i) {
      den += resid_[i] * resid_[i];
      if (i + 1 < n) num += resid_[i] * resid_[i + 1];
    }
    const double spread = std::sqrt(den / nn);
    // Per-evaluation history for (b): spread and mean of earlier windows.
    history_.push(spread);
    means_[head_] = mean;
    head_ = (head_ + 1) % means_.size();
    ++evals_;
    if (den <= 0 || level <= 0 || tv <= 0) return;
    const double ac = num / den;
    const double amp = tv / (nn - 1) / level;
    const double trend = std::abs(values_[n - 1] - values_[0]) / tv;
    // Swings have to matter against the run's progress: near a zero floor, bouncing between
    // 1e-6 and 1e-5 is large against the level and irrelevant to training.
    const bool matters = !std::isfinite(ctx.loss_range) ||
                         tv / (nn - 1) >= o_.min_range_fraction * ctx.loss_range;
    const bool alternating = ac <= o_.max_lag1_autocorr && amp >= o_.min_amplitude_ratio &&
                             trend <= o_.max_trend_ratio && matters;
    // (b) needs windows that do not overlap: compare with the one `window` steps earlier.
    const std::size_t back = std::size_t(o_.window / o_.stride);
    bool growing = false;
    double growth = nan;
    if (evals_ > std::int64_t(back) && back < history_.capacity()) {
      const double before = history_[history_.size() - 1 - back];
      const double mean_before = means_[(head_ + means_.size() - 1 - back) % means_.size()];
      growth = before > 0 ? spread / before : nan;
      growing = growth >= o_.min_growth && mean >= mean_before && amp >= o_.min_amplitude_ratio &&
                matters;
    }
    // Two evaluations in a row: one window at -0.3 happens by chance on long noisy runs.
    in_row_ = alternating || growing ? in_row_ + 1 : 0;
    if (in_row_ < 2 && !ep_.continues(ctx.s->step, 2 * std::int64_t(o_.window))) return;
    if (!alternating && !growing) return;
    const std::int64_t step = ctx.s->step;
    const std::int64_t onset = change_point(alternating);
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.window), [&] {
      auto f = new_finding("oscillation", severity::warning, onset, step, "loss",
                           alternating ? "detrended_lag1_alternation" : "growing_swings",
                           {{"window", double(o_.window)},
                            {"max_lag1_autocorr", o_.max_lag1_autocorr},
                            {"min_amplitude_ratio", o_.min_amplitude_ratio},
                            {"max_trend_ratio", o_.max_trend_ratio},
                            {"min_growth", o_.min_growth}});
      return f;
    });
    if (std::isfinite(ctx.lr)) f.set_evidence("lr", ctx.lr);
    f.set_evidence("lag1_autocorr", ac);
    f.set_evidence("amplitude_ratio", amp);
    f.set_evidence("mean_abs_diff", tv / (nn - 1));
    f.set_evidence("mean_level", level);
    f.set_evidence("trend_ratio", trend);
    f.set_evidence("spread_growth", growth);
    f.set_evidence("alternating", alternating ? 1 : 0);
  }

  // Where the behaviour began inside the window: the start of the suffix with the largest
  // excess over what noise gives (alternation: sign flips of consecutive residuals above 1/2;
  // growth: |residual| above the earlier spread).
  std::int64_t change_point(bool alternating) const {
    const std::size_t n = values_.size();
    double ref = 0;
    if (!alternating) {
      const std::size_t back = std::size_t(o_.window / o_.stride);
      ref = 1.5 * history_[history_.size() - 1 - back];
    }
    double suffix = 0, best = -1;
    std::size_t at = 0;
    for (std::size_t i = n - 1; i-- > 0;) {
      suffix += alternating ? ((resid_[i] * resid_[i + 1] < 0 ? 1.0 : 0.0) - 0.5)
                            : (std::abs(resid_[i]) - ref);
      if (suffix > best) {
        best = suffix;
        at = i;
      }
    }
    return std::int64_t(steps_[at]);
  }

 public:
  void describe(finding& f, const sample_schema&) const override {
    if (f.evidence_value("alternating") > 0)
      f.message = format("loss bounces up and down on alternate steps: detrended lag-1 "
                         "autocorrelation %.2f (batch noise gives about 0), swings of %.3g per "
                         "step (%.0f%% of its level %.3g), steps %lld-%lld",
                         f.evidence_value("lag1_autocorr"), f.evidence_value("mean_abs_diff"),
                         100 * f.evidence_value("amplitude_ratio"), f.evidence_value("mean_level"),
                         static_cast<long long>(f.first_step), static_cast<long long>(f.last_step));
    else
      f.message = format("loss swings grew %.3gx within %d steps while the loss stopped "
                         "improving: %.3g per step (%.0f%% of its level %.3g), steps %lld-%lld",
                         f.evidence_value("spread_growth"), o_.window,
                         f.evidence_value("mean_abs_diff"), 100 * f.evidence_value("amplitude_ratio"),
                         f.evidence_value("mean_level"), static_cast<long long>(f.first_step),
                         static_cast<long long>(f.last_step));
    f.advice = format("%s, use a larger batch, and clip gradients (clip_grad_norm_ 1.0); if "
                      "the swings began after an LR change (warm-up end, restart), lower that "
                      "peak; if the loss is computed on probabilities (BCE after sigmoid), "
                      "switch to the logits form",
                      lr_hint(f.evidence_value("lr")).c_str());
  }

 private:
  detector_options::oscillation_t o_;
  ring values_, steps_, history_;
  std::array<double, 8> means_{};
  std::size_t head_ = 0;
  std::int64_t evals_ = 0, in_row_ = 0;
  std::vector<double> resid_;
  int since_ = 0;
  episode ep_;
};

class chance_level final : public detector {
 public:
  chance_level(const detector_options& o, const sample_schema&)
      : o_(o.chance_level), classes_(o.chance_level.num_classes),
        target_(classes_ >= 2 ? std::log(double(classes_)) : nan),
        ema_(o.chance_level.ema_alpha), acc_(o.chance_level.ema_alpha) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.level_loss;
    if (!std::isfinite(x)) return;
    const double e = ema_.push(x);
    if (finite(ctx.s->accuracy)) acc_.push(*ctx.s->accuracy);
    const std::int64_t step = ctx.s->step;
    if (o_.num_classes == 0 && !infer(e)) return;
    if (std::abs(e - target_) <= tolerance() * target_) {
      if (streak_++ == 0) start_ = step;
    } else {
      streak_ = 0;
      return;
    }
    if (ema_.count() <= o_.warmup || streak_ < o_.patience) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.patience), [&] {
      auto f = new_finding("chance_level", severity::warning, start_, step, "loss",
                           o_.num_classes == 0 ? "smoothed_loss_near_log_k_inferred"
                                               : "smoothed_loss_near_log_classes",
                           {{"num_classes", double(classes_)},
                            {"tolerance", tolerance()},
                            {"warmup", double(o_.warmup)},
                            {"patience", double(o_.patience)}});
      f.evidence = {{"chance_loss", target_}, {"classes", double(classes_)},
                    {"tolerance", tolerance()},
                    {"inferred", o_.num_classes == 0 ? 1.0 : 0.0}};
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
      f.set_evidence("chance_accuracy", 1.0 / classes_);
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    const int k = int(f.evidence_value("classes"));
    f.message = format("smoothed loss %.4g has stayed within %.1f%% of ln(%d) = %.4g, the loss "
                       "of a uniform guess over %d classes, for %g steps",
                       f.evidence_value("smoothed"), f.evidence_value("tolerance") * 100, k,
                       f.evidence_value("chance_loss"), k, f.evidence_value("steps"));
    if (f.evidence_value("inferred") > 0)
      f.message += format(" (class count inferred from the level: pass num_classes / --classes "
                          "if it is not %d%s)",
                          k, k == 2 ? "; ln 2 is also a binary loss with p = 0.5 on every target, "
                                      "e.g. a sigmoid applied before BCE-with-logits"
                                    : "");
    if (std::isfinite(f.evidence_value("accuracy")))
      f.message += format(" (accuracy %.3f, chance %.3f)", f.evidence_value("accuracy"),
                          1.0 / std::max(k, 1));
  }

 private:
  // With the class count unknown: the smoothed loss must sit at ln k for an integer k, never
  // have gone below it since warm-up, and the tolerance is tighter (for k above ~17 every level
  // is near some ln k, and only "never left it" tells chance from a floor).
  double tolerance() const noexcept {
    return o_.num_classes == 0 ? o_.inferred_tolerance : o_.tolerance;
  }
  bool infer(double e) {
    if (ema_.count() <= o_.warmup / 2) {
      lowest_ = std::min(lowest_, e);
      return false;
    }
    const double k = std::round(std::exp(e));
    if (!(k >= 2 && k <= 1000)) return false;
    const double t = std::log(k);
    if (int(k) != classes_) {
      if (ep_.open()) ep_.close();
      classes_ = int(k);
      target_ = t;
      streak_ = 0;
    }
    // A loss that has been well below ln k learned something: a floor, not chance.
    if (lowest_ < t * (1 - 3 * o_.inferred_tolerance)) return false;
    lowest_ = std::min(lowest_, e);
    return true;
  }

  detector_options::chance_level_t o_;
  int classes_;
  double target_;
  ema ema_, acc_;
  double lowest_ = std::numeric_limits<double>::infinity();
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
