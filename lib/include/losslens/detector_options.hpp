#pragma once
/// \file detector_options.hpp
/// Every detector's parameters, with the defaults documented in docs/detectors.md.

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

namespace losslens {

/// The optimizer a run uses, for the learning-rate ranges that advice quotes (docs/detectors.md,
/// "Learning rates in advice"). attach() sets it from the torch optimizer's type.
enum class optimizer_kind { unknown, sgd, adam, adamw, rmsprop, adagrad, lbfgs };
/// "unknown", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS".
const char* to_string(optimizer_kind k) noexcept;
/// The optimizer to_string names, compared case-insensitively ("adamw" is AdamW); nothing for
/// another name, "unknown" included. Never throws.
std::optional<optimizer_kind> parse_optimizer_kind(std::string_view name) noexcept;

/// Parameters of the streaming detectors. Steps are counted in samples seen by the analyzer.
struct detector_options {
  /// An open finding that keeps growing is re-published (message rebuilt, listener called) at
  /// most once per this many steps; new findings and severity changes are published at once.
  int update_interval = 16;
  /// As it ages, at most once per an eighth of its age, and at least once per this many steps
  /// (>= update_interval): a plateau open for 20000 steps is re-described every 256, not 16.
  int max_update_interval = 256;

  /// The run's optimizer: advice that mentions the learning rate adds the range the
  /// methodology gives for it (adaptive optimizers: 1e-6 to 1e-2). unknown: no range.
  optimizer_kind optimizer = optimizer_kind::unknown;

  /// `non_finite`: NaN/Inf in a loss or grad norm.
  struct non_finite_t {
    bool enabled = true;
    std::int64_t merge_gap = 50;  ///< steps of finite values that end an episode
    /// A non-finite gradient norm beside a finite loss is held back until the loss has stayed
    /// finite for this many rows after the last such norm: then the update was skipped (a
    /// dynamic loss scaler's overflow step, fp16) and the episode is info (`skipped_update`).
    /// 0: never (every one is an error at once).
    int skip_confirm = 8;
    /// More non-finite gradient norms in a row than this is no scaler lowering its scale (from
    /// 2^16 to 1 is 16 halvings): an error.
    int skip_max_run = 16;
  } non_finite;

  /// `loss_spike`: robust z-score of the loss against a rolling median/MAD.
  struct loss_spike_t {
    bool enabled = true;
    int window = 64;                ///< values in the rolling median/MAD
    int warmup = 50;                ///< values seen before the rule may fire
    double z_threshold = 6.0;       ///< (loss - median) / (1.4826 MAD) at or above this is a spike
    double min_ratio = 2.0;         ///< and loss / median at least this (guards near-zero MAD)
    int recent_window = 32;         ///< the loss must also exceed the largest of this many ...
    double recent_max_ratio = 1.2;  ///< ... previous losses by this factor (rules out swings)
    int grad_lookback = 5;          ///< a grad-norm spike this many steps before is cited
    std::int64_t merge_gap = 10;
    std::int64_t unstable_lookback = 64;  ///< quiet within this many steps of an oscillation
                                          ///< or divergence finding
    /// The run's own tail: once `tail_warmup` values are seen, z must also reach tail_factor x
    /// the 99th percentile of the z-scores of the last `tail_window` losses (near zero loss a
    /// batch with one hard example is routinely 100x the median).
    int tail_window = 512;
    int tail_warmup = 128;
    double tail_factor = 2.0;
    /// A spike is reported once the loss had this many steps to come back: back within 1.5x
    /// its median from before (plus 5% of the run's progress) it was a transient (info), and
    /// without that after max_wait more steps it keeps its severity.
    std::int64_t confirm_steps = 32;
    std::int64_t max_wait = 480;  ///< ... and waits this much longer for it to recover
    double heavy_tail_z = 4;      ///< ... but only when the run's p99 z-score is at least this
                                  ///< (heavy-tailed losses); otherwise a spike is reported at once
    double min_range_fraction = 0.25;  ///< loss - median at least this x the run's progress
    /// A smaller jump that lasts (an LM's loss from 3.3 to 4.8 for 60 steps, after falling from
    /// 10.8: below min_ratio and min_range_fraction) is a spike when the loss stays above half
    /// the jump for `sustained_hits` of the `sustained_steps` steps after it, the jump (which
    /// passes z and recent_max_ratio like any spike) is at least `sustained_range_fraction` x
    /// the run's progress, and the learning rate was not raised 2x or more in one step within
    /// `lr_raise_lookback` steps before it (a warm restart's jump is the schedule's).
    int sustained_steps = 8;
    int sustained_hits = 6;
    double sustained_range_fraction = 0.05;
    std::int64_t lr_raise_lookback = 256;
    /// Nor is it a spike when the steps after the jump move this many times more than the
    /// steps before it did (median |log change| of the first 16 after, of the recent_window
    /// before): a series that smooth was averaged, and a running mean of the epoch so far
    /// (Keras' batch-level loss, a printed running_loss / i) restarts with one batch's loss
    /// at each epoch. 0: off.
    double averaged_roughness_ratio = 10;
  } loss_spike;

  /// `divergence`: smoothed loss rises well above its best and stays there.
  struct divergence_t {
    bool enabled = true;
    double ema_alpha = 0.05;          ///< smoothing of the loss
    int warmup = 50;                  ///< values before the best is tracked
    double rise_ratio = 1.5;          ///< smoothed / best at or above this ...
    double min_rise_fraction = 0.25;  ///< ... and (smoothed - best) >= this x the initial level
    int patience = 25;                ///< steps the condition must hold
    double noise_z = 6;               ///< the rise must also exceed this x the smoothed loss's
                                      ///< own noise (batch noise x sqrt(alpha / (2 - alpha)))
  } divergence;

  /// `plateau`: ReduceLROnPlateau semantics on the smoothed loss.
  struct plateau_t {
    bool enabled = true;
    bool mode_max = false;      ///< false: lower is better (a loss)
    bool threshold_rel = true;  ///< threshold relative (true) or absolute (false)
    double threshold = 1e-2;    ///< improvement needed to count as better
    int patience = 500;         ///< steps without improvement
    int cooldown = 200;         ///< steps after an episode before a new one may start
    double ema_alpha = 0.01;
    int warmup = 100;
    double max_rise = 0.5;           ///< smoothed loss more than this x |best| above best: not flat
    double patience_fraction = 0.1;  ///< patience is at least this x the steps seen so far
  } plateau;

  /// `oscillation`: structure that batch noise lacks: detrended levels anti-correlated from one
  /// step to the next (bouncing), or swings that grew while the loss stopped improving.
  struct oscillation_t {
    bool enabled = true;
    int window = 128;                 ///< losses per evaluated window
    int stride = 8;                   ///< evaluate every this many steps
    double max_lag1_autocorr = -0.4;  ///< detrended levels; i.i.d. noise: 0 +- 1/sqrt(window)
    /// A bounce that began within the window: its lag-1 autocorrelation x sqrt(its length)
    /// must be <= -recent_z, with swings min_growth x the earlier ones.
    double recent_z = 3.0;
    double min_amplitude_ratio = 0.5;  ///< mean |diff| / mean |loss|
    double max_trend_ratio = 0.25;     ///< |net change| / total variation in the window
    double min_growth = 3.0;           ///< spread now / spread one window earlier, for growth
    double min_range_fraction = 0.05;  ///< mean |diff| at least this x the run's progress
  } oscillation;

  /// `chance_level`: loss stuck near ln C (or ln 2 for binary) after warm-up. The loss is the
  /// class loss (class_loss_index in sample.hpp): with several tasks, the class task's own.
  struct chance_level_t {
    bool enabled = true;
    /// 0 = the count of the schema's class task (the monitor's check_class_logits), else
    /// unknown: inferred from the level (see below); 2 = binary. Also initial_loss's C.
    int num_classes = 0;
    double inferred_tolerance = 0.01;  ///< with num_classes 0: |smoothed - ln k| <= this x ln k
    double tolerance = 0.03;           ///< smoothed >= (1 - tolerance) x ln C, and ...
    /// ... <= (1 + above_tolerance) x ln C: a model that collapsed after a blow-up sits at or a
    /// little above chance (its constant prediction is not exactly uniform).
    double above_tolerance = 0.1;
    int warmup = 200;
    int patience = 100;
    double ema_alpha = 0.05;
  } chance_level;

  /// `task_dominance`: one task's share of the weighted loss (or of the shared grad norm).
  struct task_dominance_t {
    bool enabled = true;
    double share_threshold = 0.9;
    int patience = 50;
    double ema_alpha = 0.1;           ///< smoothing of the shares
    double scale_ratio = 100;         ///< raw loss scales this far apart, with the large one over
                                      ///< share_threshold of the total, are reported at once
    double converged_fraction = 0.3;  ///< no dominance once every other task is below this x
                                      ///< its initial loss (they trained)
    int warmup = 10;
  } task_dominance;

  /// `task_stalled`: one task flat while the total falls.
  struct task_stalled_t {
    bool enabled = true;
    int window = 200;               ///< steps compared
    double max_task_change = 0.02;  ///< relative change of the task's smoothed loss
    double min_total_drop = 0.10;   ///< relative drop of the smoothed total
    double min_remaining = 0.5;     ///< task still >= this x its initial level (not converged)
    /// A task weighted at most this x the largest task weight (reported, or read off the
    /// total) is an auxiliary loss on purpose (MoE load balancing, a z-loss): not reported.
    double auxiliary_weight = 0.1;
    double ema_alpha = 0.05;
    int warmup = 50;
  } task_stalled;

  /// `exploding_gradients`: grad norm far above its running median.
  struct exploding_t {
    bool enabled = true;
    int window = 128;          ///< rolling median window of the total grad norm
    int warmup = 5;            ///< norms seen before the rule may fire (early blow-ups count)
    double ratio = 10;         ///< norm / running median at or above this
    double error_ratio = 100;  ///< ... at or above this is an error
    double abs_max = std::numeric_limits<double>::infinity();  ///< fires above this too
    std::int64_t merge_gap = 10;
    /// The run's own tail: once `tail_warmup` norms are seen, a spike must also reach
    /// (p99 / median)^tail_factor over the last `tail_window` norms (heavy-tailed norms near
    /// zero loss reach 10x their median routinely; a blow-up is far beyond).
    int tail_window = 512;
    int tail_warmup = 128;
    double tail_factor = 2.0;
    /// A persistent rise: the median of the last `rise_window` norms at or above `ratio` x the
    /// running median, for `rise_patience` steps.
    int rise_window = 16;
    int rise_patience = 8;
    /// As loss_spike.confirm_steps: norms back within 3x their median from before (plus 5% of
    /// the run's early norm) make the episode a transient (info).
    std::int64_t confirm_steps = 32;
    std::int64_t max_wait = 480;
    double heavy_tail_ratio = 3;  ///< held back only when p99 / median of the norms >= this
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

  /// `call_order`: lens.step() reads the gradients after they were cleared (hooks only).
  struct call_order_t {
    bool enabled = true;
    int patience = 3;  ///< consecutive steps
  } call_order;

  /// `initial_loss`: the loss before training against what an untrained model scores: ln C for
  /// C-class cross-entropy, ln 2 for binary cross-entropy per element, or `expected`.
  struct initial_loss_t {
    bool enabled = true;
    /// The level an untrained model's total loss should have (e.g. 1 for MSE on standardised
    /// targets); 0 = from chance_level.num_classes (ln C), else from the class count the
    /// monitor saw in check_class_logits / check_binary_logits before the first step.
    double expected = 0;
    double high_ratio = 2.0;  ///< the first loss at or above this x expected: far above
    double low_ratio = 0.1;   ///< the median of the losses of steps window-4..window-1 at or
                              ///< below this x expected: far below
    int window = 20;
  } initial_loss;

  /// `parameters_not_updated`: gradients arrive but the parameters do not change (hooks only).
  struct not_updated_t {
    bool enabled = true;
    int patience = 5;  ///< consecutive optimizer steps
  } parameters_not_updated;

  /// `clipping_saturated`: the gradient is clipped on most steps, so the clip no longer
  /// catches outliers but rescales every update.
  struct clipping_t {
    bool enabled = true;
    int window = 200;           ///< steps over which the clipped fraction is measured
    double min_fraction = 0.5;  ///< clipped on at least this fraction of the window
    /// A norm within this relative distance of the pinned value counts as clipped (when the
    /// trainer does not report the norm before clipping).
    double pin_tolerance = 1e-4;
    /// warning (else info) when the trainer reports the norm before clipping and its median
    /// over the window is at least this x max_norm: the clip removes most of every gradient.
    double warning_ratio = 10;
  } clipping_saturated;

  /// `eval_mode_training`: training steps taken with the model in eval() mode (hooks only).
  struct eval_mode_t {
    bool enabled = true;
    int patience = 3;
  } eval_mode;
};

}  // namespace losslens
