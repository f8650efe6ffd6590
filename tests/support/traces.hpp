#pragma once
// Synthetic training traces with known onsets, shared by the tests and bench/detector_quality.
// Healthy shapes follow what real runs look like (noisy SGD around a decaying curve, LR-step
// drops, warm-up, cosine decay); each pathology is injected at a known step.

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens::traces {

enum class healthy_shape { exp_decay, step_lr, warmup, cosine };
inline constexpr healthy_shape all_shapes[] = {healthy_shape::exp_decay, healthy_shape::step_lr,
                                               healthy_shape::warmup, healthy_shape::cosine};
inline const char* name(healthy_shape s) {
  switch (s) {
    case healthy_shape::exp_decay: return "exp_decay";
    case healthy_shape::step_lr: return "step_lr";
    case healthy_shape::warmup: return "warmup";
    case healthy_shape::cosine: return "cosine";
  }
  return "?";
}

/// Three layers, as a small MLP reports them.
inline sample_schema mlp_schema() { return {{}, {"fc1.weight", "fc1.bias", "fc2.weight"}}; }
inline sample_schema two_task_schema() { return {{"cls", "recon"}, {"shared.weight"}}; }

struct trace {
  sample_schema schema;
  std::vector<sample> samples;
  std::int64_t onset = -1;  ///< injected pathology's first step (-1 for healthy)
};

class generator {
 public:
  explicit generator(std::uint64_t seed) : rng_(seed) {}
  double normal() { return n01_(rng_); }
  double uniform() { return u01_(rng_); }
  /// Multiplicative batch noise: lognormal with the given sigma.
  double noise(double sigma) { return std::exp(sigma * normal() - 0.5 * sigma * sigma); }

  /// A healthy classification run over C=10 classes: starts near ln 10 = 2.30.
  trace healthy(healthy_shape shape, int steps = 2000, double sigma = 0.15) {
    trace t{mlp_schema(), {}, -1};
    const double l0 = std::log(10.0), floor = 0.25 + 0.1 * uniform();
    const double tau = 150 + 150 * uniform();
    double progress = 0;  // "effective time" advanced by the LR
    const double base_lr = 0.1;
    for (int i = 0; i < steps; ++i) {
      double lr = base_lr;
      switch (shape) {
        case healthy_shape::exp_decay: break;
        case healthy_shape::step_lr: lr = base_lr * (i < steps / 2 ? 1 : i < 3 * steps / 4 ? 0.1 : 0.01); break;
        case healthy_shape::warmup: lr = base_lr * std::min(1.0, (i + 1) / (0.1 * steps)); break;
        case healthy_shape::cosine: lr = base_lr * 0.5 * (1 + std::cos(M_PI * i / steps)); break;
      }
      progress += lr / base_lr;
      double level = floor + (l0 - floor) * std::exp(-progress / tau);
      // Lower LR also lowers the noise floor (a healthy step-LR drop makes the loss drop).
      if (shape == healthy_shape::step_lr) level *= (i < steps / 2 ? 1 : i < 3 * steps / 4 ? 0.8 : 0.7);
      sample s;
      s.step = i;
      s.wall_time = 0.01 * i;
      s.loss = level * noise(sigma);
      s.lr = lr;
      s.accuracy = std::min(1.0, std::max(0.0, 1 - level / l0 * 0.9 + 0.02 * normal()));
      const double g = 2.0 * (0.4 + 0.6 * level / l0) * noise(0.25);
      s.grad_norm = g;
      // Per-layer norms whose squares add up to g^2.
      s.param_grad_norms = {g * std::sqrt(0.6), g * std::sqrt(0.1), g * std::sqrt(0.3)};
      t.samples.push_back(s);
    }
    return t;
  }

 private:
  std::mt19937_64 rng_;
  std::normal_distribution<double> n01_{0, 1};
  std::uniform_real_distribution<double> u01_{0, 1};
};

inline void set_grad(sample& s, double g) {
  s.grad_norm = g;
  s.param_grad_norms = {g * std::sqrt(0.6), g * std::sqrt(0.1), g * std::sqrt(0.3)};
}

/// Loss becomes NaN at the onset and stays NaN; the grad norm goes to Inf one step earlier in
/// fc2.weight first.
inline trace nan_trace(std::uint64_t seed) {
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

/// One-step loss spike (5x) at the onset, preceded by a 20x grad-norm spike one step before.
inline trace spike_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 300 + static_cast<std::int64_t>(g.uniform() * 500);
  auto& s = t.samples[static_cast<std::size_t>(t.onset)];
  s.loss = *s.loss * 5;
  auto& prev = t.samples[static_cast<std::size_t>(t.onset - 1)];
  set_grad(prev, *prev.grad_norm * 20);
  return t;
}

/// From the onset the loss grows exponentially (doubling every ~70 steps), as at too high an LR.
inline trace divergence_trace(std::uint64_t seed) {
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

/// A slowly improving run whose loss stops improving at the onset: from then on it stays flat
/// at the level it had reached, with batch noise.
inline trace plateau_trace(std::uint64_t seed) {
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

/// From the onset the loss alternates between high and low values (period ~2-3 steps, swings
/// as large as the level), as at an LR at the edge of stability.
inline trace oscillation_trace(std::uint64_t seed) {
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

/// LR far too low: the loss stays at ln 10 (10 classes) with batch noise from the start.
inline trace chance_trace(std::uint64_t seed) {
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

/// Two tasks: cross-entropy ~0.5-2.3 and an unnormalised reconstruction MSE ~300-500; the
/// unweighted total is dominated by recon from the start.
inline trace dominance_trace(std::uint64_t seed) {
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

/// Two tasks of similar scale; at the onset task "recon" stops improving while "cls" keeps
/// falling quickly.
inline trace stalled_trace(std::uint64_t seed) {
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

/// From the onset the grad norm grows 50x within 20 steps and stays high (loss still finite).
inline trace exploding_trace(std::uint64_t seed) {
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

/// From the onset fc1.weight receives ~1e-7 of the largest layer's gradient.
inline trace vanishing_trace(std::uint64_t seed) {
  generator g(seed);
  auto t = g.healthy(healthy_shape::exp_decay, 1000);
  t.onset = 200 + static_cast<std::int64_t>(g.uniform() * 500);
  for (auto& s : t.samples)
    if (s.step >= t.onset) s.param_grad_norms[0] = *s.param_grad_norms[2] * 1e-7 * g.noise(0.3);
  return t;
}

}  // namespace losslens::traces
