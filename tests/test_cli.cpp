// Runs the built `losslens` binary the way a user does and checks output and exit status.

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "traces.hpp"

namespace fs = std::filesystem;

namespace {
struct result {
  int status;
  std::string out;
};
result run(const std::string& args) {
  const std::string cmd = std::string(LOSSLENS_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}
fs::path temp_file(const std::string& name, const std::string& content) {
  const auto dir = fs::temp_directory_path() / ("losslens_cli_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto p = dir / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}
std::string csv_of(const losslens::traces::trace& t) {
  std::string s = "step,loss,grad_norm,lr\n";
  for (const auto& x : t.samples) {
    char line[128];
    std::snprintf(line, sizeof line, "%lld,%.17g,%.17g,%.17g\n", static_cast<long long>(x.step),
                  *x.loss, *x.grad_norm, *x.lr);
    s += line;
  }
  return s;
}
}  // namespace

TEST_CASE("analyze --json reports the injected NaN with file-independent numbers") {
  const auto t = losslens::traces::nan_trace(21);
  const auto path = temp_file("nan.csv", csv_of(t));
  const auto r = run("analyze " + path.string() + " --json");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["steps"] == t.samples.size());
  bool found = false;
  for (const auto& f : j["findings"])
    if (f["kind"] == "non_finite" && f["series"] == "loss") {
      found = true;
      CHECK(f["first_step"] == t.onset);
      CHECK(f["severity"] == "error");
      CHECK(f["evidence"]["value"] == "nan");
      CHECK(f["evidence"]["last_finite_step"] == t.onset - 1);
      CHECK(f["advice"].get<std::string>().find("clip") != std::string::npos);
    }
  CHECK(found);
}

TEST_CASE("analyze text output, --classes and --fail-on") {
  const auto t = losslens::traces::chance_trace(5);
  const auto path = temp_file("chance.csv", csv_of(t));
  auto r = run("analyze " + path.string() + " --classes 10");
  CHECK(r.status == 0);
  CHECK(r.out.find("WARNING  chance_level") != std::string::npos);
  CHECK(r.out.find("fix: ") != std::string::npos);
  r = run("analyze " + path.string());
  CHECK(r.out.find("chance_level") == std::string::npos);
  CHECK(run("analyze " + path.string() + " --classes 10 --fail-on warning").status == 3);
  CHECK(run("analyze " + path.string() + " --classes 10 --fail-on error").status == 0);

  losslens::traces::generator g(3);
  const auto healthy = temp_file("healthy.csv", csv_of(g.healthy(losslens::traces::healthy_shape::cosine)));
  r = run("analyze " + healthy.string() + " --classes 10 --fail-on warning");
  CHECK(r.status == 0);
}

TEST_CASE("analyze reads standard input") {
  const auto path = temp_file("small.csv", "step,loss\n1,1\n2,nan\n");
  const auto r = run("analyze - --json < " + path.string());
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.out)["findings"][0]["kind"] == "non_finite");
}

TEST_CASE("analyze: malformed files and bad usage exit non-zero with a clear message") {
  const auto ragged = temp_file("ragged.csv", "step,loss\n1,2\n2,3,4\n");
  auto r = run("analyze " + ragged.string());
  CHECK(r.status == 1);
  CHECK(r.out.find("ragged.csv:3: row has 3 cells but the header has 2 columns") !=
        std::string::npos);
  r = run("analyze /nonexistent.csv");
  CHECK(r.status == 1);
  CHECK(r.out.find("/nonexistent.csv: cannot open") != std::string::npos);
  r = run("analyze");
  CHECK(r.status == 2);
  CHECK(r.out.find("missing FILE.csv") != std::string::npos);
  r = run("analyze x.csv --classes 1");
  CHECK(r.status == 2);
  CHECK(r.out.find("--classes must be between 2") != std::string::npos);
  r = run("analyze x.csv --bogus");
  CHECK(r.status == 2);
  CHECK(r.out.find("unknown option --bogus") != std::string::npos);
  r = run("analyze x.csv --fail-on fatal");
  CHECK(r.status == 2);
  CHECK(run("frobnicate").status == 2);
  r = run("analyze --help");
  CHECK(r.status == 0);
  CHECK(r.out.find("usage: losslens analyze") != std::string::npos);
  r = run("--help");
  CHECK(r.status == 0);
  CHECK(r.out.find("analyze") != std::string::npos);
}
