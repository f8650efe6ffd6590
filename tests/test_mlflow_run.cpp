// Runs of MLflow's file store, written here as mlflow.log_metric writes them without a tracking
// server (FileStore: a line "<timestamp ms> <value> <step>" appended per call, the value as
// Python's str(float), a key with '/' in a nested file), read back value by value.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "error_of.hpp"
#include "losslens/error.hpp"
#include "losslens/mlflow_run.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

const losslens::tag_series& metric(const losslens::mlflow_run& run, const std::string& key) {
  for (const auto& m : run.metrics)
    if (m.tag == key) return m;
  FAIL("no metric " << key);
  throw std::logic_error("unreachable");
}

std::string error_of(const fs::path& run) {
  return losslens::testing::error_of([&] { (void)losslens::read_mlflow_run(run.string()); });
}

}  // namespace

TEST_CASE("mlflow: a run's metrics, nested keys, non-finite values and its name") {
  losslens::testing::temp_dir dir("mlflow");
  const fs::path run = dir.path / "mlruns" / "7" / "0a1b2c";
  write(run / "meta.yaml",
        "artifact_uri: file:///x/mlruns/7/0a1b2c/artifacts\nend_time: 1700000009000\n"
        "experiment_id: '7'\nrun_id: 0a1b2c\nrun_name: 'lr-sweep 3'\nstatus: 3\n");
  write(run / "metrics" / "train" / "loss",
        "1700000000000 2.3025850929940455 0\n1700000000100 nan 1\n1700000000200 inf 2\r\n"
        "1700000000300 1e-05 3\n");
  write(run / "metrics" / "grad_norm", "1700000000000 -inf 0\n1700000000100 0.5 1\n\n");
  write(run / "metrics" / "lr", "1700000000000 0.1\n");  // logged without step=
  write(run / "params" / "lr", "0.1");
  write(dir.path / "mlruns" / "7" / "meta.yaml", "name: sweep\n");
  write(dir.path / "mlruns" / ".trash" / "dead" / "meta.yaml", "run_name: deleted\n");
  fs::create_directories(dir.path / "mlruns" / ".trash" / "dead" / "metrics");

  CHECK(losslens::find_mlflow_runs((dir.path / "mlruns").string()) ==
        std::vector<std::string>{run.string()});
  CHECK(losslens::find_mlflow_runs((dir.path / "mlruns" / "7").string()) ==
        std::vector<std::string>{run.string()});
  CHECK(losslens::find_mlflow_runs(run.string()) == std::vector<std::string>{run.string()});
  CHECK(losslens::find_mlflow_runs(dir.path.string()).empty());  // three levels up

  const auto r = losslens::read_mlflow_run(run.string());
  CHECK(r.name == "lr-sweep 3");
  REQUIRE(r.metrics.size() == 3);
  CHECK(r.metrics[0].tag == "grad_norm");  // sorted by key
  CHECK(r.metrics[2].tag == "train/loss");
  const auto& loss = metric(r, "train/loss").points;
  REQUIRE(loss.size() == 4);
  CHECK((loss[0].step == 0 && loss[0].value == 2.3025850929940455 &&
         loss[0].wall_time == 1700000000.0));
  CHECK((loss[1].step == 1 && std::isnan(loss[1].value)));
  CHECK(loss[2].value == INFINITY);
  CHECK((loss[3].step == 3 && loss[3].value == 1e-05 && loss[3].wall_time == 1700000000.3));
  CHECK(metric(r, "grad_norm").points.at(0).value == -INFINITY);
  CHECK(metric(r, "lr").points.at(0).step == 0);
  REQUIRE(r.notes.size() == 1);
  CHECK(r.notes[0] ==
        "1 metric lines without a step (logged without step=): step 0, as MLflow reads them");
}

TEST_CASE("mlflow: a step logged twice keeps the value written last, bad lines say where") {
  losslens::testing::temp_dir dir("mlflow");
  const fs::path run = dir.path / "r";
  write(run / "meta.yaml", "run_id: r\n");
  write(run / "metrics" / "loss", "1 2.0 5\n2 1.0 6\n3 1.5 5\n");
  const auto r = losslens::read_mlflow_run(run.string());
  CHECK(r.name == "r");  // no run_name: the directory's
  const auto& loss = r.metrics.at(0).points;
  REQUIRE(loss.size() == 2);
  CHECK((loss[0].step == 5 && loss[0].value == 1.5));
  REQUIRE(r.notes.size() == 1);
  CHECK(r.notes[0].find("tag 'loss': 1 repeated steps") == 0);

  // A value beyond double's range reads as C's strtod reads it.
  write(run / "metrics" / "loss", "1 1e999 5\n2 -1e999 6\n3 1e-999 7\n");
  const auto huge = losslens::read_mlflow_run(run.string()).metrics.at(0).points;
  CHECK((huge.at(0).value == INFINITY && huge.at(1).value == -INFINITY && huge.at(2).value == 0));

  const std::string file = (run / "metrics" / "loss").string();
  write(run / "metrics" / "loss", "1 2.0 5\n2 abc 6\n");
  CHECK(error_of(run) == file + ":2: value 'abc' is not a number");
  write(run / "metrics" / "loss", "1 2.0 5 9\n");
  CHECK(error_of(run) == file + ":1: 4 fields; a metric line is '<timestamp ms> <value> <step>'");
  write(run / "metrics" / "loss", "1 2.0 5.5\n");
  CHECK(error_of(run) == file + ":1: step '5.5' is not a whole number");
  write(run / "metrics" / "loss", "x 2.0 5\n");
  CHECK(error_of(run) == file + ":1: timestamp 'x'");
  write(run / "metrics" / "loss", "1  2.0\n");
  CHECK(error_of(run) == file + ":1: value '' is not a number");
}

TEST_CASE("mlflow: a metric line still being written is left out with a note, never misread") {
  // MLflow appends "<ts> <value> <step>\n" per call: read while the run goes on, a file can end
  // in the middle of a line, whose cut step ("1" of "12") or value would read as another point.
  losslens::testing::temp_dir dir("mlflow");
  const fs::path run = dir.path / "r";
  write(run / "meta.yaml", "run_id: r\nrun_name: live\n");
  const std::string done = "1700000000000 2.0 0\n1700000000100 1.5 1\n";
  const std::string last = "1700000000200 0.5413 12";
  const std::string file = (run / "metrics" / "loss").string();
  for (std::size_t k = 1; k <= last.size(); ++k) {
    INFO("last line '" << last.substr(0, k) << "'");
    write(run / "metrics" / "loss", done + last.substr(0, k));
    const auto r = losslens::read_mlflow_run(run.string());
    const auto& loss = metric(r, "loss").points;
    REQUIRE(loss.size() == 2);
    CHECK((loss[0].value == 2.0 && loss[1].step == 1 && loss[1].value == 1.5));
    REQUIRE(r.notes.size() == 1);
    CHECK(r.notes[0] ==
          file + ":3: the last line has no line end: left out (a run still being written?)");
  }
  write(run / "metrics" / "loss", done + last + "\n");
  const auto whole = losslens::read_mlflow_run(run.string());
  CHECK(metric(whole, "loss").points.size() == 3);
  CHECK(whole.notes.empty());
}
