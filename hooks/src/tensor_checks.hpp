#pragma once
// Argument validation shared by the loss kernels and the red-flag checker: every failure
// throws losslens::error naming the function, the argument, what was expected and what came.

#include <string>
#include <string_view>

#include <ATen/core/Tensor.h>

#include "losslens/torch/losses.hpp"

namespace losslens::hooks::detail {

/// "Float [8, 3] on cpu", or "an undefined tensor".
std::string describe(const at::Tensor& t);

/// Throws losslens::error("losslens::<fn>: <message>").
[[noreturn]] void fail(std::string_view fn, const std::string& message);

/// Throws unless t is defined and floating (float16/bfloat16/float32/float64).
void require_floating(const at::Tensor& t, std::string_view fn, std::string_view arg);

/// Throws unless a and b have the same shape.
void require_same_shape(const at::Tensor& a, const at::Tensor& b, std::string_view fn,
                        std::string_view a_name, std::string_view b_name);

/// require_floating on both, then require_same_shape: the inputs of an element-wise loss.
void require_floating_pair(const at::Tensor& a, const at::Tensor& b, std::string_view fn,
                           std::string_view a_name, std::string_view b_name);

/// Throws unless `from` broadcasts to `to` (numpy rules, `to` keeps its shape).
void require_broadcastable(const at::Tensor& from, const at::Tensor& to, std::string_view fn,
                           std::string_view from_name, std::string_view to_name);

/// Validates class-index targets for logits [N, C, d1...]: floating logits with dim >= 2 and
/// C >= 2, integer targets [N, d1...]. A float target shaped like the logits is called out as
/// one-hot or probabilities with the argmax fix.
void require_class_target(const at::Tensor& logits, const at::Tensor& target, std::string_view fn);

/// Optional per-class tensor (class weights or alpha): undefined, or 1-D with C elements.
void require_per_class(const at::Tensor& w, std::int64_t num_classes, std::string_view fn,
                       std::string_view arg);

/// Applies a reduction to per-element losses.
at::Tensor reduce(const at::Tensor& per_element, loss_reduction reduction);

/// num / den where den > 0, else 0 (with zero gradient): a mean over nothing is 0.
at::Tensor ratio_or_zero(const at::Tensor& num, const at::Tensor& den);

}  // namespace losslens::hooks::detail
