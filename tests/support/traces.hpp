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
const char* name(healthy_shape s);

/// Three layers, as a small MLP reports them.
sample_schema mlp_schema();
sample_schema two_task_schema();

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
  double noise(double sigma);

  /// A healthy classification run over C=10 classes: starts near ln 10 = 2.30.
  trace healthy(healthy_shape shape, int steps = 2000, double sigma = 0.15);

 private:
  std::mt19937_64 rng_;
  std::normal_distribution<double> n01_{0, 1};
  std::uniform_real_distribution<double> u01_{0, 1};
};

/// Sets the grad norm to g and the per-layer norms (of mlp_schema()) so that their squares add
/// up to g^2.
void set_grad(sample& s, double g);

/// Loss becomes NaN at the onset and stays NaN; the grad norm goes to Inf one step earlier in
/// fc2.weight first.
trace nan_trace(std::uint64_t seed);

/// One-step loss spike (5x) at the onset, preceded by a 20x grad-norm spike one step before.
trace spike_trace(std::uint64_t seed);

/// From the onset the loss grows exponentially (doubling every ~70 steps), as at too high an LR.
trace divergence_trace(std::uint64_t seed);

/// A slowly improving run whose loss stops improving at the onset: from then on it stays flat
/// at the level it had reached, with batch noise.
trace plateau_trace(std::uint64_t seed);

/// From the onset the loss alternates between high and low values (period ~2-3 steps, swings
/// as large as the level), as at an LR at the edge of stability.
trace oscillation_trace(std::uint64_t seed);

/// LR far too low: the loss stays at ln 10 (10 classes) with batch noise from the start.
trace chance_trace(std::uint64_t seed);

/// Two tasks: cross-entropy ~0.5-2.3 and an unnormalised reconstruction MSE ~300-500; the
/// unweighted total is dominated by recon from the start.
trace dominance_trace(std::uint64_t seed);

/// Two tasks of similar scale; at the onset task "recon" stops improving while "cls" keeps
/// falling quickly.
trace stalled_trace(std::uint64_t seed);

/// From the onset the grad norm grows 50x within 20 steps and stays high (loss still finite).
trace exploding_trace(std::uint64_t seed);

/// From the onset fc1.weight receives ~1e-7 of the largest layer's gradient.
trace vanishing_trace(std::uint64_t seed);

}  // namespace losslens::traces
