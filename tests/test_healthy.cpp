// Healthy runs of several shapes and noise levels produce no warning or error.

#include <catch2/catch.hpp>

#include "run_trace.hpp"

using namespace losslens;
using namespace losslens::traces;

TEST_CASE("healthy runs give no warnings or errors") {
  detector_options o;
  o.chance_level.num_classes = 10;
  for (auto shape : all_shapes)
    for (double sigma : {0.05, 0.15, 0.3})
      for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        generator g(seed * 7919);
        const auto t = g.healthy(shape, 3000, sigma);
        const auto bad = at_least(analyze(t, o), severity::warning);
        INFO(name(shape) << " sigma " << sigma << " seed " << seed);
        for (const auto& f : bad) INFO(f.kind << ": " << f.message);
        CHECK(bad.empty());
      }
}

TEST_CASE("a healthy multi-task run with balanced tasks gives no warnings") {
  generator g(42);
  trace t{two_task_schema(), {}, -1};
  for (int i = 0; i < 2000; ++i) {
    sample s;
    s.step = i;
    const double a = (0.3 + 2.0 * std::exp(-i / 300.0)) * g.noise(0.15);
    const double b = (0.2 + 1.5 * std::exp(-i / 400.0)) * g.noise(0.15);
    s.task_losses = {a, b};
    s.loss = a + b;
    s.lr = 1e-3;
    s.grad_norm = 1.0 * g.noise(0.2);
    t.samples.push_back(s);
  }
  CHECK(at_least(analyze(t), severity::warning).empty());
}

TEST_CASE("constant and tiny-but-healthy series do not trip the rules") {
  analyzer a(sample_schema{{}, {"w"}});
  for (int i = 0; i < 2000; ++i) {
    sample s;
    s.step = i;
    s.loss = 1e-6;  // converged to ~0 (e.g. a memorised toy problem)
    s.grad_norm = 1e-4;
    s.param_grad_norms = {1e-4};
    s.lr = 1e-3;
    a.observe(s);
  }
  CHECK(at_least(a.findings(), severity::warning).empty());
}
