// non_finite, exploding_gradients and vanishing_gradients.

#include <cmath>

#include "detail/detector.hpp"
#include "detail/evidence_slots.hpp"
#include "detail/norm_summary.hpp"
#include "detail/rolling.hpp"

namespace losslens::core::detail {
namespace {

constexpr const char* non_finite_advice =
    "check the batch for NaN/Inf inputs and targets; compute losses from logits "
    "(BCE-with-logits, cross-entropy on logits) instead of taking log of a sigmoid/softmax; add an "
    "epsilon to divisions and clamp before log/sqrt; clip gradients (clip_grad_norm_ 1.0); ";

const char* value_name(double v) { return std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"); }

class non_finite final : public detector {
 public:
  non_finite(const detector_options& o, const sample_schema& schema)
      : o_(o.non_finite), st_(schema.tasks.size() + 2) {}

  // The message describes the first bad value and does not change as the episode grows.
  void describe(finding&, const sample_schema&) const override {}

  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    // A held gradient episode is an error once the loss goes bad after it (settled before the
    // loss's own episode opens, so that it is placed first, as its cause).
    if (skip_.held && s.loss && !std::isfinite(*s.loss)) settle(log, st_.back().ep.index, false);
    check(ctx, log, 0, s.loss, "loss", -1, -1);
    for (std::size_t i = 0; i < s.task_losses.size() && i < ctx.schema->tasks.size(); ++i)
      check(ctx, log, 1 + i, s.task_losses[i], nullptr, int(i), -1);

    // Gradients: the total norm, or any parameter's norm, being non-finite is one episode that
    // names the first parameter that went bad.
    int first = s.first_non_finite_param;
    if (first < 0) first = ctx.first_non_finite_norm;
    if (first >= static_cast<int>(ctx.schema->params.size())) first = -1;
    std::optional<double> g = s.grad_norm;
    if (first >= 0 && (!g || std::isfinite(*g)))
      g = s.param_grad_norms.size() > static_cast<std::size_t>(first)
              ? s.param_grad_norms[static_cast<std::size_t>(first)]
              : std::optional<double>(nan);
    if (g && !std::isfinite(*g)) {
      grad_hit(ctx, log, *g, first);
    } else {
      skip_.run = 0;
      if (g) check(ctx, log, st_.size() - 1, g, "grad_norm", -1, first);  // the last finite
      if (skip_.held && finite(s.loss) && ++skip_.clean >= o_.skip_confirm)
        settle(log, st_.back().ep.index, true);
    }
  }

 private:
  struct state {
    episode ep;
    double last_finite = nan;
    std::int64_t last_finite_step = -1;
    std::int64_t count = 0;
  };

  /// The series is `fixed`, or task `task`'s loss; its name is built only for a finding.
  /// Inlined: a finite value (every step but a few) only updates the state.
  void check(const step_context& ctx, finding_log& log, std::size_t k,
             const std::optional<double>& v, const char* fixed, int task, int param) {
    if (!v) return;
    state& st = st_[k];
    if (std::isfinite(*v)) {
      st.last_finite = *v;
      st.last_finite_step = ctx.s->step;
      return;
    }
    report(ctx, log, st, *v, fixed, task, param);
  }

  // Out of line, so that the finite path does not pay for this one's frame.
  [[gnu::noinline]] bool report(const step_context& ctx, finding_log& log, state& st,
                                const double value, const char* fixed, int task, int param) {
    const std::optional<double> v = value;
    const std::int64_t step = ctx.s->step;
    const std::string series =
        task >= 0 ? task_series(*ctx.schema, static_cast<std::size_t>(task)) : std::string(fixed);
    auto [f, is_new] = open_or_extend(log, this, st.ep, step, o_.merge_gap, [&] {
      st.count = 0;
      std::string name = series;
      if (param >= 0) name = param_series(*ctx.schema, static_cast<std::size_t>(param));
      auto f = new_finding("non_finite", severity::error, step, step, name, "non_finite_value",
                           {{"merge_gap", double(o_.merge_gap)}});
      f.evidence = {{"value", *v},
                    {"last_finite_value", st.last_finite},
                    {"last_finite_step", double(st.last_finite_step)}};
      if (param >= 0) f.evidence.emplace_back("first_param_index", double(param));
      if (finite(ctx.s->grad_norm) && series != "grad_norm")
        f.evidence.emplace_back("grad_norm", *ctx.s->grad_norm);
      if (std::isfinite(ctx.grad_median))
        f.evidence.emplace_back("grad_norm_median", ctx.grad_median);
      set_lr_evidence(f, ctx);
      std::string where = param >= 0 ? "gradient of " + ctx.schema->params[size_t(param)] +
                                           " (first parameter to go non-finite)"
                                     : series;
      f.message = format("%s is %s at step %lld", where.c_str(), value_name(*v),
                         static_cast<long long>(step));
      if (st.last_finite_step >= 0)
        f.message += format(" (last finite value %.4g at step %lld)", st.last_finite,
                            static_cast<long long>(st.last_finite_step));
      f.advice = non_finite_advice;
      if (param >= 0)
        f.advice = "inspect the operations that feed " + ctx.schema->params[size_t(param)] +
                   " (log, division, sqrt, exp) and guard them with clamps/epsilons; " + f.advice;
      f.advice += lr_hint(ctx) + lr_note(ctx);
      return f;
    });
    ++st.count;
    f.set_evidence("non_finite_steps", double(st.count));
    return is_new;
  }

  // A non-finite gradient norm. Beside a finite loss it may be an update a dynamic loss scaler
  // skipped (fp16: on overflow GradScaler skips the step and halves its scale, a few steps in a
  // row at the start and one now and then after it grows the scale again): the episode is held
  // until the loss has stayed finite for skip_confirm rows after it (settle). A loss that goes
  // bad, or more than skip_max_run such norms in a row, makes it an error as before.
  [[gnu::noinline]] void grad_hit(const step_context& ctx, finding_log& log, double g, int first) {
    const std::optional<double>& loss = ctx.s->loss;
    state& st = st_.back();
    const std::size_t before = st.ep.index;
    const bool is_new = report(ctx, log, st, g, "grad_norm", -1, first);
    if (is_new) {
      // The episode before, still held, had a finite loss up to this new one: skipped updates.
      if (skip_.held) settle(log, before, true);
      skip_ = {};
      if (finite(loss) && o_.skip_confirm > 0) {
        skip_.held = true;
        log.hold(st.ep.index);
      }
    }
    skip_.clean = 0;
    skip_.longest = std::max(skip_.longest, ++skip_.run);
    // (A row without a loss says nothing either way.)
    const bool bad = (loss && !std::isfinite(*loss)) || skip_.run > o_.skip_max_run;
    if (skip_.held && bad) {
      settle(log, st.ep.index, false);
    } else if (skip_.skipped && bad) {
      // Settled as skipped updates, then grew into what is not: the error it was at first.
      finding& f = log.at(st.ep.index);
      f.level = severity::error;
      f.rule = std::move(skip_.rule);
      f.message = std::move(skip_.message);
      f.advice = std::move(skip_.advice);
      skip_.skipped = false;
      log.touch(st.ep.index);
    }
  }

  // Settles the held gradient episode i: skipped updates (info) or, as it was opened, an error.
  void settle(finding_log& log, std::size_t i, bool skipped) {
    skip_.held = false;
    if (i == finding_log::none) return;
    if (skipped) {
      finding& f = log.at(i);
      skip_.skipped = true;
      skip_.rule = f.rule;
      skip_.message = f.message;
      skip_.advice = f.advice;
      f.level = severity::info;
      f.rule = {"skipped_update",
                {{"merge_gap", double(o_.merge_gap)},
                 {"skip_confirm", double(o_.skip_confirm)},
                 {"skip_max_run", double(o_.skip_max_run)}}};
      f.set_evidence("longest_run", double(skip_.longest));
      f.set_evidence("finite_loss_after", double(skip_.clean));
      f.message += format(
          "; the loss stayed finite (%lld such norms in a row at most, then %lld rows with a "
          "finite loss), so the update was skipped (a dynamic loss scaler's overflow step, or a "
          "guard's skip)",
          static_cast<long long>(skip_.longest), static_cast<long long>(skip_.clean));
      f.advice =
          "nothing to fix while such steps stay short and rare: with fp16, a dynamic loss scaler "
          "(GradScaler, DeepSpeed, Megatron) skips the update and halves its scale when the "
          "gradients overflow, a few steps in a row at the start and one now and then when it "
          "tries a larger scale (every 2000 steps by default); without loss scaling (a guard "
          "skipped it, or clipping zeroed it), find the operation that overflows in the batch at "
          "this step (log, division, exp, sqrt at 0); bf16 needs no loss scaler";
    }
    log.release(i);
  }

  // The gradient episode that may be skipped updates (see grad_hit).
  struct skip_watch {
    bool held = false;         // held back until settled
    bool skipped = false;      // settled as skipped updates (the error's text kept below)
    std::int64_t run = 0;      // non-finite gradient norms in a row
    std::int64_t longest = 0;  // the longest such run in the episode
    std::int64_t clean = 0;    // rows with a finite loss since the last one
    rule_info rule;
    std::string message, advice;
  };

  detector_options::non_finite_t o_;
  std::vector<state> st_;  // loss, tasks..., grad_norm
  skip_watch skip_;
};

/// Largest per-parameter norm at this step and its share of the squared total.
struct top_param {
  int index = -1;
  double norm = 0;
  double share = 0;
};
top_param largest_param(const sample& s) {
  top_param t;
  double sq = 0;
  for (std::size_t i = 0; i < s.param_grad_norms.size(); ++i) {
    if (!finite(s.param_grad_norms[i])) continue;
    const double p = *s.param_grad_norms[i];
    sq += p * p;
    if (t.index < 0 || p > t.norm) {
      t.index = static_cast<int>(i);
      t.norm = p;
    }
  }
  if (t.index >= 0 && sq > 0) t.share = t.norm * t.norm / sq;
  return t;
}

class exploding final : public detector {
 public:
  exploding(const detector_options& o, const sample_schema&)
      : o_(o.exploding),
        recent_(std::size_t(o.exploding.rise_window)),
        loss_(std::size_t(std::max<std::int64_t>(4, o.exploding.confirm_steps))),
        gate_(o.exploding.confirm_steps, o.exploding.max_wait) {}

  void observe(const step_context& ctx, finding_log& log) override {
    if (!finite(ctx.s->grad_norm)) return;
    const double g = *ctx.s->grad_norm;
    const double m = ctx.grad_median;
    recent_.push(g);
    if (std::isfinite(ctx.level_loss)) loss_.push(ctx.level_loss);
    if (gate_.waiting(ctx.s->step)) {
      const double range = std::isfinite(ctx.loss_range) ? ctx.loss_range : 0.0;
      const bool loss_back =
          loss_.count() == 0 || loss_.median() <= 1.5 * loss_before_ + 0.05 * range;
      const double slack = std::isfinite(ctx.grad_early) ? 0.05 * ctx.grad_early : 0.0;
      gate_.check(log, ctx.s->step, recent_.median(), slack, 3.0, o_.ratio, slack, loss_back);
    }
    // How far above its median this run's norms go by themselves (p99 / median): a blow-up
    // has to stand out from that too, not only from a fixed ratio.
    const double tail = std::isfinite(ctx.grad_tail_ratio) ? ctx.grad_tail_ratio : 1.0;
    const double threshold = std::max(o_.ratio, ctx.grad_tail_bar);  // pow(tail, tail_factor)
    const bool m_ok = std::isfinite(m) && m > 0;
    const bool spike = m_ok && !quotient_surely_below(g, threshold, m) && std::isfinite(g / m) &&
                       g / m >= threshold;
    // A lasting rise: the recent median itself far above the longer running median. As for
    // spikes, the bar includes the run's own tail (a memorising run's median of 16 norms jumps
    // 10x when a few hard batches come together).
    bool rising = false;
    if (m_ok && recent_.count() >= std::size_t(o_.rise_window)) {
      const double bar = std::max(o_.ratio, tail);
      // The median is at most the largest value, and dividing by m > 0 keeps that order: when
      // even the largest is under the bar (almost every step) the median need not be taken.
      const double top = recent_.max();
      if (!quotient_surely_below(top, bar, m) && top / m >= bar) {
        const double rise = recent_.median() / m;
        rising = std::isfinite(rise) && rise >= bar;
      }
    }
    rise_held_ = rising ? rise_held_ + 1 : 0;
    const bool lasting = rise_held_ >= o_.rise_patience;
    if (!spike && !lasting && !(g >= o_.abs_max)) return;
    const double ratio = m_ok ? g / m : nan;
    const std::int64_t step = ctx.s->step;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, o_.merge_gap, [&] {
      auto f = new_finding("exploding_gradients", severity::warning, step, step, "grad_norm",
                           spike || !lasting ? "grad_norm_beyond_own_tail" : "grad_norm_rise",
                           {{"window", double(o_.window)},
                            {"ratio", o_.ratio},
                            {"error_ratio", o_.error_ratio},
                            {"tail_factor", o_.tail_factor},
                            {"abs_max", o_.abs_max}});
      f.evidence = {{"grad_norm", g}, {"running_median", m}, {"ratio", ratio}, {"steps", 0}};
      const auto top = largest_param(*ctx.s);
      if (top.index >= 0) {
        f.evidence.emplace_back("top_param_index", double(top.index));
        f.evidence.emplace_back("top_param_norm", top.norm);
        f.evidence.emplace_back("top_param_share", top.share);
      }
      set_lr_evidence(f, ctx);
      const double clip = std::isfinite(m) ? 2 * m : 1.0;
      f.advice = format(
          "clip gradients (clip_grad_norm_ with max_norm 1.0, or about 2x the "
          "running median: %.3g) or %s; check the batches at these steps for "
          "outliers%s",
          clip, lr_hint(ctx).c_str(), lr_note(ctx).c_str());
      return f;
    });
    if (is_new) loss_before_ = loss_.count() ? loss_.median() : nan;
    // A blow-up in the first steps (before the run's normal norms are known) is no transient.
    // Transients are waited for only where the norms are heavy-tailed by themselves.
    gate_.hit(log, ep_.index, is_new, step, m,
              std::isfinite(ctx.grad_early) && tail >= o_.heavy_tail_ratio);
    f.set_evidence("steps", f.evidence_value("steps") + 1);
    f.set_evidence("threshold_ratio", threshold);
    f.set_evidence("tail_ratio", tail);
    if (is_new || g > f.evidence_value("grad_norm")) {
      f.set_evidence("grad_norm", g);
      f.set_evidence("running_median", m);
      f.set_evidence("ratio", ratio);
      f.set_evidence("peak_step", double(step));
    }
    if (f.evidence_value("ratio") >= std::max(o_.error_ratio, 10 * threshold) || std::isinf(g))
      f.level = severity::error;
  }

  void describe(finding& f, const sample_schema& schema) const override {
    std::string top;
    const double ti = f.evidence_value("top_param_index");
    if (ti >= 0 && std::size_t(ti) < schema.params.size())
      top =
          format(" (largest at onset: %s, %.0f%% of the squared norm)",
                 schema.params[std::size_t(ti)].c_str(), 100 * f.evidence_value("top_param_share"));
    f.message =
        format("grad norm %.3g at step %lld is %.3gx its running median %.3g%s",
               f.evidence_value("grad_norm"), static_cast<long long>(f.evidence_value("peak_step")),
               f.evidence_value("ratio"), f.evidence_value("running_median"), top.c_str());
    const double tail = f.evidence_value("tail_ratio");
    if (tail > 1.5)
      f.message += format(" (this run's norms reach %.3gx their median by themselves)", tail);
    if (f.last_step > f.first_step)
      f.message +=
          format("; %g steps over %.3gx between steps %lld and %lld", f.evidence_value("steps"),
                 f.evidence_value("threshold_ratio"), static_cast<long long>(f.first_step),
                 static_cast<long long>(f.last_step));
    if (f.evidence_value("recovered") > 0)
      f.message += format("; transient: norms were back at %.3g %g steps later",
                          f.evidence_value("recovered_level"), f.evidence_value("recovered_after"));
  }

 private:
  detector_options::exploding_t o_;
  lazy_median recent_;  // the last rise_window norms
  lazy_median loss_;    // the level loss of the last confirm_steps steps
  double loss_before_ = nan;
  recovery_gate gate_;
  std::int64_t rise_held_ = 0;
  episode ep_;
};

class vanishing final : public detector {
 public:
  vanishing(const detector_options& o, const sample_schema& schema)
      : o_(o.vanishing),
        optimizer_(o.optimizer),
        streak_(schema.params.size(), 0),
        start_(schema.params.size(), 0),
        vanished_(schema.params.size(), 0),
        shown_(schema.params.size(), 0),
        sibling_(schema.params.size(), -1) {
    // A bias whose layer's weight is named alongside it ("conv2.bias" / "conv2.weight"): when
    // only the bias gets no gradient, a normalization right after the layer cancels it.
    for (std::size_t i = 0; i < schema.params.size(); ++i) {
      const std::string& n = schema.params[i];
      if (n.size() < 4 || n.compare(n.size() - 4, 4, "bias") != 0) continue;
      const std::string w = n.substr(0, n.size() - 4) + "weight";
      for (std::size_t j = 0; j < schema.params.size(); ++j)
        if (schema.params[j] == w) sibling_[i] = int(j);
    }
  }

  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    if (n_++ == 0) first_step_ = s.step;
    const std::int64_t step = s.step;
    // Total norm near zero.
    if (finite(s.grad_norm)) {
      const double g = *s.grad_norm;
      if (g < o_.abs_min) {
        if (total_streak_++ == 0) total_start_ = step;
      } else {
        total_streak_ = 0;
      }
      if (n_ > o_.warmup && total_streak_ >= o_.patience) {
        auto [f, is_new] = open_or_extend(log, this, total_ep_, step, gap(), [&] {
          return new_finding("vanishing_gradients", severity::warning, total_start_, step,
                             "grad_norm", "grad_norm_below_floor",
                             {{"abs_min", o_.abs_min}, {"patience", double(o_.patience)}});
        });
        f.set_evidence("grad_norm", g);
        f.set_evidence("steps", double(total_streak_));
        set_lr_evidence(f, ctx);
      }
    }
    // Layers negligible next to the largest: one episode for the set of such layers.
    const double top = ctx.top_param_norm;  // -Inf when no norm is finite
    if (!(top > 0)) return;
    const double below = o_.layer_ratio * top;
    // Most steps: no layer below the bar and none was before, so there is nothing to update.
    if (running_ == 0 && !dirty_ && !(ctx.min_param_norm < below)) return;
    std::size_t count = 0, zeros = 0, biases = 0;
    std::int64_t first = step, longest = 0, bias_first = step;
    double worst = 1;
    const auto n_params = std::min(s.param_grad_norms.size(), streak_.size());
    bool any_due = false;
    running_ = 0;
    for (std::size_t i = 0; i < n_params; ++i) {
      vanished_[i] = 0;
      if (!finite(s.param_grad_norms[i])) {
        running_ += streak_[i] != 0;
        continue;
      }
      const double p = *s.param_grad_norms[i];
      if (!(p < below)) {
        streak_[i] = 0;
        continue;
      }
      if (streak_[i]++ == 0) start_[i] = step;
      ++running_;
      any_due = any_due || streak_[i] >= o_.patience;
    }
    for (std::size_t i = n_params; i < streak_.size(); ++i) running_ += streak_[i] != 0;
    dirty_ = false;
    // A layer counts once its streak reached the patience (after warm-up).
    if (!any_due || n_ <= o_.warmup) return;
    for (std::size_t i = 0; i < n_params; ++i) {
      if (!streak_[i] || !finite(s.param_grad_norms[i])) continue;
      if (n_ <= o_.warmup || streak_[i] < o_.patience) continue;
      const double p = *s.param_grad_norms[i];
      const int w = sibling_[i];
      // Only from the first steps on (200): a bias that loses its gradient later, while its
      // weight keeps one, is a layer dying unit by unit, not a normalization.
      if (w >= 0 && std::size_t(w) < n_params && streak_[std::size_t(w)] == 0 &&
          start_[i] <= first_step_ + 200) {
        // Not a training pathology: a bias that a normalization cancels (info, once).
        vanished_[i] = 2;
        dirty_ = true;
        ++biases;
        bias_first = std::min(bias_first, start_[i]);
        continue;
      }
      vanished_[i] = 1;
      dirty_ = true;
      ++count;
      zeros += p == 0 ? 1 : 0;
      first = std::min(first, start_[i]);
      longest = std::max(longest, streak_[i]);
      worst = std::min(worst, p / top);
    }
    if (biases > 0) {
      auto [f, is_new] = open_or_extend(log, this, bias_ep_, step, gap(), [&] {
        auto f = new_finding("redundant_bias", severity::info, bias_first, step, "grad_norm",
                             "bias_cancelled_by_normalization",
                             {{"layer_ratio", o_.layer_ratio}, {"patience", double(o_.patience)}});
        f.advice =
            "harmless: a normalization (BatchNorm, LayerNorm) right after these layers "
            "subtracts the mean, so their bias never matters; build the layers with "
            "bias=false to save the parameters and optimizer state";
        return f;
      });
      f.set_evidence("parameters", double(biases));
      if (is_new) bias_shown_ = vanished_;
    }
    if (count == 0) return;
    auto [f, is_new] = open_or_extend(log, this, layers_ep_, step, gap(), [&] {
      // Later episodes keep the first one's series, so that they are one incident.
      if (layers_i0_ < 0) {
        std::size_t i0 = 0;
        while (vanished_[i0] != 1) ++i0;
        layers_i0_ = int(i0);
      }
      return new_finding("vanishing_gradients", severity::warning, first, step,
                         param_series(*ctx.schema, std::size_t(layers_i0_)), "layer_grad_ratio",
                         {{"layer_ratio", o_.layer_ratio}, {"patience", double(o_.patience)}});
    });
    // Written at every step of the episode: by place, not by name (see evidence_slots). f is
    // captured by a named reference: clang 14 cannot capture a structured binding.
    auto put = [&, &fd = f](std::size_t slot, std::string_view name, double v) {
      layers_ev_.set(fd, layers_ep_.index, slot, name, v);
    };
    put(0, "parameters", double(count));
    put(1, "of_parameters", double(s.param_grad_norms.size()));
    put(2, "zero_gradient", double(zeros));
    put(3, "smallest_ratio", worst);
    put(4, "largest_norm", top);
    put(5, "largest_index",
        double(find_norm(s.param_grad_norms.data(), s.param_grad_norms.size(), top)));
    put(6, "steps", double(longest));
    for_lr_evidence(
        ctx, [&](std::size_t slot, std::string_view name, double v) { put(7 + slot, name, v); });
    for (std::size_t i = 0; i < shown_.size(); ++i) shown_[i] = vanished_[i] == 1;
  }

  void describe(finding& f, const sample_schema& schema) const override {
    if (f.kind == "redundant_bias") {
      std::string names;
      for (std::size_t i = 0; i < bias_shown_.size() && i < schema.params.size(); ++i)
        if (bias_shown_[i] == 2) names += (names.empty() ? "" : ", ") + schema.params[i];
      f.message = format(
          "%g bias parameters get no gradient while their layers' weights do: "
          "%s (a normalization right after the layer cancels a bias)",
          f.evidence_value("parameters"), names.c_str());
      return;
    }
    if (f.rule.name == "grad_norm_below_floor") {
      f.message = format("total grad norm %.3g has stayed below %.3g for %g steps",
                         f.evidence_value("grad_norm"), o_.abs_min, f.evidence_value("steps"));
      f.advice =
          "gradients no longer reach the parameters: check for saturated activations "
          "(sigmoid/tanh), dead ReLUs (try LeakyReLU or another init), missing "
          "normalization or residual paths, and a learning rate that is not tiny";
      if (const auto q = lr_quote(f, optimizer_); !q.empty()) f.advice += " (" + q + ")";
      return;
    }
    std::string names;
    std::size_t shown = 0;
    for (std::size_t i = 0; i < shown_.size() && i < schema.params.size(); ++i) {
      if (!shown_[i]) continue;
      if (shown++ == 4) {
        names += " and more";
        break;
      }
      names += (names.empty() ? "" : ", ") + schema.params[i];
    }
    const auto largest = std::size_t(f.evidence_value("largest_index"));
    const char* largest_name =
        largest < schema.params.size() ? schema.params[largest].c_str() : "?";
    f.message = format(
        "%g of %g parameters get less than %.0ex the gradient of the largest "
        "(%s, %.3g) for %g steps: %s",
        f.evidence_value("parameters"), f.evidence_value("of_parameters"), o_.layer_ratio,
        largest_name, f.evidence_value("largest_norm"), f.evidence_value("steps"), names.c_str());
    const double zeros = f.evidence_value("zero_gradient");
    if (zeros > 0) f.message += format(" (%g of them exactly 0)", zeros);
    f.advice = zeros > 0
                   ? "exactly zero gradients behind a healthy last layer mean the ReLUs before it "
                     "died (often after a too-large step early on: lower the learning rate, add "
                     "warm-up or gradient clipping) or a detach()/no_grad cuts the path; use "
                     "LeakyReLU or re-initialise, and check the first steps for an explosion"
                   : "the gradient fades on its way back: check for saturated activations "
                     "(sigmoid/tanh), missing normalization or residual connections, and the "
                     "initialisation of these layers";
    const std::string lr = lr_quote(f, optimizer_);
    if (zeros > 0 && !lr.empty()) f.advice += " (" + lr + ")";
  }

 private:
  // A break in the condition shorter than the patience does not end an episode.
  std::int64_t gap() const noexcept { return 2 * std::int64_t(o_.patience); }

  detector_options::vanishing_t o_;
  optimizer_kind optimizer_;
  std::int64_t n_ = 0;
  std::int64_t total_streak_ = 0, total_start_ = 0;
  episode total_ep_;
  std::vector<std::int64_t> streak_, start_;
  std::vector<std::uint8_t> vanished_, shown_;  // this step's set (1 vanished, 2 a bias
                                                // cancelled by normalization); last reported
  std::vector<std::uint8_t> bias_shown_;
  std::vector<int> sibling_;  // index of a bias's weight, or -1
  int layers_i0_ = -1;        // the parameter the layer episodes are charted on
  std::size_t running_ = 0;   // parameters with a streak going
  bool dirty_ = false;        // vanished_ holds a non-zero entry
  std::int64_t first_step_ = 0;
  episode layers_ep_, bias_ep_;
  evidence_slots<10> layers_ev_;  // what the layers episode writes at every step
};

}  // namespace

std::unique_ptr<detector> make_non_finite(const detector_options& o, const sample_schema& s) {
  return std::make_unique<non_finite>(o, s);
}
std::unique_ptr<detector> make_exploding(const detector_options& o, const sample_schema& s) {
  return std::make_unique<exploding>(o, s);
}
std::unique_ptr<detector> make_vanishing(const detector_options& o, const sample_schema& s) {
  return std::make_unique<vanishing>(o, s);
}

}  // namespace losslens::core::detail
