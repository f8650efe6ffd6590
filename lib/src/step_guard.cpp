#include "losslens/step_guard.hpp"

#include <cmath>

#include "detail/rolling.hpp"

namespace losslens {

std::string_view to_string(step_decision d) noexcept {
  switch (d) {
    case step_decision::proceed:
      return "proceed";
    case step_decision::skip_non_finite:
      return "skip_non_finite";
    case step_decision::skip_loss_spike:
      return "skip_loss_spike";
    case step_decision::skip_grad_spike:
      return "skip_grad_spike";
  }
  return "unknown";
}

step_guard::step_guard(guard_options options)
    : o_(options),
      loss_(std::make_unique<core::detail::robust_baseline>(std::size_t(std::max(8, o_.window)))),
      grad_(std::make_unique<core::detail::robust_baseline>(std::size_t(std::max(8, o_.window)))) {}
step_guard::~step_guard() = default;
step_guard::step_guard(step_guard&&) noexcept = default;
step_guard& step_guard::operator=(step_guard&&) noexcept = default;

namespace {
bool spike(const core::detail::robust_baseline& b, double x, double ratio, double z, int warmup) {
  if (b.count() < static_cast<std::size_t>(warmup)) return false;
  const double m = b.median();
  return m > 0 && x >= ratio * m && b.z(x) >= z;
}
}  // namespace

step_decision step_guard::check(double loss, double grad_norm, bool has_grad_norm) noexcept {
  step_decision d = step_decision::proceed;
  if (!std::isfinite(loss) || (has_grad_norm && !std::isfinite(grad_norm)))
    d = step_decision::skip_non_finite;
  else if (spike(*loss_, loss, o_.loss_ratio, o_.z_threshold, o_.warmup))
    d = step_decision::skip_loss_spike;
  else if (has_grad_norm && spike(*grad_, grad_norm, o_.grad_ratio, o_.z_threshold, o_.warmup))
    d = step_decision::skip_grad_spike;

  // Non-finite values never enter the baselines; spikes do (the median ignores isolated ones).
  if (std::isfinite(loss)) loss_->push(loss);
  if (has_grad_norm && std::isfinite(grad_norm)) grad_->push(grad_norm);

  if (d == step_decision::proceed) consecutive_skips_ = 0;
  if (d == step_decision::proceed || d == step_decision::skip_non_finite) return d;
  // A lasting new level is not a spike: stop skipping after a few in a row.
  if (++consecutive_skips_ > o_.max_consecutive_skips) return step_decision::proceed;
  return d;
}

}  // namespace losslens
