// Real LibTorch training loops (small MLPs on the CPU) with a monitor attached.

#include <atomic>
#include <functional>
#include <fstream>
#include <filesystem>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <cmath>
#include <limits>
#include <mutex>
#include <random>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>

#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/dashboard/live_dashboard.hpp"
#include "losslens/torch/monitor.hpp"
#include "grad_norms.hpp"    // detail::sum_of_squares()
#include "step_capture.hpp"  // detail::live_hook_count()
#include "update_check.hpp"  // detail::update_check
#include "loss_trend.hpp"
#include "temp_dir.hpp"
#include "toy_training.hpp"

// LibTorch's logging header defines CHECK (abort on failure); Catch's must win in this file.
#undef CHECK
#include <catch2/catch.hpp>

using namespace losslens;
using namespace losslens::testing::toy;
using losslens::testing::first_rising_tenth;
using losslens::testing::medians_text;
using losslens::testing::tenth_medians;
namespace F = torch::nn::functional;

namespace {

/// The call-order bugs: lens.step() before backward, or zero_grad() between backward and step.
enum class order { step_before_backward, zero_grad_before_step };
void train_misordered(mlp& model, torch::optim::Optimizer& opt, monitor& lens, const toy_data& data,
                      int n, order o) {
  for (int i = 0; i < n; ++i) {
    auto [x, y] = data.batch(i);
    if (o == order::step_before_backward) opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    if (o == order::step_before_backward) lens.step(loss);
    loss.backward();
    opt.step();
    if (o == order::zero_grad_before_step) {
      opt.zero_grad();
      lens.step(loss);
    }
  }
}

}  // namespace

TEST_CASE("a healthy run gives no warnings and every step is processed") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto lens = attach(model, opt, quiet("healthy"));
  const auto losses = train_losses(model, opt, lens, data, 400);
  lens.wait_idle();
  // Healthy by its loss: the median of each tenth falls or stays flat, and it did learn.
  const auto medians = tenth_medians(losses);
  INFO("median loss per tenth: " << medians_text(medians));
  CHECK(first_rising_tenth(medians) == 0);
  CHECK(medians.back() < medians.front() * 0.5);
  const auto st = lens.stats();
  CHECK(st.steps == 400);
  CHECK(st.processed == 400);
  CHECK(st.dropped == 0);
  CHECK(st.rejected == 0);
  std::string said;
  for (const auto& f : warnings(lens)) said += f.kind + ": " + f.message + "\n";
  INFO(said);
  CHECK(warnings(lens).empty());
}

TEST_CASE("grad norms match clip_grad_norm_'s total within 1e-5 relative") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  std::mutex mu;
  std::vector<double> seen;
  auto o = quiet("norms");
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    seen.push_back(*s.grad_norm);
  };
  auto lens = attach(model, opt, o);
  std::vector<double> reference;
  for (int i = 0; i < 20; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    lens.step(loss);
    // clip_grad_norm_ with an infinite max returns the total norm and changes nothing.
    reference.push_back(torch::nn::utils::clip_grad_norm_(model->parameters(), INFINITY));
    opt.step();
  }
  lens.wait_idle();
  std::lock_guard lock(mu);
  REQUIRE(seen.size() == reference.size());
  for (std::size_t i = 0; i < seen.size(); ++i)
    CHECK(seen[i] == Approx(reference[i]).epsilon(1e-5));
}

TEST_CASE("per-parameter norms are those of .grad at step(), also when changed after backward") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  std::mutex mu;
  std::vector<std::vector<double>> seen;
  auto o = quiet("changed-grads");
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    std::vector<double> v;
    for (const auto& p : s.param_grad_norms) v.push_back(p.value_or(-1));
    seen.push_back(v);
  };
  auto lens = attach(model, opt, o);
  std::vector<std::vector<double>> reference;
  for (int i = 0; i < 12; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    F::cross_entropy(model->forward(x), y).backward();
    // Norms taken when backward accumulated each gradient must give way to what .grad holds
    // when step() runs: scaled in place (0-3), a second backward added (4-7), or untouched.
    if (i < 4) {
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.mutable_grad().mul_(3.0);
    } else if (i < 8) {
      F::cross_entropy(model->forward(x), y).backward();
    }
    std::vector<double> ref;
    for (auto& p : model->parameters())
      ref.push_back(p.grad().to(torch::kDouble).norm().item<double>());
    reference.push_back(ref);
    lens.step(F::cross_entropy(model->forward(x), y).detach());
    opt.step();
  }
  lens.wait_idle();
  std::lock_guard lock(mu);
  REQUIRE(seen.size() == reference.size());
  for (std::size_t i = 0; i < seen.size(); ++i) {
    REQUIRE(seen[i].size() == reference[i].size());
    for (std::size_t k = 0; k < seen[i].size(); ++k) {
      INFO("step " << i << " parameter " << k);
      CHECK(seen[i][k] == Approx(reference[i][k]).epsilon(1e-6));
    }
  }
}

TEST_CASE("sum_of_squares matches a long double sum, for every length and both dtypes") {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0, 1);
  for (std::int64_t n : {0, 1, 3, 15, 16, 17, 31, 33, 100, 4099, 100003}) {
    std::vector<float> f(static_cast<std::size_t>(n));
    std::vector<double> d(static_cast<std::size_t>(n));
    long double ref_f = 0, ref_d = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      d[std::size_t(i)] = normal(rng) * std::exp(3 * normal(rng));
      f[std::size_t(i)] = float(d[std::size_t(i)]);
      ref_d += (long double)d[std::size_t(i)] * d[std::size_t(i)];
      ref_f += (long double)f[std::size_t(i)] * f[std::size_t(i)];
    }
    INFO("n = " << n);
    CHECK(hooks::detail::sum_of_squares(f.data(), n) == Approx(double(ref_f)).epsilon(1e-13));
    CHECK(hooks::detail::sum_of_squares(d.data(), n) == Approx(double(ref_d)).epsilon(1e-13));
    if (n > 20) {
      f[std::size_t(n / 2)] = std::numeric_limits<float>::infinity();
      CHECK(std::isinf(hooks::detail::sum_of_squares(f.data(), n)));
      d[std::size_t(n - 1)] = std::nan("");
      CHECK(std::isnan(hooks::detail::sum_of_squares(d.data(), n)));
    }
  }
}

TEST_CASE("the monitor thread takes the samples in without wait_idle()") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("batched"));
  train(model, opt, lens, data, 30);
  // It naps between batches of samples rather than being woken for each: the last ones are
  // taken in when the nap ends (10 ms), not only when someone asks.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (lens.stats().processed < 30 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(lens.stats().processed == 30);
}

TEST_CASE("LR 50 diverges and is reported at the step it happened") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 50.0);
  auto lens = attach(model, opt, quiet("lr50"));
  std::int64_t first_bad = -1;
  train(model, opt, lens, data, 200, [&](int i, const torch::Tensor& loss) {
    if (!std::isfinite(loss.item<double>()) && first_bad < 0) first_bad = i;
  });
  lens.wait_idle();
  lens.detach();
  auto nf = kinds(lens, "non_finite");
  auto dv = kinds(lens, "divergence");
  auto ex = kinds(lens, "exploding_gradients");
  INFO("first non-finite loss at step " << first_bad);
  REQUIRE((!nf.empty() || !dv.empty() || !ex.empty()));
  if (first_bad >= 0) {
    bool at_step = false;
    for (const auto& f : nf)
      if (f.series == "loss") at_step = f.first_step == first_bad;
    CHECK(at_step);
  }
}

TEST_CASE("a loop without zero_grad is reported as missing_zero_grad within 3 steps") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.01);
  auto lens = attach(model, opt, quiet("nozero"));
  for (int i = 0; i < 10; ++i) {
    auto [x, y] = data.batch(i);
    auto loss = F::cross_entropy(model->forward(x), y);  // no opt.zero_grad()
    loss.backward();
    opt.step();
    lens.step(loss);
  }
  lens.wait_idle();
  lens.detach();
  const auto f = kinds(lens, "missing_zero_grad");
  REQUIRE(f.size() == 1);
  CHECK(f[0].first_step <= 2);
  CHECK(f[0].level == severity::error);
  CHECK(f[0].evidence_value("parameters") == 4);  // fc1/fc2 weight and bias
  CHECK(f[0].advice.find("zero_grad") != std::string::npos);

  SECTION("declared gradient accumulation is not reported") {
    mlp m2;
    torch::optim::SGD opt2(m2->parameters(), 0.01);
    auto o = quiet("accum");
    o.accumulation_steps = 4;
    auto lens2 = attach(m2, opt2, o);
    for (int i = 0; i < 40; ++i) {
      auto [x, y] = data.batch(i);
      if (i % 4 == 0) opt2.zero_grad();
      auto loss = F::cross_entropy(m2->forward(x), y) / 4;
      loss.backward();
      if (i % 4 == 3) opt2.step();
      lens2.step(loss);
    }
    lens2.wait_idle();
    CHECK(kinds(lens2, "missing_zero_grad").empty());
  }
  SECTION("zero_grad(set_to_none) and model->zero_grad() count as resets") {
    mlp m3;
    torch::optim::SGD opt3(m3->parameters(), 0.01);
    auto lens3 = attach(m3, opt3, quiet("none"));
    for (int i = 0; i < 10; ++i) {
      auto [x, y] = data.batch(i);
      if (i % 2)
        m3->zero_grad(/*set_to_none=*/true);
      else
        m3->zero_grad();
      auto loss = F::cross_entropy(m3->forward(x), y);
      loss.backward();
      opt3.step();
      lens3.step(loss);
    }
    lens3.wait_idle();
    CHECK(kinds(lens3, "missing_zero_grad").empty());
  }
}

TEST_CASE("a layer cut off from the loss is reported as dead_parameters") {
  toy_data data;
  mlp model;
  model->detach_hidden = true;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("frozen"));
  train(model, opt, lens, data, 30);
  lens.wait_idle();
  const auto f = kinds(lens, "dead_parameters");
  REQUIRE(f.size() == 1);
  CHECK(f[0].first_step == 0);
  CHECK(f[0].evidence_value("parameters") == 2);
  CHECK(f[0].message.find("fc1.weight") != std::string::npos);
  CHECK(f[0].message.find("fc1.bias") != std::string::npos);
  // The steps it covers, not the steps since it opened (was "for 1 steps" over steps 0-9).
  CHECK(f[0].evidence_value("steps") == double(f[0].last_step - f[0].first_step + 1));
  CHECK(f[0].last_step == 29);
  CHECK(f[0].message.find("for 30 steps") != std::string::npos);
}

TEST_CASE("lens.step() before backward is a call_order finding, not vanishing gradients") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("call-order"));
  // The bug: at lens.step() the gradients of this step do not exist yet.
  train_misordered(model, opt, lens, data, 40, order::step_before_backward);
  lens.wait_idle();
  const auto f = kinds(lens, "call_order");
  REQUIRE(f.size() == 1);
  CHECK(f[0].level == severity::error);
  CHECK(f[0].first_step == 1);  // step 0 has no earlier backward to tell
  CHECK(f[0].evidence_value("parameters") == 4);
  CHECK(f[0].advice.find("after loss.backward()") != std::string::npos);
  CHECK(kinds(lens, "vanishing_gradients").empty());
  CHECK(kinds(lens, "dead_parameters").empty());
}

TEST_CASE("zero_grad between backward and lens.step() is a call_order finding too") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("call-order-2"));
  train_misordered(model, opt, lens, data, 20, order::zero_grad_before_step);
  lens.wait_idle();
  CHECK(kinds(lens, "call_order").size() == 1);
  CHECK(kinds(lens, "vanishing_gradients").empty());
}

TEST_CASE("loss() keeps its own copy of a temporary task name") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("temp-names"));
  for (int i = 0; i < 5; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto logits = model->forward(x);
    // A temporary std::string, long enough to live on the heap, dies before step().
    auto total =
        lens.loss(std::string("classification_head_") + "number_one", F::cross_entropy(logits, y));
    {
      std::string scratch(64, 'x');
      (void)scratch;
    }  // reuse the freed memory
    total.backward();
    opt.step();
    lens.step(total);
  }
  lens.wait_idle();
  CHECK(lens.stats().processed == 5);
}

TEST_CASE("step() after detach() is rejected, counted and said once") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("after-detach"));
  train(model, opt, lens, data, 5);
  lens.detach();
  train(model, opt, lens, data, 10);
  const auto st = lens.stats();
  CHECK(st.processed == 5);
  CHECK(st.queued == 5);
  CHECK(st.rejected == 10);
}

TEST_CASE("findings() right after wait_idle() holds every step the detectors saw") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("fresh-findings");
  auto lens = attach(model, opt, o);
  // NaN losses at steps 30-59: one non_finite incident growing every step.
  train(model, opt, lens, data, 60, {}, nan_at(30, 59));
  lens.wait_idle();
  const auto f = kinds(lens, "non_finite");
  REQUIRE(f.size() == 1);
  CHECK(f[0].first_step == 30);
  CHECK(f[0].last_step == 59);  // not the last update_interval publication (46)
  CHECK(f[0].evidence_value("non_finite_steps") == 30);
}

TEST_CASE("float64 models work, eval mode is noted, and multi-task steps are named") {
  toy_data data(1024, torch::kDouble);
  mlp model;
  model->to(torch::kDouble);
  torch::optim::SGD opt(model->parameters(), 0.05);
  std::mutex mu;
  std::vector<sample> seen;
  auto o = quiet("double");
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    seen.push_back(s);
  };
  auto lens = attach(model, opt, o);
  model->eval();  // the bug: training in eval mode
  for (int i = 0; i < 10; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto out = model->forward(x);
    auto cls = F::cross_entropy(out, y);
    auto aux = out.pow(2).mean() * 1e-3;
    auto total = cls + aux;
    total.backward();
    opt.step();
    lens.step({{"cls", cls}, {"aux", aux}}, total, {.accuracy = 0.5});
  }
  lens.wait_idle();
  REQUIRE(kinds(lens, "eval_mode_training").size() == 1);
  std::lock_guard lock(mu);
  REQUIRE(seen.size() == 10);
  CHECK(seen[3].task_losses.size() == 2);
  CHECK(*seen[3].task_losses[0] + *seen[3].task_losses[1] == Approx(*seen[3].loss));
  CHECK(*seen[3].lr == 0.05);
  CHECK(*seen[3].accuracy == 0.5);
  CHECK(seen[3].eval_mode);
}

TEST_CASE("step() never throws into the loop, bad tensors are counted") {
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("bad"));
  CHECK(lens.step(torch::ones({3})) == step_decision::proceed);
  CHECK(lens.step(torch::Tensor()) == step_decision::proceed);
  CHECK(lens.stats().rejected == 2);
}

TEST_CASE("guard returns skip decisions for non-finite and spiking steps") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("guard");
  o.guard = true;
  auto lens = attach(model, opt, o);
  int skipped = 0;
  for (int i = 0; i < 60; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    if (i == 50) loss = loss * std::nan("");  // a poisoned batch
    loss.backward();
    const auto d = lens.step(loss);
    if (d != step_decision::proceed) {
      ++skipped;
      CHECK(i == 50);
      CHECK(d == step_decision::skip_non_finite);
      continue;  // skip the update
    }
    opt.step();
  }
  CHECK(skipped == 1);
  for (auto& p : model->parameters()) CHECK(torch::isfinite(p).all().item<bool>());
}

TEST_CASE("attach/detach 1000 times leaves no hooks and the model trains normally") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  const auto before = losslens::hooks::detail::live_hook_count();
  for (int k = 0; k < 1000; ++k) {
    auto lens = attach(model, opt, quiet("churn"));
    CHECK(lens.stats().hooks == 4);
  }
  CHECK(losslens::hooks::detail::live_hook_count() == before);
  // Gradients are the same as on a model that was never attached.
  mlp fresh;
  for (std::size_t i = 0; i < model->parameters().size(); ++i) {
    torch::NoGradGuard g;
    fresh->parameters()[i].copy_(model->parameters()[i]);
  }
  auto [x, y] = data.batch(0);
  model->zero_grad();
  fresh->zero_grad();
  F::cross_entropy(model->forward(x), y).backward();
  F::cross_entropy(fresh->forward(x), y).backward();
  for (std::size_t i = 0; i < model->parameters().size(); ++i)
    CHECK(torch::allclose(model->parameters()[i].grad(), fresh->parameters()[i].grad()));
}

TEST_CASE("attach rejects a model without trainable parameters") {
  torch::nn::Sequential empty;
  torch::optim::SGD opt(std::vector<torch::Tensor>{torch::zeros({1}, torch::requires_grad())}, 0.1);
  CHECK_THROWS_WITH(attach(empty, opt), Catch::Contains("no parameters that require grad"));
}

TEST_CASE("with db set, the run, its points, findings and events are stored") {
  const testing::temp_dir dir("hooks-db");
  const std::string db = dir.file("runs.db");
  toy_data data;
  std::int64_t run_id = 0;
  {
    mlp model;
    torch::optim::SGD opt(model->parameters(), 0.05);
    auto o = quiet("stored");
    o.db = db;
    o.config_json = R"({"lr":0.05})";
    auto lens = attach(model, opt, o);
    train(model, opt, lens, data, 60, {}, nan_at(40, 40));
    lens.wait_idle();
    run_id = lens.stats().run_id;
    CHECK(run_id > 0);
  }  // detach: drained, run finished
  storage::run_reader r(db);
  const auto run = r.run(run_id);
  CHECK(run.name == "stored");
  CHECK(run.status == storage::run_status::finished);
  CHECK(run.config_json == R"({"lr":0.05})");
  const auto loss = r.find_series(run_id, "loss");
  const auto pts = r.points(loss.id, 0, 1000);
  REQUIRE(pts.size() == 60);
  CHECK(pts[0].step == 0);
  CHECK(std::isnan(pts[40].value));
  CHECK(std::isfinite(pts[41].value));
  CHECK(r.find_series(run_id, "grad_norm/fc1.weight").summary.count == 60);
  const auto nf = r.findings(run_id, "non_finite");
  REQUIRE(nf.size() == 1);
  CHECK(nf[0].f.first_step == 40);
  std::vector<std::string> events;
  for (const auto& e : r.events(run_id)) events.push_back(e.kind);
  CHECK(std::find(events.begin(), events.end(), "attach") != events.end());
  CHECK(std::find(events.begin(), events.end(), "detach") != events.end());
}

TEST_CASE("attach reports an unusable db path at once, with what to do") {
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("baddb");
  o.require_db = true;
  o.db = "/nonexistent-dir/runs.db";
  CHECK_THROWS_WITH(attach(model, opt, o), Catch::Contains("does not exist"));
  const auto garbage = std::filesystem::temp_directory_path() /
                       ("losslens_garbage_" + std::to_string(getpid()) + ".db");
  {
    std::FILE* f = std::fopen(garbage.c_str(), "w");
    std::fputs("this is not a database, just text that is long enough to be read", f);
    std::fclose(f);
  }
  o.db = garbage.string();
  CHECK_THROWS_AS(attach(model, opt, o), losslens::error);
  std::filesystem::remove(garbage);
}

TEST_CASE("without require_db an unusable db path degrades the monitor and training goes on") {
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  toy_data data;
  auto o = quiet("baddb");
  o.db = "/nonexistent-dir/runs.db";
  o.db_retry_interval = std::chrono::milliseconds(10);
  auto lens = attach(model, opt, o);
  CHECK(lens.stats().storage_degraded);
  CHECK(lens.stats().storage_failed);
  CHECK_THAT(lens.stats().storage_error, Catch::Contains("does not exist"));
  train(model, opt, lens, data, 200);
  lens.wait_idle();
  auto s = lens.stats();
  CHECK(s.processed == 200);
  CHECK(s.storage_degraded);
  CHECK(s.points_written == 0);
  CHECK(s.run_id == 0);
}

namespace {
/// GET path from 127.0.0.1:port with a plain socket; returns the whole response ("" on failure).
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == ssize_t(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, std::size_t(n));
    }
  }
  ::close(fd);
  return out;
}
}  // namespace

TEST_CASE(
    "loss() names the tasks, check_*() findings and task weights reach the run and its "
    "dashboard") {
  const testing::temp_dir dir("hooks-dash");
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  std::mutex mu;
  std::vector<sample> seen;
  auto o = quiet("named");
  o.db = dir.file("runs.db");
  const auto port = std::uint16_t(20000 + int(getpid() % 20000));
  o.red_flags.every_n_steps = 5;
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    seen.push_back(s);
  };
  auto lens = attach(model, opt, o);
  lens.add_sink(std::make_unique<dashboard::live_dashboard>(dashboard::live_options{.port = port}));
  const std::vector<double> weights{1.0, 0.5};
  for (int i = 0; i < 40; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto probs = torch::softmax(model->forward(x), 1);  // the bug: probabilities as logits
    lens.check_class_logits("cls", probs, y);
    // Named in this order (the operands of one + may be evaluated in either order).
    auto cls = lens.loss("cls", F::cross_entropy(probs, y));
    auto l2 = lens.loss("l2", probs.pow(2).mean());
    auto total = cls + 0.5 * l2;
    total.backward();
    opt.step();
    lens.step(total, {.task_weights = weights});
  }
  lens.wait_idle();
  const auto st = lens.stats();
  REQUIRE(st.run_id > 0);
  {
    std::lock_guard lock(mu);
    REQUIRE(seen.size() == 40);
    REQUIRE(seen[5].task_losses.size() == 2);
    CHECK(*seen[5].task_losses[0] + 0.5 * *seen[5].task_losses[1] == Approx(*seen[5].loss));
    CHECK(seen[5].task_weights == weights);
  }
  // Let the monitor thread drain the red-flag inbox (it polls every few ms).
  std::vector<finding> flags;
  for (int k = 0; k < 200 && flags.empty(); ++k) {
    flags = kinds(lens, "probabilities_as_logits");
    if (flags.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(flags.size() == 1);
  // One id space for every source (no magic offsets): ids are 1, 2, ... across all findings.
  std::vector<std::uint64_t> ids;
  for (const auto& f : lens.findings()) ids.push_back(f.id);
  for (std::size_t k = 0; k < ids.size(); ++k) CHECK(ids[k] == k + 1);
  CHECK(flags[0].id >= 1);
  CHECK(flags[0].id <= ids.size());
  CHECK(flags[0].series == "loss/cls");
  REQUIRE(st.dashboard_port == port);
  const auto runs = http_get(st.dashboard_port, "/api/runs");
  CHECK(runs.find("200 OK") != std::string::npos);
  CHECK(runs.find("\"named\"") != std::string::npos);
  CHECK_THROWS_AS(
      lens.check_class_logits("cls", torch::zeros({4, 3}), torch::zeros({5}, torch::kLong)),
      losslens::error);
  lens.detach();
  storage::run_reader r(o.db);
  CHECK(r.findings(st.run_id, "probabilities_as_logits").size() == 1);
  CHECK(r.find_series(st.run_id, "loss/l2").summary.count == 40);
}

TEST_CASE("a live dashboard without a run history says so and serves nothing") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("nodb");
  std::mutex mu;
  std::vector<std::string> lines;
  o.log = [&](severity, std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  };
  auto lens = attach(model, opt, o);
  lens.add_sink(std::make_unique<dashboard::live_dashboard>(dashboard::live_options{.port = 0}));
  auto [x, y] = data.batch(0);
  auto loss = F::cross_entropy(model->forward(x), y);
  loss.backward();
  lens.step(loss);
  lens.wait_idle();
  CHECK(lens.stats().dashboard_port == 0);
  lens.detach();
  std::lock_guard lock(mu);
  bool said = false;
  for (const auto& l : lines) said |= l.find("needs a run history") != std::string::npos;
  CHECK(said);
}

namespace {
// Voluntary context switches of every thread of this process but the calling one: how often
// the monitor's background threads (monitor thread, writer, dashboard) went to sleep, i.e.
// woke up.
std::uint64_t background_wakeups() {
  std::uint64_t total = 0;
  const auto self = std::to_string(::gettid());
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    if (task.path().filename() == self) continue;
    std::ifstream in(task.path() / "status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::stoull(line.substr(24));
  }
  return total;
}
}  // namespace

TEST_CASE("an idle attached trainer wakes its background threads at most 20 times a second") {
  const testing::temp_dir dir("hooks-idle");
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("idle");
  o.db = dir.file("runs.db");
  auto lens = attach(model, opt, o);
  lens.add_sink(std::make_unique<dashboard::live_dashboard>(dashboard::live_options{.port = 0}));
  train(model, opt, lens, data, 50);
  lens.wait_idle();
  REQUIRE(lens.stats().dashboard_port > 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last commit settles
  const auto before = background_wakeups();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double per_second = double(background_wakeups() - before) / seconds;
  INFO("background wake-ups per second while idle: " << per_second);
  CHECK(per_second <= 20);
  std::printf("idle attached trainer (db + live dashboard): %.1f background wake-ups/s\n",
              per_second);
}

TEST_CASE("a loss on the meta device is one line and leaves no empty run behind") {
  const testing::temp_dir dir("hooks-meta");
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("meta");
  o.db = dir.file("runs.db");
  std::mutex mu;
  std::vector<std::string> lines;
  o.log = [&](severity, std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  };
  auto lens = attach(model, opt, o);
  const auto meta = torch::zeros({}, torch::TensorOptions().device(torch::kMeta));
  for (int i = 0; i < 3; ++i) CHECK(lens.step(meta) == step_decision::proceed);
  CHECK(lens.stats().rejected == 3);
  lens.detach();
  {
    std::lock_guard lock(mu);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("meta device") != std::string::npos);
    CHECK(lines[0].find('\n') == std::string::npos);  // no c10 backtrace
  }
  // The run is created by the first step whose numbers could be read: there was none.
  CHECK_FALSE(std::filesystem::exists(o.db));
}

TEST_CASE("every param group's learning rate is read, and advice quotes their range") {
  toy_data data;
  mlp model;
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(model->fc1->parameters(), std::make_unique<torch::optim::SGDOptions>(5.0));
  groups.emplace_back(model->fc2->parameters(), std::make_unique<torch::optim::SGDOptions>(0.5));
  torch::optim::SGD opt(groups, torch::optim::SGDOptions(1.0));
  auto o = quiet("groups");
  std::mutex mu;
  std::vector<sample> seen;
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    seen.push_back(s);
  };
  auto lens = attach(model, opt, o);
  for (int i = 0; i < 60; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x * 50), y);
    loss.backward();
    opt.step();
    lens.step(loss);
  }
  lens.wait_idle();
  {
    std::lock_guard lock(mu);
    REQUIRE(!seen.empty());
    CHECK(*seen[0].lr == 5.0);
    CHECK(*seen[0].lr_min == 0.5);
    CHECK(*seen[0].lr_max == 5.0);
  }
  // An LR of 5 on inputs x50 blows up: the advice names both groups' LRs.
  bool quoted = false;
  for (const auto& f : lens.findings())
    quoted |= f.advice.find("param groups at 0.5-5") != std::string::npos;
  CHECK(quoted);
}

TEST_CASE("on_new_finding hears each incident once, to_line() is the line stderr shows") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("new-only");
  std::mutex mu;
  std::vector<std::string> logged, heard;
  o.log_findings = true;
  o.log = [&](severity, std::string_view line) {
    std::lock_guard lock(mu);
    logged.emplace_back(line);
  };
  auto lens = attach(model, opt, o);
  lens.on_new_finding([&](const finding& f) {
    std::lock_guard lock(mu);
    heard.push_back(to_line(f));
  });
  // NaN losses from step 60 on: one non_finite incident that grows for 60 steps.
  train(model, opt, lens, data, 120, {}, nan_at(60, 119));
  lens.detach();
  std::lock_guard lock(mu);
  std::string all;
  for (const auto& h : heard) all += h + "\n";
  INFO(all);
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].find("non_finite") != std::string::npos);
  REQUIRE(logged.size() == 1);
  CHECK(logged[0] == heard[0]);
}

TEST_CASE("an update that keeps the sum of a parameter's values is still an update") {
  // Softmax cross-entropy's gradient of the output bias sums to zero over the classes, so SGD
  // never changes the plain sum of that bias: a plain-sum checksum called the bias of every
  // such classifier "not updated" once its steps were too small for float rounding to move the
  // sum (fc3.bias in fmnist_train's 200k-step run). Independent reference: the bias itself.
  torch::manual_seed(3);
  torch::nn::Linear fc(4, 10);
  torch::optim::SGD opt(fc->parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  const std::vector<at::Tensor> params = fc->parameters();
  hooks::detail::update_check check(params, opt);
  std::vector<std::uint8_t> flags(params.size(), 0);
  std::vector<std::optional<double>> norms(params.size(), 1.0);
  check.check(flags, norms, false);  // baseline
  const auto x = torch::randn({32, 4});
  const auto y = torch::randint(0, 10, {32});
  int steps_changed = 0, flagged = 0;
  for (int step = 0; step < 20; ++step) {
    const auto before = fc->bias.detach().clone();
    opt.zero_grad();
    torch::nn::functional::cross_entropy(fc(x), y).backward();
    // The reference: the gradient of the bias sums to 0 (in float), its values do change.
    CHECK(std::abs(fc->bias.grad().sum().item<double>()) < 1e-6);
    opt.step();
    steps_changed += !torch::equal(before, fc->bias.detach());
    std::fill(flags.begin(), flags.end(), 0);
    check.check(flags, norms, false);
    flagged += (flags[1] & param_flag::not_updated) != 0;
  }
  CHECK(steps_changed == 20);
  CHECK(flagged == 0);
  // The same kind of update without rounding noise to hide it, on the bias alone: values and
  // changes that are exact binary fractions, +0.125 on one class and -0.125 on another (the
  // plain sum stays exactly 0.5; the old checksum flagged this every time).
  const std::vector<at::Tensor> bias_only = {fc->bias};
  hooks::detail::update_check bias_check(bias_only, opt);
  std::vector<std::uint8_t> one(1, 0);
  std::vector<std::optional<double>> one_norm(1, 1.0);
  {
    torch::NoGradGuard no_grad;
    fc->bias.fill_(0.0);
    fc->bias[0].fill_(0.5);
  }
  bias_check.check(one, one_norm, false);
  for (int step = 0; step < 4; ++step) {
    {
      torch::NoGradGuard no_grad;
      fc->bias[step % 10] += 0.125;
      fc->bias[(step + 1) % 10] -= 0.125;
    }
    REQUIRE(fc->bias.sum().item<double>() == 0.5);
    one[0] = 0;
    bias_check.check(one, one_norm, false);
    CHECK((one[0] & param_flag::not_updated) == 0);
  }
  // Nothing changes at all (optimizer.step() left out): flagged.
  one[0] = 0;
  bias_check.check(one, one_norm, false);
  CHECK((one[0] & param_flag::not_updated) != 0);
  // One parameter of two keeps its values while the other changes (the weights of dead units):
  // a sparse gradient, not a skipped step.
  std::fill(flags.begin(), flags.end(), 0);
  check.check(flags, norms, false);
  {
    torch::NoGradGuard no_grad;
    fc->bias[0] += 0.25;
  }
  std::fill(flags.begin(), flags.end(), 0);
  check.check(flags, norms, false);
  CHECK((flags[0] & param_flag::not_updated) == 0);
  CHECK((flags[1] & param_flag::not_updated) == 0);
}
