#pragma once
/// \file detector_options.hpp
/// Every detector's parameters, with the defaults documented in docs/detectors.md.

#include <cstdint>
#include <limits>

namespace losslens {

/// Parameters of the streaming detectors. Steps are counted in samples seen by the analyzer.
struct detector_options {
  /// An open finding that keeps growing is re-published (message rebuilt, listener called) at
  /// most once per this many steps; new findings and severity changes are published at once.
  int update_interval = 16;

  /// `non_finite`: NaN/Inf in a loss or grad norm.
  struct non_finite_t {
    bool enabled = true;
    std::int64_t merge_gap = 50;  ///< steps of finite values that end an episode
  } non_finite;

  /// `loss_spike`: robust z-score of the loss against a rolling median/MAD.
  struct loss_spike_t {
    bool enabled = true;
    int window = 64;            ///< values in the rolling median/MAD
    int warmup = 50;            ///< values seen before the rule may fire
    double z_threshold = 6.0;   ///< (loss - median) / (1.4826 MAD) at or above this is a spike
    double min_ratio = 2.0;     ///< and loss / median at least this (guards near-zero MAD)
    int recent_window = 32;     ///< the loss must also exceed the largest of this many ...
    double recent_max_ratio = 1.2;  ///< ... previous losses by this factor (rules out swings)
    int grad_lookback = 5;      ///< a grad-norm spike this many steps before is cited
    std::int64_t merge_gap = 10;
    std::int64_t unstable_lookback = 64;  ///< quiet within this many steps of an oscillation
                                          ///< or divergence finding
  } loss_spike;

  /// `divergence`: smoothed loss rises well above its best and stays there.
  struct divergence_t {
    bool enabled = true;
    double ema_alpha = 0.05;          ///< smoothing of the loss
    int warmup = 50;                  ///< values before the best is tracked
    double rise_ratio = 1.5;          ///< smoothed / best at or above this ...
    double min_rise_fraction = 0.25;  ///< ... and (smoothed - best) >= this x the initial level
    int patience = 25;                ///< steps the condition must hold
  } divergence;

  /// `plateau`: ReduceLROnPlateau semantics on the smoothed loss.
  struct plateau_t {
    bool enabled = true;
    bool mode_max = false;        ///< false: lower is better (a loss)
    bool threshold_rel = true;    ///< threshold relative (true) or absolute (false)
    double threshold = 1e-2;      ///< improvement needed to count as better
    int patience = 500;           ///< steps without improvement
    int cooldown = 200;           ///< steps after an episode before a new one may start
    double ema_alpha = 0.01;
    int warmup = 100;
    double max_rise = 0.5;        ///< smoothed loss more than this x |best| above best: not flat
  } plateau;

  /// `oscillation`: loss differences alternate in sign with an amplitude close to the level.
  struct oscillation_t {
    bool enabled = true;
    int window = 64;                  ///< losses per evaluated window
    int stride = 16;                  ///< evaluate every this many steps
    double min_sign_change_rate = 0.5;
    double max_lag1_autocorr = -0.25;
    double min_amplitude_ratio = 0.75;  ///< mean |diff| / mean |loss|
    double max_trend_ratio = 0.25;      ///< |net change| / total variation in the window
  } oscillation;

  /// `chance_level`: loss stuck near ln C (or ln 2 for binary) after warm-up.
  struct chance_level_t {
    bool enabled = true;
    int num_classes = 0;       ///< 0 = unknown: rule off; 2 = binary (ln 2)
    double tolerance = 0.03;   ///< |smoothed - ln C| <= tolerance x ln C
    int warmup = 200;
    int patience = 100;
    double ema_alpha = 0.05;
  } chance_level;

  /// `task_dominance`: one task's share of the weighted loss (or of the shared grad norm).
  struct task_dominance_t {
    bool enabled = true;
    double share_threshold = 0.9;
    int patience = 50;
    double ema_alpha = 0.1;     ///< smoothing of the shares
    double scale_ratio = 100;   ///< loss scales this far apart are called out
    int warmup = 10;
  } task_dominance;

  /// `task_stalled`: one task flat while the total falls.
  struct task_stalled_t {
    bool enabled = true;
    int window = 200;              ///< steps compared
    double max_task_change = 0.02; ///< relative change of the task's smoothed loss
    double min_total_drop = 0.10;  ///< relative drop of the smoothed total
    double min_remaining = 0.5;    ///< task still >= this x its initial level (not converged)
    double ema_alpha = 0.05;
    int warmup = 50;
  } task_stalled;

  /// `exploding_gradients`: grad norm far above its running median.
  struct exploding_t {
    bool enabled = true;
    int window = 128;        ///< rolling median window of the total grad norm
    int warmup = 5;          ///< norms seen before the rule may fire (early blow-ups count)
    double ratio = 10;       ///< norm / running median at or above this
    double error_ratio = 100;///< ... at or above this is an error
    double abs_max = std::numeric_limits<double>::infinity();  ///< fires above this too
    std::int64_t merge_gap = 10;
  } exploding;

  /// `vanishing_gradients`: total norm near zero, or a layer's norm negligible next to the rest.
  struct vanishing_t {
    bool enabled = true;
    double abs_min = 1e-8;      ///< total grad norm below this
    double layer_ratio = 1e-5;  ///< a parameter's norm below this x the largest one
    int patience = 20;
    int warmup = 10;
  } vanishing;

  /// `missing_zero_grad`: gradients accumulate across optimizer steps (hooks only).
  struct missing_zero_grad_t {
    bool enabled = true;
    int patience = 1;  ///< consecutive steps with stale gradients
  } missing_zero_grad;

  /// `dead_parameters`: parameters that require grad but receive none (hooks only).
  struct dead_parameters_t {
    bool enabled = true;
    int patience = 10;  ///< consecutive steps without a gradient
  } dead_parameters;

  /// `eval_mode_training`: training steps taken with the model in eval() mode (hooks only).
  struct eval_mode_t {
    bool enabled = true;
    int patience = 3;
  } eval_mode;
};

}  // namespace losslens
