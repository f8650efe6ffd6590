// clipping_saturated: gradient clipping that is on for most steps, so that it rescales every
// update instead of catching the rare outlier.

#include <algorithm>
#include <cmath>

#include "detail/detector.hpp"
#include "detail/rolling.hpp"

namespace losslens::core::detail {
namespace {

class clipping final : public detector {
 public:
  clipping(const detector_options& o, const sample_schema&)
      : o_(o.clipping_saturated),
        optimizer_(o.optimizer),
        clipped_(std::size_t(std::max(o.clipping_saturated.window, 8))),
        ratios_(std::size_t(std::max(o.clipping_saturated.window, 8))) {}

  void observe(const step_context& ctx, finding_log& log) override {
    const sample& s = *ctx.s;
    double clipped = 0;
    if (finite(s.clip_norm) && finite(s.max_norm) && *s.max_norm > 0) {
      // Reported by the trainer: the norm before clipping against max_norm.
      const double r = *s.clip_norm / *s.max_norm;
      clipped = r > 1 ? 1 : 0;
      ratios_.push(r);
      max_norm_ = *s.max_norm;
    } else if (finite(s.grad_norm) && *s.grad_norm > 0) {
      // Measured after clip_grad_norm_: a clipped norm is max_norm to ~1e-6, while a natural
      // norm never repeats to four digits. The loss must move meanwhile (a frozen model on the
      // same batch repeats its norm too).
      const double g = *s.grad_norm, loss = ctx.total_loss;
      const double tol = o_.pin_tolerance;
      const bool loss_moved = !(std::abs(loss - prev_loss_) <= tol * std::abs(loss));
      if (std::isfinite(pin_) && std::abs(g - pin_) <= tol * pin_ && loss_moved) {
        clipped = 1;
      } else if (std::abs(g - prev_) <= tol * g && loss_moved) {
        pin_ = g;
        clipped = 1;
      }
      prev_ = g;
      prev_loss_ = loss;
    } else {
      return;
    }
    if (clipped_.full()) sum_ -= clipped_[0];  // leaves the window with this push
    clipped_.push(clipped);
    sum_ += clipped;
    if (!clipped_.full()) return;
    const double fraction = sum_ / double(clipped_.size());
    if (fraction < o_.min_fraction) return;
    const bool reported = ratios_.count() >= clipped_.size() / 2;
    const double median_ratio = reported ? ratios_.median() : nan;
    const severity level =
        reported && median_ratio >= o_.warning_ratio ? severity::warning : severity::info;
    auto [f, is_new] = open_or_extend(log, this, ep_, s.step, std::int64_t(o_.window), [&] {
      return new_finding("clipping_saturated", level, s.step - std::int64_t(clipped_.size()) + 1,
                         s.step, "grad_norm",
                         reported ? "clip_norm_over_max_norm" : "grad_norm_pinned",
                         {{"window", double(o_.window)},
                          {"min_fraction", o_.min_fraction},
                          {"warning_ratio", o_.warning_ratio}});
    });
    if (level > f.level) f.level = level;
    // The peak: the largest fraction over the episode.
    const double before = f.evidence_value("clipped_fraction");
    f.set_evidence("clipped_fraction",
                   std::isfinite(before) ? std::max(before, fraction) : fraction);
    f.set_evidence("max_norm", reported ? max_norm_ : pin_);
    if (reported) f.set_evidence("median_ratio", median_ratio);
    set_lr_evidence(f, ctx);
  }

  void describe(finding& f, const sample_schema&) const override {
    const double frac = f.evidence_value("clipped_fraction"),
                 max_norm = f.evidence_value("max_norm");
    const double ratio = f.evidence_value("median_ratio");
    f.message =
        format("the gradient was clipped on %.0f%% of %d steps in a row", 100 * frac, o_.window);
    if (std::isfinite(ratio))
      f.message +=
          format(": before clipping its median norm was %.3gx max_norm %.3g", ratio, max_norm);
    else
      f.message +=
          format(": the measured norm sits at %.4g, where clip_grad_norm_ puts it", max_norm);
    f.message += format(" (steps %lld-%lld)", static_cast<long long>(f.first_step),
                        static_cast<long long>(f.last_step));
    f.advice =
        "clipping should catch the rare outlier, not rescale every update (each step is "
        "then LR x max_norm long, whatever the gradient says): " +
        lr_hint(f) +
        " until the norm stays below max_norm on most steps, or raise max_norm to about "
        "the typical norm before clipping" +
        (std::isfinite(ratio) ? format(" (%.3g)", ratio * max_norm) : std::string()) +
        " so that only outliers are cut" + lr_note(f, optimizer_);
  }

 private:
  detector_options::clipping_t o_;
  optimizer_kind optimizer_;
  ring clipped_;
  rolling_median ratios_;
  double sum_ = 0;
  double pin_ = nan, prev_ = nan, prev_loss_ = nan, max_norm_ = nan;
  episode ep_;
};

}  // namespace

std::unique_ptr<detector> make_clipping(const detector_options& o, const sample_schema& s) {
  return std::make_unique<clipping>(o, s);
}

}  // namespace losslens::core::detail
