// Learning rates in advice: the current LR of the param groups, and the range the methodology
// gives for the run's optimizer (when attach() or the options say which one it is).

#include "losslens/lr_advice.hpp"

#include <cmath>

#include "detail/detector.hpp"
#include "detail/text.hpp"

namespace losslens {

using core::detail::format;
using core::detail::nan;

const char* to_string(optimizer_kind k) noexcept {
  switch (k) {
    case optimizer_kind::sgd:
      return "SGD";
    case optimizer_kind::adam:
      return "Adam";
    case optimizer_kind::adamw:
      return "AdamW";
    case optimizer_kind::rmsprop:
      return "RMSprop";
    case optimizer_kind::adagrad:
      return "Adagrad";
    case optimizer_kind::lbfgs:
      return "LBFGS";
    case optimizer_kind::unknown:
      break;
  }
  return "unknown";
}

std::optional<optimizer_kind> parse_optimizer_kind(std::string_view name) noexcept {
  for (auto k : {optimizer_kind::sgd, optimizer_kind::adam, optimizer_kind::adamw,
                 optimizer_kind::rmsprop, optimizer_kind::adagrad, optimizer_kind::lbfgs}) {
    if (core::detail::iequals(to_string(k), name)) return k;
  }
  return std::nullopt;
}

namespace {

/// The bounds the methodology's LR check names (NaN: none). Below 1e-6 nothing learns, whatever
/// the optimizer; above 1e-2 the adaptive optimizers (which normalise the step by the gradient's
/// scale) turn unstable. SGD's step scales with the gradient, so no upper bound is given for it;
/// LBFGS runs its own line search (LR 1 is its default).
struct lr_range {
  double low = nan, high = nan;
};
lr_range range_of(optimizer_kind k) noexcept {
  switch (k) {
    case optimizer_kind::adam:
    case optimizer_kind::adamw:
    case optimizer_kind::rmsprop:
    case optimizer_kind::adagrad:
      return {1e-6, 1e-2};
    case optimizer_kind::sgd:
      return {1e-6, nan};
    case optimizer_kind::lbfgs:
    case optimizer_kind::unknown:
      break;
  }
  return {};
}

}  // namespace

std::string lr_range_note(optimizer_kind k, double lr, double lo, double hi) {
  const lr_range r = range_of(k);
  if (!std::isfinite(r.low)) return {};
  const char* name = to_string(k);
  // Several param groups: the largest LR decides instability, the smallest stalling.
  const bool groups = std::isfinite(lo) && std::isfinite(hi) && lo != hi;
  const double top = groups ? hi : lr, bottom = groups ? lo : lr;
  if (std::isfinite(r.high) && std::isfinite(top) && top > r.high)
    return format(
        "; %.3g is above %.0e, where %s training turns unstable (it trains between "
        "about %.0e and %.0e)",
        top, r.high, name, r.low, r.high);
  if (std::isfinite(bottom) && bottom < r.low)
    return format("; %.3g is below %.0e, where %s stops learning", bottom, r.low, name);
  if (std::isfinite(r.high))
    return format(
        "; %s trains between about %.0e (below: no learning) and %.0e (above: "
        "unstable)",
        name, r.low, r.high);
  return format("; below %.0e %s does not learn", r.low, name);
}

std::string lower_lr_hint(optimizer_kind k, double lr, double lo, double hi) {
  return core::detail::lr_hint(lr, lo, hi) + lr_range_note(k, lr, lo, hi);
}

namespace core::detail {

std::string lr_hint(const step_context& ctx) { return lr_hint(ctx.lr, ctx.lr_min, ctx.lr_max); }

std::string lr_hint(const finding& f) {
  return lr_hint(f.evidence_value("lr"), f.evidence_value("lr_min"), f.evidence_value("lr_max"));
}

std::string lr_note(const step_context& ctx) {
  return lr_range_note(ctx.optimizer, ctx.lr, ctx.lr_min, ctx.lr_max);
}

std::string lr_note(const finding& f, optimizer_kind k) {
  return lr_range_note(k, f.evidence_value("lr"), f.evidence_value("lr_min"),
                       f.evidence_value("lr_max"));
}

std::string lr_quote(const finding& f, optimizer_kind k) {
  const double lr = f.evidence_value("lr"), lo = f.evidence_value("lr_min"),
               hi = f.evidence_value("lr_max");
  std::string out;
  if (std::isfinite(lo) && std::isfinite(hi) && lo != hi)
    out = format("the param groups' learning rates are %.3g-%.3g", lo, hi);
  else if (std::isfinite(lr))
    out = format("the learning rate is %.3g", lr);
  else
    return {};
  return out + lr_range_note(k, lr, lo, hi);
}

}  // namespace core::detail
}  // namespace losslens
