// Speed of losslens' loss kernels against LibTorch's built-ins, forward + backward, in one run:
// for each kernel, shape and dtype the two sides run interleaved (alternating which goes first),
// and the JSON reports the median time of each and their ratio (losslens / built-in; the target
// is <= 1.1, docs/losses.md). Single-threaded by default. Prints the 1-minute load average
// before and after: on a shared machine the absolute times are provisional, the ratios less so.
// Run `bench_losses --help` for the flags.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include "losslens/torch/losses.hpp"
#include "program_args.hpp"

namespace F = torch::nn::functional;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr const char* usage =
    "usage: bench_losses [options]\n"
    "\n"
    "Times losslens' cross_entropy (plain and with label smoothing 0.1) and\n"
    "binary_cross_entropy_with_logits against LibTorch's built-ins, forward + backward with a "
    "mean\n"
    "reduction, in float32 and float64, interleaved, and prints one JSON document with the "
    "medians\n"
    "and the ratio losslens / built-in for each kernel, shape and dtype.\n"
    "options:\n"
    "  --seconds S   time budget per case and side (default 0.5)\n"
    "  --threads N   intra-op threads (default 1)\n"
    "  --only K      run only kernel K: cross_entropy, cross_entropy_ls or bce_with_logits\n"
    "  --help        this text\n";

struct settings {
  double seconds = 0.5;
  int threads = 1;
  std::string only;
};

const std::vector<std::string> kernels = {"cross_entropy", "cross_entropy_ls", "bce_with_logits"};

settings parse(int argc, char** argv) {
  const losslens::testing::program_args args(argc, argv, usage, {"seconds", "threads", "only"});
  settings s;
  s.seconds = args.number("seconds", s.seconds, 1e-6, 1e6);
  s.threads = int(args.integer("threads", s.threads, 1, 256));
  s.only = args.text("only");
  if (!s.only.empty() && std::find(kernels.begin(), kernels.end(), s.only) == kernels.end())
    args.fail("unknown kernel '" + s.only + "'");
  return s;
}

double load_average() {
  double l[1] = {0};
  return getloadavg(l, 1) == 1 ? l[0] : -1;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// One side of a case: computes the loss of x (and a target it captured).
using loss_fn = std::function<torch::Tensor(const torch::Tensor&)>;

/// Microseconds of loss + backward on a fresh leaf (the gradient is dropped afterwards).
double time_step(const loss_fn& f, const torch::Tensor& x, torch::Tensor* loss_out = nullptr) {
  const auto t0 = clock_type::now();
  auto loss = f(x);
  loss.backward();
  const double us = std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
  if (loss_out) *loss_out = loss.detach();
  x.mutable_grad().reset();
  return us;
}

nlohmann::json compare(const std::string& kernel, const std::vector<std::int64_t>& shape,
                       torch::Dtype dtype, const loss_fn& ours, const loss_fn& builtin,
                       const torch::Tensor& x, double seconds) {
  // Warm-up, the values of both sides, and a repetition count that fits the time budget.
  torch::Tensor lo, lb;
  for (int i = 0; i < 3; ++i) {
    time_step(ours, x, &lo);
    time_step(builtin, x, &lb);
  }
  const double pair_us = time_step(ours, x) + time_step(builtin, x);
  const int reps =
      static_cast<int>(std::clamp(seconds * 1e6 / std::max(pair_us / 2, 1.0), 15.0, 20000.0));
  std::vector<double> to, tb;
  to.reserve(static_cast<std::size_t>(reps));
  tb.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    // Alternate which side goes first so neither always runs on a warmer cache.
    if (i % 2 == 0) {
      to.push_back(time_step(ours, x));
      tb.push_back(time_step(builtin, x));
    } else {
      tb.push_back(time_step(builtin, x));
      to.push_back(time_step(ours, x));
    }
  }
  const double mo = median(to), mb = median(tb);
  const double vo = lo.item<double>(), vb = lb.item<double>();
  return {{"kernel", kernel},
          {"shape", shape},
          {"dtype", dtype == torch::kFloat ? "float32" : "float64"},
          {"reps", reps},
          {"losslens_us_median", mo},
          {"builtin_us_median", mb},
          {"ratio", mo / mb},
          {"loss_rel_diff", std::abs(vo - vb) / std::max(std::abs(vb), 1e-300)},
          {"load_avg_1min", load_average()}};
}

}  // namespace

int main(int argc, char** argv) {
  const auto s = parse(argc, argv);
  torch::set_num_threads(s.threads);
  torch::manual_seed(0);
  nlohmann::json out;
  out["torch_threads"] = torch::get_num_threads();
  out["load_avg_1min_start"] = load_average();
  out["target_ratio_max"] = 1.1;
  auto& cases = out["cases"] = nlohmann::json::array();

  const std::vector<std::vector<std::int64_t>> class_shapes = {{4096, 1000}, {256, 10}, {65536, 2}};
  const std::vector<std::vector<std::int64_t>> binary_shapes = {{65536}, {256, 10}, {65536, 2}};
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (const auto& shape : class_shapes) {
      // Logits of a half-trained classifier: spread 3, targets uniform.
      auto x = (3 * torch::randn(shape, dtype)).requires_grad_(true);
      auto y = torch::randint(0, shape[1], {shape[0]}, torch::kLong);
      if (s.only.empty() || s.only == "cross_entropy")
        cases.push_back(compare(
            "cross_entropy", shape, dtype,
            [&](const torch::Tensor& a) { return losslens::cross_entropy(a, y); },
            [&](const torch::Tensor& a) { return F::cross_entropy(a, y); }, x, s.seconds));
      if (s.only.empty() || s.only == "cross_entropy_ls")
        cases.push_back(compare(
            "cross_entropy_ls", shape, dtype,
            [&](const torch::Tensor& a) {
              return losslens::cross_entropy(a, y, {.label_smoothing = 0.1});
            },
            [&](const torch::Tensor& a) {
              return F::cross_entropy(a, y, F::CrossEntropyFuncOptions().label_smoothing(0.1));
            },
            x, s.seconds));
    }
    if (!s.only.empty() && s.only != "bce_with_logits") continue;
    for (const auto& shape : binary_shapes) {
      auto x = (3 * torch::randn(shape, dtype)).requires_grad_(true);
      auto y = torch::rand(shape, dtype);  // soft targets in [0, 1)
      cases.push_back(compare(
          "bce_with_logits", shape, dtype,
          [&](const torch::Tensor& a) { return losslens::binary_cross_entropy_with_logits(a, y); },
          [&](const torch::Tensor& a) { return F::binary_cross_entropy_with_logits(a, y); }, x,
          s.seconds));
    }
  }
  double worst = 0;
  for (const auto& c : cases) worst = std::max(worst, c["ratio"].get<double>());
  out["worst_ratio"] = worst;
  out["load_avg_1min_end"] = load_average();
  std::printf("%s\n", out.dump(2).c_str());
}
