// Cost of the detectors per step: nanoseconds per observe() for a run with 2 tasks and N
// per-parameter grad norms, against a bare loop that only copies the same samples.
// Prints JSON with the 1-minute load average. Usage: bench_analyzer_throughput [params=64]
// [steps=200000]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include <nlohmann/json.hpp>

#include "losslens/analyzer.hpp"
#include "bench_util.hpp"
#include "program_args.hpp"
#include "traces.hpp"

using namespace losslens;
using clock_type = std::chrono::steady_clock;
using losslens::bench::load1;

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
  // Thread CPU time besides wall time: on a machine shared with other processes it leaves out
  // the time this thread waited for a core.
  auto cpu_ns = [] {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) * 1e9 + double(t.tv_nsec);
  };
  struct timing {
    double wall, cpu;  // ns per step
  };
  auto bare = [&] {
    const auto t0 = clock_type::now();
    const double c0 = cpu_ns();
    for (int i = 0; i < steps; ++i) {
      cur = samples[std::size_t(i) % samples.size()];  // the copy a monitor would make
      cur.step = i;
      sink += *cur.loss;
    }
    return timing{std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / steps,
                  (cpu_ns() - c0) / steps};
  };
  auto analyzed = [&] {
    analyzer a(schema);
    const auto t0 = clock_type::now();
    const double c0 = cpu_ns();
    for (int i = 0; i < steps; ++i) {
      cur = samples[std::size_t(i) % samples.size()];
      cur.step = i;
      a.observe(cur);
    }
    sink += double(a.findings().size());
    return timing{std::chrono::duration<double, std::nano>(clock_type::now() - t0).count() / steps,
                  (cpu_ns() - c0) / steps};
  };
  const double load_before = load1();
  double best_bare = 1e30, best_an = 1e30, cpu_bare = 1e30, cpu_an = 1e30;
  for (int r = 0; r < 5; ++r) {  // interleaved repetitions, best of 5
    const timing b = bare(), a = analyzed();
    best_bare = std::min(best_bare, b.wall);
    best_an = std::min(best_an, a.wall);
    cpu_bare = std::min(cpu_bare, b.cpu);
    cpu_an = std::min(cpu_an, a.cpu);
  }
  nlohmann::json out = {{"params", params},
                        {"tasks", 2},
                        {"steps", steps},
                        {"bare_copy_ns_per_step", best_bare},
                        {"analyzer_ns_per_step", best_an},
                        {"detector_ns_per_step", best_an - best_bare},
                        {"analyzer_over_bare_copy", best_an / best_bare},
                        {"bare_copy_cpu_ns_per_step", cpu_bare},
                        {"analyzer_cpu_ns_per_step", cpu_an},
                        {"detector_cpu_ns_per_step", cpu_an - cpu_bare},
                        {"target_detector_ns_per_step_max", params <= 8 ? 150 : 400},
                        {"load1_before", load_before},
                        {"load1_after", load1()},
                        {"sink", sink}};
  std::printf("%s\n", out.dump(2).c_str());
}
