#include "dashboard_trace.hpp"

#include <cmath>
#include <limits>

namespace losslens::test {

storage::run_options dashboard_run(const std::string& name) {
  storage::run_options o;
  o.name = name;
  o.config_json = R"({"lr": 0.1, "batch": 128})";
  o.schema = {{"cls", "box"},
              {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "head.weight"}};
  return o;
}

sample dashboard_sample(std::int64_t s, std::int64_t spike_at, std::int64_t nan_at) {
  sample x;
  x.step = s;
  x.wall_time = double(s) * 0.02;
  double base = 2.0 * std::exp(-double(s) / 400.0) + 0.1 + 0.02 * std::sin(double(s) * 0.7);
  if (s >= spike_at && s < spike_at + 5 && spike_at >= 0) base *= 6;
  x.loss = s == nan_at ? std::numeric_limits<double>::quiet_NaN() : base;
  x.task_losses = {base * 0.6, base * 0.4};
  x.grad_norm = 1.5 + std::sin(double(s) * 0.05) + (s == spike_at ? 20 : 0);
  for (int p = 0; p < 5; ++p)
    x.param_grad_norms.push_back(0.2 * (p + 1) + 0.1 * std::cos(s * 0.03 + p));
  x.lr = 0.1 * std::pow(0.999, double(s));
  x.accuracy = 1.0 - base / 3.0;
  return x;
}

finding dashboard_finding(std::uint64_t id, std::int64_t first, std::int64_t last) {
  finding f;
  f.id = id;
  f.kind = "loss_spike";
  f.level = severity::warning;
  f.first_step = first;
  f.last_step = last;
  f.series = "loss";
  f.rule = {"loss_spike", {{"z_threshold", 6}}};
  f.evidence = {{"value", 7.5}, {"median", 1.2}, {"z", 11.3}};
  f.message = "loss jumped to 6x its recent median";
  f.advice = "lower the learning rate or clip gradients (e.g. clip_grad_norm_ 1.0)";
  return f;
}

}  // namespace losslens::test
