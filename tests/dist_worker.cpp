// One rank of a small data-parallel run over Gloo (FileStore rendezvous), with losslens
// attached through the process group. Started by test_distributed and bench_distributed.
//
//   dist_worker --store FILE --rank R --world W [--db DB] [--steps N] [--sync-every K]
//               [--nan-rank R --nan-step S] [--slow-rank R --sleep-ms M]
//               [--desync-rank R --desync-step S] [--mode dist|local|none|errors]
//               [--json FILE]
//
// Gradients are averaged DDP-style: all-reduce each parameter's gradient with the process group,
// then divide by the world size. --mode: attach through the process group (dist, default),
// attach as a single process (local), not at all (none), or check attach's setup errors
// (errors, with --world 1). --json writes {"rank","steps",
// "mean_step_s","lens_step_s" (mean time inside lens.step()),"findings"}.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "losslens/error.hpp"
#include "losslens/torch/distributed.hpp"
#include "program_args.hpp"

namespace {

struct args {
  std::string store, db, json, mode = "dist";
  int rank = 0, world = 1, steps = 60, sync_every = 5;
  int nan_rank = -1, nan_step = -1, slow_rank = -1, sleep_ms = 0;
  int desync_rank = -1, desync_step = -1;
};

const char* usage =
    "usage: dist_worker --store FILE --rank R --world W [--db DB] [--steps N]\n"
    "         [--sync-every K] [--nan-rank R --nan-step S] [--slow-rank R --sleep-ms M]\n"
    "         [--desync-rank R --desync-step S] [--mode dist|local|none|errors]\n"
    "         [--json FILE]\n\n"
    "One rank of a small data-parallel run over Gloo (FileStore rendezvous at FILE) with\n"
    "losslens attached, for test_distributed and bench_distributed.\n";

args parse(int argc, char** argv) {
  const losslens::testing::program_args p(
      argc, argv, usage,
      {"store", "db", "json", "mode", "rank", "world", "steps", "sync-every", "nan-rank",
       "nan-step", "slow-rank", "sleep-ms", "desync-rank", "desync-step"});
  constexpr std::int64_t big = 1 << 30;
  args a;
  a.store = p.text("store");
  a.db = p.text("db");
  a.json = p.text("json");
  a.mode = p.text("mode", a.mode);
  a.rank = int(p.integer("rank", a.rank, 0, big));
  a.world = int(p.integer("world", a.world, 1, big));
  a.steps = int(p.integer("steps", a.steps, 0, big));
  a.sync_every = int(p.integer("sync-every", a.sync_every, 1, big));
  a.nan_rank = int(p.integer("nan-rank", a.nan_rank, -1, big));
  a.nan_step = int(p.integer("nan-step", a.nan_step, -1, big));
  a.slow_rank = int(p.integer("slow-rank", a.slow_rank, -1, big));
  a.sleep_ms = int(p.integer("sleep-ms", a.sleep_ms, 0, big));
  a.desync_rank = int(p.integer("desync-rank", a.desync_rank, -1, big));
  a.desync_step = int(p.integer("desync-step", a.desync_step, -1, big));
  if (a.store.empty()) p.fail("--store is required");
  return a;
}

struct netImpl : torch::nn::Module {
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  netImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(20, 32));
    fc2 = register_module("fc2", torch::nn::Linear(32, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2->forward(torch::relu(fc1->forward(x)));
  }
};
TORCH_MODULE(net);

/// --mode errors: the setup errors of attach(model, optimizer, process_group, ...) and a world of
/// one (plain attach). Exit 0 when every check holds.
int check_errors(const c10::intrusive_ptr<c10d::ProcessGroup>& pg) {
  net model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  int failures = 0;
  auto expect_error = [&](const char* what, auto&& fn) {
    try {
      fn();
      std::fprintf(stderr, "no error for %s\n", what);
      ++failures;
    } catch (const losslens::error& e) {
      std::fprintf(stderr, "%s: %s\n", what, e.what());
    }
  };
  expect_error("null process group",
               [&] { losslens::attach(model, opt, c10::intrusive_ptr<c10d::ProcessGroup>(), {}); });
  losslens::distributed_options d;
  d.sync_every = 0;
  expect_error("sync_every 0", [&] { losslens::attach(model, opt, pg, {}, d); });
  // A world of one is a plain monitor: steps work, no rank series, no gathers.
  auto lens = losslens::attach(model, opt, pg, {}, {});
  auto loss = model->forward(torch::randn({4, 20})).pow(2).mean();
  loss.backward();
  lens.step(loss);
  lens.wait_idle();
  if (lens.stats().processed != 1) ++failures;
  return failures == 0 ? 0 : 2;
}

int run(const args& a) {
  torch::set_num_threads(1);
  auto store = c10::make_intrusive<c10d::FileStore>(a.store, a.world);
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  opts->threads = 1;
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, a.rank, a.world, opts);
  if (a.mode == "errors") return check_errors(pg);

  torch::manual_seed(0);  // the same initial weights on every rank
  net model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  // This rank's shard of a learnable problem.
  torch::manual_seed(0);
  const auto w = torch::randn({20, 10});
  torch::manual_seed(100 + a.rank);
  const auto x = torch::randn({a.steps * 32, 20});
  const auto y = x.matmul(w).argmax(1);

  std::optional<losslens::monitor> lens;
  if (a.mode != "none") {
    losslens::attach_options o;
    o.run = "dist-test";
    o.db = a.db;
    losslens::distributed_options d;
    d.sync_every = a.sync_every;
    if (a.mode == "dist")
      lens.emplace(losslens::attach(model, opt, pg, o, d));
    else
      lens.emplace(losslens::attach(model, opt, o));
  }

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  double in_lens = 0;
  for (int i = 0; i < a.steps; ++i) {
    if (a.rank == a.slow_rank)
      std::this_thread::sleep_for(std::chrono::milliseconds(a.sleep_ms));  // a slow loader
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(
        model->forward(x.slice(0, i * 32, (i + 1) * 32)), y.slice(0, i * 32, (i + 1) * 32));
    if (a.rank == a.nan_rank && i == a.nan_step)
      loss = loss * std::numeric_limits<float>::quiet_NaN();
    loss.backward();
    bool finite = true;
    for (auto& p : model->parameters()) {
      std::vector<at::Tensor> g{p.grad()};
      pg->allreduce(g)->wait();
      p.grad().div_(a.world);
      if (a.rank == a.desync_rank && a.desync_step >= 0 && i >= a.desync_step)
        p.grad().mul_(1.05);  // the bug: this replica's update differs
      finite = finite && torch::isfinite(p.grad()).all().item<bool>();
    }
    if (finite) opt.step();  // the same decision on every rank (gradients are all-reduced)
    if (lens) {
      const auto s0 = clock::now();
      lens->step(loss);
      in_lens += std::chrono::duration<double>(clock::now() - s0).count();
    }
  }
  const double mean_step = std::chrono::duration<double>(clock::now() - t0).count() / a.steps;
  // Line the ranks up before detaching, as a trainer's final barrier would.
  pg->barrier()->wait();
  nlohmann::json out{{"rank", a.rank},
                     {"steps", a.steps},
                     {"mean_step_s", mean_step},
                     {"lens_step_s", in_lens / a.steps}};
  if (lens) {
    lens->detach();
    out["findings"] = nlohmann::json::array();
    for (const auto& f : lens->findings()) out["findings"].push_back(losslens::to_json(f));
  }
  if (!a.json.empty()) std::ofstream(a.json) << out.dump();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_worker: %s\n", e.what());
    return 1;
  }
}
