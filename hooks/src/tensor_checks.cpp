#include "tensor_checks.hpp"

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>

#include "losslens/error.hpp"

namespace losslens::hooks::detail {

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string s = c10::toString(t.scalar_type());
  s += " [";
  for (std::int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  s += "] on " + t.device().str();
  return s;
}

void fail(std::string_view fn, const std::string& message) {
  throw losslens::error("losslens::" + std::string(fn) + ": " + message);
}

void require_floating(const at::Tensor& t, std::string_view fn, std::string_view arg) {
  if (!t.defined() || !t.is_floating_point())
    fail(fn,
         std::string(arg) + " must be a floating tensor (float32 or float64), got " + describe(t));
}

void require_same_shape(const at::Tensor& a, const at::Tensor& b, std::string_view fn,
                        std::string_view a_name, std::string_view b_name) {
  if (!a.defined() || !b.defined() || a.sizes() != b.sizes())
    fail(fn, std::string(b_name) + " must have the shape of " + std::string(a_name) + " (" +
                 describe(a) + "), got " + describe(b));
}

void require_floating_pair(const at::Tensor& a, const at::Tensor& b, std::string_view fn,
                           std::string_view a_name, std::string_view b_name) {
  require_floating(a, fn, a_name);
  require_floating(b, fn, b_name);
  require_same_shape(a, b, fn, a_name, b_name);
}

void require_broadcastable(const at::Tensor& from, const at::Tensor& to, std::string_view fn,
                           std::string_view from_name, std::string_view to_name) {
  bool ok = from.defined() && to.defined() && from.dim() <= to.dim();
  for (std::int64_t i = 1; ok && i <= from.dim(); ++i) {
    const auto f = from.size(from.dim() - i), t = to.size(to.dim() - i);
    ok = f == t || f == 1;
  }
  if (!ok)
    fail(fn, std::string(from_name) + " must broadcast to the shape of " + std::string(to_name) +
                 " (" + describe(to) + "), got " + describe(from));
}

void require_class_target(const at::Tensor& logits, const at::Tensor& target, std::string_view fn) {
  require_floating(logits, fn, "logits");
  if (logits.dim() < 2 || logits.size(1) < 2)
    fail(fn, "logits must be [N, C, ...] with C >= 2 classes, got " + describe(logits) +
                 " (for a single output use binary_cross_entropy_with_logits)");
  if (target.defined() && target.is_floating_point() && target.sizes() == logits.sizes())
    fail(fn, "target must hold int64 class indices [N, ...], got " + describe(target) +
                 " shaped like the logits (one-hot or probabilities?): pass target.argmax(1)");
  if (!target.defined() || target.is_floating_point() || target.scalar_type() == at::kBool ||
      target.is_complex())
    fail(fn, "target must be an integer tensor of class indices, got " + describe(target));
  bool ok = target.dim() == logits.dim() - 1 && target.size(0) == logits.size(0);
  for (std::int64_t i = 1; ok && i < target.dim(); ++i) ok = target.size(i) == logits.size(i + 1);
  if (!ok)
    fail(fn, "target must be [N, d1, ...] for logits [N, C, d1, ...] = " + describe(logits) +
                 ", got " + describe(target));
}

void require_per_class(const at::Tensor& w, std::int64_t num_classes, std::string_view fn,
                       std::string_view arg) {
  if (!w.defined()) return;
  if (w.dim() != 1 || w.size(0) != num_classes || !w.is_floating_point())
    fail(fn, std::string(arg) + " must be a floating [" + std::to_string(num_classes) +
                 "] tensor (one value per class), got " + describe(w));
}

at::Tensor reduce(const at::Tensor& per_element, loss_reduction reduction) {
  switch (reduction) {
    case loss_reduction::none:
      return per_element;
    case loss_reduction::sum:
      return per_element.sum();
    case loss_reduction::mean:
      break;
  }
  return per_element.mean();
}

at::Tensor ratio_or_zero(const at::Tensor& num, const at::Tensor& den) {
  auto positive = den > 0;
  return at::where(positive, num / at::where(positive, den, at::ones_like(den)),
                   at::zeros_like(num));
}

}  // namespace losslens::hooks::detail
