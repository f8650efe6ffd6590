// Trains a Fashion-MNIST classifier (an MLP) with losslens attached in one call, and can
// reproduce the training pathologies losslens diagnoses. Prints the findings at the end.
//
//   fmnist_train [--steps 600] [--lr 0.05] [--db runs.db] [--port 0] [pathology flags]
//
// Run `fmnist_train --help` for every flag.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>

#include "fmnist.hpp"
#include "report_util.hpp"
#include "losslens/error.hpp"
#include "losslens/dashboard/live_dashboard.hpp"
#include "losslens/torch/monitor.hpp"
#include "losslens/torch/overfit.hpp"

namespace F = torch::nn::functional;
using losslens::examples::load_fmnist;

namespace {

const char* usage =
    "usage: fmnist_train [options]\n"
    "\n"
    "Trains a 784-256-128-10 MLP on Fashion-MNIST with losslens attached and prints what it\n"
    "found. Flags that reproduce a pathology on real data:\n"
    "  --lr X            learning rate (default 0.05; e.g. 5 gives divergence / NaN)\n"
    "  --no-zero-grad    never call optimizer.zero_grad()          -> missing_zero_grad\n"
    "  --softmax-then-ce softmax applied before cross_entropy       -> probabilities as logits\n"
    "  --frozen-layer    fc1's output is detached in forward        -> dead_parameters\n"
    "  --tiny-lr         learning rate 1e-6                          -> chance_level, plateau\n"
    "  --imbalance       classes 1-9 subsampled to 5%              -> class imbalance,\n"
    "                                                                  misleading accuracy\n"
    "  --init-scale S    fc3's weights drawn with std S (e.g. 10)   -> initial_loss (far above)\n"
    "  --label-leak      the label, one-hot x10, in 10 input pixels  -> initial_loss (far below)\n"
    "  --no-step         optimizer.step() never called             -> parameters_not_updated\n"
    "  --partial-optimizer  the optimizer gets fc1 and fc2 only     -> parameters_not_updated\n"
    "  --dead-relu       fc2's bias set to -50 (every unit dead)    -> constant_predictions\n"
    "  --clip M          clip_grad_norm_(M), its norm reported      -> clipping_saturated (M 0.1)\n"
    "  --nan-batch S     a NaN pixel in the batch of step S         -> non_finite, replay file\n"
    "  --overfit-check   first fit the first batch for 200 steps (the model and optimizer\n"
    "                    are put back after) and print losslens::overfit_check's verdict\n"
    "options:\n"
    "  --steps N         training steps (default 600)\n"
    "  --batch N         batch size (default 128)\n"
    "  --limit N         training examples to load (default 30000; 0 = all 60000)\n"
    "  --db PATH         run-history database (default runs.db; '' = none)\n"
    "  --run NAME        run name (default derived from the flags)\n"
    "  --port P          serve the live dashboard on 127.0.0.1:P (0 = off, default)\n"
    "  --no-monitor      train without losslens (to time the bare loop)\n"
    "  --findings-json F also write the findings as JSON to F\n"
    "  --data DIR        Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)\n"
    "  --seed N          random seed (default 1)\n";

struct options {
  int steps = 600;
  int batch = 128;
  std::int64_t limit = 30000;
  double lr = 0.05;
  std::string db = "runs.db";
  std::string run;
  int port = 0;
  bool monitor = true;
  bool zero_grad = true;
  bool softmax_then_ce = false;
  bool frozen_layer = false;
  bool imbalance = false;
  double init_scale = 0;
  bool label_leak = false;
  bool no_step = false;
  bool partial_optimizer = false;
  bool dead_relu = false;
  double clip = 0;
  int nan_batch = -1;
  bool overfit_check = false;
  std::string data = losslens::examples::default_fmnist_dir;
  std::string findings_json;
  std::uint64_t seed = 1;
};

[[noreturn]] void bad_usage(const std::string& why) {
  std::fprintf(stderr, "fmnist_train: %s\n\n%s", why.c_str(), usage);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  std::string flags;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) bad_usage(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  auto number = [&](int& i) {
    const std::string v = value(i);
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end)
      bad_usage(std::string(argv[i - 1]) + " expects a number, got '" + v + "'");
    return d;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (a == "--steps")
      o.steps = int(number(i));
    else if (a == "--batch")
      o.batch = int(number(i));
    else if (a == "--limit")
      o.limit = std::int64_t(number(i));
    else if (a == "--lr") {
      o.lr = number(i);
      flags += "-lr" + std::string(argv[i]);
    } else if (a == "--db")
      o.db = value(i);
    else if (a == "--run")
      o.run = value(i);
    else if (a == "--port")
      o.port = int(number(i));
    else if (a == "--data")
      o.data = value(i);
    else if (a == "--findings-json")
      o.findings_json = value(i);
    else if (a == "--seed")
      o.seed = std::uint64_t(number(i));
    else if (a == "--no-monitor")
      o.monitor = false;
    else if (a == "--no-zero-grad") {
      o.zero_grad = false;
      flags += "-no-zero-grad";
    } else if (a == "--softmax-then-ce") {
      o.softmax_then_ce = true;
      flags += "-softmax-then-ce";
    } else if (a == "--frozen-layer") {
      o.frozen_layer = true;
      flags += "-frozen-layer";
    } else if (a == "--tiny-lr") {
      o.lr = 1e-6;
      flags += "-tiny-lr";
    } else if (a == "--imbalance") {
      o.imbalance = true;
      flags += "-imbalance";
    } else if (a == "--init-scale") {
      o.init_scale = number(i);
      flags += "-init-scale";
    } else if (a == "--label-leak") {
      o.label_leak = true;
      flags += "-label-leak";
    } else if (a == "--no-step") {
      o.no_step = true;
      flags += "-no-step";
    } else if (a == "--partial-optimizer") {
      o.partial_optimizer = true;
      flags += "-partial-optimizer";
    } else if (a == "--dead-relu") {
      o.dead_relu = true;
      flags += "-dead-relu";
    } else if (a == "--clip") {
      o.clip = number(i);
      flags += "-clip";
    } else if (a == "--nan-batch") {
      o.nan_batch = int(number(i));
      flags += "-nan-batch";
    } else if (a == "--overfit-check")
      o.overfit_check = true;
    else
      bad_usage("unknown option " + a);
  }
  if (o.steps <= 0 || o.batch <= 0 || o.limit < 0 || !(o.lr > 0) || o.port < 0 || o.port > 65535)
    bad_usage("--steps and --batch must be > 0, --lr > 0, --limit >= 0, --port in 0..65535");
  if (o.init_scale < 0 || o.clip < 0) bad_usage("--init-scale and --clip must be >= 0 (0: off)");
  if (o.run.empty()) o.run = "fmnist" + (flags.empty() ? std::string("-healthy") : flags);
  return o;
}

struct mlpImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  bool detach_fc1 = false;
  mlpImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 256));
    fc2 = register_module("fc2", torch::nn::Linear(256, 128));
    fc3 = register_module("fc3", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto h = torch::relu(fc1->forward(x));
    if (detach_fc1) h = h.detach();  // the bug --frozen-layer reproduces
    return fc3->forward(torch::relu(fc2->forward(h)));
  }
};
TORCH_MODULE(mlp);

/// Keeps every example of class 0 and 5% of the others.
losslens::examples::fmnist_split subsample(const losslens::examples::fmnist_split& d) {
  auto gen = torch::rand({d.labels.size(0)});
  auto keep = (d.labels == 0).logical_or(gen < 0.05);
  return {d.images.index({keep}), d.labels.index({keep})};
}

int run(const options& o) {
  torch::manual_seed(o.seed);
  auto data = load_fmnist(o.data, "train", o.limit);
  if (o.imbalance) data = subsample(data);
  const std::int64_t n = data.images.size(0);
  std::printf("fmnist_train: %lld examples, %d steps of batch %d, lr %g, run '%s'\n",
              static_cast<long long>(n), o.steps, o.batch, o.lr, o.run.c_str());

  mlp model;
  model->detach_fc1 = o.frozen_layer;
  {
    torch::NoGradGuard no_grad;
    // The bug --init-scale reproduces: a last layer initialised far too large.
    if (o.init_scale > 0) torch::nn::init::normal_(model->fc3->weight, 0, o.init_scale);
    // The bug --dead-relu reproduces: every unit of fc2 starts (and stays) below zero.
    if (o.dead_relu) model->fc2->bias.fill_(-50);
  }
  // The bug --partial-optimizer reproduces: a layer left out of the optimizer.
  std::vector<torch::Tensor> trained = model->parameters();
  if (o.partial_optimizer) {
    trained = model->fc1->parameters();
    for (const auto& p : model->fc2->parameters()) trained.push_back(p);
  }
  torch::optim::SGD opt(trained, torch::optim::SGDOptions(o.lr).momentum(0.9));

  if (o.overfit_check) {
    // Before training: can this model, loss and optimizer fit the first batch?
    auto idx = torch::arange(std::min<std::int64_t>(o.batch, n));
    torch::data::Example<> first{data.images.index_select(0, idx),
                                 data.labels.index_select(0, idx)};
    const auto r = losslens::overfit_check(
        model, opt,
        [&](const torch::Tensor& x, const torch::Tensor& y) {
          auto logits = model->forward(x);
          return F::cross_entropy(o.softmax_then_ce ? torch::softmax(logits, 1) : logits, y);
        },
        first, {.steps = 200});
    std::fputs(losslens::format_overfit_text(r).c_str(), stdout);
    std::fputs("\n", stdout);
  }

  std::optional<losslens::monitor> lens;
  if (o.monitor) {
    losslens::attach_options ao;
    ao.run = o.run;
    ao.db = o.db;
    ao.detectors.chance_level.num_classes = 10;
    char config[256];
    std::snprintf(config, sizeof config,
                  R"({"example":"fmnist_train","lr":%g,"batch":%d,"steps":%d,"seed":%llu})", o.lr,
                  o.batch, o.steps, static_cast<unsigned long long>(o.seed));
    ao.config_json = config;
    lens.emplace(losslens::attach(model, opt, ao));
    // The live dashboard is a sink of its own (losslens::dashboard), serving the run in db.
    if (o.port != 0 && !o.db.empty())
      lens->add_sink(std::make_unique<losslens::dashboard::live_dashboard>(
          losslens::dashboard::live_options{.port = static_cast<std::uint16_t>(o.port)}));
  }

  std::vector<double> step_us;
  step_us.reserve(std::size_t(o.steps));
  auto perm = torch::randperm(n);
  std::int64_t cursor = 0;
  for (int step = 0; step < o.steps; ++step) {
    if (cursor + o.batch > n) {
      perm = torch::randperm(n);
      cursor = 0;
    }
    auto idx = perm.slice(0, cursor, cursor + o.batch);
    cursor += o.batch;
    auto x = data.images.index_select(0, idx);
    auto y = data.labels.index_select(0, idx);
    // The bug --label-leak reproduces: the answer is in the inputs.
    if (o.label_leak) x.slice(1, 0, 10).copy_(10 * torch::one_hot(y, 10).to(x.dtype()));
    // --nan-batch: one corrupted example in one batch.
    if (step == o.nan_batch) x[0][400] = std::nan("");

    const auto t0 = std::chrono::steady_clock::now();
    if (o.zero_grad) opt.zero_grad();
    auto logits = model->forward(x);
    // The bug --softmax-then-ce reproduces: probabilities fed to a loss that wants logits.
    auto ce_input = o.softmax_then_ce ? torch::softmax(logits, 1) : logits;
    if (lens) {
      lens->check_class_logits("cls", ce_input, y);  // sampled input red flags
      lens->capture(x, y);  // by reference: saved only if a non_finite/loss_spike names this step
    }
    auto loss = F::cross_entropy(ce_input, y);
    loss.backward();
    std::optional<double> clip_norm;
    if (o.clip > 0)  // the norm before clipping, reported so that losslens sees how much is cut
      clip_norm = torch::nn::utils::clip_grad_norm_(model->parameters(), o.clip);
    if (!o.no_step) opt.step();  // the bug --no-step reproduces: the update never happens
    // Computed with or without losslens, so --no-monitor times the same work.
    const double acc = (logits.argmax(1) == y).to(torch::kDouble).mean().item<double>();
    if (lens)
      lens->step(loss, {.accuracy = acc,
                        .clip_norm = clip_norm,
                        .max_norm = o.clip > 0 ? std::optional<double>(o.clip) : std::nullopt});
    step_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (step % (o.steps > 2000 ? 1000 : 100) == 0 || step + 1 == o.steps)
      std::printf("step %4d  loss %.4f\n", step, loss.item<double>());
  }

  std::sort(step_us.begin(), step_us.end());
  std::printf("\nmedian step time: %.0f us (%s)\n", step_us[step_us.size() / 2],
              lens ? "with losslens" : "without losslens");
  if (lens) {
    lens->detach();  // the run history's last commit first: its counters are final after it
    const auto st = lens->stats();
    std::string stored;
    if (!o.db.empty() && st.run_id == 0)
      stored = ", run NOT stored in " + o.db + " (" + st.storage_error + ")";
    else if (!o.db.empty())
      stored = ", run stored in " + o.db;
    if (st.points_lost > 0)
      stored += "; " + std::to_string(st.points_lost) + " points never reached it";
    std::printf("losslens: %llu steps processed, %llu dropped%s\n\n",
                static_cast<unsigned long long>(st.processed),
                static_cast<unsigned long long>(st.dropped), stored.c_str());
    losslens::examples::report_findings(lens->findings(), std::int64_t(st.processed),
                                        o.findings_json);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    return run(o);
  } catch (const losslens::error& e) {
    std::fprintf(stderr, "fmnist_train: %s\n", e.what());
    return 1;
  }
}
