// missing_zero_grad, dead_parameters, call_order, parameters_not_updated and eval_mode_training:
// rules over the red flags that the LibTorch gradient hooks attach to each sample
// (sample::param_flags, sample::eval_mode).

#include <algorithm>
#include <cmath>

#include "detail/detector.hpp"

namespace losslens::core::detail {
namespace {

/// Names of the first few flagged parameters, for messages.
std::string name_list(const sample_schema& schema, const std::vector<std::uint8_t>& flags,
                      std::uint8_t bit, std::size_t count) {
  std::string out;
  std::size_t shown = 0;
  for (std::size_t i = 0; i < flags.size() && i < schema.params.size(); ++i) {
    if (!(flags[i] & bit)) continue;
    if (shown == 4) {
      out += format(" and %zu more", count - shown);
      break;
    }
    out += (shown ? ", " : "") + schema.params[i];
    ++shown;
  }
  return out;
}

/// What distinguishes the rules over one param_flag bit.
struct flag_rule_spec {
  const char* kind;
  severity level;
  const char* rule;
  const char* advice;
  /// Builds the message from the finding and the names of the flagged parameters.
  std::string (*message)(const finding& f, const std::string& names);
};

/// Counts flagged parameters per step and keeps one episode while some stay flagged.
class flag_rule final : public detector {
 public:
  flag_rule(const flag_rule_spec& spec, std::uint8_t bit, int patience, const sample_schema& schema)
      : spec_(spec), bit_(bit), patience_(patience), last_flags_(schema.params.size(), 0) {}

  bool flags_only() const noexcept override { return true; }
  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    if (s.param_flags.empty()) return;    // no hooks behind this sample
    if (!(ctx.param_flags_any & bit_)) {  // no parameter has the flag (most steps)
      streak_ = 0;
      return;
    }
    long n = 0;
    for (auto f : s.param_flags) n += (f & bit_) ? 1 : 0;
    if (streak_++ == 0) start_ = s.step;
    if (streak_ < patience_) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, s.step, 2 * std::int64_t(patience_) + 1, [&] {
      auto f = new_finding(spec_.kind, spec_.level, start_, s.step, "grad_norm", spec_.rule,
                           {{"patience", double(patience_)}});
      f.advice = spec_.advice;
      return f;
    });
    f.set_evidence("parameters", double(n));
    f.set_evidence("of_parameters", double(s.param_flags.size()));
    // The steps the episode covers (it opened patience steps after the first flagged one).
    f.set_evidence("steps", double(step_diff(s.step, f.first_step) + 1));
    // The names shown are those of the latest flagged step.
    const auto m = std::min(last_flags_.size(), s.param_flags.size());
    std::fill(last_flags_.begin(), last_flags_.end(), 0);
    std::copy_n(s.param_flags.begin(), m, last_flags_.begin());
  }

  void describe(finding& f, const sample_schema& schema) const override {
    f.message = spec_.message(
        f, name_list(schema, last_flags_, bit_, std::size_t(f.evidence_value("parameters"))));
  }

 private:
  flag_rule_spec spec_;
  std::uint8_t bit_;
  int patience_;
  std::int64_t streak_ = 0, start_ = 0;
  episode ep_;
  std::vector<std::uint8_t> last_flags_;
};

const flag_rule_spec missing_zero_grad_spec{
    "missing_zero_grad", severity::error, "grad_not_reset_between_steps",
    "call optimizer.zero_grad() (or model->zero_grad()) once per optimizer step, before "
    "backward; if you accumulate gradients on purpose, declare it (attach option "
    "accumulation_steps) and divide the loss by the number of micro-batches",
    [](const finding& f, const std::string& names) {
      return format(
          "gradients accumulate across steps: backward added to .grad that still "
          "held the previous step's gradient for %g of %g parameters (%s), %g steps "
          "from step %lld; the effective step grows every iteration",
          f.evidence_value("parameters"), f.evidence_value("of_parameters"), names.c_str(),
          f.evidence_value("steps"), static_cast<long long>(f.first_step));
    }};

const flag_rule_spec dead_parameters_spec{
    "dead_parameters", severity::warning, "no_gradient_for_steps",
    "these parameters require grad but no gradient reaches them: look for a detach(), .data or "
    "NoGradGuard in forward, a branch of the model that the loss does not use, or a layer "
    "meant to be frozen (then set requires_grad(false) so the optimizer skips it)",
    [](const finding& f, const std::string& names) {
      return format("%g of %g parameters received no gradient for %g steps from step %lld: %s",
                    f.evidence_value("parameters"), f.evidence_value("of_parameters"),
                    f.evidence_value("steps"), static_cast<long long>(f.first_step), names.c_str());
    }};

const flag_rule_spec call_order_spec{
    "call_order", severity::error, "grad_cleared_before_step",
    "call lens.step(loss) after loss.backward() and before optimizer.zero_grad(): the order is "
    "zero_grad, forward, backward, lens.step, optimizer.step (lens.step may also come after "
    "optimizer.step, as long as zero_grad comes after it)",
    [](const finding& f, const std::string& names) {
      return format(
          "lens.step() ran when the gradients were already gone: backward reached %g "
          "of %g parameters (%s) since the previous step() but their .grad was empty "
          "or zero when step() read it, for %g steps from step %lld (step() called "
          "before backward, or zero_grad() between backward and step()); every "
          "gradient number losslens shows for these steps is missing",
          f.evidence_value("parameters"), f.evidence_value("of_parameters"), names.c_str(),
          f.evidence_value("steps"), static_cast<long long>(f.first_step));
    }};

class eval_mode final : public detector {
 public:
  eval_mode(const detector_options& o, const sample_schema&) : patience_(o.eval_mode.patience) {}

  void observe(const step_context& ctx, finding_log& log) override {
    if (!ctx.s->eval_mode) {
      streak_ = 0;
      return;
    }
    if (streak_++ == 0) start_ = ctx.s->step;
    if (streak_ < patience_) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, ctx.s->step, 1, [&] {
      auto f = new_finding("eval_mode_training", severity::warning, start_, ctx.s->step, "loss",
                           "training_steps_in_eval_mode", {{"patience", double(patience_)}});
      f.advice =
          "call model->train() before the training loop (and after each validation "
          "pass): in eval() mode dropout is off and batch norm uses running statistics";
      return f;
    });
    f.set_evidence("steps", double(streak_));
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format("the model was in eval() mode for %g training steps from step %lld",
                       f.evidence_value("steps"), static_cast<long long>(f.first_step));
  }

 private:
  int patience_;
  std::int64_t streak_ = 0, start_ = 0;
  episode ep_;
};

/// Gradients arrive, the values stay: which parameters, for how long, and which cause fits
/// (the bits next to param_flag::not_updated say whether the optimizer holds them and at what
/// learning rate).
class not_updated final : public detector {
 public:
  not_updated(const detector_options& o, const sample_schema& schema)
      : patience_(o.parameters_not_updated.patience),
        optimizer_(o.optimizer),
        last_flags_(schema.params.size(), 0) {}

  bool flags_only() const noexcept override { return true; }
  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    if (s.param_flags.empty()) return;
    long stuck = 0, fired = 0, outside = 0, zero_lr = 0;
    for (auto f : s.param_flags) {
      if (f & (param_flag::no_grad | param_flag::grad_cleared)) continue;
      ++fired;
      if (!(f & param_flag::not_updated)) continue;
      ++stuck;
      outside += (f & param_flag::not_in_optimizer) ? 1 : 0;
      zero_lr += (f & param_flag::zero_lr) ? 1 : 0;
    }
    if (stuck == 0) {
      streak_ = 0;
      return;
    }
    if (streak_++ == 0) start_ = s.step;
    if (streak_ < patience_) return;
    const severity level = stuck == fired ? severity::error : severity::warning;
    auto [f, is_new] = open_or_extend(log, this, ep_, s.step, 2 * std::int64_t(patience_) + 1, [&] {
      return new_finding("parameters_not_updated", level, start_, s.step, "grad_norm",
                         "gradients_without_updates", {{"patience", double(patience_)}});
    });
    if (level > f.level) f.level = level;
    f.set_evidence("parameters", double(stuck));
    f.set_evidence("of_parameters", double(fired));
    f.set_evidence("not_in_optimizer", double(outside));
    f.set_evidence("zero_lr", double(zero_lr));
    f.set_evidence("steps", double(step_diff(s.step, f.first_step) + 1));
    set_lr_evidence(f, ctx);
    const auto m = std::min(last_flags_.size(), s.param_flags.size());
    std::fill(last_flags_.begin(), last_flags_.end(), 0);
    std::copy_n(s.param_flags.begin(), m, last_flags_.begin());
  }

  void describe(finding& f, const sample_schema& schema) const override {
    const double stuck = f.evidence_value("parameters"), fired = f.evidence_value("of_parameters");
    const double outside = f.evidence_value("not_in_optimizer");
    const double zero = f.evidence_value("zero_lr");
    const std::string names =
        name_list(schema, last_flags_, param_flag::not_updated, std::size_t(stuck));
    f.message = format(
        "%g of %g parameters that receive gradients did not change for %g "
        "optimizer steps from step %lld: %s",
        stuck, fired, f.evidence_value("steps"), static_cast<long long>(f.first_step),
        names.c_str());
    // The causes that fit, the ones the hooks can tell apart first.
    std::string cause, advice;
    if (outside > 0) {
      cause += format("%g of them are in none of the optimizer's param groups", outside);
      advice +=
          "pass every parameter to the optimizer (build it after the model is complete, "
          "from model->parameters(), or add_param_group for modules created later)";
    }
    if (zero > 0) {
      cause += format("%s%g of them are in a param group whose learning rate is 0",
                      cause.empty() ? "" : "; ", zero);
      advice += std::string(advice.empty() ? "" : "; ") +
                "give their param group a learning rate above 0 (a schedule or warm-up that "
                "starts at 0 must leave it), or set requires_grad(false) on parameters that "
                "are meant to stay frozen so backward skips them";
      if (const auto q = lr_quote(f, optimizer_); !q.empty()) advice += " (" + q + ")";
    }
    if (outside + zero < stuck) {
      const bool all = stuck >= fired;
      cause += std::string(cause.empty() ? "" : "; ") +
               (all ? "the optimizer holds them with a learning rate above 0, so its step() "
                      "never changes them: optimizer.step() is not called, is called on "
                      "another optimizer, or runs before backward() when zero_grad() has "
                      "cleared the gradients"
                    : "the optimizer holds them with a learning rate above 0 but skips them: "
                      "their .grad is empty when optimizer.step() runs (cleared between "
                      "backward and step, or set to none by a hook)");
      advice += std::string(advice.empty() ? "" : "; ") +
                (all ? "call optimizer.step() once per iteration, after loss.backward() and "
                       "before the next zero_grad(), on the optimizer built from this model's "
                       "parameters"
                     : "make sure nothing clears these gradients between backward() and "
                       "optimizer.step()");
    }
    f.message += " (" + cause + ")";
    f.advice = advice;
  }

 private:
  int patience_;
  optimizer_kind optimizer_;
  std::int64_t streak_ = 0, start_ = 0;
  episode ep_;
  std::vector<std::uint8_t> last_flags_;
};

}  // namespace

std::unique_ptr<detector> make_not_updated(const detector_options& o, const sample_schema& s) {
  return std::make_unique<not_updated>(o, s);
}

std::unique_ptr<detector> make_missing_zero_grad(const detector_options& o,
                                                 const sample_schema& s) {
  return std::make_unique<flag_rule>(missing_zero_grad_spec, param_flag::stale_grad,
                                     o.missing_zero_grad.patience, s);
}
std::unique_ptr<detector> make_dead_parameters(const detector_options& o, const sample_schema& s) {
  return std::make_unique<flag_rule>(dead_parameters_spec, param_flag::no_grad,
                                     o.dead_parameters.patience, s);
}
std::unique_ptr<detector> make_call_order(const detector_options& o, const sample_schema& s) {
  return std::make_unique<flag_rule>(call_order_spec, param_flag::grad_cleared,
                                     o.call_order.patience, s);
}
std::unique_ptr<detector> make_eval_mode(const detector_options& o, const sample_schema& s) {
  return std::make_unique<eval_mode>(o, s);
}

}  // namespace losslens::core::detail
