#pragma once
/// \file step_guard.hpp
/// A synchronous per-step check the training loop can act on (skip the update).

#include <cstdint>
#include <memory>
#include <string_view>

namespace losslens {

namespace core::detail {
class robust_baseline;
}

/// What the guard advises for this step.
enum class step_decision : std::uint8_t {
  proceed = 0,      ///< apply the update
  skip_non_finite,  ///< the loss or the gradient norm is NaN/Inf: skip optimizer.step()
  skip_loss_spike,  ///< the loss is far above its running median
  skip_grad_spike,  ///< the gradient norm is far above its running median
};

/// "proceed", "skip_non_finite", "skip_loss_spike" or "skip_grad_spike".
std::string_view to_string(step_decision d) noexcept;

/// Parameters of step_guard. A value is a spike when it is at least `*_ratio` times the running
/// median of the last `window` values and at least `z_threshold` robust z-scores (log scale)
/// above it.
struct guard_options {
  double loss_ratio = 3.0;
  double grad_ratio = 10.0;
  double z_threshold = 6.0;
  int window = 64;
  int warmup = 20;                ///< steps before spikes can be called
  int max_consecutive_skips = 5;  ///< after this many skips in a row, proceed (a new level)
};

/// Decides per step whether to skip the update, as large-model trainers skip spiking steps.
/// Cost: O(1) amortized, no allocation after construction.
/// Thread-safety: one thread (the training thread).
class step_guard {
 public:
  explicit step_guard(guard_options options = {});
  ~step_guard();
  step_guard(step_guard&&) noexcept;
  step_guard& operator=(step_guard&&) noexcept;

  /// Checks one step's loss and total gradient norm (has_grad_norm = false when the norm is
  /// not known; then only the loss is checked).
  step_decision check(double loss, double grad_norm, bool has_grad_norm = true) noexcept;

 private:
  guard_options o_;
  std::unique_ptr<core::detail::robust_baseline> loss_, grad_;
  int consecutive_skips_ = 0;
};

}  // namespace losslens
