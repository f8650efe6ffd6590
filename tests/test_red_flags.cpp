// red_flag_checker on real LibTorch tensors: each red flag fires with its numbers and advice,
// healthy inputs give nothing, sampling and episodes behave, bad shapes throw.

#include <atomic>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ops/one_hot.h>
#include <torch/nn/functional/activation.h>

// LibTorch may pull in glog, whose CHECK would replace Catch's: include Catch last.
#undef CHECK
#include <catch2/catch.hpp>

#include "losslens/error.hpp"
#include "losslens/torch/losses.hpp"
#include "losslens/torch/red_flags.hpp"

using namespace losslens;

namespace {

std::vector<finding> of_kind(const std::vector<finding>& fs, const std::string& kind) {
  std::vector<finding> out;
  for (const auto& f : fs)
    if (f.kind == kind) out.push_back(f);
  return out;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

red_flag_options every_step() {
  red_flag_options o;
  o.every_n_steps = 1;
  return o;
}

}  // namespace

TEST_CASE("healthy inputs raise no red flag") {
  torch::manual_seed(0);
  red_flag_checker flags(every_step());
  for (std::int64_t step = 0; step < 30; ++step) {
    CHECK(flags.check_class_logits("cls", torch::randn({64, 10}), torch::randint(0, 10, {64}), step)
              .empty());
    CHECK(flags
              .check_binary_logits("bin", torch::randn({64}),
                                   (torch::rand({64}) > 0.5).to(torch::kFloat), step)
              .empty());
    CHECK(flags.check_regression("reg", torch::randn({64}), torch::randn({64}) * 2 + 1, step)
              .empty());
    CHECK(flags
              .check_loss_scale("cls", 2.3 - 0.01 * static_cast<double>(step),
                                step % 10 == 9 ? 16 : 64, step)
              .empty());
  }
  CHECK(flags.findings().empty());
}

TEST_CASE("probabilities_as_logits: sigmoid before a logits loss, softmax before cross-entropy") {
  torch::manual_seed(1);
  red_flag_checker flags(every_step());
  auto bin = flags.check_binary_logits("bin", torch::sigmoid(torch::randn({64}) * 3),
                                       torch::ones({64}), 0);
  auto b = of_kind(bin, "probabilities_as_logits");
  REQUIRE(b.size() == 1);
  CHECK(b[0].rule.name == "all_logits_in_unit_interval");
  CHECK(b[0].series == "loss/bin");
  CHECK(b[0].evidence_value("logit_min") >= 0);
  CHECK(b[0].evidence_value("logit_max") <= 1);
  CHECK(contains(b[0].advice, "binary_cross_entropy_with_logits"));

  auto probs = torch::softmax(torch::randn({32, 5}), 1);
  auto cls = of_kind(flags.check_class_logits("cls", probs, torch::randint(0, 5, {32}), 0),
                     "probabilities_as_logits");
  REQUIRE(cls.size() == 1);
  CHECK(cls[0].rule.name == "logit_rows_sum_to_one");
  CHECK(cls[0].evidence_value("max_row_sum_error") < 1e-5);
  CHECK(contains(cls[0].advice, "remove the softmax"));

  // Segmentation layout [N, C, H, W]: rows are taken along C.
  auto seg = torch::softmax(torch::randn({2, 3, 4, 4}), 1);
  auto s = flags.check_class_logits("seg", seg, torch::randint(0, 3, {2, 4, 4}), 0);
  CHECK(of_kind(s, "probabilities_as_logits").size() == 1);
}

TEST_CASE("one_hot_targets: float one-hot labels where class indices belong") {
  red_flag_checker flags(every_step());
  auto labels = torch::randint(0, 4, {16});
  auto one_hot = at::one_hot(labels, 4).to(torch::kFloat);
  auto found = of_kind(flags.check_class_logits("cls", torch::randn({16, 4}), one_hot, 3),
                       "one_hot_targets");
  REQUIRE(found.size() == 1);
  CHECK(found[0].first_step == 3);
  CHECK(found[0].evidence_value("rows_one_hot") == 1.0);
  CHECK(contains(found[0].advice, "target.argmax(1)"));
  CHECK(contains(found[0].advice, "0..3"));
  // Soft (probability) targets of the same shape are legitimate: no finding.
  auto soft = torch::softmax(torch::randn({16, 4}), 1);
  CHECK(flags.check_class_logits("soft", torch::randn({16, 4}), soft, 3).empty());
}

TEST_CASE("target_out_of_range: 1-based labels, negative labels, binary targets outside [0, 1]") {
  red_flag_checker flags(every_step());
  auto y = torch::tensor({1L, 2L, 3L, 10L, 10L, 4L, -100L});  // C = 10, 1-based, with padding
  auto found =
      of_kind(flags.check_class_logits("cls", torch::randn({7, 10}), y, 0), "target_out_of_range");
  REQUIRE(found.size() == 1);
  CHECK(found[0].level == severity::error);
  CHECK(found[0].evidence_value("out_of_range_count") == 2);
  CHECK(found[0].evidence_value("bad_max") == 10);
  CHECK(contains(found[0].advice, "1-based"));

  auto neg = of_kind(
      flags.check_class_logits("neg", torch::randn({3, 5}), torch::tensor({-1L, 0L, 7L}), 0),
      "target_out_of_range");
  REQUIRE(neg.size() == 1);
  CHECK(contains(neg[0].advice, "0..4"));

  auto bin = of_kind(
      flags.check_binary_logits("bin", torch::randn({4}), torch::tensor({0.f, 1.f, 2.f, 3.f}), 0),
      "target_out_of_range");
  REQUIRE(bin.size() == 1);
  CHECK(contains(bin[0].advice, "class indices"));
}

TEST_CASE("class_imbalance: pos_weight = 19.0 (950 / 50) and inverse-frequency class weights") {
  red_flag_options o = every_step();
  o.imbalance_window = 10;
  red_flag_checker flags(o);
  std::vector<finding> last;
  for (std::int64_t step = 0; step < 10; ++step) {
    auto y = torch::zeros({100});
    y.slice(0, 0, 5).fill_(1.0);  // 5 positives in 100
    last = flags.check_binary_logits("bin", torch::randn({100}), y, step);
  }
  auto found = of_kind(last, "class_imbalance");
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("pos_weight") == Approx(19.0));
  CHECK(found[0].evidence_value("majority_count") == 950);
  CHECK(contains(found[0].advice, "pos_weight = 19.0 (950 negatives / 50 positives)"));
  CHECK(found[0].first_step == 1);  // 200 targets reached at the second batch
  CHECK(found[0].last_step == 9);
  CHECK(of_kind(flags.findings(), "class_imbalance").size() == 1);  // one episode, extended

  // Multi-class 1000 : 100 : 50.
  std::vector<std::int64_t> labels(1000, 0);
  labels.insert(labels.end(), 100, 1);
  labels.insert(labels.end(), 50, 2);
  auto yc = torch::tensor(labels);
  auto c =
      of_kind(flags.check_class_logits("cls", torch::randn({1150, 3}), yc, 0), "class_imbalance");
  REQUIRE(c.size() == 1);
  CHECK(c[0].evidence_value("ratio") == Approx(20.0));
  CHECK(contains(c[0].advice, "[0.0968, 0.968, 1.94]"));
}

TEST_CASE("unnormalized_targets: raw-scale regression targets with the numbers to standardise") {
  torch::manual_seed(2);
  red_flag_checker flags(every_step());
  auto target = 5230 + 1810 * torch::randn({4096}, torch::kDouble);
  auto pred = 0.1 * torch::randn({4096}, torch::kDouble);
  auto found = of_kind(flags.check_regression("price", pred, target, 0), "unnormalized_targets");
  REQUIRE(found.size() == 1);
  const double mean = found[0].evidence_value("target_mean"),
               sd = found[0].evidence_value("target_std");
  CHECK(mean == Approx(5230).epsilon(0.02));
  CHECK(sd == Approx(1810).epsilon(0.05));
  char expect[96];
  std::snprintf(expect, sizeof expect, "standardise targets: mean %.4g, std %.4g", mean, sd);
  CHECK(contains(found[0].advice, expect));
  // Already standardised targets: nothing.
  CHECK(flags.check_regression("std", pred, torch::randn({4096}, torch::kDouble), 0).empty());
}

TEST_CASE("non_finite_input: NaN targets and Inf logits are counted") {
  red_flag_checker flags(every_step());
  const double nan = std::nan("");
  auto y = torch::tensor({1.0, nan, 3.0, nan});
  auto found = of_kind(flags.check_regression("reg", torch::zeros({4}), y, 5), "non_finite_input");
  REQUIRE(found.size() == 1);
  CHECK(found[0].evidence_value("nan_count") == 2);
  CHECK(found[0].evidence_value("input_is_target") == 1);
  CHECK(contains(found[0].advice, "nan_to_num"));
  auto logits = torch::randn({4, 3});
  logits[1][2] = INFINITY;
  auto f2 = of_kind(flags.check_class_logits("cls", logits, torch::tensor({0L, 1L, 2L, 0L}), 5),
                    "non_finite_input");
  REQUIRE(f2.size() == 1);
  CHECK(f2[0].evidence_value("inf_count") == 1);
  CHECK(f2[0].evidence_value("input_is_target") == 0);
}

TEST_CASE("bce_on_probabilities: plain BCE on sigmoid outputs, with the saturated fraction") {
  red_flag_checker flags(every_step());
  auto logits = torch::tensor({-30.f, -20.f, 0.f, 1.f, 20.f, 30.f, 2.f, -2.f});
  auto probs = torch::sigmoid(logits);  // float32: sigmoid(20) rounds to 1
  auto target = torch::tensor({0.f, 0.f, 1.f, 1.f, 1.f, 1.f, 0.f, 1.f});
  auto found = of_kind(flags.check_probabilities("bin", probs, target, 0), "bce_on_probabilities");
  REQUIRE(found.size() == 1);
  CHECK(found[0].level == severity::warning);
  CHECK(found[0].evidence_value("saturated_fraction") == Approx(4.0 / 8));
  CHECK(contains(found[0].advice, "binary_cross_entropy_with_logits"));
  // The stable probability kernel still returns a finite loss on these.
  CHECK(std::isfinite(losslens::binary_cross_entropy(probs, target).item<double>()));
  // Logits passed as probabilities: an error.
  auto bad = of_kind(flags.check_probabilities("raw", logits, target, 0), "bce_on_probabilities");
  REQUIRE(bad.size() == 1);
  CHECK(bad[0].level == severity::error);
  CHECK(bad[0].evidence_value("outside_unit_count") == 6);
}

TEST_CASE("sum_reduction: the loss follows the batch size on the last partial batch") {
  red_flag_checker flags;
  std::vector<finding> found;
  // Summed per-sample losses of ~0.7: 64 x 0.7 = 44.8, and 16 x 0.7 = 11.2 on the partial batch.
  for (std::int64_t step = 0; step < 40; ++step) {
    const std::int64_t bs = step % 10 == 9 ? 16 : 64;
    auto f = flags.check_loss_scale(
        "cls", 0.7 * static_cast<double>(bs) * (1 + 0.01 * std::sin(step)), bs, step);
    found.insert(found.end(), f.begin(), f.end());
  }
  REQUIRE(!found.empty());
  auto f = found.back();
  CHECK(f.kind == "sum_reduction");
  CHECK(f.first_step == 9);  // the first partial batch (after 9 of the usual size)
  CHECK(f.evidence_value("slope") == Approx(1.0).margin(0.05));
  CHECK(f.evidence_value("usual_batch_size") == 64);
  CHECK(contains(f.advice, "reduce with the mean"));
  CHECK(flags.findings().size() == 1);
  // Mean-reduced: nothing.
  red_flag_checker mean_flags;
  for (std::int64_t step = 0; step < 40; ++step)
    CHECK(mean_flags
              .check_loss_scale("cls", 0.7 * (1 + 0.05 * std::sin(step)), step % 10 == 9 ? 16 : 64,
                                step)
              .empty());
}

TEST_CASE("sampling: tensor checks run every_n_steps per task, episodes keep their id and grow") {
  red_flag_options o;
  o.every_n_steps = 50;
  red_flag_checker flags(o);
  std::vector<std::pair<std::string, bool>> heard;  // the listener a monitor would install
  flags.on_finding([&](const finding& f, bool is_new) { heard.emplace_back(f.kind, is_new); });
  auto probs = torch::sigmoid(torch::randn({32}));
  int fired = 0;
  std::uint64_t id = 0;
  for (std::int64_t step = 0; step < 200; ++step) {
    auto f = flags.check_binary_logits("bin", probs, torch::ones({32}) * 0.5, step);
    if (f.empty()) continue;
    ++fired;
    if (id == 0) id = f[0].id;
    CHECK(f[0].id == id);
    CHECK(f[0].last_step == step);
    CHECK(step % 50 == 0);
  }
  CHECK(fired == 4);
  REQUIRE(heard.size() == 4);
  CHECK(heard[0] == std::make_pair(std::string("probabilities_as_logits"), true));
  CHECK(heard[3] == std::make_pair(std::string("probabilities_as_logits"), false));
  auto all = flags.findings();
  REQUIRE(all.size() == 1);
  CHECK(all[0].first_step == 0);
  CHECK(all[0].last_step == 150);
  CHECK(all[0].rule.params.size() == 1);
}

TEST_CASE("wrong shapes and dtypes throw losslens::error at once, sampled step or not") {
  red_flag_options o;
  o.every_n_steps = 1000;
  red_flag_checker flags(o);
  CHECK_THROWS_AS(
      flags.check_class_logits("cls", torch::randn({4, 3}), torch::tensor({0.f, 1.f, 2.f, 0.f}), 7),
      losslens::error);
  CHECK_THROWS_AS(
      flags.check_class_logits("cls", torch::randn({4, 3, 8}), torch::tensor({0L, 1L, 2L, 0L}), 7),
      losslens::error);
  CHECK_THROWS_AS(flags.check_binary_logits("bin", torch::randn({4}), torch::randn({4, 1}), 7),
                  losslens::error);
  CHECK_THROWS_AS(
      flags.check_regression("reg", torch::randn({4}), torch::ones({4}, torch::kLong), 7),
      losslens::error);
  try {
    flags.check_binary_logits("bin", torch::randn({8}), torch::ones({8, 1}), 0);
  } catch (const losslens::error& e) {
    CHECK(contains(e.what(), "Float [8, 1]"));
    CHECK(contains(e.what(), "check_binary_logits"));
  }
  CHECK_THROWS_AS(red_flag_checker(red_flag_options{.every_n_steps = 0}), losslens::error);
}

TEST_CASE("the checker may be used from several threads at once") {
  red_flag_checker flags(every_step());
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      try {
        for (std::int64_t step = 0; step < 50; ++step) {
          flags.check_binary_logits("bin" + std::to_string(t % 2),
                                    torch::sigmoid(torch::randn({32})), torch::ones({32}), step);
          flags.check_loss_scale("cls", 0.5, 64, step);
        }
      } catch (...) {
        ++errors;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  CHECK(of_kind(flags.findings(), "probabilities_as_logits").size() == 2);
}
