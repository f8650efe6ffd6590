// A regression on Fashion-MNIST with targets on their raw scale: predict an image's total ink
// (the sum of its 0-255 pixel values, ~10^4-10^5) from the scaled image. losslens reports the
// unnormalised targets with the mean and std to standardise with; --standardize applies them.
//
//   regression_targets [--standardize] [--steps 300] [--db runs.db]

#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include "fmnist.hpp"
#include "report_util.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"
#include "losslens/torch/monitor.hpp"

namespace F = torch::nn::functional;

namespace {
const char* usage =
    "usage: regression_targets [--standardize] [--steps N] [--db PATH] [--data DIR]\n"
    "                          [--findings-json F]\n"
    "\n"
    "Predicts each image's total ink (sum of 0-255 pixels) with a 784-64-1 MLP and MSE.\n"
    "  --standardize   train on (target - mean) / std instead of the raw values\n";

struct regImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  regImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2->forward(torch::relu(fc1->forward(x))).squeeze(1);
  }
};
TORCH_MODULE(reg);
}  // namespace

int main(int argc, char** argv) {
  bool standardize = false;
  int steps = 300;
  std::string db = "runs.db", findings_json, data_dir = losslens::examples::default_fmnist_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "regression_targets: %s needs a value\n\n%s", a.c_str(), usage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (a == "--standardize")
      standardize = true;
    else if (a == "--steps")
      steps = std::atoi(value().c_str());
    else if (a == "--db")
      db = value();
    else if (a == "--data")
      data_dir = value();
    else if (a == "--findings-json")
      findings_json = value();
    else {
      std::fprintf(stderr, "regression_targets: unknown option %s\n\n%s", a.c_str(), usage);
      return 2;
    }
  }
  if (steps <= 0) {
    std::fprintf(stderr, "regression_targets: --steps must be > 0\n");
    return 2;
  }
  try {
    torch::manual_seed(1);
    const auto data = losslens::examples::load_fmnist(data_dir, "train", 20000);
    const auto ink = (data.images * 255.0).sum(1);  // raw targets, ~1e4-1e5
    const double mean = ink.mean().item<double>(), std = ink.std().item<double>();
    const auto targets = standardize ? (ink - mean) / std : ink;
    std::printf("targets: mean %.0f, std %.0f%s\n", mean, std,
                standardize ? " (standardised for training)" : " (raw)");

    reg model;
    torch::optim::Adam opt(model->parameters(), 1e-3);
    losslens::attach_options ao;
    ao.run = standardize ? "regression-standardized" : "regression-raw";
    ao.db = db;
    ao.tasks = {"ink"};
    auto lens = losslens::attach(model, opt, ao);
    const std::int64_t n = data.images.size(0);
    for (int step = 0; step < steps; ++step) {
      auto idx = torch::randint(0, n, {128});
      auto x = data.images.index_select(0, idx);
      auto y = targets.index_select(0, idx);
      opt.zero_grad();
      auto pred = model->forward(x);
      auto loss = F::mse_loss(pred, y);
      loss.backward();
      opt.step();
      lens.step({{"ink", loss}}, loss);
      lens.check_regression("ink", pred, y);
      if (step % 100 == 0 || step + 1 == steps)
        std::printf("step %4d  mse %.4g  (rmse in ink units %.0f)\n", step, loss.item<double>(),
                    std::sqrt(loss.item<double>()) * (standardize ? std : 1.0));
    }
    lens.wait_idle();
    lens.detach();
    std::printf("\n");
    const auto findings = lens.findings();
    losslens::examples::report_findings(findings, steps, findings_json);
    return 0;
  } catch (const losslens::error& e) {
    std::fprintf(stderr, "regression_targets: %s\n", e.what());
    return 1;
  }
}
