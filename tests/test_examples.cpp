// Runs the Fashion-MNIST trainer with each pathology flag on real data (a subset, a few hundred
// steps) and checks that losslens reports the expected finding, and nothing for a healthy run.

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "loss_trend.hpp"
#include "losslens/storage/run_reader.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;

namespace {
struct run_result {
  int status = -1;
  std::set<std::string> warnings;  // kinds with severity warning or error
  std::set<std::string> kinds;     // every kind
  nlohmann::json report;
};

run_result run_example(const std::string& exe, const std::string& flags,
                       const std::string& db = "''") {
  const auto dir = fs::temp_directory_path() / ("losslens_examples_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto json = dir / "findings.json";
  fs::remove(json);
  const std::string cmd = exe + " --db " + db + " --findings-json " + json.string() + " " + flags +
                          " > " + (dir / "out.txt").string() + " 2>&1";
  run_result r;
  r.status = losslens::testing::run_shell(cmd).status;
  std::ifstream in(json);
  if (!in) return r;
  r.report = nlohmann::json::parse(in);
  for (const auto& f : r.report["findings"]) {
    r.kinds.insert(f["kind"]);
    if (f["severity"] != "info") r.warnings.insert(f["kind"]);
  }
  return r;
}

run_result train(const std::string& flags, int steps = 300) {
  return run_example(FMNIST_TRAIN, "--limit 6000 --steps " + std::to_string(steps) + " " + flags);
}

std::string list(const std::set<std::string>& s) {
  std::string out;
  for (const auto& k : s) out += k + " ";
  return out;
}
}  // namespace

TEST_CASE("fmnist_train: a healthy run has no warnings") {
  const losslens::testing::temp_dir tmp("fmnist-healthy");
  const auto db = tmp.file("runs.db");
  const auto r = run_example(FMNIST_TRAIN, "--limit 6000 --steps 300", db);
  REQUIRE(r.status == 0);
  CHECK(r.report["steps"] == 300);
  INFO(list(r.warnings));
  CHECK(r.warnings.empty());
  // Healthy by its loss (as stored): the median of each tenth falls or stays flat.
  losslens::storage::run_reader reader(db);
  const auto runs = reader.runs();
  REQUIRE(runs.size() == 1);
  const auto loss = reader.find_series(runs[0].id, "loss");
  std::vector<double> losses;
  for (const auto& p : reader.window(loss.id, 0, 299, 1000).points) losses.push_back(p.value);
  REQUIRE(losses.size() == 300);
  const auto medians = losslens::testing::tenth_medians(losses);
  INFO("median loss per tenth: " << losslens::testing::medians_text(medians));
  CHECK(losslens::testing::first_rising_tenth(medians) == 0);
  CHECK(medians.back() < 0.5 * medians.front());
}

TEST_CASE("fmnist_train --lr 5: the early blow-up is reported") {
  const auto r = train("--lr 5");
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK((r.warnings.count("exploding_gradients") || r.warnings.count("non_finite") ||
         r.warnings.count("divergence")));
}

TEST_CASE("fmnist_train --no-zero-grad: missing_zero_grad") {
  const auto r = train("--no-zero-grad", 100);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK(r.warnings.count("missing_zero_grad"));
}

TEST_CASE("fmnist_train --frozen-layer: dead_parameters") {
  const auto r = train("--frozen-layer", 100);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK(r.warnings.count("dead_parameters"));
}

TEST_CASE("fmnist_train --tiny-lr: chance_level") {
  const auto r = train("--tiny-lr");
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK(r.warnings.count("chance_level"));
}

TEST_CASE("fmnist_train --softmax-then-ce: probabilities_as_logits") {
  const auto r = train("--softmax-then-ce", 120);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK(r.warnings.count("probabilities_as_logits"));
}

TEST_CASE("fmnist_train --imbalance: class_imbalance with class weights in the advice") {
  const auto r = train("--imbalance", 200);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  REQUIRE(r.warnings.count("class_imbalance"));
  for (const auto& f : r.report["findings"])
    if (f["kind"] == "class_imbalance")
      CHECK(f["advice"].get<std::string>().find("weight") != std::string::npos);
}

TEST_CASE("fmnist_train --imbalance: accuracy is misleading, balanced accuracy says why") {
  const auto r = train("--imbalance", 300);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  REQUIRE(r.warnings.count("misleading_accuracy"));
  for (const auto& f : r.report["findings"])
    if (f["kind"] == "misleading_accuracy")
      CHECK(f["message"].get<std::string>().find("balanced accuracy") != std::string::npos);
}

// The methodology's start-of-training checks (issue #19), one flag each.
TEST_CASE("fmnist_train: each start-of-training bug gives its finding") {
  struct expect {
    const char* flags;
    int steps;
    const char* kind;
  };
  const expect cases[] = {{"--init-scale 10", 60, "initial_loss"},
                          {"--label-leak", 60, "initial_loss"},
                          {"--no-step", 60, "parameters_not_updated"},
                          {"--partial-optimizer", 60, "parameters_not_updated"},
                          {"--dead-relu", 200, "constant_predictions"},
                          {"--clip 0.1", 300, "clipping_saturated"},
                          {"--nan-batch 40", 60, "non_finite"}};
  for (const auto& c : cases) {
    const auto r = train(c.flags, c.steps);
    INFO(c.flags << ": " << list(r.kinds));
    REQUIRE(r.status == 0);
    CHECK(r.kinds.count(c.kind));
  }
}

TEST_CASE("fmnist_train --nan-batch: the bad batch is saved next to the database") {
  const auto dir = fs::temp_directory_path() / ("losslens_replay_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto db = (dir / "runs.db").string();
  const auto r = train("--nan-batch 40 --db " + db, 60);
  REQUIRE(r.status == 0);
  INFO(list(r.kinds));
  CHECK(r.warnings.count("non_finite"));
  std::vector<std::string> files;
  if (fs::is_directory(dir / "runs.db.replay"))
    for (const auto& e : fs::directory_iterator(dir / "runs.db.replay"))
      files.push_back(e.path().filename().string());
  REQUIRE(files.size() == 1);
  CHECK(files[0].find("run1-step40-non_finite-finding") == 0);
  fs::remove_all(dir);
}

TEST_CASE("fmnist_multitask: reconstruction dominates unweighted, not with uncertainty weighting") {
  const auto none = run_example(FMNIST_MULTITASK, "--weighting none --steps 200 --limit 6000");
  REQUIRE(none.status == 0);
  INFO("none: " << list(none.kinds));
  CHECK(none.warnings.count("task_dominance"));
  const auto unc =
      run_example(FMNIST_MULTITASK, "--weighting uncertainty --steps 200 --limit 6000");
  REQUIRE(unc.status == 0);
  INFO("uncertainty: " << list(unc.kinds));
  CHECK_FALSE(unc.warnings.count("task_dominance"));
}

TEST_CASE("regression_targets: raw targets are flagged, standardised ones are not") {
  const auto raw = run_example(REGRESSION_TARGETS, "--steps 120");
  REQUIRE(raw.status == 0);
  INFO("raw: " << list(raw.kinds));
  CHECK(raw.warnings.count("unnormalized_targets"));
  const auto std_ = run_example(REGRESSION_TARGETS, "--steps 120 --standardize");
  REQUIRE(std_.status == 0);
  INFO("standardized: " << list(std_.kinds));
  CHECK(std_.warnings.empty());
}
