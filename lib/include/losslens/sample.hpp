#pragma once
/// \file sample.hpp
/// One training step's numbers, as the detectors see them.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace losslens {

/// Names of the per-task and per-parameter series that a sample's vectors refer to by index.
/// Fixed when a monitor or analyzer is created, so that a sample carries numbers only.
struct sample_schema {
  std::vector<std::string> tasks;   ///< task names; series "loss/<task>"
  std::vector<std::string> params;  ///< parameter or layer names; series "grad_norm/<name>"
  /// The classification task whose logits losslens samples (the monitor's check_class_logits
  /// or check_binary_logits before the first step; "" = the run's only loss) and its class
  /// count (2 for binary). With classes > 0 a sample may carry that task's balanced accuracy
  /// and per-class recall (series "balanced_accuracy", "recall/<class>" for the first 64
  /// classes), and initial_loss expects ln(classes) on its loss. 0 = none.
  std::string class_task{};
  std::size_t classes = 0;
};

/// The loss a class count predicts a level for (initial_loss expects ln C of it, chance_level
/// watches it against ln C): the index in schema.tasks of schema.class_task when the run has
/// that task; of its only task when it has one and no class task is named; -1 (the total loss)
/// when it has no tasks; std::nullopt when the total mixes tasks and none of them is the class
/// task (a cross-entropy plus other losses has no predicted level). Pure; thread-safe.
std::optional<int> class_loss_index(const sample_schema& schema);

/// One step's numbers. A missing number is an empty optional; NaN and Inf are values (and are
/// exactly what the non_finite detector looks for). Vectors are indexed like the schema's names
/// and may be shorter than the schema (the rest count as missing).
struct sample {
  std::int64_t step = 0;                                ///< optimizer step, strictly increasing
  double wall_time = 0;                                 ///< seconds (any fixed origin)
  std::optional<double> loss;                           ///< total (weighted) loss
  std::vector<std::optional<double>> task_losses;       ///< unweighted per-task losses
  std::vector<double> task_weights;                     ///< effective task weights; empty = all 1
  std::vector<std::optional<double>> task_grad_norms;   ///< per-task grad norm on shared params
  std::optional<double> grad_norm;                      ///< total L2 gradient norm
  std::vector<std::optional<double>> param_grad_norms;  ///< per-parameter (or layer) grad norms
  std::int32_t first_non_finite_param = -1;             ///< index of the first parameter whose
                                                        ///< gradient was non-finite (hooks know
                                                        ///< the order); -1 = unknown or none
  std::optional<double> lr;                             ///< learning rate (first param group)
  std::optional<double> lr_min, lr_max;                 ///< the smallest and largest LR over the
                                                        ///< optimizer's param groups, when it
                                                        ///< has several
  std::optional<double> accuracy;                       ///< batch accuracy in [0, 1]
  /// Balanced accuracy (the mean of the per-class recalls) and each class's recall of the
  /// schema's class task, from the sampled logits (see sample_schema::classes); present on
  /// the steps where they were computed. class_recall holds the first 64 classes.
  std::optional<double> balanced_accuracy;
  std::vector<std::optional<double>> class_recall;
  /// Gradient clipping as the trainer reports it: the total norm before clipping (what
  /// clip_grad_norm_ returns) and the max_norm it clipped to.
  std::optional<double> clip_norm, max_norm;

  /// Per-parameter red flags seen by the gradient hooks this step (bits of param_flag);
  /// empty when no hooks report them (e.g. a CSV).
  std::vector<std::uint8_t> param_flags;
  bool eval_mode = false;  ///< the model was in eval() mode during this training step
};

/// Makes s a default sample with `tasks` task-loss and `params` parameter-norm slots, all
/// missing, reusing the memory of its vectors: a reader that refills one sample per step then
/// allocates only while a vector grows. Throws std::bad_alloc only.
inline void reset_sample(sample& s, std::size_t tasks, std::size_t params) {
  // Field by field: `s = sample{}` built and moved a whole sample, and readers call this once
  // per point. A member added to sample must be reset here too (hence the size check).
  static_assert(sizeof(void*) != 8 || sizeof(sample) == 320,
                "sample changed: reset the new member in reset_sample");
  s.step = 0;
  s.wall_time = 0;
  s.loss.reset();
  s.task_losses.assign(tasks, std::nullopt);
  s.task_weights.clear();
  s.task_grad_norms.clear();
  s.grad_norm.reset();
  s.param_grad_norms.assign(params, std::nullopt);
  s.first_non_finite_param = -1;
  s.lr.reset();
  s.lr_min.reset();
  s.lr_max.reset();
  s.accuracy.reset();
  s.balanced_accuracy.reset();
  s.class_recall.clear();
  s.clip_norm.reset();
  s.max_norm.reset();
  s.param_flags.clear();
  s.eval_mode = false;
}

/// Widens s.lr_min / s.lr_max to hold [lo, hi], the learning rates of some of the optimizer's
/// param groups (a log's `lr/<group>` series); a NaN or infinite bound is left out. Never throws.
inline void widen_lr_range(sample& s, double lo, double hi) noexcept {
  if (lo - lo == 0 && (!s.lr_min || lo < *s.lr_min)) s.lr_min = lo;  // x - x == 0: finite
  if (hi - hi == 0 && (!s.lr_max || hi > *s.lr_max)) s.lr_max = hi;
}

/// For a sample read from a log, once complete: when other param groups' LRs set its range,
/// the range holds s.lr (the first group's) too. Never throws.
inline void include_lr_in_range(sample& s) noexcept {
  if (s.lr && (s.lr_min || s.lr_max)) [[unlikely]]
    widen_lr_range(s, *s.lr, *s.lr);
}

/// Bits of sample::param_flags.
enum param_flag : std::uint8_t {
  /// backward added to a .grad still holding the previous step's non-zero gradient
  stale_grad = 1,
  /// the parameter requires grad but no gradient reached it this step
  no_grad = 2,
  /// backward reached the parameter since the previous step(), but its .grad was empty (or
  /// every such .grad zero) when step() read it: step() runs before backward or after
  /// zero_grad(); its norm is then left missing
  grad_cleared = 4,
  /// backward reached the parameter, yet its value did not change since the previous
  /// optimizer step (a checksum of its sampled values stayed, or its param group's learning
  /// rate is 0)
  not_updated = 8,
  /// ... and the optimizer does not hold it in any param group
  not_in_optimizer = 16,
  /// ... and its param group's learning rate is 0
  zero_lr = 32,
};

}  // namespace losslens
