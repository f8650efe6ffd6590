// A shared encoder with two heads on Fashion-MNIST: classification (cross-entropy, ~2.3) and
// pixel reconstruction on raw 0-255 targets (MSE, ~1e4). Unweighted, reconstruction dominates
// the total and losslens reports task_dominance; uncertainty weighting or GradNorm balance it.
//
//   fmnist_multitask [--weighting none|fixed|uncertainty|gradnorm] [--steps 400] [--db runs.db]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include "fmnist.hpp"
#include "report_util.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"
#include "losslens/torch/losses.hpp"
#include "losslens/torch/monitor.hpp"
#include "losslens/torch/multitask.hpp"

namespace F = torch::nn::functional;

namespace {

const char* usage =
    "usage: fmnist_multitask [options]\n"
    "\n"
    "Shared encoder 784-256, a 10-class head and a 784-pixel reconstruction head trained on\n"
    "raw 0-255 pixel targets, with losslens attached.\n"
    "  --weighting W   none (plain sum, the default), fixed (1 and 1e-4), uncertainty\n"
    "                  (learned log-variances), gradnorm (on the shared encoder)\n"
    "  --steps N       training steps (default 400)\n"
    "  --batch N       batch size (default 128)\n"
    "  --limit N       training examples to load (default 20000)\n"
    "  --db PATH       run-history database (default runs.db; '' = none)\n"
    "  --run NAME      run name (default fmnist-multitask-<weighting>)\n"
    "  --data DIR      Fashion-MNIST directory\n"
    "  --findings-json F  also write the findings as JSON to F\n";

struct netImpl : torch::nn::Module {
  torch::nn::Linear encoder{nullptr}, cls{nullptr}, recon{nullptr};
  netImpl() {
    encoder = register_module("encoder", torch::nn::Linear(784, 256));
    cls = register_module("cls", torch::nn::Linear(256, 10));
    recon = register_module("recon", torch::nn::Linear(256, 784));
  }
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    auto h = torch::relu(encoder->forward(x));
    return {cls->forward(h), recon->forward(h)};
  }
};
TORCH_MODULE(net);

[[noreturn]] void bad_usage(const std::string& why) {
  std::fprintf(stderr, "fmnist_multitask: %s\n\n%s", why.c_str(), usage);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string weighting = "none", db = "runs.db", run, findings_json;
  std::string data_dir = losslens::examples::default_fmnist_dir;
  int steps = 400, batch = 128;
  std::int64_t limit = 20000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) bad_usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    } else if (a == "--weighting")
      weighting = value();
    else if (a == "--steps")
      steps = std::atoi(value().c_str());
    else if (a == "--batch")
      batch = std::atoi(value().c_str());
    else if (a == "--limit")
      limit = std::atoll(value().c_str());
    else if (a == "--db")
      db = value();
    else if (a == "--run")
      run = value();
    else if (a == "--data")
      data_dir = value();
    else if (a == "--findings-json")
      findings_json = value();
    else
      bad_usage("unknown option " + a);
  }
  if (weighting != "none" && weighting != "fixed" && weighting != "uncertainty" &&
      weighting != "gradnorm")
    bad_usage("--weighting must be none, fixed, uncertainty or gradnorm");
  if (steps <= 0 || batch <= 0) bad_usage("--steps and --batch must be > 0");
  if (run.empty()) run = "fmnist-multitask-" + weighting;

  try {
    torch::manual_seed(1);
    const auto data = losslens::examples::load_fmnist(data_dir, "train", limit);
    const std::int64_t n = data.images.size(0);
    net model;

    std::unique_ptr<losslens::task_weighting> w;
    if (weighting == "fixed")
      w = std::make_unique<losslens::fixed_weighting>(std::vector<double>{1.0, 1e-4});
    if (weighting == "uncertainty") w = std::make_unique<losslens::uncertainty_weighting>(2);
    if (weighting == "gradnorm")
      w = std::make_unique<losslens::gradnorm_weighting>(
          losslens::gradnorm_weighting::for_layer(*model, "encoder", 2));

    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model->parameters(), std::make_unique<torch::optim::AdamOptions>(1e-3));
    if (w && !w->parameters().empty())
      groups.emplace_back(w->parameters(), std::make_unique<torch::optim::AdamOptions>(1e-2));
    torch::optim::Adam opt(std::move(groups));

    losslens::attach_options ao;
    ao.run = run;
    ao.db = db;
    ao.tasks = {"cls", "recon"};
    ao.config_json = "{\"example\":\"fmnist_multitask\",\"weighting\":\"" + weighting + "\"}";
    auto lens = losslens::attach(model, opt, ao);

    std::vector<double> shares;
    for (int step = 0; step < steps; ++step) {
      auto idx = torch::randint(0, n, {batch});
      auto x = data.images.index_select(0, idx);
      auto y = data.labels.index_select(0, idx);
      auto target = x * 255.0;  // raw pixel values: the unnormalised task
      opt.zero_grad();
      auto [logits, recon] = model->forward(x);
      auto l_cls = losslens::cross_entropy(logits, y);
      auto l_rec = F::mse_loss(recon, target);
      auto total = w ? w->combine({l_cls, l_rec}) : l_cls + l_rec;
      total.backward();
      opt.step();
      const auto weights = w ? w->weights() : std::vector<double>{1.0, 1.0};
      // GradNorm balances the tasks' gradient norms on the shared encoder: report those
      // (weighted), so task_dominance judges by them.
      std::vector<double> grad_shares;
      if (auto* gn = dynamic_cast<losslens::gradnorm_weighting*>(w.get()))
        for (std::size_t t = 0; t < gn->task_grad_norms().size(); ++t)
          grad_shares.push_back(weights[t] * gn->task_grad_norms()[t]);
      lens.step({{"cls", l_cls}, {"recon", l_rec}}, total,
                {.task_weights = weights, .task_grad_norms = grad_shares});
      lens.check_regression("recon", recon, target);
      const double c = weights[0] * l_cls.item<double>(), r = weights[1] * l_rec.item<double>();
      shares.push_back(r / (c + r));
      if (step % 100 == 0 || step + 1 == steps)
        std::printf("step %4d  cls %.4f  recon %.1f  weights %.3g / %.3g  recon share %.1f%%\n",
                    step, l_cls.item<double>(), l_rec.item<double>(), weights[0], weights[1],
                    100 * shares.back());
    }
    lens.wait_idle();
    lens.detach();
    // Median share of the reconstruction term over the last 100 steps.
    std::vector<double> tail(
        shares.end() - std::min<std::ptrdiff_t>(100, std::ptrdiff_t(shares.size())), shares.end());
    std::nth_element(tail.begin(), tail.begin() + std::ptrdiff_t(tail.size() / 2), tail.end());
    std::printf(
        "\nweighting %s: median reconstruction share of the weighted total over the last "
        "%zu steps: %.1f%%\n\n",
        weighting.c_str(), tail.size(), 100 * tail[tail.size() / 2]);
    const auto findings = lens.findings();
    losslens::examples::report_findings(findings, steps, findings_json);
    return 0;
  } catch (const losslens::error& e) {
    std::fprintf(stderr, "fmnist_multitask: %s\n", e.what());
    return 1;
  }
}
