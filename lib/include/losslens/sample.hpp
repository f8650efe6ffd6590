#pragma once
/// \file sample.hpp
/// One training step's numbers, as the detectors see them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace losslens {

/// Names of the per-task and per-parameter series that a sample's vectors refer to by index.
/// Fixed when a monitor or analyzer is created, so that a sample carries numbers only.
struct sample_schema {
  std::vector<std::string> tasks;   ///< task names; series "loss/<task>"
  std::vector<std::string> params;  ///< parameter or layer names; series "grad_norm/<name>"
};

/// One step's numbers. A missing number is an empty optional; NaN and Inf are values (and are
/// exactly what the non_finite detector looks for). Vectors are indexed like the schema's names
/// and may be shorter than the schema (the rest count as missing).
struct sample {
  std::int64_t step = 0;                               ///< optimizer step, strictly increasing
  double wall_time = 0;                                ///< seconds (any fixed origin)
  std::optional<double> loss;                          ///< total (weighted) loss
  std::vector<std::optional<double>> task_losses;      ///< unweighted per-task losses
  std::vector<double> task_weights;                    ///< effective task weights; empty = all 1
  std::vector<std::optional<double>> task_grad_norms;  ///< per-task grad norm on shared params
  std::optional<double> grad_norm;                     ///< total L2 gradient norm
  std::vector<std::optional<double>> param_grad_norms; ///< per-parameter (or layer) grad norms
  std::int32_t first_non_finite_param = -1;            ///< index of the first parameter whose
                                                       ///< gradient was non-finite (hooks know
                                                       ///< the order); -1 = unknown or none
  std::optional<double> lr;                            ///< learning rate (first param group)
  std::optional<double> lr_min, lr_max;                ///< the smallest and largest LR over the
                                                       ///< optimizer's param groups, when it
                                                       ///< has several
  std::optional<double> accuracy;                      ///< batch accuracy in [0, 1]

  /// Per-parameter red flags seen by the gradient hooks this step (bits of param_flag);
  /// empty when no hooks report them (e.g. a CSV).
  std::vector<std::uint8_t> param_flags;
  bool eval_mode = false;  ///< the model was in eval() mode during this training step
};

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
};

}  // namespace losslens
