// loss_spike, divergence, plateau, oscillation and chance_level: rules on the total loss
// (chance_level: on the class task's own when the run names one).

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "detail/detector.hpp"
#include "detail/evidence_slots.hpp"
#include "detail/level_filter.hpp"
#include "detail/rolling.hpp"

namespace losslens::core::detail {
namespace {

class loss_spike final : public detector {
 public:
  loss_spike(const detector_options& o, const sample_schema&)
      : o_(o.loss_spike),
        median_(static_cast<std::size_t>(o.loss_spike.window)),
        recent_(static_cast<std::size_t>(o.loss_spike.recent_window)),
        tail_(static_cast<std::size_t>(o.loss_spike.tail_window), 64, 64),
        after_(std::size_t(std::max<std::int64_t>(4, o.loss_spike.confirm_steps))),
        gate_(o.loss_spike.confirm_steps, o.loss_spike.max_wait) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const double x = ctx.total_loss;
    if (!std::isfinite(x)) return;
    after_.push(x);
    // The learning rate raised 2x or more in one step (a warm restart): a jump of the loss in
    // the steps after it is the schedule's (NaN compares false).
    if (ctx.lr >= 2 * last_lr_) last_lr_raise_ = ctx.s->step;
    last_lr_ = ctx.lr;
    if (cand_.active) sustained(ctx, log, x);
    // A held spike settles once the loss has had confirm_steps to come back down.
    const double range = std::isfinite(ctx.loss_range) ? ctx.loss_range : 0.0;
    if (gate_.waiting(ctx.s->step))
      gate_.check(log, ctx.s->step, after_.median(), 0.05 * range, 1.5, 2, 0.25 * range);
    if (median_.count() < static_cast<std::size_t>(o_.warmup)) {
      push(x, ctx.log_loss);
      return;
    }
    // Only upward outliers count, and a z-score below 0 entering the tail as 0 moves no
    // decision: the tail's p99 becomes max(p99, 0), and with tail_factor >= 0 and
    // heavy_tail_z > 0 (validated) a p99 <= 0 raises neither bar.
    const double z = median_.upward_z(x, ctx.log_loss);
    // The z-score has to stand out from this run's own extremes too (see tail_window).
    const double z_needed = tail_.count() >= std::size_t(o_.tail_warmup)
                                ? std::max(o_.z_threshold, o_.tail_factor * tail_.upper())
                                : o_.z_threshold;
    if (std::isfinite(z)) tail_.push(std::min(z, 1e6));
    if (!(z >= z_needed)) {  // almost every step: the median in loss units (an exp) is not needed
      push(x, ctx.log_loss);
      return;
    }
    const double m = median_.median();
    const double ratio = m > 0 ? x / m : nan;
    // And it has to matter against the run's progress (float32 losses near zero jump from
    // 7e-9 to 1e-7 with an enormous z-score).
    const bool matters =
        !std::isfinite(ctx.loss_range) || x - m >= o_.min_range_fraction * ctx.loss_range;
    bool spike = (!(m > 0) || ratio >= o_.min_ratio) && matters;
    // A smaller jump of a positive loss counts if it lasts (sustained(), some steps later).
    const std::int64_t step = ctx.s->step;
    bool smaller =
        !spike && !cand_.active && m > 0 &&
        (!std::isfinite(ctx.loss_range) || x - m >= o_.sustained_range_fraction * ctx.loss_range) &&
        step_diff(step, last_lr_raise_) > o_.lr_raise_lookback;
    if (spike || smaller) {
      // An outlier for the median/MAD can still be an ordinary value when the loss swings
      // (a bimodal window); a spike must also stand above everything seen recently.
      double recent_max = -std::numeric_limits<double>::infinity();
      for (std::size_t i = 0; i < recent_.size(); ++i)
        recent_max = std::max(recent_max, recent_[i]);
      const bool above =
          x >= o_.recent_max_ratio * recent_max || (recent_max <= 0 && x > recent_max);
      spike = spike && above;
      smaller = smaller && above;
    }
    // While the loss swings or climbs, those rules describe it; single spikes would be noise.
    if ((spike || smaller) && !ep_.continues(log, step, o_.merge_gap))
      for (const char* k : {"oscillation", "divergence"})
        if (log.last_step_of(k) >= step_diff(step, o_.unstable_lookback)) spike = smaller = false;
    // The scale z was taken against, for the evidence (z = (t(loss) - t(median)) / scale).
    const double scale = spike || smaller ? median_.scale() : nan;
    // The raw value enters the baseline: the median/MAD ignore isolated outliers by
    // themselves, and a lasting level shift is absorbed after window/2 steps (the divergence and
    // oscillation rules take over from there).
    push(x, ctx.log_loss);
    const peak p{x, m, scale, z, ratio, z_needed};
    if (smaller && !ep_.continues(log, step, o_.merge_gap)) {
      cand_ = {true,
               step,
               p,
               m + 0.5 * (x - m),
               0,
               0,
               grad_spike_before(ctx, step),
               o_.averaged_roughness_ratio > 0 ? roughness_before() : nan,
               x,
               {}};
      return;
    }
    if (spike) hit(ctx, log, step, p, grad_spike_before(ctx, step), nullptr);
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format("loss %.4g is %.2gx its running median %.4g (robust z-score %.1f%s)",
                       f.evidence_value("loss"), f.evidence_value("ratio"),
                       f.evidence_value("running_median"), f.evidence_value("z"),
                       f.evidence_value("log_scale") > 0 ? " on the log scale" : "");
    if (f.last_step == f.first_step)
      f.message += format(" at step %lld", static_cast<long long>(f.first_step));
    else
      f.message +=
          format("; %g spiking steps between %lld and %lld", f.evidence_value("spike_steps"),
                 static_cast<long long>(f.first_step), static_cast<long long>(f.last_step));
    const double gs = f.evidence_value("grad_spike_step");
    if (std::isfinite(gs))
      f.message += format(
          "; preceded by a grad-norm spike at step %lld (%.3g, %.3gx its running "
          "median)",
          static_cast<long long>(gs), f.evidence_value("grad_norm"),
          f.evidence_value("grad_norm_ratio"));
    if (const double hits = f.evidence_value("sustained_hits"); hits > 0)
      f.message +=
          format("; it stayed above %.4g, half the jump, for %g of the %g steps after it",
                 f.evidence_value("sustained_bar"), hits, f.evidence_value("sustained_seen"));
    if (f.evidence_value("recovered") > 0)
      f.message += format("; transient: the loss was back at %.4g %g steps later",
                          f.evidence_value("recovered_level"), f.evidence_value("recovered_after"));
  }

 private:
  // A spike's peak and what it was measured against.
  struct peak {
    double loss = nan, median = nan, scale = nan, z = nan, ratio = nan, z_needed = nan;
  };
  // A smaller jump waiting to be seen lasting (sustained_steps).
  struct candidate {
    bool active = false;
    std::int64_t step = 0;
    peak at;
    double bar = 0;  // half the jump above the median
    int seen = 0, hits = 0;
    std::array<double, 3> grad{nan, nan, nan};  // see grad_spike_before
    double rough_before = nan;                  // see roughness_before
    double last = nan;                          // the loss of the step before
    std::array<double, 16> moves{};             // |log change| of the steps after the jump
  };

  // The median |log change| from one step to the next over the recent window before the
  // newest value (the jump); NaN when a value is not positive.
  double roughness_before() const {
    std::array<double, 256> d{};
    const std::size_t n = std::min<std::size_t>(recent_.size(), d.size() + 1);
    if (n < 3) return nan;
    const std::size_t first = recent_.size() - n;
    std::size_t k = 0;
    for (std::size_t i = first + 1; i + 1 < recent_.size(); ++i) {
      if (!(recent_[i - 1] > 0 && recent_[i] > 0)) return nan;
      d[k++] = std::abs(std::log(recent_[i] / recent_[i - 1]));
    }
    return median_of(d.data(), k);
  }
  static double median_of(double* v, std::size_t n) {
    if (n == 0) return nan;
    std::nth_element(v, v + n / 2, v + n);
    return v[n / 2];
  }

  void push(double x, double log_x) noexcept {
    median_.push(x, log_x);
    recent_.push(x);
  }

  // The grad-norm spike up to grad_lookback steps before `step`: its step, norm and ratio to
  // the running median (NaN when there is none).
  std::array<double, 3> grad_spike_before(const step_context& ctx, std::int64_t step) const {
    const std::int64_t gs = ctx.last_grad_spike_step;
    if (gs != std::numeric_limits<std::int64_t>::min() && step_diff(step, gs) >= 0 &&
        step_diff(step, gs) <= o_.grad_lookback)
      return {double(gs), ctx.last_grad_spike_value, ctx.last_grad_spike_ratio};
    return {nan, nan, nan};
  }

  // The candidate's loss one more step: a spike once it stayed above half the jump for
  // sustained_hits steps, dropped once that can no longer happen.
  void sustained(const step_context& ctx, finding_log& log, double x) {
    if (std::size_t(cand_.seen) < cand_.moves.size())
      cand_.moves[std::size_t(cand_.seen)] =
          x > 0 && cand_.last > 0 ? std::abs(std::log(x / cand_.last)) : nan;
    cand_.last = x;
    ++cand_.seen;
    if (x >= cand_.bar) ++cand_.hits;
    if (cand_.hits >= o_.sustained_hits) {
      cand_.active = false;
      if (!averaged()) hit(ctx, log, cand_.step, cand_.at, cand_.grad, &cand_);
    } else if (cand_.seen - cand_.hits > o_.sustained_steps - o_.sustained_hits) {
      cand_.active = false;  // back down: one batch, not a spike
    }
  }

  // The steps after the candidate's jump move averaged_roughness_ratio times more than those
  // before it: an averaged series restarting (see detector_options), not a spike.
  bool averaged() {
    const double before = cand_.rough_before;
    if (!(before > 0)) return false;  // off, a value not positive, or a flat (quantized) log
    const std::size_t n = std::min(std::size_t(cand_.seen), cand_.moves.size());
    for (std::size_t i = 0; i < n; ++i)
      if (std::isnan(cand_.moves[i])) return false;
    const double after = median_of(cand_.moves.data(), n);
    return after >= o_.averaged_roughness_ratio * before && after > 0;
  }

  // Opens or grows the episode with a spike that began at `first`: the current step, or the
  // first step of a sustained jump `sust` (null for a single-step spike).
  void hit(const step_context& ctx, finding_log& log, std::int64_t first, const peak& p,
           const std::array<double, 3>& grad, const candidate* sust) {
    const std::int64_t step = ctx.s->step;
    const int hits = sust ? sust->hits : 0;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, o_.merge_gap, [&] {
      auto f =
          sust ? new_finding("loss_spike", severity::warning, first, step, "loss", "sustained_jump",
                             {{"window", double(o_.window)},
                              {"z_threshold", o_.z_threshold},
                              {"recent_max_ratio", o_.recent_max_ratio},
                              {"sustained_steps", double(o_.sustained_steps)},
                              {"sustained_hits", double(o_.sustained_hits)},
                              {"sustained_range_fraction", o_.sustained_range_fraction}})
               : new_finding("loss_spike", severity::warning, step, step, "loss", "robust_zscore",
                             {{"window", double(o_.window)},
                              {"z_threshold", o_.z_threshold},
                              {"min_ratio", o_.min_ratio},
                              {"recent_window", double(o_.recent_window)},
                              {"recent_max_ratio", o_.recent_max_ratio}});
      f.evidence = {{"loss", p.loss},
                    {"running_median", p.median},
                    {"robust_scale", p.scale},
                    {"log_scale", median_.log_scale() ? 1.0 : 0.0},
                    {"z", p.z},
                    {"ratio", p.ratio},
                    {"spike_steps", 0},
                    {"z_needed", p.z_needed}};
      if (sust) {
        f.evidence.emplace_back("sustained_hits", double(sust->hits));
        f.evidence.emplace_back("sustained_seen", double(sust->seen));
        f.evidence.emplace_back("sustained_bar", sust->bar);
      }
      if (std::isfinite(grad[0])) {
        f.evidence.emplace_back("grad_spike_step", grad[0]);
        f.evidence.emplace_back("grad_norm", grad[1]);
        f.evidence.emplace_back("grad_norm_ratio", grad[2]);
      }
      set_lr_evidence(f, ctx);
      f.advice = format(
          "clip gradients (clip_grad_norm_ 1.0) or %s; look at the batch at "
          "step %lld for outliers or bad labels; trainers of large models skip "
          "the update on such steps (attach option guard)%s",
          lr_hint(ctx).c_str(), static_cast<long long>(first), lr_note(ctx).c_str());
      return f;
    });
    // Only a run whose own losses are heavy-tailed (a memorising run's hard batches) has
    // transients worth waiting for; elsewhere a spike is reported on its step.
    const bool heavy =
        tail_.count() >= std::size_t(o_.tail_warmup) && tail_.upper() >= o_.heavy_tail_z;
    gate_.hit(log, ep_.index, is_new, step, p.median, std::isfinite(ctx.loss_range) && heavy);
    f.set_evidence("spike_steps", f.evidence_value("spike_steps") + 1 + hits);
    if (!is_new && p.z > f.evidence_value("z")) {  // the peak, with what it was measured against
      f.set_evidence("loss", p.loss);
      f.set_evidence("running_median", p.median);
      f.set_evidence("robust_scale", p.scale);
      f.set_evidence("z", p.z);
      f.set_evidence("ratio", p.ratio);
    }
  }

  detector_options::loss_spike_t o_;
  robust_baseline median_;
  ring recent_;
  lagged_tail tail_;   // z-scores of earlier losses against their running median
  lazy_median after_;  // the last confirm_steps losses, to tell a transient
  recovery_gate gate_;
  episode ep_;
  candidate cand_;
  double last_lr_ = nan;
  std::int64_t last_lr_raise_ = std::numeric_limits<std::int64_t>::min();
};

class divergence final : public detector {
 public:
  divergence(const detector_options& o, const sample_schema&)
      : o_(o.divergence),
        ema_(o.divergence.ema_alpha),
        slow_(o.divergence.ema_alpha / 5),
        recent_(1024),
        recent_steps_(1024),
        y_(1024),
        optimizer_(o.optimizer),
        noise_factor_(std::sqrt(o.divergence.ema_alpha / (2 - o.divergence.ema_alpha))) {}

  void observe(const step_context& ctx, finding_log& log) override {
    // The recent loss on its working scale (log while positive, outliers clipped), for the
    // onset.
    if (ctx.work_reset) {
      recent_.clear();
      recent_steps_.clear();
    }
    if (std::isfinite(ctx.work_loss)) {
      recent_.push(ctx.work_loss);
      recent_steps_.push(double(ctx.s->step));
    }
    const double x = ctx.level_loss;
    if (!std::isfinite(x)) return;
    // The batch-to-batch noise as the fast average meets it: the mean square of each loss's
    // distance from the average before it. Unlike a MAD it counts the heavy tail of small
    // batches (a lognormal batch loss of sigma 1 has a MAD far below its standard deviation),
    // and a slow trend barely adds to it.
    if (ema_.count() > 0) noise_var_.push((x - ema_.value()) * (x - ema_.value()));
    const double e = ema_.push(x);
    // The best is taken on a slower average: the minimum of a noisy average over a long run
    // sits several of its standard deviations below the level, and the rise would be noise.
    const double slow = slow_.push(x);
    const std::int64_t step = ctx.s->step;
    if (ema_.count() <= o_.warmup) {
      initial_sum_ += x;
      if (ema_.count() == o_.warmup) {
        initial_ = initial_sum_ / o_.warmup;
        best_ = slow;
        best_step_ = step;
      }
      return;
    }
    if (slow < best_) {
      best_ = slow;
      best_step_ = step;
    }
    // The fast average's own noise: batch noise x sqrt(alpha / (2 - alpha)).
    const double noise = std::sqrt(noise_var_.value()) * noise_factor_;
    // A rise matters against the progress the run has made (initial level minus best), or
    // against the level itself when it made none; a ratio to the best only means something for
    // a positive loss (NLL of densities, ELBOs and RL objectives go negative).
    const double range = initial_ - best_ > 0 ? initial_ - best_ : std::abs(initial_);
    const double needed = std::max(o_.min_rise_fraction * range, o_.noise_z * noise);
    const double rise = e - best_;
    // Bitwise, not short-circuit: on a flat loss `rise > 0` is a coin flip, and a branch on it
    // is mispredicted about every other step.
    const bool ratio_ok = (best_ <= 0) | (e >= o_.rise_ratio * best_);
    // Once open, the episode holds until the smoothed loss comes back below half the rise that
    // opened it: a loss hovering around the threshold is one episode, not dozens.
    const bool is_open = ep_.open();
    const bool up = (rise > 0) & (rise >= (is_open ? 0.5 : 1.0) * needed) & (is_open | ratio_ok);
    if (!up) {
      held_ = 0;
      if (ep_.open() && step_diff(step, ep_.last_hit) > 4 * std::int64_t(o_.patience)) ep_.close();
      return;
    }
    if (++held_ < o_.patience && !ep_.open()) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 4 * std::int64_t(o_.patience), [&] {
      const std::int64_t onset = onset_step();
      auto f =
          new_finding("divergence", severity::error, onset, step, "loss", "smoothed_rise_over_best",
                      {{"ema_alpha", o_.ema_alpha},
                       {"rise_ratio", o_.rise_ratio},
                       {"min_rise_fraction", o_.min_rise_fraction},
                       {"patience", double(o_.patience)}});
      f.evidence = {{"best_smoothed", best_},
                    {"best_step", double(best_step_)},
                    {"onset_step", double(onset)},
                    {"initial_level", initial_},
                    {"peak", 0}};
      return f;
    });
    // Written at every step of the episode: by place, not by name (see evidence_slots). f is
    // captured by a named reference: clang 14 cannot capture a structured binding.
    auto put = [&, &fd = f](std::size_t slot, std::string_view name, double v) {
      ev_.set(fd, ep_.index, slot, name, v);
    };
    for_lr_evidence(ctx, put);  // slots 0-2
    put(3, "smoothed", e);
    put(4, "loss", ctx.total_loss);
    if (best_ > 0) put(5, "ratio", e / best_);
    // How much of the progress has been given back: the measure of how bad it is.
    put(6, "peak", std::max(ev_.get(f, ep_.index, 6, "peak"), range > 0 ? rise / range : 0));
    put(7, "steps_rising",
        double(step_diff(step, std::int64_t(ev_.get(f, ep_.index, 8, "onset_step")))));
  }

  void describe(finding& f, const sample_schema&) const override {
    const double best = f.evidence_value("best_smoothed");
    const auto best_step = static_cast<long long>(f.evidence_value("best_step"));
    const double rising = f.evidence_value("steps_rising");
    f.message = format(
        "the loss has been rising since step %lld: smoothed %.4g at its best "
        "(step %lld), %.4g now",
        static_cast<long long>(f.first_step), best, best_step, f.evidence_value("smoothed"));
    if (best > 0) f.message += format(" (%.3gx)", f.evidence_value("ratio"));
    f.message +=
        format(", %g steps later; %.0f%% of the progress from the initial %.4g is lost", rising,
               100 * std::min(f.evidence_value("peak"), 99.99), f.evidence_value("initial_level"));
    const std::string lower = lr_hint(f), note = lr_note(f, optimizer_);
    const auto onset = static_cast<long long>(f.first_step);
    if (rising >= 1000)
      // Slow degradation: the step size is too large for the noise of this batch size.
      f.advice = format(
          "a slow rise over many steps means the updates are too large for the "
          "gradient noise of this batch: %s (or decay it from step %lld on), or "
          "raise the batch size (with momentum m the step is about LR / (1 - m)); "
          "keep the checkpoint from step %lld%s",
          lower.c_str(), onset, onset, note.c_str());
    else
      f.advice = format(
          "%s and add gradient clipping (clip_grad_norm_ 1.0); if the rise "
          "follows an LR warm-up, restart or change, lower its peak; check that "
          "the data pipeline did not change (shuffling, corrupted shard)%s",
          lower.c_str(), note.c_str());
  }

 private:
  // Where the rise began: the break between two straight lines fitted to the recent loss (log
  // scale) from a little before the smoothed best on, after which the loss is higher or
  // climbs faster. The slow average's lowest point is only where noise put it on a flat
  // floor (hundreds of steps before an LR jump); when the best is older than the recent
  // buffer (a slow degradation), the best it is.
  std::int64_t onset_step() {
    const std::size_t n = recent_.size();
    if (n < 64 || double(best_step_) < recent_steps_[0]) return best_step_;
    std::size_t b = 0;  // index of the best step in the buffer
    while (b + 1 < n && recent_steps_[b] < double(best_step_)) ++b;
    const std::size_t a = b > 256 ? b - 256 : 0;
    for (std::size_t i = a; i < n; ++i) y_[i] = recent_[i];
    const std::size_t tau = change_point(
        y_.data(), a, n, 16,
        [](double before, double after, double jump) { return jump > 0 || after > before; });
    return tau == a ? best_step_ : std::int64_t(recent_steps_[tau]);
  }

  detector_options::divergence_t o_;
  ema ema_, slow_;
  ema noise_var_{0.01};
  ring recent_, recent_steps_;
  std::vector<double> y_;
  optimizer_kind optimizer_;
  double noise_factor_;  // sqrt(alpha / (2 - alpha)): the fast average's share of batch noise
  double initial_sum_ = 0, initial_ = 0, best_ = 0;
  std::int64_t best_step_ = 0, held_ = 0;
  episode ep_;
  evidence_slots<9> ev_;  // the evidence written at every step of an open episode
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
      best_lr_ = ctx.lr;
      return;
    }
    if (better(e)) {
      best_ = e;
      best_step_ = step;
      best_lr_ = ctx.lr;
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
    const std::int64_t patience = std::max<std::int64_t>(
        o_.patience, std::int64_t(o_.patience_fraction * double(ema_.count())));
    if (bad_ <= patience) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 1, [&] {
      auto f =
          new_finding("plateau", severity::info, best_step_, step, "loss", "reduce_lr_on_plateau",
                      {{"mode_max", o_.mode_max ? 1.0 : 0.0},
                       {"threshold", o_.threshold},
                       {"threshold_rel", o_.threshold_rel ? 1.0 : 0.0},
                       {"patience", double(o_.patience)},
                       {"cooldown", double(o_.cooldown)},
                       {"ema_alpha", o_.ema_alpha},
                       {"max_rise", o_.max_rise}});
      f.evidence = {{"best_smoothed", best_}, {"best_step", double(best_step_)}};
      set_lr_evidence(f, ctx);
      f.evidence.emplace_back("initial_smoothed", initial_);
      const bool never_moved = std::abs(best_ - initial_) < 0.1 * std::abs(initial_);
      if (never_moved)
        f.advice = std::isfinite(ctx.lr)
                       ? format(
                             "the loss has barely moved from where it started: the learning "
                             "rate %.3g may be too low (try %.3g), or gradients do not reach "
                             "the model; check that the model can overfit one batch%s",
                             ctx.lr, ctx.lr * 10,
                             lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max).c_str())
                       : std::string(
                             "the loss has barely moved from where it started: the "
                             "learning rate may be too low, or gradients do not reach "
                             "the model; check that the model can overfit one batch");
      else if (ctx.lr < 0.99 * best_lr_)  // NaN compares false
        // A schedule already lowers it (cosine, step decay): a flatter loss late in such a
        // schedule is expected, and another 10x cut on top of it is no fix.
        f.advice = format(
            "the learning rate already decays (%.3g at step %lld, %.3g now): a flattening "
            "loss late in a decaying schedule is expected; if the loss is still high, a "
            "longer schedule or a larger model helps more than a lower rate%s",
            best_lr_, static_cast<long long>(best_step_), ctx.lr,
            lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max).c_str());
      else
        f.advice = std::isfinite(ctx.lr)
                       ? format(
                             "reduce the learning rate (ReduceLROnPlateau-style, factor 0.1: "
                             "from %.3g to %.3g); if the loss is still high, check that every "
                             "layer gets gradient and that the model can overfit one batch%s",
                             ctx.lr, ctx.lr / 10,
                             lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max).c_str())
                       : std::string(
                             "reduce the learning rate 10x (ReduceLROnPlateau-style); if "
                             "the loss is still high, check that every layer gets "
                             "gradient and that the model can overfit one batch");
      return f;
    });
    // Written at every step of the episode: by place, not by name (see evidence_slots).
    ev_.set(f, ep_.index, 0, "smoothed", e);
    ev_.set(f, ep_.index, 1, "steps_without_improvement", double(step_diff(step, best_step_)));
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format(
        "smoothed loss %.4g has not improved on %.4g (step %lld) by more than "
        "%g%s for %g steps",
        f.evidence_value("smoothed"), f.evidence_value("best_smoothed"),
        static_cast<long long>(f.evidence_value("best_step")),
        o_.threshold_rel ? o_.threshold * 100 : o_.threshold, o_.threshold_rel ? "%" : "",
        f.evidence_value("steps_without_improvement"));
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
  double best_lr_ = nan;  // the learning rate at best_step_
  episode ep_;
  evidence_slots<2> ev_;  // what an open episode writes at every step
};

class oscillation final : public detector {
 public:
  oscillation(const detector_options& o, const sample_schema&)
      : o_(o.oscillation),
        optimizer_(o.optimizer),
        cap_(2 * std::size_t(o.oscillation.window)),
        history_(std::size_t(o.oscillation.window / o.oscillation.stride) + 1),
        levels_(2 * std::size_t(o.oscillation.window)),
        y_(2 * cap_),
        x_(2 * cap_),
        steps_(2 * cap_),
        sums_(2 * cap_ + 1),
        resid_(2 * cap_) {}

  void observe(const step_context& ctx, finding_log& log) override {
    if (ctx.work_reset) {
      begin_ = end_ = 0;
      history_.clear();
      levels_.clear();
      evals_ = in_row_ = 0;
    }
    const double y = ctx.work_loss;
    if (!std::isfinite(y)) return;
    // The rule reads the loss on the log scale while every loss is positive (batch noise is
    // multiplicative, so there its spread does not change with the level, and a bounce between
    // 1.9 and 0.25 is as large as one between 0.019 and 0.0025), with single outliers clipped
    // so they neither fake growing swings nor inflate the amplitude (see clipped_scale; the
    // 64-step level filter would flatten a bounce for 64 steps).
    // Back in loss units: an unclipped log is the loss itself (exp(log x) is x to rounding),
    // so the exp is taken only for a clipped value.
    const double x = !ctx.work_log ? y : y == ctx.log_loss ? ctx.total_loss : std::exp(y);
    append(y, x, double(ctx.s->step));
    levels_.push(x);
    if (end_ - begin_ < std::size_t(o_.window) || ++since_ < o_.stride) return;
    since_ = 0;
    evaluate(ctx, log);
  }

 private:
  /// Appends a value to the buffer y_[begin_, end_) (at most cap_ values) and its prefix sums.
  /// The arrays hold 2 cap_: when full, the last cap_ - 1 values move to the front and their
  /// sums are rebuilt (y relative to a new reference, so the sums stay small): O(1) amortized.
  void append(double y, double x, double step) noexcept {
    if (end_ == y_.size()) {
      const std::size_t keep = std::min(cap_ - 1, end_ - begin_);
      const std::size_t from = end_ - keep;
      for (std::size_t i = 0; i < keep; ++i) {
        y_[i] = y_[from + i];
        x_[i] = x_[from + i];
        steps_[i] = steps_[from + i];
      }
      begin_ = 0;
      end_ = 0;
      ref_ = y;
      for (std::size_t i = 0; i < keep; ++i) add_sums(i);
      end_ = keep;
    }
    if (end_ == begin_) {
      begin_ = end_ = 0;
      ref_ = y;
    }
    y_[end_] = y;
    x_[end_] = x;
    steps_[end_] = step;
    add_sums(end_);
    ++end_;
    if (end_ - begin_ > cap_) ++begin_;
  }
  void add_sums(std::size_t i) noexcept {
    prefix p = i > 0 ? sums_[i] : prefix{};
    const double t = double(i), y = y_[i] - ref_, x = x_[i];
    const double y0 = i > 0 ? y_[i - 1] - ref_ : 0, x0 = i > 0 ? x_[i - 1] : x;
    p.y += y;
    p.yy += y * y;
    p.ty += t * y;
    p.pyy += y0 * y;
    p.ax += std::abs(x);
    p.adx += std::abs(x - x0);
    sums_[i + 1] = p;
  }

  /// Prefix sums over the buffer, so that the line fit, residual spread, lag-1 autocorrelation
  /// and swings of any range of it cost O(1). Sums of t alone have closed forms.
  struct prefix {
    double y = 0, yy = 0, ty = 0;  // sums of y, y^2, t y
    double pyy = 0;                // sum of y_{i-1} y_i over pairs ending here
    double ax = 0, adx = 0;        // sums of |x| and |x_i - x_{i-1}|
  };
  struct range_stats {
    double ac = 0, spread = 0, slope = 0, icpt = 0;           // of y, detrended (t = buffer index)
    double amp = 0, mean_abs_diff = 0, level = 0, trend = 1;  // of x
  };
  range_stats stats(std::size_t a, std::size_t b) const noexcept {
    // Sums of t and t^2 over [a, b).
    auto st = [](double a0, double b0) { return (b0 * (b0 - 1) - a0 * (a0 - 1)) / 2; };
    auto stt = [](double a0, double b0) {
      auto c = [](double k) { return (k - 1) * k * (2 * k - 1) / 6; };  // sum of t^2, t < k
      return c(b0) - c(a0);
    };
    const prefix& P = sums_[a];
    const prefix& Q = sums_[b];
    const double n = double(b - a), fa = double(a), fb = double(b);
    const double St = st(fa, fb), Stt = stt(fa, fb), Sy = Q.y - P.y, Syy = Q.yy - P.yy,
                 Sty = Q.ty - P.ty;
    range_stats r;
    const double ctt = Stt - St * St / n, cty = Sty - St * Sy / n;
    r.slope = ctt > 0 ? cty / ctt : 0;
    r.icpt = (Sy - r.slope * St) / n;
    const double sse = std::max(0.0, (Syy - Sy * Sy / n) - r.slope * cty);
    r.spread = std::sqrt(sse / n);
    // Pairs (i - 1, i) for i in [a + 1, b): their sums from the sums of single values.
    const prefix& A = sums_[a + 1];
    const prefix& B = sums_[b - 1];
    const double np = n - 1;
    const double Sy_head = B.y - P.y, Sy_tail = Q.y - A.y;  // y over [a, b-1), [a+1, b)
    const double Sty_head = B.ty - P.ty, Sty_tail = Q.ty - A.ty;
    const double pyy = Q.pyy - A.pyy, py = Sy_head + Sy_tail;
    const double pty = (Sty_head + Sy_head) + (Sty_tail - Sy_tail);  // t_i y_{i-1} + t_{i-1} y_i
    const double pt = st(fa, fb - 1) + st(fa + 1, fb);               // t_{i-1} + t_i
    const double ptt = (stt(fa + 1, fb) - st(fa + 1, fb));           // t_{i-1} t_i = t_i^2 - t_i
    const double a0 = r.icpt, b0 = r.slope;
    const double lag = pyy - a0 * py - b0 * pty + a0 * a0 * np + a0 * b0 * pt + b0 * b0 * ptt;
    r.ac = sse > 0 ? lag / sse : 0;
    swing_stats(a, b, r);
    return r;
  }
  /// The swings of x over [a, b): amp, mean_abs_diff, level and trend of range_stats.
  void swing_stats(std::size_t a, std::size_t b, range_stats& r) const noexcept {
    const prefix& P = sums_[a];
    const prefix& Q = sums_[b];
    const prefix& A = sums_[a + 1];
    const double n = double(b - a), np = n - 1;
    const double ax = Q.ax - P.ax, tv = Q.adx - A.adx;
    r.level = ax / n;
    r.mean_abs_diff = np > 0 ? tv / np : 0;
    r.amp = r.level > 0 ? r.mean_abs_diff / r.level : 0;
    r.trend = tv > 0 ? std::abs(x_[b - 1] - x_[a]) / tv : 1;
  }

  // Three shapes that batch noise does not have:
  // (a) Alternation over the last `window` steps: the loss detrended over the window is
  //     anti-correlated with itself one step later (period-2 bouncing); i.i.d. noise gives a
  //     lag-1 autocorrelation of the levels near 0 (+-1/sqrt(n)), whereas the differences of
  //     pure noise already have -0.5, which is why the rule looks at levels.
  // (b) Alternation that began recently with swings several times the run's earlier noise:
  //     the suffix since the change is anti-correlated beyond recent_z / sqrt(its length),
  //     and its spread is min_growth x that of the steps before it. Noise passes the two
  //     tests together almost never, so the rule needs only the suffix, not a full window.
  // (c) Growing swings: the detrended spread is several times what it was a window ago while
  //     the loss no longer improves (instability after an LR change).
  void evaluate(const step_context& ctx, finding_log& log) {
    // Positions in the arrays: the buffer is [begin_, n).
    const std::size_t n = end_;
    const std::size_t w = std::size_t(o_.window);
    // Swings have to matter against the run's progress: near a zero floor, bouncing between
    // 1e-6 and 1e-5 is large against the level and irrelevant to training.
    auto matters = [&](const range_stats& s) {
      return !std::isfinite(ctx.loss_range) ||
             s.mean_abs_diff >= o_.min_range_fraction * ctx.loss_range;
    };
    auto swings = [&](const range_stats& s) {
      return s.amp >= o_.min_amplitude_ratio && s.trend <= o_.max_trend_ratio && matters(s);
    };
    const range_stats all = stats(n - w, n);
    history_.push(all.spread);
    ++evals_;

    const bool steady = all.ac <= o_.max_lag1_autocorr && swings(all);

    // (b): the longest suffix (in steps of stride) that passes, against up to `window / 2`
    // steps before it.
    bool recent = false;
    std::size_t from = n - w;
    range_stats rs;
    double recent_growth = nan;
    // Suffix lengths 24, 32, ..., 64, then every 32: fine steps where the delay is decided,
    // coarse ones for weak alternations that need long stretches.
    const std::size_t min_prefix = 32, min_suffix = 24;
    for (std::size_t len = min_suffix; len + min_prefix <= n - begin_;
         len += len < 64 ? std::size_t(o_.stride) : 32) {
      const std::size_t a = n - len;
      // The suffix's own tests first, its swings (cheap) before its autocorrelation: most
      // suffixes fail them, and then the rest is not needed.
      range_stats sw;
      swing_stats(a, n, sw);
      if (!swings(sw)) continue;
      const range_stats suf = stats(a, n);
      if (suf.ac * std::sqrt(double(len)) > -o_.recent_z) continue;
      const range_stats pre = stats(a - std::min(a - begin_, w / 2), a);
      if (!(pre.spread > 0) || suf.spread < o_.min_growth * pre.spread) continue;
      recent = true;
      from = a;
      rs = suf;
      recent_growth = suf.spread / pre.spread;
    }

    // (c) needs windows that do not overlap: compare with the one `window` steps earlier.
    const std::size_t back = std::size_t(o_.window / o_.stride);
    bool growing = false;
    double growth = nan;
    if (evals_ > std::int64_t(back) && back < history_.capacity()) {
      const double before = history_[history_.size() - 1 - back];
      growth = before > 0 ? all.spread / before : nan;
      growing = growth >= o_.min_growth &&
                mean_level(0) >= mean_level(back * std::size_t(o_.stride)) &&
                all.amp >= o_.min_amplitude_ratio && matters(all);
    }
    // Twice in a row, `stride` steps apart: a single window at the threshold happens by
    // chance on long noisy runs.
    const bool any = steady || recent || growing;
    in_row_ = any ? in_row_ + 1 : 0;
    const std::int64_t step = ctx.s->step;
    if (in_row_ < 2 && !ep_.continues(log, step, 2 * std::int64_t(o_.window))) return;
    if (!any) return;
    const bool alternating = steady || recent;
    const range_stats& fit = recent ? rs : all;
    // The onset: a change point in the evaluated range and a window before it (swings that
    // grew), or in the window (a steady alternation).
    const std::size_t a =
        recent || growing ? n - std::min(n - begin_, (recent ? n - from : w) + w / 2) : n - w;
    const std::int64_t onset = change_point(a, n, fit, !recent && !growing);
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.window), [&] {
      auto f = new_finding("oscillation", severity::warning, onset, step, "loss",
                           recent   ? "recent_alternation"
                           : steady ? "detrended_lag1_alternation"
                                    : "growing_swings",
                           {{"window", double(o_.window)},
                            {"max_lag1_autocorr", o_.max_lag1_autocorr},
                            {"recent_z", o_.recent_z},
                            {"min_amplitude_ratio", o_.min_amplitude_ratio},
                            {"max_trend_ratio", o_.max_trend_ratio},
                            {"min_growth", o_.min_growth}});
      return f;
    });
    set_lr_evidence(f, ctx);
    f.set_evidence("lag1_autocorr", fit.ac);
    f.set_evidence("amplitude_ratio", fit.amp);
    f.set_evidence("mean_abs_diff", fit.mean_abs_diff);
    f.set_evidence("mean_level", fit.level);
    f.set_evidence("trend_ratio", fit.trend);
    f.set_evidence("steps_evaluated", double(recent ? n - from : w));
    f.set_evidence("spread_growth", recent ? recent_growth : growth);
    f.set_evidence("alternating", alternating ? 1 : 0);
  }

  // The mean linear loss over the window that ended `lag` values ago (lag + window <= the
  // values since the last reset), summed oldest first.
  double mean_level(std::size_t lag) const noexcept {
    const std::size_t w = std::size_t(o_.window), from = levels_.size() - lag - w;
    double mean = 0;
    for (std::size_t i = 0; i < w; ++i) mean += levels_[from + i];
    return mean / double(w);
  }

  // Where the behaviour began in [a, n).
  // Swings that grew (recent alternation, growing swings): the step at which the mean square
  // of the step-to-step differences changes, by the maximum likelihood of a two-segment
  // Gaussian model (the later segment louder); differences need no trend model.
  // A steady alternation: the start of the suffix whose sign flips of consecutive residuals
  // from `fit`'s line exceed 0.6 (noise gives 1/2) by the most.
  std::int64_t change_point(std::size_t a, std::size_t n, const range_stats& fit, bool steady) {
    if (!steady) {
      // resid_[i]: sum of squared differences over (a, i].
      double acc = 0;
      resid_[a] = 0;
      for (std::size_t i = a + 1; i < n; ++i) {
        const double d = y_[i] - y_[i - 1];
        acc += d * d;
        resid_[i] = acc;
      }
      const double total = acc, tiny = 1e-300;
      double best = std::numeric_limits<double>::infinity();
      std::size_t at = a;
      // The later segment starts at tau (its first difference is y[tau] - y[tau-1]).
      for (std::size_t tau = a + 4; tau + 4 <= n; ++tau) {
        const double n1 = double(tau - 1 - a), n2 = double(n - tau);
        const double v1 = resid_[tau - 1] / n1, v2 = (total - resid_[tau - 1]) / n2;
        if (v2 <= v1) continue;
        const double cost = n1 * std::log(v1 + tiny) + n2 * std::log(v2 + tiny);
        if (cost < best) {
          best = cost;
          at = tau;
        }
      }
      return std::int64_t(steps_[at]);
    }
    for (std::size_t i = a; i < n; ++i)
      resid_[i] = y_[i] - ref_ - (fit.icpt + fit.slope * double(i));
    double suffix = 0, best = -1;
    std::size_t at = a;
    for (std::size_t i = n - 1; i-- > a;) {
      suffix += (resid_[i] * resid_[i + 1] < 0 ? 1.0 : 0.0) - 0.6;
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
      f.message = format(
          "loss bounces up and down on alternate steps: detrended lag-1 "
          "autocorrelation %.2f over %g steps (batch noise gives about 0), swings "
          "of %.3g per step (%.0f%% of its level %.3g), steps %lld-%lld",
          f.evidence_value("lag1_autocorr"), f.evidence_value("steps_evaluated"),
          f.evidence_value("mean_abs_diff"), 100 * f.evidence_value("amplitude_ratio"),
          f.evidence_value("mean_level"), static_cast<long long>(f.first_step),
          static_cast<long long>(f.last_step));
    else
      f.message = format(
          "loss swings grew %.3gx within %d steps while the loss stopped "
          "improving: %.3g per step (%.0f%% of its level %.3g), steps %lld-%lld",
          f.evidence_value("spread_growth"), o_.window, f.evidence_value("mean_abs_diff"),
          100 * f.evidence_value("amplitude_ratio"), f.evidence_value("mean_level"),
          static_cast<long long>(f.first_step), static_cast<long long>(f.last_step));
    f.advice = format(
        "%s, use a larger batch, and clip gradients (clip_grad_norm_ 1.0); if "
        "the swings began after an LR change (warm-up end, restart), lower that "
        "peak; if the loss is computed on probabilities (BCE after sigmoid), "
        "switch to the logits form%s",
        lr_hint(f).c_str(), lr_note(f, optimizer_).c_str());
  }

 private:
  detector_options::oscillation_t o_;
  optimizer_kind optimizer_;
  std::size_t cap_;
  ring history_;  // spread of the last window / stride + 1 evaluations
  // The last 2 window linear losses: the mean levels that growing swings compare are summed
  // only when the spread grew (rarely), not at every evaluation.
  ring levels_;
  std::int64_t evals_ = 0, in_row_ = 0;
  // The buffer: working-scale loss, linear (clipped) loss, step; [begin_, end_) is valid.
  std::vector<double> y_, x_, steps_;
  std::vector<prefix> sums_;  // sums_[i + 1]: sums over [0, i] (y relative to ref_)
  std::size_t begin_ = 0, end_ = 0;
  double ref_ = 0;
  std::vector<double> resid_;
  int since_ = 0;
  episode ep_;
};

class chance_level final : public detector {
 public:
  chance_level(const detector_options& o, const sample_schema& schema)
      : o_(with_known_count(o, schema)),
        classes_(o_.num_classes),
        target_(classes_ >= 2 ? std::log(double(classes_)) : nan),
        ema_(o.chance_level.ema_alpha),
        acc_(o.chance_level.ema_alpha) {
    snapshots_.reserve(max_snapshots);
    // The level of a uniform guess is that of the class loss: with several tasks, the class
    // task's own loss (their total mixes in other losses); a known count and no class task
    // among several tasks leaves nothing to compare with ln C. With the count inferred from
    // the level, the total unless a class task is named.
    const auto task = class_loss_index(schema);
    if (classes_ >= 2 && !task)
      off_ = true;
    else if (task && *task >= 0 && (classes_ >= 2 || !schema.class_task.empty()))
      task_ = *task;
    if (task_ >= 0) {
      task_level_ = std::make_unique<level_filter>();
      series_ = task_series(schema, std::size_t(task_));
    }
  }

  void observe(const step_context& ctx, finding_log& log) override {
    if (off_) return;
    double x = ctx.level_loss;
    if (task_ >= 0) {
      const auto& tl = ctx.s->task_losses;
      const std::size_t i = std::size_t(task_);
      // Winsorized like the total's level (one bad batch moves no level).
      x = i < tl.size() && tl[i] ? task_level_->update(*tl[i]) : nan;
    }
    if (!std::isfinite(x)) return;
    if (ema_.count() == 0) {
      first_ = x;
      // An untrained model over more classes than are inferred here (see infer()).
      beyond_inferred_ = x > (1 + o_.tolerance) * std::log(max_inferred);
    }
    const double e = ema_.push(x);
    remember(e);
    if (finite(ctx.s->accuracy)) acc_.push(*ctx.s->accuracy);
    const std::int64_t step = ctx.s->step;
    // A learning rate still rising (a warm-up from 0, or a cycle's way up): until it is large
    // enough nothing moves, and the loss waits at chance. Rows since it last rose.
    if (ctx.lr > lr_prev_) since_lr_rose_ = 0;
    ++since_lr_rose_;
    if (std::isfinite(ctx.lr)) lr_prev_ = ctx.lr;
    if (o_.num_classes == 0 && !infer(e)) return;
    const double above =
        o_.num_classes == 0 ? tolerance() : std::max(tolerance(), o_.above_tolerance);
    if (e >= (1 - tolerance()) * target_ && e <= (1 + above) * target_) {
      if (streak_++ == 0) start_ = step;
    } else {
      streak_ = 0;
      return;
    }
    // A stay at chance counts once it has lasted `patience` rows with the learning rate no
    // longer rising; its episode still starts where the stay began.
    if (ema_.count() <= o_.warmup || streak_ < o_.patience || since_lr_rose_ < o_.patience) return;
    if (came_down_lately((1 + above) * target_)) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, 2 * std::int64_t(o_.patience), [&] {
      auto f = new_finding("chance_level", severity::warning, start_, step, series_,
                           o_.num_classes == 0 ? "smoothed_loss_near_log_k_inferred"
                                               : "smoothed_loss_near_log_classes",
                           {{"num_classes", double(classes_)},
                            {"tolerance", tolerance()},
                            {"warmup", double(o_.warmup)},
                            {"patience", double(o_.patience)}});
      f.evidence = {{"chance_loss", target_},
                    {"classes", double(classes_)},
                    {"tolerance", tolerance()},
                    {"above_tolerance",
                     o_.num_classes == 0 ? tolerance() : std::max(tolerance(), o_.above_tolerance)},
                    {"inferred", o_.num_classes == 0 ? 1.0 : 0.0}};
      // A count read off the level can be one too many: a model that collapsed after a
      // blow-up sits a little above chance (2.42 after a first loss of 2.31 = ln 10 reads as
      // ln 11). The first loss, before any update, names the count of an untrained model;
      // quoted when it names another count within whose known-count band the level lies.
      if (const double k0 = first_loss_classes();
          o_.num_classes == 0 && k0 >= 2 && int(k0) != classes_ &&
          e >= (1 - o_.tolerance) * std::log(k0) && e <= (1 + o_.above_tolerance) * std::log(k0)) {
        f.evidence.emplace_back("first_loss", first_);
        f.evidence.emplace_back("first_loss_classes", k0);
      }
      set_lr_evidence(f, ctx);
      f.advice = "the model predicts the uniform distribution: ";
      if (std::isfinite(ctx.lr) && ctx.lr < 1e-5)
        f.advice += format("the learning rate %.3g is very low, try %.3g%s; ", ctx.lr, ctx.lr * 100,
                           lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max).c_str());
      else if (std::isfinite(ctx.lr))
        f.advice += format(
            "check the learning rate, %.3g now (too low does not move, too high "
            "collapses)%s; ",
            ctx.lr, lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max).c_str());
      else
        f.advice += "check the learning rate (too low does not move, too high collapses); ";
      f.advice +=
          "look for dead ReLUs (LeakyReLU, another init), check that gradients reach "
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
    const double above = f.evidence_value("above_tolerance");
    if (std::isfinite(above) && above > f.evidence_value("tolerance"))
      f.message = format(
          "smoothed loss %.4g has stayed between %.1f%% below and %.0f%% above "
          "ln(%d) = %.4g, the loss of a uniform guess over %d classes, for %g "
          "steps: the model does no better than chance",
          f.evidence_value("smoothed"), f.evidence_value("tolerance") * 100, above * 100, k,
          f.evidence_value("chance_loss"), k, f.evidence_value("steps"));
    else
      f.message = format(
          "smoothed loss %.4g has stayed within %.1f%% of ln(%d) = %.4g, the loss "
          "of a uniform guess over %d classes, for %g steps",
          f.evidence_value("smoothed"), f.evidence_value("tolerance") * 100, k,
          f.evidence_value("chance_loss"), k, f.evidence_value("steps"));
    if (f.evidence_value("inferred") > 0) {
      f.message += format(
          " (class count inferred from the level: pass num_classes / --classes "
          "if it is not %d%s",
          k,
          k == 2 ? "; ln 2 is also a binary loss with p = 0.5 on every target, "
                   "e.g. a sigmoid applied before BCE-with-logits"
                 : "");
      if (const double k0 = f.evidence_value("first_loss_classes"); k0 >= 2) {
        const double off = f.evidence_value("smoothed") / std::log(k0) - 1;
        f.message += format("; the first loss, %.4g, was ln(%d) = %.4g, and the level is %.1f%% %s",
                            f.evidence_value("first_loss"), int(k0), std::log(k0),
                            100 * std::abs(off), off >= 0 ? "above it" : "below it");
        if (off > 0)
          f.message +=
              format(": a %d-class model that collapsed sits a little above chance", int(k0));
      }
      f.message += ")";
    }
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
  // The class count the first loss names: an untrained classifier's outputs are close to
  // uniform, so its first loss (before any update) is ln k within a few percent. 0 when it is
  // no ln k of a k in [2, 1000].
  double first_loss_classes() const noexcept {
    if (!(first_ > 0)) return 0;
    const double k = std::round(std::exp(first_));
    if (!(k >= 2 && k <= max_inferred)) return 0;
    return std::abs(first_ - std::log(k)) <= o_.tolerance * std::log(k) ? k : 0;
  }
  // The smoothed loss every stride_ pushes; with max_snapshots kept, every other one goes and
  // the stride doubles, so the level of any earlier fraction of the run is at hand. Only a
  // count and a compare at most steps.
  void remember(double e) {
    if (++since_ < stride_) return;
    since_ = 0;
    if (snapshots_.size() == max_snapshots) {
      for (std::size_t i = 1; i < max_snapshots; i += 2) snapshots_[i / 2] = snapshots_[i];
      snapshots_.resize(max_snapshots / 2);
      stride_ *= 2;
    }
    snapshots_.push_back({std::int64_t(ema_.count()), e});
  }
  // A loss on its way down passes through the chance band (and, with the count read off the
  // level, through the band of one ln k after another: a long run descending slowly from 2.1 to
  // 0.1 sat near ln 8, ln 7 ... ln 2 for hundreds of steps each, at 1% per thousand steps):
  // progress, not a uniform guess. Such a level counts as chance only when the smoothed loss
  // half the run ago (at least `patience` steps) was not more than half a band's width above
  // the band's top `top` (the smoothed loss of a flat run strays that far seldom); a model
  // stuck there after a collapse, or from the start, is reported a little later, from where
  // its stay began.
  bool came_down_lately(double top) const noexcept {
    const std::int64_t n = std::int64_t(ema_.count());
    const std::int64_t then = n - std::max<std::int64_t>(o_.patience, n / 2);
    const double bar = top + tolerance() * target_;
    for (auto it = snapshots_.rbegin(); it != snapshots_.rend(); ++it)
      if (it->first <= then) return it->second > bar;
    return false;  // no level that old: nothing says it came down
  }
  bool infer(double e) {
    // A first loss above ln 1000 (and its tolerance) is an untrained model over more classes
    // than are inferred here: a language model starts near ln of its vocabulary (10.8 for 50k
    // tokens), and any ln k it comes down to is far below its own chance, a floor on the way.
    if (beyond_inferred_) return false;
    // The average's lowest point counts once it averages over its own horizon (2 / alpha
    // losses): before that it is the mean of a few batches and dips with their noise.
    const bool settled = double(ema_.count()) >= 2 / o_.ema_alpha;
    if (ema_.count() <= o_.warmup / 2) {
      if (settled) lowest_ = std::min(lowest_, e);
      return false;
    }
    // k = round(exp(e)). exp is taken only when e leaves the band of the last k: inside it,
    // 1e-9 away from log(k +- 0.5), the rounding cannot differ (exp and log err by an ulp).
    if (!(e > band_lo_ && e < band_hi_)) {
      band_k_ = std::round(std::exp(e));
      band_lo_ =
          band_k_ >= 1 ? std::log(band_k_ - 0.5) + 1e-9 : -std::numeric_limits<double>::infinity();
      band_hi_ = std::log(band_k_ + 0.5) - 1e-9;
      band_log_k_ = std::log(band_k_);
    }
    const double k = band_k_;
    if (!(k >= 2 && k <= max_inferred)) return false;
    const double t = band_log_k_;
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

  // The options with num_classes the known count (0 still means "infer it from the level").
  static detector_options::chance_level_t with_known_count(const detector_options& o,
                                                           const sample_schema& schema) {
    auto c = o.chance_level;
    c.num_classes = known_class_count(o, schema);
    return c;
  }

  static constexpr double max_inferred = 1000;  // the largest class count read off a level

  detector_options::chance_level_t o_;
  int classes_;
  double target_;
  bool off_ = false;             // a given count, but no loss it predicts a level for
  int task_ = -1;                // the class task whose loss is watched; -1: the total's level
  std::string series_ = "loss";  // the series findings name
  std::unique_ptr<level_filter> task_level_;  // the class task's loss, winsorized
  ema ema_, acc_;
  double lowest_ = std::numeric_limits<double>::infinity();
  double band_lo_ = 0, band_hi_ = 0, band_k_ = 0, band_log_k_ = 0;  // see infer()
  double first_ = nan;                                              // the first loss
  bool beyond_inferred_ = false;  // the first loss is above ln max_inferred (see infer())
  double lr_prev_ = nan;          // the learning rate of the row before
  std::int64_t since_lr_rose_ = std::numeric_limits<std::int64_t>::max() / 2;  // rows
  std::int64_t streak_ = 0, start_ = 0;
  episode ep_;
  static constexpr std::size_t max_snapshots = 64;          // see remember()
  std::vector<std::pair<std::int64_t, double>> snapshots_;  // (count, smoothed loss)
  std::int64_t stride_ = 16, since_ = 0;
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

}  // namespace losslens::core::detail
