#include "grad_norms.hpp"

#include <cmath>
#include <limits>

#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>

namespace losslens::hooks::detail {

namespace {
template <class T>
double sum_sq(const T* p, std::int64_t n) noexcept {
  // Four independent accumulators so the loop vectorises and pipelines.
  double a = 0, b = 0, c = 0, d = 0;
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += double(p[i]) * double(p[i]);
    b += double(p[i + 1]) * double(p[i + 1]);
    c += double(p[i + 2]) * double(p[i + 2]);
    d += double(p[i + 3]) * double(p[i + 3]);
  }
  for (; i < n; ++i) a += double(p[i]) * double(p[i]);
  return (a + b) + (c + d);
}

bool plain_loop_ok(const at::Tensor& t) {
  return t.device().is_cpu() && t.is_contiguous() && !t.is_sparse() &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}
}  // namespace

double sum_of_squares_cpu(const at::Tensor& t) noexcept {
  if (t.scalar_type() == at::kFloat) return sum_sq(t.data_ptr<float>(), t.numel());
  return sum_sq(t.data_ptr<double>(), t.numel());
}

norm_engine::group& norm_engine::group_for(const at::Tensor& t) {
  for (auto& g : groups_)
    if (g.device == t.device() && g.dtype == t.scalar_type()) return g;
  groups_.push_back(group{t.device(), t.scalar_type(), {}, {}});  // first step of a new kind only
  return groups_.back();
}

norm_engine::device_batch& norm_engine::batch_for(c10::Device d) {
  for (auto& b : batches_)
    if (b.device == d) return b;
  batches_.push_back(device_batch{d, {}, {}});
  return batches_.back();
}

void norm_engine::compute(const std::vector<at::Tensor>& grads, std::vector<double>& norms,
                          std::vector<std::uint8_t>& has_norm,
                          const std::vector<const at::Tensor*>& scalars,
                          std::vector<double>& scalar_out) {
  for (auto& g : groups_) {
    g.tensors.clear();
    g.index.clear();
  }
  for (auto& b : batches_) {
    b.parts.clear();
    b.targets.clear();
  }
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    has_norm[i] = g.defined() ? 1 : 0;
    norms[i] = std::numeric_limits<double>::quiet_NaN();
    if (!g.defined()) continue;
    if (plain_loop_ok(g) && g.numel() <= small_numel) {
      norms[i] = std::sqrt(sum_of_squares_cpu(g));
      continue;
    }
    auto& grp = group_for(g);
    grp.tensors.push_back(g);
    grp.index.push_back(i);
  }
  for (auto& grp : groups_) {
    if (grp.tensors.empty()) continue;
    auto per_tensor = at::_foreach_norm(grp.tensors, 2);
    auto& b = batch_for(grp.device);
    b.parts.push_back(at::stack(per_tensor).to(at::kDouble));
    for (std::size_t k : grp.index) b.targets.push_back(&norms[k]);
  }
  for (std::size_t j = 0; j < scalars.size(); ++j) {
    const at::Tensor& s = *scalars[j];
    if (s.device().is_cpu() && s.numel() == 1 && plain_loop_ok(s)) {
      scalar_out[j] = s.scalar_type() == at::kFloat ? double(*s.data_ptr<float>())
                                                    : *s.data_ptr<double>();
      continue;
    }
    auto& b = batch_for(s.device());
    b.parts.push_back(s.detach().reshape({1}).to(at::kDouble));
    b.targets.push_back(&scalar_out[j]);
  }
  for (auto& b : batches_) {
    if (b.parts.empty()) continue;
    // One host copy per device for every number of this step.
    at::Tensor host = (b.parts.size() == 1 ? b.parts[0] : at::cat(b.parts)).to(at::kCPU).contiguous();
    const double* v = host.data_ptr<double>();
    for (std::size_t k = 0; k < b.targets.size(); ++k) *b.targets[k] = v[k];
  }
}

}  // namespace losslens::hooks::detail
