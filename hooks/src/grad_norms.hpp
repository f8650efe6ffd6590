#pragma once
// Per-parameter gradient norms and scalar read-back with at most one host copy per device.

#include <cstddef>
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace losslens::hooks::detail {

/// Reads the L2 norm of each gradient and a few scalars (losses) per step. Contiguous CPU
/// float/double tensors are summed by sum_of_squares() (no dispatcher, no allocation); the rest
/// go through at::_foreach_norm grouped by device and dtype (as clip_grad_norm_ does), and all
/// the numbers of one device, scalars included, come back to the host in a single copy.
///
/// Thread-safety: one thread (the training thread). Reuses its buffers between steps.
class norm_engine {
 public:
  /// grads[i] may be undefined (norm NaN and has_norm[i] = 0). scalars[j] must hold one element
  /// (any floating dtype, any device); their values go to scalar_out[j]. Where (*skip)[i] is
  /// non-zero, grads[i] is not read and norms[i], has_norm[i] are left as they are.
  void compute(const std::vector<at::Tensor>& grads, std::vector<double>& norms,
               std::vector<std::uint8_t>& has_norm, const std::vector<const at::Tensor*>& scalars,
               std::vector<double>& scalar_out, const std::vector<std::uint8_t>* skip = nullptr);

 private:
  struct group {
    c10::Device device;
    c10::ScalarType dtype;
    std::vector<at::Tensor> tensors;
    std::vector<std::size_t> index;
  };
  struct device_batch {
    c10::Device device;
    std::vector<at::Tensor> parts;  // double tensors to concatenate
    std::vector<double*> targets;   // where each element goes, in order
  };
  group& group_for(const at::Tensor& t);
  device_batch& batch_for(c10::Device d);

  std::vector<group> groups_;
  std::vector<device_batch> batches_;
};

/// Sum of squares of p[0, n), accumulated in double: AVX2 + FMA (four floats or doubles widened
/// per instruction, 16 lanes of partial sums) when the CPU has them, else a scalar loop with four
/// accumulators. NaN and Inf propagate. Reads the memory once; no allocation.
double sum_of_squares(const float* p, std::int64_t n) noexcept;
double sum_of_squares(const double* p, std::int64_t n) noexcept;

/// True for a tensor sum_of_squares_cpu() reads: dense, contiguous, on the CPU, float or double.
bool sum_of_squares_ok(const at::Tensor& t) noexcept;
/// sum_of_squares() over a tensor for which sum_of_squares_ok() holds.
double sum_of_squares_cpu(const at::Tensor& t) noexcept;

}  // namespace losslens::hooks::detail
