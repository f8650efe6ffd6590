#pragma once
// Fused loss kernels with closed-form gradients, behind the public functions of losses.hpp:
// cross-entropy and multi-class focal loss (the softmax family), binary cross-entropy with
// logits, and Dice. Each is one custom autograd function:
//  - forward: the vectorised CPU loops of loss_simd.hpp for float32/float64 on the CPU, else
//    ATen ops (any device; half and bfloat16 are computed in float32). Both evaluate the same
//    cancellation-free formulas (docs/losses.md);
//  - backward: the analytic gradient, by the same two paths, written without cancellation;
//  - with create_graph (double backward) the gradient is instead taken by autograd through the
//    ATen formula, so higher derivatives exist (its first derivative is LibTorch-grade).
// Weights (class weights, pos_weight, weight, class_alpha) are constants: no gradient flows into
// them, as in LibTorch. losses.cpp validates the arguments before calling these.
//
// Thread-safety: pure functions; call from any thread.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "losslens/torch/losses.hpp"

namespace losslens::hooks::detail {

/// What a softmax-family loss computes over logits [R, C] and int64 targets [R].
struct softmax_loss_spec {
  const char* fn = "cross_entropy";  ///< for error messages
  at::Tensor class_weight;           ///< cross-entropy class weights [C], or undefined
  at::Tensor class_alpha;            ///< focal per-class alpha [C], or undefined
  double label_smoothing = 0;        ///< cross-entropy only
  bool focal = false;                ///< false: cross-entropy, true: focal loss
  double gamma = 0;                  ///< focal only
  std::int64_t ignore_index = -100;
  loss_reduction reduction = loss_reduction::mean;
};

/// Cross-entropy or focal loss of logits [R, C] against class indices [R]: [R] for reduction
/// none; mean divides by the summed target weights (cross-entropy) or the count (focal) of the
/// non-ignored rows, and is 0 when there are none. Throws losslens::error when a CPU target
/// lies outside [0, C) and is not ignore_index.
at::Tensor softmax_loss(const at::Tensor& logits, const at::Tensor& target,
                        const softmax_loss_spec& spec);

/// Binary cross-entropy with logits; pos_weight and weight broadcast to the logits (or are
/// undefined). Mean is over elements.
at::Tensor bce_with_logits(const at::Tensor& logits, const at::Tensor& target,
                           const at::Tensor& pos_weight, const at::Tensor& weight,
                           loss_reduction reduction);

/// Soft Dice loss per sample and channel, (sum p(1 - t) + t(1 - p)) / max(sum p + sum t +
/// smooth, eps): float masks with a sigmoid, or int64 targets [N, ...] with a softmax over dim 1.
/// Returns [N] ([N, d] logits) or [N, C] for reduction none.
at::Tensor dice(const at::Tensor& logits, const at::Tensor& target, double smooth, double eps,
                loss_reduction reduction);

/// While one is alive, kernels called on this thread use the portable ATen path even where the
/// vectorised loops apply (tests compare the two paths).
class portable_kernels_scope {
 public:
  portable_kernels_scope();
  ~portable_kernels_scope();
  portable_kernels_scope(const portable_kernels_scope&) = delete;
  portable_kernels_scope& operator=(const portable_kernels_scope&) = delete;
};

}  // namespace losslens::hooks::detail
