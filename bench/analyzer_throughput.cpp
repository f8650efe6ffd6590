// Cost of the detectors per step: nanoseconds per observe() for a run with 2 tasks and N
// per-parameter grad norms, against a bare loop that only copies the same samples.
// Prints JSON. Usage: bench_analyzer_throughput [params=64] [steps=200000]

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "losslens/analyzer.hpp"
#include "program_args.hpp"
#include "traces.hpp"

using namespace losslens;
using clock_type = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_analyzer_throughput [PARAMS] [STEPS]\n\n"
      "Nanoseconds per analyzer observe() for a run with 2 tasks and PARAMS per-parameter\n"
      "gradient norms (default 64), over STEPS steps (default 200000), against a bare loop\n"
      "copying the same samples. Prints JSON.\n",
      {}, {}, 2);
  const int params = int(args.positional_integer(0, 64, 1, 1 << 20));
  const int steps = int(args.positional_integer(1, 200000, 1, 1 << 30));
  sample_schema schema{{"cls", "recon"}, {}};
  for (int i = 0; i < params; ++i) schema.params.push_back("layer" + std::to_string(i));
  traces::generator g(1);
  std::vector<sample> samples(4096);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    auto& s = samples[i];
    s.loss = 1.0 * g.noise(0.2);
    s.task_losses = {0.5 * g.noise(0.2), 0.5 * g.noise(0.2)};
    s.grad_norm = g.noise(0.2);
    s.lr = 1e-3;
    s.param_grad_norms.resize(std::size_t(params));
    for (auto& p : s.param_grad_norms) p = 0.1 * g.noise(0.3);
  }
  double sink = 0;
  sample cur = samples[0];
  auto bare = [&] {
    const auto t0 = clock_type::now();
    for (int i = 0; i < steps; ++i) {
      cur = samples[std::size_t(i) % samples.size()];  // the copy a monitor would make
      cur.step = i;
      sink += *cur.loss;
    }
    return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / steps;
  };
  auto analyzed = [&] {
    analyzer a(schema);
    const auto t0 = clock_type::now();
    for (int i = 0; i < steps; ++i) {
      cur = samples[std::size_t(i) % samples.size()];
      cur.step = i;
      a.observe(cur);
    }
    sink += double(a.findings().size());
    return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / steps;
  };
  double best_bare = 1e30, best_an = 1e30;
  for (int r = 0; r < 5; ++r) {  // interleaved repetitions, best of 5
    best_bare = std::min(best_bare, bare());
    best_an = std::min(best_an, analyzed());
  }
  nlohmann::json out = {{"params", params},
                        {"tasks", 2},
                        {"steps", steps},
                        {"bare_copy_ns_per_step", best_bare},
                        {"analyzer_ns_per_step", best_an},
                        {"detector_ns_per_step", best_an - best_bare},
                        {"sink", sink}};
  std::printf("%s\n", out.dump(2).c_str());
}
