// Cost of attach() on the training loop: the same loop with and without a monitor, on two
// identical models stepped alternately (interleaved), reporting the ratio of median step times.
// (a) an MLP of ~1.6M parameters at batch 256; (b) a tiny model whose bare step is < 1 ms.
// Also the cost of the monitor's grad-norm pass against a bare at::_foreach_norm over the same
// gradients. Prints JSON. Usage: bench_overhead [steps_a=60] [steps_b=3000]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <ATen/ops/_foreach_norm.h>
#include <nlohmann/json.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/optim/sgd.h>

#include "../hooks/src/grad_norms.hpp"
#include "losslens/torch/monitor.hpp"
#include "program_args.hpp"

using clock_type = std::chrono::steady_clock;
namespace F = torch::nn::functional;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

torch::nn::Sequential make_model(const std::vector<std::int64_t>& widths) {
  torch::nn::Sequential s;
  for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
    s->push_back(torch::nn::Linear(widths[i], widths[i + 1]));
    if (i + 2 < widths.size()) s->push_back(torch::nn::ReLU());
  }
  return s;
}

std::int64_t count_params(torch::nn::Sequential& m) {
  std::int64_t n = 0;
  for (auto& p : m->parameters()) n += p.numel();
  return n;
}

nlohmann::json compare(const std::vector<std::int64_t>& widths, std::int64_t batch, int steps) {
  torch::manual_seed(0);
  auto bare = make_model(widths);
  auto watched = make_model(widths);
  torch::optim::SGD opt_bare(bare->parameters(), 0.01);
  torch::optim::SGD opt_watched(watched->parameters(), 0.01);
  losslens::attach_options o;
  o.log_findings = false;
  o.queue_capacity = 1 << 14;
  auto lens = losslens::attach(watched, opt_watched, o);
  const auto x = torch::randn({batch, widths.front()});
  const auto y = torch::randint(0, widths.back(), {batch});

  auto one_step = [&](torch::nn::Sequential& m, torch::optim::SGD& opt, bool monitored) {
    const auto t0 = clock_type::now();
    opt.zero_grad();
    auto loss = F::cross_entropy(m->forward(x), y);
    loss.backward();
    opt.step();
    if (monitored) lens.step(loss);
    return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
  };
  for (int i = 0; i < std::max(5, steps / 20); ++i) {  // warm-up
    one_step(bare, opt_bare, false);
    one_step(watched, opt_watched, true);
  }
  std::vector<double> tb, tw;
  for (int i = 0; i < steps; ++i) {
    // Alternate which goes first so neither always runs on a warmer cache.
    if (i % 2 == 0) {
      tb.push_back(one_step(bare, opt_bare, false));
      tw.push_back(one_step(watched, opt_watched, true));
    } else {
      tw.push_back(one_step(watched, opt_watched, true));
      tb.push_back(one_step(bare, opt_bare, false));
    }
  }
  lens.wait_idle();
  const auto st = lens.stats();

  // Grad-norm pass: the monitor's engine against a bare _foreach_norm (+ one host copy).
  std::vector<at::Tensor> grads;
  for (auto& p : watched->parameters()) grads.push_back(p.grad());
  losslens::hooks::detail::norm_engine engine;
  std::vector<double> norms(grads.size());
  std::vector<std::uint8_t> has(grads.size());
  std::vector<const at::Tensor*> no_scalars;
  std::vector<double> no_values;
  std::vector<double> t_engine, t_foreach;
  for (int i = 0; i < 200; ++i) {
    auto t0 = clock_type::now();
    engine.compute(grads, norms, has, no_scalars, no_values);
    t_engine.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    t0 = clock_type::now();
    auto r = at::_foreach_norm(grads, 2);
    auto host = at::stack(r).to(at::kDouble).cpu();
    t_foreach.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
  }
  const double mb = median(tb), mw = median(tw);
  return {{"parameters", count_params(watched)},
          {"batch", batch},
          {"steps", steps},
          {"bare_step_us_median", mb},
          {"monitored_step_us_median", mw},
          {"ratio", mw / mb},
          {"added_us_per_step", mw - mb},
          {"samples_processed", st.processed},
          {"samples_dropped", st.dropped},
          {"grad_norm_pass_us_median", median(t_engine)},
          {"bare_foreach_norm_us_median", median(t_foreach)}};
}
}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_overhead [STEPS_A] [STEPS_B]\n\n"
      "Cost of attach() on the training loop: median step time with and without a monitor\n"
      "for an MLP of ~1.6M parameters (STEPS_A steps, default 60) and a tiny model\n"
      "(STEPS_B steps, default 3000), and the monitor's grad-norm pass. Prints JSON.\n",
      {}, {}, 2);
  const int steps_a = int(args.positional_integer(0, 60, 1, 1 << 30));
  const int steps_b = int(args.positional_integer(1, 3000, 1, 1 << 30));
  nlohmann::json out;
  out["torch_threads"] = at::get_num_threads();
  out["mlp_1_6M"] = compare({784, 1024, 768, 10}, 256, steps_a);
  out["tiny"] = compare({8, 16, 4}, 16, steps_b);
  out["targets"] = {{"mlp_ratio_max", 1.01}, {"tiny_added_us_max", 5.0}};
  std::printf("%s\n", out.dump(2).c_str());
}
