// Runs the Fashion-MNIST trainer with each pathology flag on real data (a subset, a few hundred
// steps) and checks that losslens reports the expected finding, and nothing for a healthy run.

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace {
struct run_result {
  int status = -1;
  std::set<std::string> warnings;  // kinds with severity warning or error
  std::set<std::string> kinds;     // every kind
  nlohmann::json report;
};

run_result train(const std::string& flags, int steps = 300) {
  const auto dir = fs::temp_directory_path() / ("losslens_examples_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto json = dir / "findings.json";
  fs::remove(json);
  const std::string cmd = std::string(FMNIST_TRAIN) + " --limit 6000 --steps " +
                          std::to_string(steps) + " --db '' --findings-json " + json.string() +
                          " " + flags + " > " + (dir / "out.txt").string() + " 2>&1";
  run_result r;
  const int st = std::system(cmd.c_str());
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream in(json);
  if (!in) return r;
  r.report = nlohmann::json::parse(in);
  for (const auto& f : r.report["findings"]) {
    r.kinds.insert(f["kind"]);
    if (f["severity"] != "info") r.warnings.insert(f["kind"]);
  }
  return r;
}

std::string list(const std::set<std::string>& s) {
  std::string out;
  for (const auto& k : s) out += k + " ";
  return out;
}
}  // namespace

TEST_CASE("fmnist_train: a healthy run has no warnings") {
  const auto r = train("");
  REQUIRE(r.status == 0);
  CHECK(r.report["steps"] == 300);
  INFO(list(r.warnings));
  CHECK(r.warnings.empty());
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
