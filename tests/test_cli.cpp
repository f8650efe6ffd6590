// Runs the built `losslens` binary the way a user does and checks output and exit status.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "traces.hpp"

namespace fs = std::filesystem;

namespace {
struct result {
  int status;
  std::string out;
};
/// `losslens ARGS` through the shell (ARGS may redirect stdin), stdout and stderr together.
result run(const std::string& args) {
  auto r = losslens::testing::run_shell(std::string(LOSSLENS_CLI) + " " + args + " 2>&1");
  return {r.status, std::move(r.out)};
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
  CHECK(r.out.find("class count inferred") == std::string::npos);
  // Without --classes the class count is inferred from the level the loss sits at.
  r = run("analyze " + path.string());
  CHECK(r.out.find("WARNING  chance_level") != std::string::npos);
  CHECK(r.out.find("ln(10) = 2.303") != std::string::npos);
  CHECK(r.out.find("class count inferred") != std::string::npos);
  CHECK(run("analyze " + path.string() + " --classes 10 --fail-on warning").status == 3);
  CHECK(run("analyze " + path.string() + " --classes 10 --fail-on error").status == 0);

  losslens::traces::generator g(3);
  const auto healthy =
      temp_file("healthy.csv", csv_of(g.healthy(losslens::traces::healthy_shape::cosine)));
  r = run("analyze " + healthy.string() + " --classes 10 --fail-on warning");
  CHECK(r.status == 0);
}

TEST_CASE("analyze --classes on a multi-task run: the class task's loss, named with --class-task") {
  // cls: a 10-class cross-entropy whose first loss is 2.1x ln 10 (a last layer initialised
  // too large), then at chance; recon: trains, weighted 10x into the total.
  std::string csv = "step,loss,loss/cls,loss/recon\n";
  std::uint64_t state = 7;
  for (int i = 0; i < 800; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // a little noise
    const double u = double(state >> 11) / double(1ULL << 53) - 0.5;
    const double cls = i == 0 ? 4.9 : 2.302585 * (1 + 0.02 * u);
    const double recon = 0.5 * std::exp(-i / 200.0) + 0.01;
    char line[160];
    std::snprintf(line, sizeof line, "%d,%.17g,%.17g,%.17g\n", i, cls + 10 * recon, cls, recon);
    csv += line;
  }
  const auto path = temp_file("multitask.csv", csv);
  // Without --class-task: the total (4.9 + 5.1 at first) is no cross-entropy; nothing is
  // judged against ln 10, and a note says how to name the task.
  auto r = run("analyze " + path.string() + " --classes 10");
  CHECK(r.status == 0);
  CHECK(r.out.find("--classes 10 is not applied: the loss is the sum of the task losses cls, "
                   "recon") != std::string::npos);
  CHECK(r.out.find("--class-task NAME") != std::string::npos);
  CHECK(r.out.find("WARNING  initial_loss") == std::string::npos);
  CHECK(r.out.find("WARNING  chance_level") == std::string::npos);
  r = run("analyze " + path.string() + " --classes 10 --class-task cls --json");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> kinds;
  for (const auto& f : j["findings"]) {
    kinds.push_back(f["kind"].get<std::string>() + " " + f["series"].get<std::string>());
    if (f["kind"] == "initial_loss") {
      CHECK(f["first_step"] == 0);
      CHECK(f["evidence"]["initial_loss"] == 4.9);
      CHECK(f["evidence"]["ratio"].get<double>() == Approx(4.9 / std::log(10.0L)));
    }
  }
  // (Beside them task_stalled, listed under chance_level: cls does not train while recon does.)
  CHECK(std::count(kinds.begin(), kinds.end(), "initial_loss loss/cls") == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), "chance_level loss/cls") == 1);
  CHECK(std::none_of(kinds.begin(), kinds.end(), [](const std::string& k) {
    return k.rfind("initial_loss", 0) == 0 || k.rfind("chance_level", 0) == 0
               ? k.substr(k.find(' ')) == " loss"
               : false;
  }));
  r = run("analyze " + path.string() + " --classes 10 --class-task box");
  CHECK(r.status == 1);
  CHECK(r.out.find("--class-task box: no such task (tasks: cls, recon)") != std::string::npos);
  CHECK(run("analyze " + path.string() + " --class-task=").status == 2);
}

TEST_CASE("analyze reads standard input") {
  const auto path = temp_file("small.csv", "step,loss\n1,1\n2,nan\n");
  // stdout alone: the notes also go to stderr.
  const auto r = losslens::testing::run_shell(std::string(LOSSLENS_CLI) + " analyze - --json < " +
                                              path.string());
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["findings"][0]["kind"] == "non_finite");
  // Two steps: found what it could, and says that a log this short shows little.
  CHECK(j["notes"] ==
        nlohmann::json::array(
            {"stdin: only 2 steps: most rules first need a history (loss spikes 50 steps, "
             "divergence 50, oscillation 128, chance level 300, plateau 500 without "
             "improvement), so a log this short shows little of what went wrong"}));
}

TEST_CASE("analyze of a log written every 10 steps counts its rows, not its steps") {
  const auto path = temp_file("sparse.csv", "step,loss\n10,1\n20,0.9\n30,nan\n");
  auto r = run("analyze " + path.string());
  REQUIRE(r.status == 0);
  CHECK(r.out.find("1 finding in 3 rows over steps 10-30\n") != std::string::npos);
  CHECK(r.out.find("only 3 rows over steps 10-30: most rules first need a history") !=
        std::string::npos);
  const auto js = losslens::testing::run_shell(std::string(LOSSLENS_CLI) + " analyze --json " +
                                               path.string() + " 2>/dev/null");
  REQUIRE(js.status == 0);
  const auto j = nlohmann::json::parse(js.out);
  CHECK(j["steps"] == 3);
  CHECK(j["first_step"] == 10);
  CHECK(j["last_step"] == 30);
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
  CHECK(r.out.find("missing PATH") != std::string::npos);
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

TEST_CASE("analyze shows each incident's episode count and, with --all, its episodes") {
  // Two separate NaN episodes on the loss (steps 100 and 300, far beyond non_finite's merge gap).
  std::string csv = "step,loss\n";
  for (int s = 0; s < 400; ++s)
    csv += std::to_string(s) + "," + (s == 100 || s == 300 ? std::string("nan") : "1") + "\n";
  const auto path = temp_file("two_nans.csv", csv);
  const auto json = run("analyze " + path.string() + " --json");
  REQUIRE(json.status == 0);
  const auto text = run("analyze " + path.string());
  REQUIRE(text.status == 0);
  const auto all = run("analyze " + path.string() + " --all");
  REQUIRE(all.status == 0);

  // Every episode of non_finite on loss, from the incidents' spans (or their own steps when an
  // incident has one episode and no spans).
  std::vector<std::pair<std::int64_t, std::int64_t>> episodes;
  std::int64_t counted = 0;
  const auto report = nlohmann::json::parse(json.out);
  for (const auto& f : report["findings"]) {
    const auto first = f["first_step"].get<std::int64_t>(),
               last = f["last_step"].get<std::int64_t>();
    const auto n = f["episodes"].get<std::int64_t>();
    std::string header = std::string(f["severity"] == "error"     ? "ERROR"
                                     : f["severity"] == "warning" ? "WARNING"
                                                                  : "INFO") +
                         "  " + f["kind"].get<std::string>() + "  steps " + std::to_string(first) +
                         (last != first ? "-" + std::to_string(last) : "") + "  " +
                         f["series"].get<std::string>() +
                         (n > 1 ? "  (" + std::to_string(n) + " episodes)" : "") + "\n";
    INFO(header);
    CHECK(text.out.find("\n" + header) != std::string::npos);
    CHECK(all.out.find("\n" + header) != std::string::npos);
    if (!f["cause"].get<std::string>().empty())
      CHECK(text.out.find("  preceded by: " + f["cause"].get<std::string>() + "\n") !=
            std::string::npos);
    // Fewer than 64 episodes: every span is kept (none: one episode, the finding's steps).
    REQUIRE((f["spans"].size() == std::size_t(n) || (f["spans"].empty() && n == 1)));
    for (std::size_t i = 0; i < f["spans"].size(); ++i) {
      const auto& s = f["spans"][i];
      const auto a = s["first_step"].get<std::int64_t>(), b = s["last_step"].get<std::int64_t>();
      std::string line = "  episode " + std::to_string(i + 1) + ": steps " + std::to_string(a) +
                         (b != a ? "-" + std::to_string(b) : "") + " " +
                         s["severity"].get<std::string>();
      CHECK(all.out.find(line) != std::string::npos);
      CHECK(text.out.find(line) == std::string::npos);
      if (f["kind"] == "non_finite" && f["series"] == "loss") episodes.emplace_back(a, b);
    }
    if (f["kind"] == "non_finite" && f["series"] == "loss") {
      counted += n;
      if (f["spans"].empty()) episodes.emplace_back(first, last);
    }
  }
  CHECK(counted == 2);
  std::sort(episodes.begin(), episodes.end());
  REQUIRE(episodes.size() == 2);
  CHECK(episodes[0].first == 100);
  CHECK(episodes[1].first == 300);
  CHECK(episodes[1].first > episodes[0].second);

  const auto help = run("analyze --help");
  CHECK(help.out.find("--all") != std::string::npos);
  CHECK(help.out.find("(12 episodes)") != std::string::npos);
}
