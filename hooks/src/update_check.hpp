#pragma once
// Whether the optimizer changes the parameters that receive gradients: the training-thread half
// of parameters_not_updated. At each optimizer step it reads a checksum of up to 256 values of
// each CPU parameter (16 runs of 16 at scattered places) and its param group's learning rate; no
// locks, no allocation per step, never throws. Version counters cannot tell: LibTorch's C++
// optimizers update p.data(), whose version counter is not the parameter's. Parameters on other
// devices are not read (a host copy per step would cost a device sync): for them only the causes
// the optimizer itself shows (not in a param group, LR 0) are flagged.

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/optim/optimizer.h>

namespace losslens::hooks::detail {

/// Thread-safety: the training thread only.
class update_check {
 public:
  update_check(const std::vector<at::Tensor>& params, torch::optim::Optimizer& optimizer);

  /// At the end of an optimizer step (a lens.step() that closes an accumulation window): for
  /// each parameter whose gradient arrived with a norm above 0 (flags[i] has neither no_grad
  /// nor grad_cleared; a zero gradient leaves SGD's values as they are) but whose sampled
  /// values did not change since the previous window's end, or whose param group's learning
  /// rate is 0, ORs param_flag::not_updated (and not_in_optimizer / zero_lr) into flags[i].
  /// Unchanged values count only when most parameters with a gradient kept theirs (one of
  /// many is a sparse or tiny gradient, e.g. dead units' weights, not a skipped update).
  /// `skipped`: the previous step's guard decision said skip (the trainer may have left
  /// optimizer.step() out on purpose): nothing is flagged. Then remembers the checksums.
  void check(std::vector<std::uint8_t>& flags, const std::vector<std::optional<double>>& norms,
             bool skipped) noexcept;

 private:
  /// Which param group holds each parameter (-1: none), rebuilt when the groups change.
  void map_groups();
  std::size_t groups_signature() const noexcept;
  /// A weighted sum of up to 256 values of parameter i (all of a small one, else 16 runs of 16
  /// consecutive values at hashed places) (NaN: not read, e.g. not on the
  /// CPU, not float/double, not contiguous).
  double checksum(std::size_t i) const noexcept;

  const std::vector<at::Tensor>& params_;
  torch::optim::Optimizer& optimizer_;
  std::vector<double> sum_;
  std::vector<double> next_;  // this step's checksums (preallocated)
  std::vector<int> group_;
  std::vector<double> group_lr_;
  std::size_t signature_ = 0;
  bool has_baseline_ = false;
  bool has_lr_ = true;
};

}  // namespace losslens::hooks::detail
