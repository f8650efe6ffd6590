// The run-history subcommands of the built `losslens` binary, against a database written with
// run_writer from synthetic traces (and their analyzer findings).

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "losslens/analyzer.hpp"
#include "child_process.hpp"
#include "losslens/storage/run_writer.hpp"
#include "temp_dir.hpp"
#include "traces.hpp"

namespace fs = std::filesystem;
using namespace losslens;

namespace {

using cli_result = losslens::testing::process_result;

/// Runs `losslens ARGS` through the shell (ARGS may hold a pipe), capturing stdout and stderr.
cli_result cli(const std::string& args) {
  return losslens::testing::run_shell(std::string(LOSSLENS_CLI) + " " + args);
}

std::string number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[32];
  return std::string(b, std::to_chars(b, b + sizeof b, v).ptr);
}

/// The trace as `losslens analyze` CSV: the columns that hold at least one value.
std::string csv_of(const traces::trace& t) {
  std::vector<std::pair<std::string, std::function<std::optional<double>(const sample&)>>> cols;
  cols.push_back({"loss", [](const sample& s) { return s.loss; }});
  for (std::size_t i = 0; i < t.schema.tasks.size(); ++i)
    cols.push_back({"loss/" + t.schema.tasks[i], [i](const sample& s) {
                      return i < s.task_losses.size() ? s.task_losses[i] : std::nullopt;
                    }});
  cols.push_back({"grad_norm", [](const sample& s) { return s.grad_norm; }});
  for (std::size_t i = 0; i < t.schema.params.size(); ++i)
    cols.push_back({"grad_norm/" + t.schema.params[i], [i](const sample& s) {
                      return i < s.param_grad_norms.size() ? s.param_grad_norms[i] : std::nullopt;
                    }});
  cols.push_back({"lr", [](const sample& s) { return s.lr; }});
  cols.push_back({"accuracy", [](const sample& s) { return s.accuracy; }});
  std::erase_if(cols, [&](const auto& c) {
    for (const auto& s : t.samples)
      if (c.second(s)) return false;
    return true;
  });
  std::string out = "step,wall_time";
  for (const auto& c : cols) out += "," + c.first;
  out += "\n";
  for (const auto& s : t.samples) {
    out += std::to_string(s.step) + "," + number(s.wall_time);
    for (const auto& c : cols) {
      out += ",";
      if (auto v = c.second(s)) out += number(*v);
    }
    out += "\n";
  }
  return out;
}

struct recorded_run {
  traces::trace trace;
  std::vector<finding> findings;
  std::int64_t id = 0;
};

/// Writes the trace as a run, with the analyzer's findings upserted as they open and grow.
recorded_run record(const std::string& db, const std::string& name, traces::trace t) {
  storage::run_options ro;
  ro.name = name;
  ro.schema = t.schema;
  ro.config_json = R"({"trace": ")" + name + "\"}";
  recorded_run out;
  storage::run_writer w(db, ro);
  analyzer a(t.schema);
  a.on_finding([&](const finding& f, bool) { w.record_finding(f); });
  for (std::size_t i = 0; i < t.samples.size(); ++i) {
    t.samples[i].wall_time = 1.7e9 + 0.25 * double(i);
    w.append(t.samples[i]);
    a.observe(t.samples[i]);
  }
  a.flush();  // publishes the last growth of open episodes to the listener
  REQUIRE(w.stats().dropped == 0);
  out.findings = a.findings();
  out.id = w.run_id();
  out.trace = std::move(t);
  return out;
}

struct fixture {
  fs::path dir;
  std::string db;
  recorded_run spike, nan;
  fixture() {
    std::string tmpl = (fs::temp_directory_path() / "losslens-cli-XXXXXX").string();
    dir = ::mkdtemp(tmpl.data());
    db = (dir / "runs.db").string();
    spike = record(db, "spiky", traces::spike_trace(5));
    nan = record(db, "broken", traces::nan_trace(6));
  }
  ~fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  cli_result run(const std::string& args) const { return cli(args + " --db " + db); }
};

double best_loss(const traces::trace& t) {
  double best = std::numeric_limits<double>::infinity();
  for (const auto& s : t.samples)
    if (s.loss && std::isfinite(*s.loss)) best = std::min(best, *s.loss);
  return best;
}

}  // namespace

TEST_CASE("runs lists every run with steps, status and worst finding", "[storage][cli]") {
  fixture fx;
  auto r = fx.run("runs --json");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out)["runs"];
  REQUIRE(j.size() == 2);
  for (const auto* rec : {&fx.spike, &fx.nan}) {
    const auto& run = j[rec == &fx.spike ? 0 : 1];
    REQUIRE(run["id"] == rec->id);
    REQUIRE(run["status"] == "finished");
    REQUIRE(run["steps"] == rec->trace.samples.size());
    REQUIRE(run["findings"] == rec->findings.size());
    REQUIRE(run["last_step"] == rec->trace.samples.back().step);
    REQUIRE(run["config"]["trace"] == run["name"]);
    // Worst: highest severity, earliest first.
    const finding* worst = nullptr;
    for (const auto& f : rec->findings)
      if (!worst || f.level > worst->level ||
          (f.level == worst->level && f.first_step < worst->first_step))
        worst = &f;
    REQUIRE(worst != nullptr);
    REQUIRE(run["worst_finding"]["kind"] == worst->kind);
    REQUIRE(run["worst_finding"]["first_step"] == worst->first_step);
  }
  r = fx.run("runs");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("worst finding") && Catch::Contains("spiky") &&
                          Catch::Contains("broken") && Catch::Contains("finished"));
}

TEST_CASE("findings lists the stored findings with --run and --kind", "[storage][cli]") {
  fixture fx;
  auto r = fx.run("findings --run " + std::to_string(fx.nan.id) + " --json");
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out)["findings"];
  REQUIRE(j.size() == fx.nan.findings.size());
  for (std::size_t i = 0; i < j.size(); ++i) {
    // Stored in first-step order; the analyzer's final state of each episode.
    const auto& f = *std::find_if(fx.nan.findings.begin(), fx.nan.findings.end(),
                                  [&](const finding& x) { return x.id == j[i]["id"]; });
    REQUIRE(j[i]["kind"] == f.kind);
    REQUIRE(j[i]["last_step"] == f.last_step);
    REQUIRE(j[i]["message"] == f.message);
  }
  std::size_t non_finite = 0;
  for (const auto* rec : {&fx.spike, &fx.nan})
    for (const auto& f : rec->findings) non_finite += f.kind == "non_finite";
  REQUIRE(non_finite > 0);
  r = fx.run("findings --kind non_finite --json");
  REQUIRE(r.status == 0);
  REQUIRE(nlohmann::json::parse(r.out)["findings"].size() == non_finite);
  r = fx.run("findings");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("non_finite") && Catch::Contains("severity"));
}

TEST_CASE("findings shows an incident's episodes and cause, and its spans with --all",
          "[storage][cli]") {
  const losslens::testing::temp_dir tmp("cli");
  const auto db = tmp.file("runs.db");
  {
    storage::run_options ro;
    ro.name = "incidents";
    storage::run_writer w(db, ro);
    finding f;  // 70 episodes, 64 spans kept: 1-32 and 39-70
    f.id = 1;
    f.kind = "loss_spike";
    f.level = severity::warning;
    f.first_step = 377;
    f.last_step = 15020;
    f.series = "loss";
    f.message = "loss 2.843 is 5.2x its running median 0.5463";
    f.episodes = 70;
    for (int n = 1; n <= 70; ++n) {
      if (n > 32 && n < 39) continue;
      const std::int64_t first = 377 + 200 * (n - 1);
      f.spans.push_back({first, first + 4, severity::warning, 5 + 0.5 * n});
    }
    f.spans.back().last_step = 15020;
    f.cause_id = 9;
    f.cause = "task_dominance at step 0 (recon is 99.98% of the loss)";
    w.record_finding(f);
    finding g;  // one episode, no spans, no cause
    g.id = 2;
    g.kind = "non_finite";
    g.level = severity::error;
    g.first_step = 15100;
    g.last_step = 15999;
    g.series = "loss";
    g.message = "loss is NaN at step 15100";
    w.record_finding(g);
  }
  auto r = cli("findings --run 1 --db " + db);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(
      r.out ==
      "run  id  severity  kind        steps        episodes  series  message\n"
      "1    1   warning   loss_spike  377-15020    70        loss    loss 2.843 is 5.2x its "
      "running median 0.5463\n"
      "    preceded by: task_dominance at step 0 (recon is 99.98% of the loss)\n"
      "1    2   error     non_finite  15100-15999  1         loss    loss is NaN at step 15100\n");

  r = cli("findings --run 1 --all --db " + db);
  REQUIRE(r.status == 0);
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 69);  // header, incident, cause, 64 episodes + 1 gap note, finding 2
  CHECK(lines[2] == "    preceded by: task_dominance at step 0 (recon is 99.98% of the loss)");
  CHECK(lines[3] == "    episode 1: steps 377-381 warning peak 5.5");
  CHECK(lines[34] == "    episode 32: steps 6577-6581 warning peak 21");
  CHECK(lines[35] == "    ... 6 episodes not kept (episodes 33-38)");
  CHECK(lines[36] == "    episode 39: steps 7977-7981 warning peak 24.5");
  CHECK(lines[67] == "    episode 70: steps 14177-15020 warning peak 40");
  CHECK(lines[68].rfind("1    2   error     non_finite  15100-15999  1 ", 0) == 0);

  r = cli("findings --run 1 --json --db " + db);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out)["findings"];
  REQUIRE(j.size() == 2);
  CHECK(j[0]["episodes"] == 70);
  REQUIRE(j[0]["spans"].size() == 64);
  CHECK(j[0]["spans"][32] ==
        nlohmann::json(
            {{"first_step", 7977}, {"last_step", 7981}, {"severity", "warning"}, {"peak", 24.5}}));
  CHECK(j[0]["cause_id"] == 9);
  CHECK(j[0]["cause"] == "task_dominance at step 0 (recon is 99.98% of the loss)");
  CHECK(j[1]["episodes"] == 1);
  CHECK(j[1]["spans"].empty());

  r = cli("findings --help");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("--all") && Catch::Contains("episode 3: steps 900-912"));
}

TEST_CASE("findings lists another sign of an incident under it, and runs counts incidents",
          "[storage][cli]") {
  const losslens::testing::temp_dir tmp("cli");
  const auto db = tmp.file("runs.db");
  {
    storage::run_options ro;
    ro.name = "collapse";
    storage::run_writer w(db, ro);
    finding f;
    f.id = 1;
    f.kind = "vanishing_gradients";
    f.level = severity::warning;
    f.first_step = 32403;
    f.last_step = 199999;
    f.series = "grad_norm/fc1.bias";
    f.message = "5 of 6 parameters get less than 1e-05x the gradient of the largest";
    w.record_finding(f);
    finding g;
    g.id = 2;
    g.kind = "chance_level";
    g.level = severity::warning;
    g.first_step = 32415;
    g.last_step = 199999;
    g.series = "loss";
    g.message = "smoothed loss 2.294 has stayed within 3.0% of ln(10)";
    g.episodes = 2;
    g.spans = {{32415, 33000, severity::warning, 2.29}, {40000, 199999, severity::warning, 2.3}};
    g.symptom_of_id = 1;
    g.symptom_of = "the collapse at step 32403: vanishing_gradients at step 32403";
    w.record_finding(g);
  }
  auto r = cli("findings --run 1 --db " + db);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out ==
        "run  id  severity  kind                 steps         episodes  series              "
        "message\n"
        "1    1   warning   vanishing_gradients  32403-199999  1         grad_norm/fc1.bias  5 of "
        "6 parameters get less than 1e-05x the gradient of the largest\n"
        "    also: (id 2) warning chance_level at steps 32415-199999 (loss): smoothed loss 2.294 "
        "has stayed within 3.0% of ln(10)\n");
  r = cli("findings --run 1 --all --db " + db);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::EndsWith("      episode 1: steps 32415-33000 warning peak 2.29\n"
                                    "      episode 2: steps 40000-199999 warning peak 2.3\n"));
  // Of its kind alone: a row of its own that names the incident.
  r = cli("findings --run 1 --kind chance_level --db " + db);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("1    2   warning   chance_level") &&
                        Catch::Contains("    another sign of the collapse at step 32403: "
                                        "vanishing_gradients at step 32403\n"));
  r = cli("findings --run 1 --json --db " + db);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out)["findings"];
  REQUIRE(j.size() == 2);
  CHECK(j[1]["symptom_of_id"] == 1);
  r = cli("runs --json --db " + db);
  REQUIRE(r.status == 0);
  CHECK(nlohmann::json::parse(r.out)["runs"][0]["findings"] == 1);
}

TEST_CASE("metrics downsamples without hiding the spike and is exact when zoomed in",
          "[storage][cli]") {
  fixture fx;
  const auto& t = fx.spike.trace;
  const auto id = std::to_string(fx.spike.id);
  auto r = fx.run("metrics --run " + id + " --series loss --max-points 40 --json");
  INFO(r.err);
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["points"].size() <= 40);
  REQUIRE_FALSE(j["exact"].get<bool>());
  double max_loss = -1;
  std::int64_t max_step = -1;
  for (const auto& s : t.samples)
    if (*s.loss > max_loss) {
      max_loss = *s.loss;
      max_step = s.step;
    }
  bool spike = false;
  for (const auto& p : j["points"]) spike |= p["step"] == max_step && p["value"] == max_loss;
  REQUIRE(spike);

  r = fx.run("metrics --run " + id + " --series loss --from 100 --to 140 --json");
  REQUIRE(r.status == 0);
  j = nlohmann::json::parse(r.out);
  REQUIRE(j["exact"].get<bool>());
  REQUIRE(j["points"].size() == 41);
  for (const auto& p : j["points"])
    REQUIRE(p["value"].get<double>() == *t.samples[p["step"].get<std::size_t>()].loss);

  r = fx.run("metrics --run " + std::to_string(fx.nan.id) + " --series loss --max-points 8");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("\tnan"));  // the NaN tail shows even at 8 points
}

TEST_CASE("export CSV round-trips through analyze and JSON export is valid", "[storage][cli]") {
  fixture fx;
  for (const auto* rec : {&fx.spike, &fx.nan}) {
    const auto orig = fx.dir / "orig.csv";
    std::ofstream(orig) << csv_of(rec->trace);
    const auto direct = cli("analyze " + orig.string() + " --json");
    REQUIRE(direct.status == 0);
    const auto piped = cli("export --run " + std::to_string(rec->id) + " --db " + fx.db + " | " +
                           LOSSLENS_CLI + " analyze - --json");
    INFO(piped.err);
    REQUIRE(piped.status == 0);
    // The same report but for where it came from (run name and source: stdin vs the file).
    auto report = [](const std::string& out) {
      auto j = nlohmann::json::parse(out);
      j.erase("run");
      j.erase("source");
      return j;
    };
    REQUIRE(report(piped.out) == report(direct.out));
    REQUIRE(nlohmann::json::parse(piped.out)["findings"].size() == rec->findings.size());
    // Byte for byte: the export writes the same columns and shortest round-trip numbers.
    const auto exported = fx.run("export --run " + std::to_string(rec->id));
    REQUIRE(exported.out == csv_of(rec->trace));
  }
  const auto r = fx.run("export --run " + std::to_string(fx.nan.id) + " --format json");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["run"]["name"] == "broken");
  REQUIRE(j["findings"].size() == fx.nan.findings.size());
  bool saw_nan = false;
  for (const auto& s : j["series"])
    if (s["name"] == "loss") {
      REQUIRE(s["points"].size() == fx.nan.trace.samples.size());
      for (const auto& p : s["points"]) saw_nan |= p[2] == "nan";
    }
  REQUIRE(saw_nan);
}

TEST_CASE("compare shows final and best losses and findings side by side", "[storage][cli]") {
  fixture fx;
  auto r = fx.run("compare " + std::to_string(fx.spike.id) + " " + std::to_string(fx.nan.id) +
                  " --json");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  bool loss = false;
  for (const auto& s : j["series"]) {
    if (s["name"] != "loss") continue;
    loss = true;
    REQUIRE(s["runs"][0]["final"].get<double>() == *fx.spike.trace.samples.back().loss);
    REQUIRE(s["runs"][0]["best"].get<double>() == best_loss(fx.spike.trace));
    REQUIRE(s["runs"][1]["final"] == "nan");
    REQUIRE(s["runs"][1]["best"].get<double>() == best_loss(fx.nan.trace));
  }
  REQUIRE(loss);
  std::map<std::string, std::pair<int, int>> want;
  for (const auto& f : fx.spike.findings) want[f.kind].first++;
  for (const auto& f : fx.nan.findings) want[f.kind].second++;
  REQUIRE(j["findings"].size() == want.size());
  for (const auto& k : j["findings"]) {
    REQUIRE(k["counts"][0] == want[k["kind"]].first);
    REQUIRE(k["counts"][1] == want[k["kind"]].second);
  }
  r = fx.run("compare 1 2");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("loss best") && Catch::Contains("spiky"));
}

TEST_CASE("storage commands report bad usage (2) and runtime failures (1)", "[storage][cli]") {
  fixture fx;
  auto r = cli("runs --db " + (fx.dir / "missing.db").string());
  REQUIRE(r.status == 1);
  REQUIRE_THAT(r.err, Catch::Contains("no database at"));
  r = fx.run("metrics --run 99 --series loss");
  REQUIRE(r.status == 1);
  REQUIRE_THAT(r.err, Catch::Contains("no run with id 99"));
  r = fx.run("metrics --run 1 --series nope");
  REQUIRE(r.status == 1);
  REQUIRE_THAT(r.err, Catch::Contains("no series 'nope'") && Catch::Contains("loss"));
  r = fx.run("export --run 42");
  REQUIRE(r.status == 1);
  r = fx.run("findings --run 42");
  REQUIRE(r.status == 1);
  for (const char* bad :
       {"metrics --run 1", "metrics --series loss", "metrics --run x --series loss",
        "metrics --run 1 --series loss --max-points 3",
        "metrics --run 1 --series loss --from 9 --to 2", "compare 1", "export --run 1 --format xml",
        "runs extra", "runs --bogus"}) {
    r = fx.run(bad);
    INFO(bad << ": " << r.err);
    REQUIRE(r.status == 2);
    REQUIRE_THAT(r.err, Catch::Contains("usage: losslens"));
  }
  const auto garbage = fx.dir / "garbage.db";
  std::ofstream(garbage) << std::string(5000, 'g');
  r = cli("runs --db " + garbage.string());
  REQUIRE(r.status == 1);
  REQUIRE_THAT(r.err, Catch::Contains("corrupt"));
  r = cli("runs --help");
  REQUIRE(r.status == 0);
  REQUIRE_THAT(r.out, Catch::Contains("--db PATH"));
}

TEST_CASE(
    "serve --wait starts once a trainer creates the database, and stops on SIGTERM while "
    "waiting",
    "[cli][serve]") {
  const auto dir = fs::temp_directory_path() / ("losslens_serve_wait_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto db = (dir / "runs.db").string();
  {
    // Nobody creates it: SIGTERM ends the wait with status 0.
    losslens::testing::child_process serve(LOSSLENS_CLI,
                                           {"serve", "--db", db, "--port", "0", "--wait"},
                                           (dir / "serve1.txt").string());
    auto waiting = serve.read_line(std::chrono::seconds(30));
    REQUIRE(waiting);
    CHECK(waiting->find("waiting for " + db) != std::string::npos);
    serve.kill(SIGTERM);
    CHECK(serve.wait() == 0);
    CHECK(!fs::exists(db));
  }
  {
    losslens::testing::child_process serve(LOSSLENS_CLI,
                                           {"serve", "--db", db, "--port", "0", "--wait"},
                                           (dir / "serve2.txt").string());
    REQUIRE(serve.wait_for("losslens: waiting", std::chrono::seconds(30)));
    storage::run_writer w(db, storage::run_options{});
    auto up = serve.wait_for("losslens: dashboard for " + db, std::chrono::seconds(30));
    CHECK(up);
    serve.kill(SIGTERM);
    CHECK(serve.wait() == 0);
  }
  fs::remove_all(dir);
}
