// The methodology's sanity checks on real LibTorch training loops (issue #19): the first loss
// against ln C, an optimizer that does not step, predictions that collapse onto one class,
// accuracy on imbalanced data, clipping on every step, the LR in advice, overfitting one batch
// and the replay file of a bad batch.

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "losslens/analyzer.hpp"
#include "losslens/error.hpp"
#include "losslens/lr_advice.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/torch/monitor.hpp"
#include "losslens/torch/overfit.hpp"
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

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// The findings of one kind once the red-flag inbox has drained (the monitor thread polls it).
std::vector<finding> wait_for(const monitor& lens, const std::string& kind) {
  std::vector<finding> out;
  for (int k = 0; k < 300 && out.empty(); ++k) {
    out = kinds(lens, kind);
    if (out.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return out;
}

}  // namespace

TEST_CASE("initial_loss: a last layer initialised with std 10 starts far above ln 10") {
  toy_data data;
  mlp model;
  {
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(model->fc2->weight, 0, 10);
  }
  torch::optim::SGD opt(model->parameters(), 0.01);
  auto lens = attach(model, opt, quiet("init-std10"));
  double first = 0;
  train(model, opt, lens, data, 40, [&](int i, const torch::Tensor& loss) {
    if (i == 0) first = loss.item<double>();
  });
  lens.detach();
  const auto found = kinds(lens, "initial_loss");
  REQUIRE(found.size() == 1);
  CHECK(found[0].rule.name == "first_loss_far_above_expected");
  CHECK(found[0].first_step == 0);
  CHECK(found[0].evidence_value("expected") == Approx(std::log(10.0L)).epsilon(1e-12));
  CHECK(found[0].evidence_value("initial_loss") == Approx(first).epsilon(1e-6));
  CHECK(found[0].evidence_value("ratio") == Approx(first / std::log(10.0)).epsilon(1e-6));
  CHECK(first > 2 * std::log(10.0));
  CHECK(contains(found[0].advice, "small weights"));
}

TEST_CASE("initial_loss: labels leaked into the inputs drive the loss far below ln 10 at once") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto lens = attach(model, opt, quiet("label-leak"));
  std::vector<double> losses;
  for (int i = 0; i < 40; ++i) {
    auto [x0, y] = data.batch(i);
    // The bug: the label is written into the first 10 input features.
    auto x = x0.clone();
    x.slice(1, 0, 10).copy_(10 * torch::one_hot(y, 10).to(x.dtype()));
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    lens.step(loss);
    losses.push_back(loss.item<double>());
  }
  lens.detach();
  const auto found = kinds(lens, "initial_loss");
  REQUIRE(found.size() == 1);
  CHECK(found[0].rule.name == "early_loss_far_below_expected");
  // The median of steps 16-19 (window 20), from the trainer's own losses.
  std::vector<double> late(losses.begin() + 16, losses.begin() + 20);
  std::sort(late.begin(), late.end());
  CHECK(found[0].evidence_value("window_loss") == Approx((late[1] + late[2]) / 2).epsilon(1e-6));
  CHECK(found[0].evidence_value("window_loss") <= 0.1 * std::log(10.0));
  CHECK(contains(found[0].advice, "inputs"));
}

TEST_CASE("initial_loss and parameters_not_updated stay quiet on a healthy run") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto lens = attach(model, opt, quiet("healthy-start"));
  const auto losses = train_losses(model, opt, lens, data, 300);
  lens.detach();
  // Healthy by its loss: the median of each tenth falls or stays flat.
  const auto medians = tenth_medians(losses);
  INFO("median loss per tenth: " << medians_text(medians));
  CHECK(first_rising_tenth(medians) == 0);
  CHECK(kinds(lens, "initial_loss").empty());
  CHECK(kinds(lens, "parameters_not_updated").empty());
  CHECK(kinds(lens, "clipping_saturated").empty());
}

TEST_CASE("parameters_not_updated: optimizer.step() never called") {
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto lens = attach(model, opt, quiet("no-step"));
  for (int i = 0; i < 30; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    lens.step(loss);  // the bug: no opt.step()
  }
  lens.detach();
  const auto found = kinds(lens, "parameters_not_updated");
  REQUIRE(found.size() == 1);
  CHECK(found[0].level == severity::error);
  CHECK(found[0].evidence_value("parameters") == 4);
  CHECK(found[0].evidence_value("of_parameters") == 4);
  CHECK(found[0].evidence_value("not_in_optimizer") == 0);
  // The first step has no baseline; steps 1-5 are the patience.
  CHECK(found[0].first_step == 1);
  CHECK(contains(found[0].message, "fc1.weight"));
  CHECK(contains(found[0].message, "step() never changes them"));
}

TEST_CASE("parameters_not_updated: a layer left out of the optimizer, a param group at LR 0") {
  toy_data data;
  mlp model;
  SECTION("not in the optimizer") {
    torch::optim::SGD opt(model->fc1->parameters(), 0.05);  // the bug: fc2 is not trained
    auto lens = attach(model, opt, quiet("partial"));
    train(model, opt, lens, data, 30);
    lens.detach();
    const auto found = kinds(lens, "parameters_not_updated");
    REQUIRE(found.size() == 1);
    CHECK(found[0].level == severity::warning);  // fc1 does train
    CHECK(found[0].evidence_value("parameters") == 2);
    CHECK(found[0].evidence_value("not_in_optimizer") == 2);
    CHECK(contains(found[0].message, "fc2.weight"));
    CHECK(!contains(found[0].message, "fc1.weight"));
    CHECK(contains(found[0].advice, "pass every parameter to the optimizer"));
  }
  SECTION("LR 0") {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(model->fc1->parameters(),
                        std::make_unique<torch::optim::AdamOptions>(1e-3));
    groups.emplace_back(model->fc2->parameters(), std::make_unique<torch::optim::AdamOptions>(0.0));
    torch::optim::Adam opt(groups, torch::optim::AdamOptions(1e-3));
    auto lens = attach(model, opt, quiet("zero-lr"));
    train(model, opt, lens, data, 30);
    lens.detach();
    const auto found = kinds(lens, "parameters_not_updated");
    REQUIRE(found.size() == 1);
    CHECK(found[0].evidence_value("zero_lr") == 2);
    CHECK(found[0].evidence_value("lr_min") == 0);
    CHECK(found[0].evidence_value("lr_max") == 1e-3);
    CHECK(contains(found[0].advice, "learning rate above 0"));
    // The LR as advice quotes it: the groups' range and Adam's range from the methodology.
    CHECK(contains(found[0].advice, "param groups' learning rates are 0-0.001"));
    CHECK(contains(found[0].advice, "where Adam stops learning"));
  }
}

TEST_CASE("constant_predictions: dead ReLUs make every row predict one class") {
  toy_data data;
  mlp model;
  {
    torch::NoGradGuard no_grad;
    model->fc1->bias.fill_(-50);  // the bug: every hidden unit starts (and stays) below zero
  }
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("dead-relu");
  o.red_flags.every_n_steps = 10;
  auto lens = attach(model, opt, o);
  torch::Tensor last_logits;
  for (int i = 0; i < 150; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto logits = model->forward(x);
    lens.check_class_logits("cls", logits, y);
    auto loss = F::cross_entropy(logits, y);
    loss.backward();
    opt.step();
    lens.step(loss);
    last_logits = logits.detach();
  }
  // Independently: the logits do not depend on the input, so one class wins every row.
  CHECK(last_logits.std(0).max().item<double>() == 0);
  CHECK((last_logits.argmax(1) == last_logits.argmax(1)[0]).all().item<bool>());
  const auto found = wait_for(lens, "constant_predictions");
  lens.detach();
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("dead") == 1);
  CHECK(found[0].evidence_value("rows") == 64);
  CHECK(found[0].evidence_value("predicted_class") ==
        double(last_logits.argmax(1)[0].item<std::int64_t>()));
  CHECK(found[0].evidence_value("target_classes") >= 2);
  CHECK(found[0].first_step >= 100);  // constant_warmup
  CHECK(contains(found[0].advice, "dead"));
}

namespace {
/// 200 steps of SGD at `lr` with the class logits checked every 10 steps; returns the
/// constant_predictions findings and the logits of the last step.
std::pair<std::vector<finding>, torch::Tensor> constant_run(mlp& model, const torch::Tensor& x,
                                                            const torch::Tensor& y, double lr,
                                                            const std::string& name) {
  torch::optim::SGD opt(model->parameters(), lr);
  auto o = quiet(name);
  o.red_flags.every_n_steps = 10;
  auto lens = attach(model, opt, o);
  torch::Tensor last;
  for (int i = 0; i < 200; ++i) {
    const auto start = (i * 64) % (x.size(0) - 64);
    auto xb = x.slice(0, start, start + 64), yb = y.slice(0, start, start + 64);
    opt.zero_grad();
    auto logits = model->forward(xb);
    lens.check_class_logits("cls", logits, yb);
    auto loss = F::cross_entropy(logits, yb);
    loss.backward();
    opt.step();
    lens.step(loss);
    last = logits.detach();
  }
  lens.wait_idle();
  auto found = kinds(lens, "constant_predictions");
  lens.detach();
  return {found, last};
}
/// The mean lead of the top logit over the second, per row (the reference for top_margin).
double mean_margin(const torch::Tensor& logits) {
  const auto top2 = std::get<0>(logits.to(torch::kDouble).topk(2, 1));
  return (top2.select(1, 0) - top2.select(1, 1)).mean().item<double>();
}
}  // namespace

TEST_CASE("constant_predictions: one class leading by a wide margin is called saturated") {
  toy_data data;
  mlp model;
  {
    torch::NoGradGuard no_grad;
    model->fc2->bias[7].fill_(60);  // pushed onto class 7 (as after a step far too large)
  }
  const auto [found, last] = constant_run(model, data.x, data.y, 1e-4, "saturated");
  // Independently: the logits still depend on the input, and class 7 leads by more than 20.
  CHECK(last.std(0).max().item<double>() > 1e-3);
  CHECK((last.argmax(1) == 7).all().item<bool>());
  CHECK(mean_margin(last) > 20);
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("saturated") == 1);
  CHECK(found[0].evidence_value("dead") == 0);
  CHECK(found[0].evidence_value("predicted_class") == 7);
  CHECK(found[0].evidence_value("top_margin") == Approx(mean_margin(last)).epsilon(0.05));
  CHECK(contains(found[0].message, "saturated"));
  CHECK(contains(found[0].advice, "too large"));
}

TEST_CASE("constant_predictions: the majority class of imbalanced targets is a shortcut") {
  // 95% of the rows are class 0, and the model (with a moderate lead for class 0, as after it
  // learned the prior) predicts class 0 everywhere.
  torch::manual_seed(4);
  const std::int64_t n = 4096;
  auto x = torch::randn({n, 20});
  auto y = torch::zeros({n}, torch::kLong);
  y.masked_fill_(torch::rand({n}) < 0.05, 1);
  mlp model;
  {
    torch::NoGradGuard no_grad;
    model->fc2->bias[0].fill_(6);
  }
  const auto [found, last] = constant_run(model, x, y, 1e-4, "shortcut");
  CHECK(last.std(0).max().item<double>() > 1e-3);
  CHECK((last.argmax(1) == 0).all().item<bool>());
  CHECK(mean_margin(last) < 20);
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("saturated") == 0);
  CHECK(found[0].evidence_value("dead") == 0);
  CHECK(found[0].evidence_value("predicted_class") == 0);
  CHECK(found[0].evidence_value("majority_class") == 0);
  CHECK(found[0].evidence_value("imbalance_ratio") >= 5);
  CHECK(contains(found[0].message, "majority class"));
  CHECK(contains(found[0].advice, "majority-class shortcut"));
}

TEST_CASE(
    "balanced accuracy and recall per class match the sampled batches, and "
    "misleading_accuracy fires on imbalanced data") {
  // 95% of the rows are class 0: a model that learns the prior scores ~0.95 accuracy.
  torch::manual_seed(3);
  const std::int64_t n = 4096;
  auto x = torch::randn({n, 20});
  auto y = torch::zeros({n}, torch::kLong);
  auto rare = torch::rand({n}) < 0.05;
  y.masked_fill_(rare, 1);
  x.select(1, 0).add_(rare.to(x.dtype()) * 0.5);  // a weak signal for the rare class
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("imbalanced");
  o.detectors.chance_level.num_classes = 0;
  o.red_flags.every_n_steps = 5;
  std::mutex mu;
  std::vector<sample> seen;
  o.on_sample = [&](const sample& s) {
    std::lock_guard lock(mu);
    seen.push_back(s);
  };
  auto lens = attach(model, opt, o);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> sampled;  // (logits, targets) checked
  for (int i = 0; i < 400; ++i) {
    const auto start = (i * 64) % (n - 64);
    auto xb = x.slice(0, start, start + 64), yb = y.slice(0, start, start + 64);
    opt.zero_grad();
    auto logits = model->forward(xb);
    lens.check_class_logits("cls", logits, yb);
    if (i % 5 == 0) sampled.emplace_back(logits.detach().clone(), yb);
    auto loss = F::cross_entropy(logits, yb);
    loss.backward();
    opt.step();
    const double acc = (logits.argmax(1) == yb).to(torch::kDouble).mean().item<double>();
    lens.step(loss, {.accuracy = acc});
  }
  lens.wait_idle();
  // The reference: recall per class over the last 20 sampled batches (imbalance_window),
  // counted here in long double from the logits the trainer computed.
  long double hits[2] = {0, 0}, rows[2] = {0, 0};
  for (std::size_t b = sampled.size() - 20; b < sampled.size(); ++b) {
    auto pred = sampled[b].first.argmax(1);
    for (std::int64_t r = 0; r < 64; ++r) {
      const auto t = sampled[b].second[r].item<std::int64_t>();
      rows[t] += 1;
      hits[t] += pred[r].item<std::int64_t>() == t ? 1 : 0;
    }
  }
  const long double r0 = hits[0] / rows[0], r1 = hits[1] / rows[1];
  {
    // The last sample that carries class metrics has those of the last sampled batch.
    std::lock_guard lock(mu);
    const sample* last = nullptr;
    for (const auto& s : seen)
      if (s.balanced_accuracy) last = &s;
    REQUIRE(last != nullptr);
    REQUIRE(last->step >= 395);
    // The model has 10 outputs; classes 2-9 have no targets, so no recall.
    REQUIRE(last->class_recall.size() == 10);
    CHECK(*last->class_recall[0] == Approx(double(r0)).epsilon(1e-12));
    CHECK(*last->class_recall[1] == Approx(double(r1)).epsilon(1e-12));
    for (std::size_t c = 2; c < 10; ++c) CHECK(!last->class_recall[c]);
    CHECK(*last->balanced_accuracy == Approx(double((r0 + r1) / 2)).epsilon(1e-12));
  }
  const auto found = wait_for(lens, "misleading_accuracy");
  lens.detach();
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("accuracy") - found[0].evidence_value("balanced_accuracy") >= 0.1);
  CHECK(found[0].evidence_value("majority_class") == 0);
  CHECK(contains(found[0].advice, "balanced accuracy"));
}

TEST_CASE("clipping_saturated: max_norm far below the typical norm clips every step") {
  toy_data data;
  mlp model;
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(0.05));
  auto lens = attach(model, opt, quiet("clip"));
  std::vector<double> before;
  for (int i = 0; i < 260; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x * 3), y);
    loss.backward();
    const double norm = torch::nn::utils::clip_grad_norm_(model->parameters(), 0.01);
    before.push_back(norm);
    opt.step();
    lens.step(loss, {.clip_norm = norm, .max_norm = 0.01});
  }
  lens.detach();
  const auto found = kinds(lens, "clipping_saturated");
  REQUIRE(found.size() == 1);
  CHECK(found[0].rule.name == "clip_norm_over_max_norm");
  // The fraction of the first full window (steps 0-199) over max_norm, counted here.
  double over = 0;
  for (int i = 0; i < 200; ++i) over += before[std::size_t(i)] > 0.01 ? 1 : 0;
  CHECK(found[0].evidence_value("clipped_fraction") >= over / 200 - 1e-12);
  CHECK(found[0].evidence_value("max_norm") == 0.01);
  // The advice quotes the LR and Adam's range from the methodology.
  CHECK(contains(found[0].advice, "from 0.05 to 0.005"));
  CHECK(contains(found[0].advice, "0.05 is above 1e-02, where Adam training turns unstable"));
}

TEST_CASE("clipping_saturated from a logged norm pinned at max_norm, quiet with a high clip") {
  // A log that holds the norm after clip_grad_norm_ (what a trainer logs when it measures
  // .grad after clipping). Through the hooks the norm is the one before clipping: LibTorch's
  // clip_grad_norm_ scales .grad through .data(), which leaves its version counter alone.
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  const double max_norm = GENERATE(0.01, 100.0);
  analyzer a(sample_schema{}, quiet("clip-log").detectors);
  for (int i = 0; i < 260; ++i) {
    auto [x, y] = data.batch(i);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), max_norm);
    sample s;
    s.step = i;
    s.loss = loss.item<double>();
    // An infinite max_norm measures the total norm and changes nothing.
    s.grad_norm = torch::nn::utils::clip_grad_norm_(model->parameters(), INFINITY);
    a.observe(s);
    opt.step();
  }
  std::vector<finding> found;
  for (const auto& f : a.findings())
    if (f.kind == "clipping_saturated") found.push_back(f);
  if (max_norm > 1) {
    CHECK(found.empty());
    return;
  }
  REQUIRE(found.size() == 1);
  CHECK(found[0].rule.name == "grad_norm_pinned");
  CHECK(found[0].evidence_value("max_norm") == Approx(max_norm).epsilon(1e-4));
  CHECK(found[0].evidence_value("clipped_fraction") >= 0.9);
}

TEST_CASE("lr_range_note quotes the methodology's range for the optimizer") {
  CHECK(lr_range_note(optimizer_kind::adam, 1e-3) ==
        "; Adam trains between about 1e-06 (below: no learning) and 1e-02 (above: unstable)");
  CHECK(lr_range_note(optimizer_kind::adamw, 0.05) ==
        "; 0.05 is above 1e-02, where AdamW training turns unstable (it trains between about "
        "1e-06 and 1e-02)");
  CHECK(lr_range_note(optimizer_kind::sgd, 1e-7) ==
        "; 1e-07 is below 1e-06, where SGD stops learning");
  CHECK(lr_range_note(optimizer_kind::sgd, 0.5) == "; below 1e-06 SGD does not learn");
  CHECK(lr_range_note(optimizer_kind::unknown, 0.5).empty());
  CHECK(lr_range_note(optimizer_kind::lbfgs, 1).empty());
  // Several groups: the largest decides instability.
  CHECK(contains(lr_range_note(optimizer_kind::adam, 1e-3, 1e-4, 0.1), "0.1 is above 1e-02"));
  CHECK(contains(lower_lr_hint(optimizer_kind::adam, 0.05), "from 0.05 to 0.005"));
}

TEST_CASE("overfit_check: fits, stuck at LR 0, NaN at a huge LR, and the model is put back") {
  toy_data data;
  mlp model;
  auto [x, y] = data.batch(0);
  const torch::data::Example<> batch{x, y};
  auto loss_fn = [&](const torch::Tensor& in, const torch::Tensor& t) {
    return F::cross_entropy(model->forward(in), t);
  };
  std::vector<torch::Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
  const double untrained = loss_fn(x, y).item<double>();
  SECTION("fits") {
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
    const auto r = overfit_check(model, opt, loss_fn, batch, {.steps = 200});
    CHECK(r.verdict == overfit_verdict::fits);
    REQUIRE(r.losses.size() == 200);
    CHECK(r.first == Approx(untrained).epsilon(1e-6));
    CHECK(r.best < 0.05 * r.first);
    CHECK(r.restored);
    const auto text = format_overfit_text(r);
    CHECK(contains(text, "overfit check: 200 steps on one batch of 64: fits"));
    // Put back: the parameters are bit-identical and Adam has no state left from the check.
    auto params = model->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], before[i]));
    CHECK(opt.state().empty());
  }
  SECTION("stuck") {
    torch::optim::SGD opt(model->parameters(), 0.0);
    const auto r = overfit_check(model, opt, loss_fn, batch, {.steps = 50});
    CHECK(r.verdict == overfit_verdict::stuck);
    CHECK(r.best == Approx(untrained).epsilon(1e-6));
    CHECK(contains(r.message, "barely moved"));
    CHECK(contains(r.advice, "optimizer.step()"));
  }
  SECTION("non-finite") {
    torch::optim::SGD opt(model->parameters(), 1e30);
    const auto r = overfit_check(model, opt, loss_fn, batch, {.steps = 50});
    CHECK(r.verdict == overfit_verdict::non_finite);
    CHECK(!std::isfinite(r.last));
    CHECK(r.steps < 50);
    CHECK(contains(r.advice, "numerics"));
  }
  torch::optim::SGD any(model->parameters(), 0.1);
  CHECK_THROWS_AS(overfit_check(model, any, loss_fn, batch, {.steps = 0}), losslens::error);
}

TEST_CASE("a NaN batch is saved as a .pt replay file with its step, and the run names it") {
  const testing::temp_dir dir("replay");
  toy_data data;
  mlp model;
  torch::optim::SGD opt(model->parameters(), 0.05);
  auto o = quiet("replay");
  o.db = dir.file("runs.db");
  auto lens = attach(model, opt, o);
  torch::Tensor bad_x, bad_y;
  for (int i = 0; i < 60; ++i) {
    auto [x0, y] = data.batch(i);
    auto x = x0.clone();
    if (i == 30) {
      x[5][7] = std::numeric_limits<float>::quiet_NaN();  // one corrupted value
      bad_x = x;
      bad_y = y;
    }
    lens.capture(x, y);
    opt.zero_grad();
    auto loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    if (i != 30) opt.step();  // keep the model finite after the bad batch
    lens.step(loss);
  }
  lens.wait_idle();
  const auto st = lens.stats();
  REQUIRE(st.run_id > 0);
  lens.detach();
  namespace fs = std::filesystem;
  const fs::path replay_dir = o.db + ".replay";
  REQUIRE(fs::is_directory(replay_dir));
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(replay_dir)) files.push_back(e.path());
  REQUIRE(files.size() == 1);
  CHECK(contains(files[0].filename().string(), "step30-non_finite"));
  std::ifstream in(files[0], std::ios::binary);
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
  const auto d = torch::jit::pickle_load(bytes).toGenericDict();
  CHECK(d.at("step").toInt() == 30);
  const auto saved_x = d.at("inputs").toTensor();
  const auto saved_y = d.at("targets").toTensor();
  CHECK(torch::equal(saved_y, bad_y));
  REQUIRE(saved_x.sizes() == bad_x.sizes());
  CHECK(std::isnan(saved_x[5][7].item<float>()));
  CHECK(torch::allclose(saved_x.nan_to_num(0), bad_x.nan_to_num(0)));
  // The run history's event names the file and the finding.
  storage::run_reader r(o.db);
  // The loss and the gradients of that batch are two findings: both name the one file.
  int named = 0, other = 0;
  for (const auto& e : r.events(st.run_id)) {
    if (e.kind != "replay_saved") continue;
    (contains(e.detail_json, files[0].filename().string()) ? named : other) += 1;
    CHECK(e.step == 30);
  }
  CHECK(named == int(kinds(lens, "non_finite").size()));
  CHECK(named >= 1);
  CHECK(other == 0);
}

TEST_CASE("chance_level judges the class task's own loss with the count its logits show") {
  // Two tasks in one model: a 10-class head on inputs that carry nothing about the labels
  // (fresh noise each step: it stays at chance) and a reconstruction that trains. The total
  // mixes them; the monitor knows from check_class_logits which task is the classifier and
  // how many classes it has (no num_classes given).
  torch::manual_seed(4);
  mlp cls;
  torch::nn::Linear recon(20, 20);
  std::vector<torch::Tensor> params = cls->parameters();
  for (const auto& p : recon->parameters()) params.push_back(p);
  torch::optim::SGD opt(params, 0.05);
  auto o = quiet("class-task");
  o.detectors.chance_level.num_classes = 0;
  auto lens = attach(cls, opt, o);
  toy_data data;
  std::vector<double> ce;
  for (int i = 0; i < 700; ++i) {
    auto [x, unused] = data.batch(i);
    const auto y = torch::randint(0, 10, {64}, torch::kLong);
    opt.zero_grad();
    auto logits = cls->forward(torch::randn({64, 20}));
    lens.check_class_logits("cls", logits, y);
    auto l_cls = lens.loss("cls", F::cross_entropy(logits, y));
    auto l_recon = lens.loss("recon", F::mse_loss(recon->forward(x), x));
    auto total = l_cls + l_recon;
    total.backward();
    opt.step();
    lens.step(total);
    ce.push_back(l_cls.item<double>());
  }
  lens.detach();
  const auto chance = kinds(lens, "chance_level");
  REQUIRE(chance.size() == 1);
  CHECK(chance[0].series == "loss/cls");
  CHECK(chance[0].evidence_value("inferred") == 0);
  CHECK(chance[0].evidence_value("classes") == 10);
  // The smoothed level against LibTorch's own losses of the last 100 steps.
  double recent = 0;
  for (std::size_t i = ce.size() - 100; i < ce.size(); ++i) recent += ce[i] / 100;
  CHECK(chance[0].evidence_value("smoothed") == Approx(recent).epsilon(0.02));
  CHECK(kinds(lens, "initial_loss").empty());        // the class loss starts at ln 10
  for (const auto& f : kinds(lens, "task_stalled"))  // the same state of that task, said once
    if (f.series == "loss/cls") CHECK(f.symptom_of_id == chance[0].id);
}
