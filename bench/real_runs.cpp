// Real training runs on Fashion-MNIST with losslens attached: healthy configurations and
// reproduced pathologies (labelled with the step the fault starts and the finding kinds a
// correct diagnosis may use). For every run it writes the per-step trace as a CSV that
// `losslens analyze` reads, and prints one JSON line on stdout with the label, the median batch
// loss of each tenth of the run and the findings losslens reported live.
//
//   bench_real_runs [--suite short|long] [--seeds tune|holdout] [--only NAME[,NAME]]
//                   [--out DIR] [--steps-scale X] [--data DIR] [--check]
//
// The last line is a summary: healthy steps, warnings and errors on healthy runs (per 100k
// steps), faults named with an expected kind, onset errors. With --check the program exits 1
// when a healthy run has a warning or error, or a fault is not named (the CI test).
//
// Single-threaded (torch::set_num_threads(1)); run `bench_real_runs --help` for the flags.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numbers>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>
#include <ATen/Context.h>

#include "fmnist.hpp"
#include "loss_trend.hpp"
#include "losslens/error.hpp"
#include "losslens/torch/monitor.hpp"
#include "program_args.hpp"

namespace F = torch::nn::functional;
using nlohmann::json;

namespace {

const char* usage =
    "usage: bench_real_runs [options]\n"
    "\n"
    "Trains LibTorch models on Fashion-MNIST (single-threaded) with losslens attached, healthy\n"
    "runs and reproduced pathologies; writes each run's per-step trace as CSV (the format of\n"
    "`losslens analyze`) and prints one JSON line per run on stdout.\n"
    "options:\n"
    "  --suite S        short (scaled down, a few minutes in all) or long (full length; default)\n"
    "  --seeds S        tune (seed 1, default) or holdout (seed 2: other init, data order and\n"
    "                   fault step)\n"
    "  --only A[,B]     run only these scenarios (see the list below)\n"
    "  --out DIR        where the CSVs go (default real_runs_out/)\n"
    "  --steps-scale X  multiply every scenario's steps (and fault step) by X (default 1)\n"
    "  --data DIR       Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
    "  --check          exit 1 if a healthy run has a warning or error incident, or a fault run\n"
    "                   has no incident of an expected kind (the summary line says which)\n"
    "  --help           this text\n";

// ---------------------------------------------------------------------------------------------
// Scenarios

enum class model_kind { mlp, mlp_dropout, cnn, multitask };
enum class opt_kind { sgd, adam };
enum class loss_kind { ce, sigmoid_bce_onehot, multitask_weighted, multitask_raw };
/// What goes wrong from fault_step on (none for healthy runs).
enum class fault_kind {
  none,
  lr_jump,
  corrupt_batch,
  nan_batch,
  shuffled_labels,
  no_zero_grad,
  step_before_backward
};

/// One training configuration and its label.
struct scenario {
  std::string name;
  bool healthy = true;
  model_kind model = model_kind::mlp;
  opt_kind opt = opt_kind::sgd;
  loss_kind loss = loss_kind::ce;
  double lr = 0.01;
  double momentum = 0;
  int batch = 32;
  std::int64_t images = 10000;  ///< first N training images (0 = all 60000)
  int steps = 1000;             ///< long-suite length
  double short_scale = 0.15;    ///< steps multiplier of the short suite (0: not in it)
  bool sgdr = false;            ///< cosine annealing with warm restarts
  int sgdr_period = 2000;
  bool clip = false;  ///< clip_grad_norm_(params, 1.0) every step
  fault_kind fault = fault_kind::none;
  std::optional<int> fault_step;      ///< long-suite, seed-1 fault step; none: no single onset
  std::vector<std::string> expected;  ///< finding kinds a correct diagnosis may use
  int num_classes = 10;               ///< chance_level's C for the total loss (0: rule off)
};

std::vector<scenario> all_scenarios() {
  std::vector<scenario> v;
  auto add = [&](scenario s) { v.push_back(std::move(s)); };
  // Healthy.
  add({.name = "sgd_mom_b16_memorise",
       .lr = 0.01,
       .momentum = 0.9,
       .batch = 16,
       .images = 2000,
       .steps = 40000});
  // Labelled from its trace, not from its medians (flat at the floor): in both seeds, near step
  // 24k, Adam's step near a zero loss blows up (loss 1e-8 -> 6-7, grad norm 5e7x its median)
  // for ~75 steps and recovers. Not healthy; a transient instability to be named.
  add({.name = "adam_b16_memorise500",
       .healthy = false,
       .opt = opt_kind::adam,
       .lr = 3e-4,
       .batch = 16,
       .images = 500,
       .steps = 30000,
       .short_scale = 0,
       .expected = {"exploding_gradients", "loss_spike"}});
  add({.name = "adam_b8_all",
       .opt = opt_kind::adam,
       .lr = 1e-3,
       .batch = 8,
       .images = 0,
       .steps = 15000});
  add({.name = "cnn_bn",
       .model = model_kind::cnn,
       .lr = 0.05,
       .momentum = 0.9,
       .batch = 32,
       .images = 10000,
       .steps = 8000});
  add({.name = "dropout_mlp",
       .model = model_kind::mlp_dropout,
       .opt = opt_kind::adam,
       .lr = 1e-3,
       .batch = 32,
       .images = 20000,
       .steps = 15000});
  add({.name = "sgdr_restarts",
       .lr = 0.02,
       .momentum = 0.9,
       .batch = 64,
       .images = 20000,
       .steps = 12000,
       .sgdr = true});
  add({.name = "clipped",
       .lr = 0.1,
       .momentum = 0.9,
       .batch = 32,
       .images = 10000,
       .steps = 12000,
       .clip = true});
  add({.name = "multitask_weighted",
       .model = model_kind::multitask,
       .opt = opt_kind::adam,
       .loss = loss_kind::multitask_weighted,
       .lr = 1e-3,
       .batch = 32,
       .images = 10000,
       .steps = 10000,
       .num_classes = 0});
  // Faults.
  add({.name = "lr_jump",
       .healthy = false,
       .lr = 0.01,
       .momentum = 0.9,
       .steps = 10000,
       .fault = fault_kind::lr_jump,
       .fault_step = 6000,
       .expected = {"exploding_gradients", "loss_spike", "divergence", "non_finite",
                    "oscillation"}});
  add({.name = "corrupt_batch",
       .healthy = false,
       .opt = opt_kind::adam,
       .lr = 1e-3,
       .steps = 8000,
       .fault = fault_kind::corrupt_batch,
       .fault_step = 5000,
       .expected = {"loss_spike", "exploding_gradients"}});
  add({.name = "nan_batch",
       .healthy = false,
       .opt = opt_kind::adam,
       .lr = 1e-3,
       .steps = 8000,
       .fault = fault_kind::nan_batch,
       .fault_step = 5000,
       .expected = {"non_finite"}});
  add({.name = "shuffled_labels",
       .healthy = false,
       .lr = 0.05,
       .momentum = 0.9,
       .steps = 12000,
       .fault = fault_kind::shuffled_labels,
       .fault_step = 6000,
       .expected = {"divergence", "chance_level", "loss_spike", "plateau"}});
  // The 200k-step command, cut to 60k: seeds 1 and 2 both creep up from ~0.33 and then
  // collapse to ln 10 (dead ReLUs) between steps 30k and 36k; nothing changes after. Too long
  // for the short suite.
  add({.name = "slow_degradation",
       .healthy = false,
       .lr = 0.05,
       .momentum = 0.9,
       .batch = 16,
       .images = 2000,
       .steps = 60000,
       .short_scale = 0,
       .expected = {"divergence"}});
  add({.name = "no_zero_grad",
       .healthy = false,
       .lr = 0.01,
       .steps = 6000,
       .fault = fault_kind::no_zero_grad,
       .fault_step = 3000,
       .expected = {"missing_zero_grad", "exploding_gradients", "divergence"}});
  add({.name = "unweighted_multitask",
       .healthy = false,
       .model = model_kind::multitask,
       .loss = loss_kind::multitask_raw,
       .lr = 0.01,
       .steps = 4000,
       .fault_step = 0,
       .expected = {"task_dominance", "non_finite", "exploding_gradients", "divergence"},
       .num_classes = 0});
  add({.name = "sigmoid_bce_onehot",
       .healthy = false,
       .opt = opt_kind::adam,
       .loss = loss_kind::sigmoid_bce_onehot,
       .lr = 1e-3,
       .steps = 6000,
       .fault_step = 0,
       .expected = {"chance_level", "plateau"},
       .num_classes = 0});  // ln 2 inferred
  add({.name = "step_before_backward",
       .healthy = false,
       .lr = 0.01,
       .steps = 3000,
       .fault = fault_kind::step_before_backward,
       .fault_step = 0,
       .expected = {"call_order", "vanishing_gradients"}});
  add({.name = "tiny_lr",
       .healthy = false,
       .lr = 1e-6,
       .steps = 6000,
       .fault_step = 0,
       .expected = {"chance_level", "plateau"}});
  return v;
}

// ---------------------------------------------------------------------------------------------
// Models

/// The MLP (784-256-128-10, optional dropout), the small BatchNorm CNN, or the two-headed
/// multi-task net of examples/fmnist_multitask.cpp. Only the chosen layers are registered, so
/// named_parameters() is exactly the model's.
struct bench_netImpl : torch::nn::Module {
  model_kind kind;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Linear encoder{nullptr}, cls{nullptr}, recon{nullptr};

  explicit bench_netImpl(model_kind k) : kind(k) {
    switch (k) {
      case model_kind::mlp:
      case model_kind::mlp_dropout:
        fc1 = register_module("fc1", torch::nn::Linear(784, 256));
        fc2 = register_module("fc2", torch::nn::Linear(256, 128));
        fc3 = register_module("fc3", torch::nn::Linear(128, 10));
        break;
      case model_kind::cnn:
        conv1 = register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1).bias(true)));
        bn1 = register_module("bn1", torch::nn::BatchNorm2d(16));
        conv2 = register_module(
            "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1).bias(true)));
        bn2 = register_module("bn2", torch::nn::BatchNorm2d(32));
        fc1 = register_module("fc", torch::nn::Linear(32 * 7 * 7, 10));
        break;
      case model_kind::multitask:
        encoder = register_module("encoder", torch::nn::Linear(784, 256));
        cls = register_module("cls", torch::nn::Linear(256, 10));
        recon = register_module("recon", torch::nn::Linear(256, 784));
        break;
    }
  }

  /// Logits and (multi-task only) the reconstruction.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    switch (kind) {
      case model_kind::mlp:
      case model_kind::mlp_dropout: {
        const bool drop = kind == model_kind::mlp_dropout;
        auto d = [&](torch::Tensor h) {
          return drop ? F::dropout(h, F::DropoutFuncOptions().p(0.3).training(is_training())) : h;
        };
        auto h = d(torch::relu(fc1->forward(x)));
        h = d(torch::relu(fc2->forward(h)));
        return {fc3->forward(h), {}};
      }
      case model_kind::cnn: {
        auto h = x.view({-1, 1, 28, 28});
        h = F::max_pool2d(torch::relu(bn1->forward(conv1->forward(h))), F::MaxPool2dFuncOptions(2));
        h = F::max_pool2d(torch::relu(bn2->forward(conv2->forward(h))), F::MaxPool2dFuncOptions(2));
        return {fc1->forward(h.flatten(1)), {}};
      }
      case model_kind::multitask: {
        auto h = torch::relu(encoder->forward(x));
        return {cls->forward(h), recon->forward(h)};
      }
    }
    return {};
  }
};
TORCH_MODULE(bench_net);

// ---------------------------------------------------------------------------------------------
// Output helpers

/// A number as the CSV reader wants it: %.9g, or nan / inf / -inf.
void put_number(std::FILE* f, const std::optional<double>& v) {
  if (!v) return;
  const double x = *v;
  if (std::isnan(x))
    std::fputs("nan", f);
  else if (std::isinf(x))
    std::fputs(x > 0 ? "inf" : "-inf", f);
  else
    std::fprintf(f, "%.9g", x);
}

/// Median of the finite values of v (NaN when there are none).
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// ---------------------------------------------------------------------------------------------
// One run

struct settings {
  bool short_suite = false;
  int seed = 1;
  double steps_scale = 1;
  std::string out = "real_runs_out";
  std::string data = losslens::examples::default_fmnist_dir;
  std::set<std::string> only;
  bool check = false;
};

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

/// Trains one scenario, writes its CSV, returns its JSON line (and whether it was healthy
/// according to the median-per-tenth check, for healthy scenarios).
json run_scenario(const scenario& sc, const settings& st,
                  const losslens::examples::fmnist_split& all) {
  const double scale = st.steps_scale * (st.short_suite ? sc.short_scale : 1.0);
  const int steps = std::max(1, int(std::lround(sc.steps * scale)));
  std::optional<int> fault_step;
  if (sc.fault_step) {
    // The fault moves with the seed (137 steps per seed after the first), except for bugs
    // present from the first step.
    fault_step = int(std::lround(*sc.fault_step * scale));
    if (*sc.fault_step > 0) *fault_step += 137 * (st.seed - 1);
  }
  const int fault_at = fault_step.value_or(sc.fault == fault_kind::none ? -1 : 0);

  torch::manual_seed(std::uint64_t(st.seed));
  const std::int64_t n =
      sc.images > 0 ? std::min<std::int64_t>(sc.images, all.images.size(0)) : all.images.size(0);
  const auto images = all.images.slice(0, 0, n);
  const auto labels = all.labels.slice(0, 0, n);

  bench_net model(sc.model);
  model->train();
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (sc.opt == opt_kind::sgd)
    opt = std::make_unique<torch::optim::SGD>(
        model->parameters(), torch::optim::SGDOptions(sc.lr).momentum(sc.momentum));
  else
    opt =
        std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(sc.lr));

  const bool multitask = sc.model == model_kind::multitask;
  std::vector<std::string> tasks;
  if (multitask) tasks = {"cls", "recon"};
  std::vector<std::string> params;
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) params.push_back(p.key());

  std::filesystem::create_directories(st.out);
  const std::string csv_path = (std::filesystem::path(st.out) / (sc.name + ".csv")).string();
  std::FILE* csv = std::fopen(csv_path.c_str(), "w");
  if (!csv) throw losslens::error("cannot write " + csv_path);
  std::fputs("step,loss", csv);
  for (const auto& t : tasks) std::fprintf(csv, ",loss/%s", t.c_str());
  std::fputs(",grad_norm", csv);
  for (const auto& p : params) std::fprintf(csv, ",grad_norm/%s", p.c_str());
  std::fputs(",lr,accuracy\n", csv);

  std::vector<double> losses;  // filled on the monitor thread, read after detach()
  losses.reserve(std::size_t(steps));
  std::int64_t sample_misorder = 0, expected_step = 0;

  losslens::attach_options ao;
  ao.run = sc.name;
  ao.tasks = tasks;
  ao.detectors.chance_level.num_classes = sc.num_classes;
  ao.queue_capacity = std::size_t(1) << 16;
  ao.log_findings = false;
  ao.on_sample = [&](const losslens::sample& s) {
    if (s.step != expected_step) ++sample_misorder;
    expected_step = s.step + 1;
    losses.push_back(s.loss.value_or(std::nan("")));
    std::fprintf(csv, "%lld,", static_cast<long long>(s.step));
    put_number(csv, s.loss);
    for (std::size_t t = 0; t < tasks.size(); ++t) {
      std::fputc(',', csv);
      if (t < s.task_losses.size()) put_number(csv, s.task_losses[t]);
    }
    std::fputc(',', csv);
    put_number(csv, s.grad_norm);
    for (std::size_t i = 0; i < params.size(); ++i) {
      std::fputc(',', csv);
      if (i < s.param_grad_norms.size()) put_number(csv, s.param_grad_norms[i]);
    }
    std::fputc(',', csv);
    put_number(csv, s.lr);
    std::fputc(',', csv);
    put_number(csv, s.accuracy);
    std::fputc('\n', csv);
  };

  // Multi-task weights: the weighted run scales the [0, 1] reconstruction MSE (~0.02-0.2) by
  // 10 so that it is comparable with the cross-entropy (~0.2-2.3).
  const std::vector<double> task_weights = sc.loss == loss_kind::multitask_weighted
                                               ? std::vector<double>{1.0, 10.0}
                                               : std::vector<double>{1.0, 1.0};

  const auto t0 = std::chrono::steady_clock::now();
  auto lens = losslens::attach(model, *opt, ao);
  auto perm = torch::randperm(n);
  std::int64_t cursor = 0;
  for (int step = 0; step < steps; ++step) {
    if (cursor + sc.batch > n) {
      perm = torch::randperm(n);
      cursor = 0;
    }
    auto idx = perm.slice(0, cursor, cursor + sc.batch);
    cursor += sc.batch;
    auto x = images.index_select(0, idx);
    auto y = labels.index_select(0, idx);
    const bool faulty = fault_at >= 0 && step >= fault_at;

    if (sc.sgdr) {  // cosine annealing with warm restarts, eta_min 0
      const double t = double(step % sc.sgdr_period) / sc.sgdr_period;
      set_lr(*opt, 0.5 * sc.lr * (1 + std::cos(std::numbers::pi * t)));
    }
    if (sc.fault == fault_kind::lr_jump && step == fault_at) set_lr(*opt, sc.lr * 100);
    if (sc.fault == fault_kind::corrupt_batch && step == fault_at) x = x * 1000.0;
    if (sc.fault == fault_kind::nan_batch && step == fault_at) x[0][400] = std::nan("");
    if (sc.fault == fault_kind::shuffled_labels && faulty)
      y = y.index_select(0, torch::randperm(y.size(0)));

    if (!(sc.fault == fault_kind::no_zero_grad && faulty)) opt->zero_grad();
    auto [logits, rec] = model->forward(x);
    torch::Tensor loss, l_cls, l_rec;
    switch (sc.loss) {
      case loss_kind::ce:
        loss = F::cross_entropy(logits, y);
        break;
      case loss_kind::sigmoid_bce_onehot:  // the double-sigmoid bug
        loss = F::binary_cross_entropy_with_logits(torch::sigmoid(logits),
                                                   torch::one_hot(y, 10).to(torch::kFloat));
        break;
      case loss_kind::multitask_weighted:
        l_cls = F::cross_entropy(logits, y);
        l_rec = F::mse_loss(rec, x);
        loss = l_cls + task_weights[1] * l_rec;
        break;
      case loss_kind::multitask_raw:  // raw 0-255 pixel targets, plain sum
        l_cls = F::cross_entropy(logits, y);
        l_rec = F::mse_loss(rec, x * 255.0);
        loss = l_cls + l_rec;
        break;
    }
    const double acc = (logits.argmax(1) == y).to(torch::kDouble).mean().item<double>();
    const losslens::step_extras extras{.accuracy = acc,
                                       .task_weights = multitask
                                                           ? std::span<const double>(task_weights)
                                                           : std::span<const double>()};
    auto report = [&] {
      if (multitask)
        lens.step({{"cls", l_cls}, {"recon", l_rec}}, loss, extras);
      else
        lens.step(loss, extras);
    };
    if (sc.fault == fault_kind::step_before_backward) report();  // the call-order bug
    loss.backward();
    if (sc.clip) torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    opt->step();
    if (sc.fault != fault_kind::step_before_backward) report();
    if (steps >= 20000 && (step + 1) % (steps / 10) == 0)
      std::fprintf(stderr, "bench_real_runs: %s step %d/%d, %.1f s\n", sc.name.c_str(), step + 1,
                   steps,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  lens.wait_idle();
  const auto stats = lens.stats();
  lens.detach();
  const auto findings = lens.findings();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fclose(csv);

  const std::vector<double> medians = losslens::testing::tenth_medians(losses);
  bool degrading = false;
  if (sc.healthy)
    if (const std::size_t t = losslens::testing::first_rising_tenth(medians)) {
      degrading = true;
      std::fprintf(stderr,
                   "bench_real_runs: WARNING: healthy scenario %s seed %d: median loss of tenth "
                   "%zu is %.4g, %.0f%% above tenth %zu (%.4g)\n",
                   sc.name.c_str(), st.seed, t, medians[t - 1],
                   100 * (medians[t - 1] / medians[t - 2] - 1), t - 1, medians[t - 2]);
    }
  if (stats.dropped || stats.rejected || sample_misorder || losses.size() != std::size_t(steps))
    std::fprintf(
        stderr,
        "bench_real_runs: WARNING: %s: %zu of %d samples seen, %llu dropped, %llu "
        "rejected, %lld out of order\n",
        sc.name.c_str(), losses.size(), steps, static_cast<unsigned long long>(stats.dropped),
        static_cast<unsigned long long>(stats.rejected), static_cast<long long>(sample_misorder));

  json j;
  j["scenario"] = sc.name;
  j["seed"] = st.seed;
  j["steps"] = steps;
  j["label"] = sc.healthy ? "healthy" : "fault";
  j["fault_step"] = fault_step ? json(*fault_step) : json(nullptr);
  j["expected_kinds"] = sc.expected;
  j["num_classes"] = sc.num_classes;
  // The CSV has no column for task weights: the loss/<task> columns are unweighted and the
  // loss column is the weighted total.
  if (multitask) j["task_weights"] = {{"cls", task_weights[0]}, {"recon", task_weights[1]}};
  j["csv"] = csv_path;
  json med = json::array();
  for (double m : medians) med.push_back(number_or_null(m));
  j["median_loss_per_window"] = med;
  j["wall_s"] = std::round(wall * 100) / 100;
  j["samples"] = losses.size();
  j["dropped"] = stats.dropped;
  j["rejected"] = stats.rejected;
  if (sc.healthy) j["healthy_check"] = degrading ? "degrading" : "ok";
  json fs = json::array();
  for (const auto& f : findings)
    fs.push_back({{"kind", f.kind},
                  {"severity", std::string(losslens::to_string(f.level))},
                  {"first_step", f.first_step},
                  {"last_step", f.last_step},
                  {"series", f.series},
                  {"message", f.message}});
  j["findings"] = fs;
  return j;
}

settings parse(int argc, char** argv, const std::vector<scenario>& scenarios) {
  // --help lists the scenarios after the options.
  std::string text = std::string(usage) + "scenarios:\n";
  for (const auto& sc : scenarios) {
    char line[96];
    std::snprintf(line, sizeof line, "  %-22s %-7s %6d steps\n", sc.name.c_str(),
                  sc.healthy ? "healthy" : "fault", sc.steps);
    text += line;
  }
  const losslens::testing::program_args args(
      argc, argv, text, {"suite", "seeds", "only", "out", "steps-scale", "data"}, {"check"});
  settings s;
  const std::string suite = args.text("suite", "long"), seeds = args.text("seeds", "tune");
  if (suite != "short" && suite != "long") args.fail("--suite must be short or long");
  if (seeds != "tune" && seeds != "holdout") args.fail("--seeds must be tune or holdout");
  s.short_suite = suite == "short";
  s.seed = seeds == "tune" ? 1 : 2;
  if (args.has("only")) {
    const std::string v = args.text("only");
    for (std::size_t pos = 0; pos <= v.size();) {
      const std::size_t comma = std::min(v.find(',', pos), v.size());
      const std::string name = v.substr(pos, comma - pos);
      if (std::none_of(scenarios.begin(), scenarios.end(),
                       [&](const scenario& sc) { return sc.name == name; }))
        args.fail("unknown scenario '" + name + "'");
      s.only.insert(name);
      pos = comma + 1;
    }
  }
  s.out = args.text("out", s.out);
  s.steps_scale = args.number("steps-scale", s.steps_scale, 1e-9, 1e9);
  s.data = args.text("data", s.data);
  s.check = args.has("check");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const auto scenarios = all_scenarios();
  const settings st = parse(argc, argv, scenarios);
  try {
    torch::set_num_threads(1);
    // Runs that memorise drive gradients into denormal floats, which made steps 2-3x slower;
    // flushing them to zero changes no printed digit of the losses.
    at::globalContext().setFlushDenormal(true);
    const auto data = losslens::examples::load_fmnist(st.data, "train");
    const auto t0 = std::chrono::steady_clock::now();
    int runs = 0;
    // The verdicts: what a user reading the findings would conclude.
    std::int64_t healthy_steps = 0, healthy_warnings = 0, healthy_errors = 0;
    int faults = 0, named = 0;
    json failures = json::array(), onset_errors = json::object();
    for (const auto& sc : scenarios) {
      if (!st.only.empty() && !st.only.count(sc.name)) continue;
      if (st.short_suite && sc.short_scale == 0 && st.only.empty()) continue;
      const json j = run_scenario(sc, st, data);
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
      ++runs;
      if (sc.healthy) {
        healthy_steps += j["steps"].get<std::int64_t>();
        for (const auto& f : j["findings"]) {
          if (f["severity"] == "info") continue;
          (f["severity"] == "error" ? healthy_errors : healthy_warnings)++;
          failures.push_back(sc.name + ": " + f["severity"].get<std::string>() + " " +
                             f["kind"].get<std::string>());
        }
        continue;
      }
      ++faults;
      const json* first = nullptr;
      // The earliest incident of an expected kind that reaches the fault (a plateau long
      // before an LR jump does not name it).
      const std::int64_t from = j["fault_step"].is_null() ? 0 : j["fault_step"].get<std::int64_t>();
      for (const auto& f : j["findings"])
        if (std::find(sc.expected.begin(), sc.expected.end(), f["kind"].get<std::string>()) !=
                sc.expected.end() &&
            f["last_step"].get<std::int64_t>() >= from &&
            (!first ||
             f["first_step"].get<std::int64_t>() < (*first)["first_step"].get<std::int64_t>()))
          first = &f;
      if (!first) {
        failures.push_back(sc.name + ": no finding of an expected kind");
        continue;
      }
      ++named;
      if (!j["fault_step"].is_null())
        onset_errors[sc.name] = {{"kind", (*first)["kind"]},
                                 {"onset_error", (*first)["first_step"].get<std::int64_t>() -
                                                     j["fault_step"].get<std::int64_t>()}};
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const json summary = {
        {"summary", st.short_suite ? "short" : "long"},
        {"seed", st.seed},
        {"runs", runs},
        {"healthy_steps", healthy_steps},
        {"healthy_warnings", healthy_warnings},
        {"healthy_errors", healthy_errors},
        {"healthy_warnings_per_100k",
         healthy_steps ? 1e5 * double(healthy_warnings + healthy_errors) / double(healthy_steps)
                       : 0.0},
        {"faults", faults},
        {"faults_named", named},
        {"first_expected_finding", onset_errors},
        {"failures", failures},
        {"wall_s", std::round(secs * 10) / 10}};
    std::printf("%s\n", summary.dump().c_str());
    std::fprintf(stderr, "bench_real_runs: %d runs in %.1f s\n", runs, secs);
    return st.check && !failures.empty() ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_real_runs: %s\n", e.what());
    return 1;
  }
}
