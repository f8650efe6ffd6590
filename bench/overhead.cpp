// Cost of attach() on the training loop. Three copies of one model take turns step by step
// (interleaved, so that load from other processes hits each alike): bare, attached, and bare
// plus a separate sweep over every .grad after the step (the grad-norm pass as a trainer would
// write it, AVX2). Reported per shape: median wall and training-thread CPU time per step, their
// ratios to the bare loop, page faults and context switches per step, the time inside
// lens.step(), and the 1-minute load average before and after.
// Shapes: (a) an MLP of ~1.6M parameters at batch 256; (b) a tiny model whose bare step is
// < 1 ms; (c) a 10M-parameter embedding + linear model at batch 32, whose step is short for its
// parameter count (its gradient bytes bound what any exact norm pass costs).
// Prints JSON. Usage: bench_overhead [steps_a=60] [steps_b=3000] [steps_c=40]

#include <dlfcn.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/ops/_foreach_norm.h>
#include <nlohmann/json.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "../hooks/src/grad_norms.hpp"
#include "losslens/torch/monitor.hpp"
#include "bench_util.hpp"
#include "program_args.hpp"

using clock_type = std::chrono::steady_clock;
using losslens::bench::load1;
namespace F = torch::nn::functional;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}
double wall_us() {
  return std::chrono::duration<double, std::micro>(clock_type::now().time_since_epoch()).count();
}
double thread_cpu_us() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e6 + double(t.tv_nsec) / 1e3;
}
struct counters {
  long faults, switches;
};
counters process_counters() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return {r.ru_minflt + r.ru_majflt, r.ru_nvcsw + r.ru_nivcsw};
}

/// OpenBLAS keeps its own thread pool, which torch::set_num_threads does not size: a "1
/// thread" measurement has to set both. Returns the BLAS thread count (0: not OpenBLAS).
int set_blas_threads(int n) {
  using set_fn = void (*)(int);
  using get_fn = int (*)();
  if (auto set = reinterpret_cast<set_fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(n);
  if (auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads")))
    return get();
  return 0;
}

/// One trainable model: forward from a fixed batch to a loss.
struct model_case {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor()> loss;
};

torch::nn::Sequential make_mlp(const std::vector<std::int64_t>& widths) {
  torch::nn::Sequential s;
  for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
    s->push_back(torch::nn::Linear(widths[i], widths[i + 1]));
    if (i + 2 < widths.size()) s->push_back(torch::nn::ReLU());
  }
  return s;
}

model_case mlp(const std::vector<std::int64_t>& widths, std::int64_t batch) {
  auto m = make_mlp(widths);
  const auto x = torch::randn({batch, widths.front()});
  const auto y = torch::randint(0, widths.back(), {batch});
  return {m.ptr(), [m, x, y]() mutable { return F::cross_entropy(m->forward(x), y); }};
}

/// Token ids -> embedding rows (dense gradient, as nn.Embedding's default) -> mean over the
/// sequence -> linear classifier.
struct embedding_model : torch::nn::Module {
  embedding_model(std::int64_t vocab, std::int64_t dim, std::int64_t classes)
      : emb(register_module("emb", torch::nn::Embedding(vocab, dim))),
        head(register_module("head", torch::nn::Linear(dim, classes))) {}
  torch::Tensor forward(const torch::Tensor& ids) { return head(emb(ids).mean(1)); }
  torch::nn::Embedding emb;
  torch::nn::Linear head;
};

model_case embedding(std::int64_t vocab, std::int64_t dim, std::int64_t batch, std::int64_t seq) {
  auto m = std::make_shared<embedding_model>(vocab, dim, 10);
  const auto ids = torch::randint(0, vocab, {batch, seq});
  const auto y = torch::randint(0, 10, {batch});
  return {m, [m, ids, y] { return F::cross_entropy(m->forward(ids), y); }};
}

std::int64_t count_params(torch::nn::Module& m) {
  std::int64_t n = 0;
  for (auto& p : m.parameters()) n += p.numel();
  return n;
}

nlohmann::json compare(const std::function<model_case()>& make, std::int64_t batch, int steps) {
  const double load_before = load1();
  torch::manual_seed(0);
  model_case bare = make(), watched = make(), swept = make();
  torch::optim::SGD opt_bare(bare.module->parameters(), 0.01);
  torch::optim::SGD opt_watched(watched.module->parameters(), 0.01);
  torch::optim::SGD opt_swept(swept.module->parameters(), 0.01);
  losslens::attach_options o;
  o.log_findings = false;
  o.queue_capacity = 1 << 14;
  auto lens = losslens::attach(watched.module, opt_watched, o);
  const auto swept_params = swept.module->parameters();
  double sink = 0;

  enum { v_bare, v_watched, v_swept, n_variants };
  struct series {
    std::vector<double> wall, cpu, lens_call, sweep;
    long faults = 0, switches = 0;
  } s[n_variants];
  auto one_step = [&](int v, bool record) {
    model_case& m = v == v_bare ? bare : v == v_watched ? watched : swept;
    torch::optim::SGD& opt = v == v_bare ? opt_bare : v == v_watched ? opt_watched : opt_swept;
    const counters c0 = process_counters();
    const double w0 = wall_us(), t0 = thread_cpu_us();
    opt.zero_grad();
    auto loss = m.loss();
    loss.backward();
    opt.step();
    double call = 0;
    if (v == v_watched) {
      const double l0 = wall_us();
      lens.step(loss);
      call = wall_us() - l0;
    }
    double sweep = 0;
    if (v == v_swept) {
      const double l0 = wall_us();
      for (const auto& p : swept_params)
        sink += losslens::hooks::detail::sum_of_squares_cpu(p.grad());
      sweep = wall_us() - l0;
    }
    const double t1 = thread_cpu_us(), w1 = wall_us();
    const counters c1 = process_counters();
    if (!record) return;
    series& r = s[v];
    r.wall.push_back(w1 - w0);
    r.cpu.push_back(t1 - t0);
    r.faults += c1.faults - c0.faults;
    r.switches += c1.switches - c0.switches;
    if (v == v_watched) r.lens_call.push_back(call);
    if (v == v_swept) r.sweep.push_back(sweep);
  };
  for (int i = 0; i < std::max(5, steps / 20); ++i)  // warm-up
    for (int v = 0; v < n_variants; ++v) one_step(v, false);
  for (int i = 0; i < steps; ++i)
    for (int k = 0; k < n_variants; ++k) one_step((i + k) % n_variants, true);  // rotate the order
  lens.wait_idle();
  const auto st = lens.stats();

  // The old grad-norm pass for comparison: at::_foreach_norm over the gradients + one host copy.
  std::vector<at::Tensor> grads;
  for (auto& p : watched.module->parameters()) grads.push_back(p.grad());
  std::vector<double> t_foreach;
  for (int i = 0; i < 50; ++i) {
    const double t0 = wall_us();
    auto r = at::_foreach_norm(grads, 2);
    auto host = at::stack(r).to(at::kDouble).cpu();
    sink += host.data_ptr<double>()[0];
    t_foreach.push_back(wall_us() - t0);
  }
  std::int64_t grad_bytes = 0;
  for (auto& g : grads) grad_bytes += g.numel() * std::int64_t(g.element_size());

  const double mb = median(s[v_bare].wall), mw = median(s[v_watched].wall),
               ms = median(s[v_swept].wall);
  const double cb = median(s[v_bare].cpu), cw = median(s[v_watched].cpu),
               cs = median(s[v_swept].cpu);
  auto per_step = [&](long n) { return double(n) / steps; };
  return {{"parameters", count_params(*watched.module)},
          {"gradient_bytes", grad_bytes},
          {"batch", batch},
          {"steps", steps},
          {"bare_step_us_median", mb},
          {"monitored_step_us_median", mw},
          {"ratio", mw / mb},
          {"added_us_per_step", mw - mb},
          {"bare_cpu_us_median", cb},
          {"monitored_cpu_us_median", cw},
          {"cpu_ratio", cw / cb},
          {"swept_step_us_median", ms},
          {"swept_ratio", ms / mb},
          {"swept_cpu_ratio", cs / cb},
          {"sweep_us_median", median(s[v_swept].sweep)},
          {"sweep_gb_per_s", double(grad_bytes) / median(s[v_swept].sweep) / 1e3},
          {"bare_foreach_norm_us_median", median(t_foreach)},
          {"lens_step_call_us_median", median(s[v_watched].lens_call)},
          {"page_faults_per_step",
           {{"bare", per_step(s[v_bare].faults)},
            {"monitored", per_step(s[v_watched].faults)},
            {"swept", per_step(s[v_swept].faults)}}},
          {"context_switches_per_step",
           {{"bare", per_step(s[v_bare].switches)},
            {"monitored", per_step(s[v_watched].switches)},
            {"swept", per_step(s[v_swept].switches)}}},
          {"samples_processed", st.processed},
          {"samples_dropped", st.dropped},
          {"load1_before", load_before},
          {"load1_after", load1()},
          {"sink", sink}};
}
}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_overhead [STEPS_A] [STEPS_B] [STEPS_C] [--blas-threads N]\n\n"
      "Cost of attach() on the training loop: median step time of the same model bare, attached,\n"
      "and bare with a separate sweep over its gradients after the step, interleaved, for an\n"
      "MLP of ~1.6M parameters at batch 256 (STEPS_A steps, default 60), a tiny model (STEPS_B,\n"
      "default 3000) and a 10M-parameter embedding + linear model at batch 32 (STEPS_C, default\n"
      "40; 0 skips a shape). Torch runs on one thread, and OpenBLAS on --blas-threads (default\n"
      "1). Prints JSON with the 1-minute load average before and after each shape.\n",
      {"blas-threads"}, {}, 3);
  const int steps_a = int(args.positional_integer(0, 60, 0, 1 << 30));
  const int steps_b = int(args.positional_integer(1, 3000, 0, 1 << 30));
  const int steps_c = int(args.positional_integer(2, 40, 0, 1 << 30));
  torch::set_num_threads(1);
  const int blas = set_blas_threads(int(args.integer("blas-threads", 1, 1, 1024)));
  nlohmann::json out;
  out["torch_threads"] = at::get_num_threads();
  out["blas_threads"] = blas;
  if (steps_a > 0)
    out["mlp_1_6M"] = compare([] { return mlp({784, 1024, 768, 10}, 256); }, 256, steps_a);
  if (steps_b > 0) out["tiny"] = compare([] { return mlp({8, 16, 4}, 16); }, 16, steps_b);
  // 78125 x 128 = 10M embedding parameters (+ a 128 -> 10 head); 32 sequences of 16 tokens.
  if (steps_c > 0)
    out["embedding_10M"] = compare([] { return embedding(78125, 128, 32, 16); }, 32, steps_c);
  out["targets"] = {{"mlp_ratio_max", 1.01}, {"tiny_added_us_max", 5.0}};
  std::printf("%s\n", out.dump(2).c_str());
}
