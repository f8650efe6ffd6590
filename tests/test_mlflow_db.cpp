// Runs of MLflow's SQLite store (mlflow.db), written here as MLflow's SQLAlchemy store writes
// them (tests/support/mlflow_store: NaN as 0 with is_nan set, ±Inf as the largest double),
// listed and read back value by value.

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "error_of.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/mlflow_db.hpp"
#include "losslens/storage/run_writer.hpp"
#include "mlflow_store.hpp"
#include "temp_dir.hpp"

using namespace losslens;
using losslens::testing::error_of;
using losslens::testing::mlflow_store_metric;
using losslens::testing::mlflow_store_run;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

const tag_series& metric(const mlflow_run& run, const std::string& key) {
  for (const auto& m : run.metrics)
    if (m.tag == key) return m;
  FAIL("no metric " << key);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("mlflow db: the runs that are not deleted, their values and names", "[mlflow]") {
  losslens::testing::temp_dir dir("mlflowdb");
  const std::string db = dir.file("mlflow.db");
  const std::int64_t t0 = 1700000000000;
  mlflow_store_run a{
      "aaaa1111",
      "lr-sweep 2",
      3,
      200,
      false,
      {{"train/loss", 2.3025850929940455, t0, 0},
       {"train/loss", nan_v, t0 + 100, 1},
       {"train/loss", inf_v, t0 + 200, 2},
       {"train/loss", 1e-05, t0 + 300, 3},
       {"grad_norm", -inf_v, t0, 0},
       {"grad_norm", 0.5, t0 + 100, 1},
       {"train/loss", 3.0, t0 + 400, 4},
       {"lr", 0.1, t0, 0},
       // step 4 logged again (a resumed run): the value written last is kept
       {"train/loss", 4.0, t0 + 50, 4},
       // a value beyond float range and the largest double below the largest
       {"grad_norm", 1e300, t0 + 200, 2},
       {"grad_norm", std::nextafter(std::numeric_limits<double>::max(), 0.0), t0 + 300, 3}}};
  mlflow_store_run b{"bbbb2222", "", 3, 100, false, {{"loss", 1.0, t0, 0}}};
  mlflow_store_run c{"cccc3333", "default run", 0, 300, false, {{"loss", 2.0, t0, 0}}};
  mlflow_store_run deleted{"dddd4444", "deleted", 3, 50, true, {{"loss", 9.0, t0, 0}}};
  mlflow_store_run in_deleted{"eeee5555", "old", 4, 10, false, {{"loss", 9.0, t0, 0}}};
  losslens::testing::write_mlflow_store(
      db, {{0, "Default"}, {3, "sweep"}, {4, "old experiments", true}},
      {a, b, c, deleted, in_deleted});

  CHECK(storage::is_sqlite_file(db));
  const auto runs = storage::find_mlflow_db_runs(db);
  REQUIRE(runs.size() == 3);  // by experiment, then start time; deleted ones left out
  CHECK((runs[0].id == "cccc3333" && runs[0].name == "default run" &&
         runs[0].experiment == "Default"));
  CHECK((runs[1].id == "bbbb2222" && runs[1].name == "bbbb2222" && runs[1].experiment == "sweep"));
  CHECK((runs[2].id == "aaaa1111" && runs[2].name == "lr-sweep 2"));

  const auto r = storage::read_mlflow_db_run(db, "aaaa1111");
  CHECK(r.name == "lr-sweep 2");
  CHECK(r.dir == db);
  REQUIRE(r.metrics.size() == 3);
  CHECK(r.metrics[0].tag == "grad_norm");  // sorted by key
  CHECK(r.metrics[1].tag == "lr");
  CHECK(r.metrics[2].tag == "train/loss");
  const auto& loss = metric(r, "train/loss").points;
  REQUIRE(loss.size() == 5);
  CHECK((loss[0].step == 0 && loss[0].value == 2.3025850929940455 &&
         loss[0].wall_time == 1700000000.0));
  CHECK((loss[1].step == 1 && std::isnan(loss[1].value)));
  CHECK((loss[2].step == 2 && loss[2].value == inf_v));
  CHECK((loss[3].step == 3 && loss[3].value == 1e-05 && loss[3].wall_time == 1700000000.3));
  CHECK((loss[4].step == 4 && loss[4].value == 4.0));
  const auto& norm = metric(r, "grad_norm").points;
  REQUIRE(norm.size() == 4);
  CHECK(norm[0].value == -inf_v);
  CHECK(norm[1].value == 0.5);
  CHECK(norm[2].value == 1e300);
  CHECK(norm[3].value == std::nextafter(std::numeric_limits<double>::max(), 0.0));
  CHECK(metric(r, "lr").points.at(0).value == 0.1);
  REQUIRE(r.notes.size() == 1);
  CHECK(r.notes[0] ==
        "tag 'train/loss': 1 repeated steps (a restarted run?): kept the value written last; "
        "points sorted by step");

  CHECK(storage::read_mlflow_db_run(db, "bbbb2222").name == "bbbb2222");
  CHECK(error_of([&] { storage::read_mlflow_db_run(db, "zzzz"); }) ==
        db + ": no MLflow run 'zzzz'");
}

TEST_CASE("mlflow db: other files are not taken for one", "[mlflow]") {
  losslens::testing::temp_dir dir("mlflowdb");
  const std::string text = dir.file("metrics.csv");
  std::ofstream(text) << "step,loss\n0,1\n";
  CHECK_FALSE(storage::is_sqlite_file(text));
  const std::string missing = dir.file("missing.db");
  CHECK(error_of([&] {
          storage::find_mlflow_db_runs(missing);
        }).rfind(missing + ": cannot open as an SQLite database: ", 0) == 0);

  // losslens' own run history is an SQLite file without MLflow's tables.
  const std::string history = dir.file("runs.db");
  {
    storage::run_options ro;
    ro.name = "r";
    storage::run_writer w(history, ro);
  }
  CHECK(storage::is_sqlite_file(history));
  CHECK(error_of([&] { storage::find_mlflow_db_runs(history); }) ==
        history +
            ": an SQLite database without MLflow's tables (experiments, runs, metrics); it is a "
            "losslens run history: see its runs with `losslens runs --db " +
            history + "`");
  // MLflow's tables and no run yet.
  const std::string other = dir.file("other.sqlite");
  losslens::testing::write_mlflow_store(other, {}, {});
  CHECK(storage::find_mlflow_db_runs(other).empty());
  // A file with SQLite's header and nothing readable after it: SQLite's error.
  const std::string broken = dir.file("broken.db");
  std::ofstream(broken, std::ios::binary)
      << std::string("SQLite format 3\0", 16) << std::string(84, '\x7f');
  CHECK(storage::is_sqlite_file(broken));
  const std::string damaged = error_of([&] { storage::find_mlflow_db_runs(broken); });
  CHECK(damaged.rfind(broken + ": the SQLite file is damaged or incomplete (sqlite: ", 0) == 0);
  CHECK(damaged.find("recover it with `sqlite3 " + broken + " .recover`") != std::string::npos);
}

TEST_CASE("mlflow db: a long run read in rowid ranges on several threads", "[mlflow]") {
  losslens::testing::temp_dir dir("mlflowdb_parts");
  const std::string db = dir.file("mlflow.db");
  const std::int64_t t0 = 1700000000000;
  // Three keys logged together at each step, a fourth from step 700 on, steps 300-399 logged
  // again after 999 (a resumed run), a NaN; another run's rows before and after.
  mlflow_store_run before{"0000aaaa", "before", 0, 10, false, {}};
  mlflow_store_run run{"1111bbbb", "long", 0, 20, false, {}};
  mlflow_store_run after{"2222cccc", "after", 0, 30, false, {}};
  for (int i = 0; i < 50; ++i) before.metrics.push_back({"loss", 5.0, t0 + i, i});
  std::map<std::string, std::map<std::int64_t, double>> want;  // key -> step -> value kept
  for (int i = 0; i < 1100; ++i) {
    const std::int64_t step = i < 1000 ? i : 300 + (i - 1000);
    const double loss = i == 500 ? nan_v : 3.0 / (1 + i);
    for (const auto& [key, v] : std::vector<std::pair<std::string, double>>{
             {"loss", loss}, {"lr", 1e-3 * (i % 7)}, {"grad_norm", 0.25 * i}}) {
      run.metrics.push_back({key, v, t0 + i, step});
      want[key][step] = v;
    }
    if (i >= 700) {
      run.metrics.push_back({"acc", 0.001 * i, t0 + i, step});
      want["acc"][step] = 0.001 * i;
    }
  }
  for (int i = 0; i < 50; ++i) after.metrics.push_back({"loss", 6.0, t0 + i, i});
  losslens::testing::write_mlflow_store(db, {{0, "Default"}}, {before, run, after});

  auto check = [&](const mlflow_run& r) {
    REQUIRE(r.metrics.size() == 4);
    for (const auto& m : r.metrics) {
      INFO(m.tag);
      const auto& w = want.at(m.tag);
      REQUIRE(m.points.size() == w.size());
      std::size_t i = 0;
      for (const auto& [step, v] : w) {
        const auto& p = m.points[i++];
        CHECK(p.step == step);
        CHECK((p.value == v || (std::isnan(p.value) && std::isnan(v))));
      }
    }
    REQUIRE(r.notes.size() == 4);  // steps 300-399 again; acc's come after its 700-999
  };
  const auto one = storage::read_mlflow_db_run(db, "1111bbbb", {1 << 20, 1});
  check(one);
  for (unsigned threads = 2; threads <= 5; ++threads) {
    INFO(threads << " threads");
    const auto parts = storage::read_mlflow_db_run(db, "1111bbbb", {1, threads});
    check(parts);
    CHECK(parts.notes == one.notes);
    for (std::size_t k = 0; k < one.metrics.size(); ++k)
      for (std::size_t i = 0; i < one.metrics[k].points.size(); ++i)
        CHECK(parts.metrics[k].points[i].wall_time == one.metrics[k].points[i].wall_time);
  }
}
