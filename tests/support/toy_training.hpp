#pragma once
// Small real LibTorch training loops for the hook tests: a learnable 10-class problem, a
// two-layer MLP, the usual loop, and helpers to pick findings.

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/optimizer.h>

#include "losslens/torch/monitor.hpp"

namespace losslens::testing::toy {

/// A learnable 10-class problem: labels from a fixed random linear map of the inputs.
struct toy_data {
  torch::Tensor x, y;
  explicit toy_data(std::int64_t n = 2048, torch::Dtype dtype = torch::kFloat) {
    torch::manual_seed(0);
    x = torch::randn({n, 20}, dtype);
    auto w = torch::randn({20, 10}, dtype);
    y = x.matmul(w).argmax(1);
  }
  std::pair<torch::Tensor, torch::Tensor> batch(std::int64_t i, std::int64_t bs = 64) const {
    const auto n = x.size(0);
    const auto start = (i * bs) % (n - bs);
    return {x.slice(0, start, start + bs), y.slice(0, start, start + bs)};
  }
};

struct mlpImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  bool detach_hidden = false;
  mlpImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(20, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto h = torch::relu(fc1->forward(x));
    if (detach_hidden) h = h.detach();  // the bug: fc1 never gets a gradient
    return fc2->forward(h);
  }
};
TORCH_MODULE(mlp);

inline std::vector<finding> kinds(const monitor& m, const std::string& kind) {
  std::vector<finding> out;
  for (auto& f : m.findings())
    if (f.kind == kind) out.push_back(f);
  return out;
}
inline std::vector<finding> warnings(const monitor& m) {
  std::vector<finding> out;
  for (auto& f : m.findings())
    if (f.level >= severity::warning) out.push_back(f);
  return out;
}
/// What lens.step() is given at step i in place of the loss (empty: the loss itself).
using reported_loss = std::function<torch::Tensor(int, const torch::Tensor&)>;
/// NaN reported instead of the loss at steps first..last (the model still trains on the loss).
inline reported_loss nan_at(int first, int last) {
  return [=](int i, const torch::Tensor& loss) {
    return i >= first && i <= last ? loss * std::numeric_limits<float>::quiet_NaN() : loss;
  };
}

/// n steps of the usual loop: zero_grad, forward, backward, step, lens.step; `each` sees the
/// step index and the loss; `report` picks what lens.step() sees.
inline void train(mlp& model, torch::optim::Optimizer& opt, monitor& lens, const toy_data& data,
                  int n, const std::function<void(int, const torch::Tensor&)>& each = {},
                  const reported_loss& report = {}) {
  for (int i = 0; i < n; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    lens.step(report ? report(i, loss) : loss);
    if (each) each(i, loss);
  }
}

/// train() that returns every step's loss (to label a run by looking at its loss).
inline std::vector<double> train_losses(mlp& model, torch::optim::Optimizer& opt, monitor& lens,
                                        const toy_data& data, int n) {
  std::vector<double> losses;
  losses.reserve(std::size_t(n));
  train(model, opt, lens, data, n,
        [&](int, const torch::Tensor& loss) { losses.push_back(loss.item<double>()); });
  return losses;
}

inline attach_options quiet(std::string run) {
  attach_options o;
  o.run = std::move(run);
  o.log_findings = false;
  o.detectors.chance_level.num_classes = 10;
  return o;
}

}  // namespace losslens::testing::toy
