#include "traces.hpp"

#include <algorithm>
#include <cmath>

namespace losslens::traces {

const char* name(healthy_shape s) {
  switch (s) {
    case healthy_shape::exp_decay:
      return "exp_decay";
    case healthy_shape::step_lr:
      return "step_lr";
    case healthy_shape::warmup:
      return "warmup";
    case healthy_shape::cosine:
      return "cosine";
  }
  return "?";
}

sample_schema mlp_schema() { return {{}, {"fc1.weight", "fc1.bias", "fc2.weight"}}; }

sample_schema two_task_schema() { return {{"cls", "recon"}, {"shared.weight"}}; }

double generator::noise(double sigma) { return std::exp(sigma * normal() - 0.5 * sigma * sigma); }

trace generator::healthy(healthy_shape shape, int steps, double sigma) {
  trace t{mlp_schema(), {}, -1};
  const double l0 = std::log(10.0), floor = 0.25 + 0.1 * uniform();
  const double tau = 150 + 150 * uniform();
  double progress = 0;  // "effective time" advanced by the LR
  const double base_lr = 0.1;
  for (int i = 0; i < steps; ++i) {
    double lr = base_lr;
    switch (shape) {
      case healthy_shape::exp_decay:
        break;
      case healthy_shape::step_lr:
        lr = base_lr * (i < steps / 2 ? 1 : i < 3 * steps / 4 ? 0.1 : 0.01);
        break;
      case healthy_shape::warmup:
        lr = base_lr * std::min(1.0, (i + 1) / (0.1 * steps));
        break;
      case healthy_shape::cosine:
        lr = base_lr * 0.5 * (1 + std::cos(M_PI * i / steps));
        break;
    }
    progress += lr / base_lr;
    double level = floor + (l0 - floor) * std::exp(-progress / tau);
    // Lower LR also lowers the noise floor (a healthy step-LR drop makes the loss drop).
    if (shape == healthy_shape::step_lr)
      level *= (i < steps / 2 ? 1 : i < 3 * steps / 4 ? 0.8 : 0.7);
    sample s;
    s.step = i;
    s.wall_time = 0.01 * i;
    s.loss = level * noise(sigma);
    s.lr = lr;
    s.accuracy = std::min(1.0, std::max(0.0, 1 - level / l0 * 0.9 + 0.02 * normal()));
    set_grad(s, 2.0 * (0.4 + 0.6 * level / l0) * noise(0.25));
    t.samples.push_back(s);
  }
  return t;
}

void set_grad(sample& s, double g) {
  s.grad_norm = g;
  s.param_grad_norms = {g * std::sqrt(0.6), g * std::sqrt(0.1), g * std::sqrt(0.3)};
}

trace nan_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 400 + static_cast<std::int64_t>(g.uniform() * 400);
  for (auto& s : t.samples)
    if (s.step >= t.onset) {
      s.loss = std::nan("");
      s.grad_norm = std::nan("");
      s.param_grad_norms[2] = INFINITY;
      s.param_grad_norms[0] = std::nan("");
    }
  return t;
}

trace spike_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 300 + static_cast<std::int64_t>(g.uniform() * 500);
  auto& s = t.samples[static_cast<std::size_t>(t.onset)];
  s.loss = *s.loss * 5;
  auto& prev = t.samples[static_cast<std::size_t>(t.onset - 1)];
  set_grad(prev, *prev.grad_norm * 20);
  return t;
}

trace divergence_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1500);
  t.onset = 600 + static_cast<std::int64_t>(g.uniform() * 400);
  for (auto& s : t.samples)
    if (s.step >= t.onset) {
      const double k = std::exp((s.step - t.onset) / 100.0);
      s.loss = *s.loss * k;
      set_grad(s, *s.grad_norm * k);
    }
  return t;
}

trace plateau_trace(std::uint64_t seed) {
  generator g(seed);
  trace t{mlp_schema(), {}, 0};
  t.onset = 500 + static_cast<std::int64_t>(g.uniform() * 500);
  const double tau = 1500;
  for (int i = 0; i < 3000; ++i) {
    const double eff = std::min<double>(i, double(t.onset));
    sample s;
    s.step = i;
    s.loss = (0.2 + 2.1 * std::exp(-eff / tau)) * g.noise(0.15);
    s.lr = 0.01;
    set_grad(s, 1.0 * g.noise(0.25));
    t.samples.push_back(s);
  }
  return t;
}

trace oscillation_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1500);
  t.onset = 500 + static_cast<std::int64_t>(g.uniform() * 500);
  for (auto& s : t.samples)
    if (s.step >= t.onset) {
      const bool up = ((s.step - t.onset) % 2 == 0) != (g.uniform() < 0.15);
      s.loss = 1.0 * (up ? 1.9 : 0.25) * g.noise(0.2);
    }
  return t;
}

trace chance_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 0;
  for (auto& s : t.samples) {
    s.loss = std::log(10.0) * g.noise(0.05);
    s.lr = 1e-7;
    s.accuracy = 0.1 + 0.02 * g.normal();
  }
  return t;
}

trace dominance_trace(std::uint64_t seed) {
  generator g(seed);
  trace t{two_task_schema(), {}, 0};
  for (int i = 0; i < 800; ++i) {
    sample s;
    s.step = i;
    const double cls = (0.5 + 1.8 * std::exp(-i / 200.0)) * g.noise(0.15);
    const double rec = (300 + 200 * std::exp(-i / 300.0)) * g.noise(0.1);
    s.task_losses = {cls, rec};
    s.loss = cls + rec;
    s.lr = 1e-3;
    set_grad(s, 5 * g.noise(0.2));
    s.param_grad_norms.resize(1);
    t.samples.push_back(s);
  }
  return t;
}

trace stalled_trace(std::uint64_t seed) {
  generator g(seed);
  trace t{two_task_schema(), {}, 0};
  t.onset = 200 + static_cast<std::int64_t>(g.uniform() * 200);
  double rec_at_onset = 0;
  for (int i = 0; i < 1500; ++i) {
    sample s;
    s.step = i;
    const double cls = (0.05 + 2.0 * std::exp(-i / 300.0)) * g.noise(0.1);
    double rec_level = 0.9 + 0.3 * std::exp(-i / 300.0);
    if (i == t.onset) rec_at_onset = rec_level;
    if (i >= t.onset) rec_level = rec_at_onset;
    const double rec = rec_level * g.noise(0.1);
    s.task_losses = {cls, rec};
    s.loss = cls + rec;
    s.lr = 1e-3;
    set_grad(s, 2 * g.noise(0.2));
    s.param_grad_norms.resize(1);
    t.samples.push_back(s);
  }
  return t;
}

trace exploding_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 300 + static_cast<std::int64_t>(g.uniform() * 500);
  for (auto& s : t.samples)
    if (s.step >= t.onset) {
      const double k = std::min(50.0, std::exp((s.step - t.onset + 1) * std::log(50.0) / 20));
      set_grad(s, *s.grad_norm * k);
    }
  return t;
}

trace vanishing_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 200 + static_cast<std::int64_t>(g.uniform() * 500);
  for (auto& s : t.samples)
    if (s.step >= t.onset) s.param_grad_norms[0] = *s.param_grad_norms[2] * 1e-7 * g.noise(0.3);
  return t;
}

}  // namespace losslens::traces
