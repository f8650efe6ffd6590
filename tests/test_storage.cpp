// Run history: writer/reader round trips, downsampling against brute force, crash recovery,
// bad database files and write failures.

#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <thread>

#include "child_functions.hpp"
#include "losslens/error.hpp"
#include "temp_dir.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"

namespace fs = std::filesystem;
using namespace losslens;
using namespace losslens::storage;

namespace {

const double nan_v = std::numeric_limits<double>::quiet_NaN();
const double inf_v = std::numeric_limits<double>::infinity();

using testing::temp_dir;

/// Same number, NaN equal to NaN.
bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

bool same_point(const point& a, const point& b) {
  return a.step == b.step && same(a.value, b.value) && same(a.wall_time, b.wall_time);
}

/// Brute-force M4 summary of the points with from <= step <= to.
bucket_summary brute_summary(const std::vector<point>& pts, std::int64_t from, std::int64_t to) {
  bucket_summary s;
  for (const auto& p : pts) {
    if (p.step < from || p.step > to) continue;
    if (s.count == 0) s.first = p;
    s.last = p;
    if (std::isnan(p.value)) {
      if (s.non_finite_count() == 0) s.first_non_finite = p;
      ++s.nan_count;
    } else if (std::isinf(p.value)) {
      if (s.non_finite_count() == 0) s.first_non_finite = p;
      ++(p.value > 0 ? s.pos_inf_count : s.neg_inf_count);
    } else {
      if (s.finite_count() == 0 || p.value < s.min.value) s.min = p;
      if (s.finite_count() == 0 || p.value > s.max.value) s.max = p;
    }
    ++s.count;
  }
  return s;
}

void require_same_summary(const bucket_summary& got, const bucket_summary& want) {
  REQUIRE(got.count == want.count);
  REQUIRE(got.nan_count == want.nan_count);
  REQUIRE(got.pos_inf_count == want.pos_inf_count);
  REQUIRE(got.neg_inf_count == want.neg_inf_count);
  if (want.count == 0) return;
  REQUIRE(same_point(got.first, want.first));
  REQUIRE(same_point(got.last, want.last));
  if (want.finite_count() > 0) {
    REQUIRE(same_point(got.min, want.min));
    REQUIRE(same_point(got.max, want.max));
  }
  if (want.non_finite_count() > 0) REQUIRE(same_point(got.first_non_finite, want.first_non_finite));
}

/// Checks a window against the raw points it summarises.
void check_window(const series_window& w, const std::vector<point>& raw, std::size_t max_points) {
  REQUIRE(w.points.size() <= max_points);
  const auto whole = brute_summary(raw, w.from_step, w.to_step);
  std::int64_t covered = 0, prev_to = w.from_step - 1;
  for (const auto& b : w.buckets) {
    REQUIRE(b.from_step > prev_to);
    REQUIRE(b.from_step <= b.to_step);
    REQUIRE(b.to_step <= w.to_step);
    prev_to = b.to_step;
    require_same_summary(b, brute_summary(raw, b.from_step, b.to_step));
    covered += b.count;
  }
  REQUIRE(covered == whole.count);  // buckets cover every point of the range
  // Every point shown is a real point; the extremes and a non-finite point are shown.
  std::map<std::int64_t, double> by_step;
  for (const auto& p : raw) by_step[p.step] = p.value;
  bool has_min = false, has_max = false, has_non_finite = false;
  for (const auto& p : w.points) {
    REQUIRE(by_step.count(p.step) == 1);
    REQUIRE(same(by_step[p.step], p.value));
    if (whole.finite_count() > 0 && p.value == whole.min.value) has_min = true;
    if (whole.finite_count() > 0 && p.value == whole.max.value) has_max = true;
    if (!std::isfinite(p.value)) has_non_finite = true;
  }
  if (whole.finite_count() > 0) {
    REQUIRE(has_min);
    REQUIRE(has_max);
  }
  REQUIRE(has_non_finite == (whole.non_finite_count() > 0));
  if (w.exact) REQUIRE(std::int64_t(w.points.size()) == whole.count);
}

run_options one_series(const std::string& name = "r") {
  run_options r;
  r.name = name;
  r.extra_series = {{"x", series_kind::other}};
  return r;
}

/// Appends, retrying while the queue is full (tests want every point).
void append_all(run_writer& w, run_writer::series_handle h, const std::vector<point>& pts) {
  for (const auto& p : pts)
    while (!w.try_append(h, p.step, p.wall_time, p.value)) std::this_thread::yield();
}

}  // namespace

TEST_CASE("samples round-trip with NaN, Inf and missing values", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  run_options ro;
  ro.name = "roundtrip";
  ro.config_json = R"({"lr": 0.1, "model": "mlp"})";
  ro.schema = {{"cls", "recon"}, {"fc1.weight"}};
  const double values[] = {1.5, nan_v, inf_v, -inf_v, -0.25, 1e-300, 3e300};
  std::vector<sample> samples;
  for (int i = 0; i < 500; ++i) {
    sample s;
    s.step = 10 + 3 * i;
    s.wall_time = 1000.0 + i * 0.5;
    s.loss = values[i % 7];
    if (i % 5 != 0) s.task_losses = {values[(i + 1) % 7], values[(i + 2) % 7]};
    s.grad_norm = values[(i + 3) % 7];
    s.param_grad_norms = {std::nullopt};  // present in the vector, but missing
    s.task_grad_norms = {values[(i + 4) % 7]};
    if (i % 2) s.lr = 0.001 * i;
    s.accuracy = i / 500.0;
    samples.push_back(s);
  }
  std::int64_t run_id = 0;
  {
    run_writer w(db, ro);
    run_id = w.run_id();
    for (const auto& s : samples) w.append(s);
    REQUIRE(w.flush());
    const auto st = w.stats();
    REQUIRE(st.dropped == 0);
    REQUIRE(st.written == st.enqueued);
  }
  run_reader r(db);
  const auto info = r.run(run_id);
  REQUIRE(info.name == "roundtrip");
  REQUIRE(info.status == run_status::finished);
  REQUIRE(info.ended_at);
  REQUIRE(info.config_json == ro.config_json);
  REQUIRE(!info.version.empty());
  REQUIRE(info.last_step == samples.back().step);

  // Expected points per series, straight from the samples.
  std::map<std::string, std::vector<point>> want;
  auto put = [&](const std::string& name, const sample& s, const std::optional<double>& v) {
    if (v) want[name].push_back({s.step, s.wall_time, *v});
  };
  for (const auto& s : samples) {
    put("loss", s, s.loss);
    for (std::size_t t = 0; t < s.task_losses.size(); ++t)
      put("loss/" + ro.schema.tasks[t], s, s.task_losses[t]);
    put("grad_norm", s, s.grad_norm);
    for (std::size_t t = 0; t < s.task_grad_norms.size(); ++t)
      put("task_grad_norm/" + ro.schema.tasks[t], s, s.task_grad_norms[t]);
    put("lr", s, s.lr);
    put("accuracy", s, s.accuracy);
  }
  const auto series = r.series(run_id);
  REQUIRE(series.size() == 9);  // loss, 2 tasks, grad_norm, 1 param, 2 task grads, lr, accuracy
  std::int64_t most = 0;
  for (const auto& si : series) {
    const auto& exp = want[si.name];
    INFO(si.name);
    const auto got = r.points(si.id, 0, 1 << 30);
    REQUIRE(got.size() == exp.size());
    for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(same_point(got[i], exp[i]));
    require_same_summary(si.summary, brute_summary(exp, 0, 1 << 30));
    most = std::max<std::int64_t>(most, std::int64_t(exp.size()));
  }
  REQUIRE(info.steps == most);
  REQUIRE(r.find_series(run_id, "loss").kind == series_kind::loss);
  REQUIRE(r.find_series(run_id, "loss/cls").kind == series_kind::task_loss);
  REQUIRE_THROWS_AS(r.find_series(run_id, "nope"), losslens::error);
  REQUIRE_THROWS_AS(r.run(run_id + 100), losslens::error);

  const auto events = r.events(run_id);
  REQUIRE(events.size() >= 2);
  REQUIRE(events.front().kind == "attach");
  REQUIRE(events.back().kind == "detach");
}

TEST_CASE("downsampled windows keep every extreme and non-finite value", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u));
  // Dense steps for a fine zoom, then sparse steps that span ~2^26 steps (higher levels).
  std::vector<point> raw;
  std::int64_t step = std::uniform_int_distribution<std::int64_t>(0, 5000)(rng);
  double level = 1;
  std::normal_distribution<double> noise(0, 0.01);
  std::uniform_real_distribution<double> u01(0, 1);
  for (int i = 0; i < 120000; ++i) {
    level += noise(rng);
    double v = level;
    double r = u01(rng);
    if (r < 0.0005)
      v = nan_v;
    else if (r < 0.0007)
      v = inf_v;
    else if (r < 0.0009)
      v = -inf_v;
    else if (r < 0.002)
      v = level * (u01(rng) < 0.5 ? 50 : -50);  // spikes both ways
    raw.push_back({step, 100 + i * 0.01, v});
    step += i < 60000 ? 1 + std::int64_t(u01(rng) < 0.1) : 1 + std::int64_t(u01(rng) * 2000);
  }
  std::int64_t series_id = 0;
  {
    writer_options wo;
    wo.batch_rows = 7919;  // batches end mid-bucket: partial rollups get rewritten
    run_writer w(db, one_series(), wo);
    append_all(w, 0, raw);
  }
  run_reader r(db);
  const auto s = r.series(r.runs().back().id).at(0);
  series_id = s.id;
  require_same_summary(s.summary, brute_summary(raw, 0, std::numeric_limits<std::int64_t>::max()));

  std::uniform_int_distribution<std::int64_t> pick(0, std::int64_t(raw.size()) - 1);
  const std::size_t budgets[] = {8, 9, 50, 333, 2000};
  for (int q = 0; q < 60; ++q) {
    std::int64_t a = raw[std::size_t(pick(rng))].step, b = raw[std::size_t(pick(rng))].step;
    if (q % 3 == 0) b = a + std::int64_t(u01(rng) * 3000);  // short ranges: fine levels, raw
    if (q == 0) {
      a = 0;
      b = raw.back().step;
    }
    a += std::int64_t(u01(rng) * 7) - 3;  // ends off the points
    const auto lo = std::max<std::int64_t>(0, std::min(a, b)), hi = std::max(a, b);
    const auto budget = budgets[q % 5];
    INFO("range " << lo << ".." << hi << " max_points " << budget);
    check_window(r.window(series_id, lo, hi, budget), raw, budget);
  }
}

TEST_CASE("a one-step spike and NaN in a long run show at every zoom", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  const std::int64_t n = 1'000'000, nan_step = 612'345, spike_step = 876'543;
  std::vector<point> raw;
  raw.reserve(std::size_t(n));
  for (std::int64_t i = 0; i < n; ++i)
    raw.push_back({i, double(i), i == nan_step ? nan_v : i == spike_step ? 1e6 : 1.0 + 1e-7 * i});
  {
    run_writer w(db, one_series());
    append_all(w, 0, raw);
  }
  run_reader r(db);
  const auto id = r.series(1).at(0).id;
  for (std::int64_t width = n; width >= 16; width /= 7) {
    for (auto center : {nan_step, spike_step}) {
      const auto lo = std::max<std::int64_t>(0, center - width / 3), hi = lo + width;
      const auto w = r.window(id, lo, hi, 200);
      INFO("window " << lo << ".." << hi);
      REQUIRE(w.points.size() <= 200);
      bool seen = false;
      for (const auto& p : w.points)
        if (p.step == center) seen = center == nan_step ? std::isnan(p.value) : p.value == 1e6;
      REQUIRE(seen);
    }
  }
  check_window(r.window(id, 0, n - 1, 2000), raw, 2000);
}

TEST_CASE("findings are upserted by id as an episode grows", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  finding f;
  f.id = 7;
  f.kind = "loss_spike";
  f.level = severity::warning;
  f.first_step = 100;
  f.last_step = 100;
  f.series = "loss";
  f.rule = {"loss_spike", {{"z_threshold", 6}}};
  f.evidence = {{"z", 9.5}, {"loss", nan_v}};
  f.message = "spike";
  f.advice = "lower the lr";
  finding g = f;
  g.id = 8;
  g.kind = "non_finite";
  g.level = severity::error;
  std::int64_t run_id = 0;
  {
    run_writer w(db, one_series());
    run_id = w.run_id();
    w.record_finding(f);
    REQUIRE(w.flush());
    {
      run_reader r(db);
      const auto got = r.findings(run_id);
      REQUIRE(got.size() == 1);
      REQUIRE(got[0].f.last_step == 100);
    }
    for (int step = 101; step <= 140; ++step) {  // the episode grows
      f.last_step = step;
      f.set_evidence("z", 9.5 + step);
      f.message = "spike until " + std::to_string(step);
      w.record_finding(f);
      if (step % 10 == 0) REQUIRE(w.flush());
    }
    w.record_finding(g);
  }
  run_reader r(db);
  const auto all = r.findings(run_id);
  REQUIRE(all.size() == 2);
  REQUIRE(all[0].f.id == 7);
  REQUIRE(all[0].f.first_step == 100);
  REQUIRE(all[0].f.last_step == 140);
  REQUIRE(all[0].f.message == f.message);
  REQUIRE(all[0].f.evidence_value("z") == f.evidence_value("z"));
  REQUIRE(std::isnan(all[0].f.evidence_value("loss")));
  REQUIRE(all[0].f.advice == f.advice);
  REQUIRE(r.findings(run_id, "non_finite").size() == 1);
  REQUIRE(r.findings(std::nullopt, "non_finite").at(0).f.level == severity::error);
  REQUIRE(r.findings(run_id + 1).empty());
  const auto info = r.run(run_id);
  REQUIRE(info.findings == 2);
  REQUIRE(info.worst_finding->kind == "non_finite");
}

namespace {

/// The schema of losslens databases at version 1, as that release created it.
constexpr const char* schema_v1 = R"sql(
CREATE TABLE runs(
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  status     TEXT NOT NULL CHECK(status IN ('running', 'finished', 'crashed')),
  started_at REAL NOT NULL,
  ended_at   REAL,
  heartbeat  REAL NOT NULL,
  host       TEXT NOT NULL,
  pid        INTEGER NOT NULL,
  config     TEXT NOT NULL DEFAULT '{}',
  version    TEXT NOT NULL);
CREATE TABLE series(
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  name   TEXT NOT NULL,
  kind   TEXT NOT NULL,
  UNIQUE(run_id, name));
CREATE TABLE points(
  series_id INTEGER NOT NULL,
  step      INTEGER NOT NULL,
  wall_time REAL NOT NULL,
  value     REAL,
  PRIMARY KEY(series_id, step)) WITHOUT ROWID;
CREATE TABLE rollups(
  series_id INTEGER NOT NULL, level INTEGER NOT NULL, bucket INTEGER NOT NULL,
  count INTEGER NOT NULL, nan_count INTEGER NOT NULL, pos_inf_count INTEGER NOT NULL,
  neg_inf_count INTEGER NOT NULL,
  first_step INTEGER NOT NULL, first_wall REAL NOT NULL, first_value REAL,
  last_step INTEGER NOT NULL, last_wall REAL NOT NULL, last_value REAL,
  min_step INTEGER, min_wall REAL, min_value REAL,
  max_step INTEGER, max_wall REAL, max_value REAL,
  nf_step INTEGER, nf_wall REAL, nf_value REAL,
  PRIMARY KEY(series_id, level, bucket)) WITHOUT ROWID;
CREATE TABLE findings(
  run_id     INTEGER NOT NULL REFERENCES runs(id),
  finding_id INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  severity   INTEGER NOT NULL,
  series     TEXT NOT NULL,
  first_step INTEGER NOT NULL,
  last_step  INTEGER NOT NULL,
  message    TEXT NOT NULL,
  body       TEXT NOT NULL,
  updated_at REAL NOT NULL,
  PRIMARY KEY(run_id, finding_id));
CREATE INDEX findings_by_kind ON findings(kind);
CREATE TABLE events(
  id     INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id),
  time   REAL NOT NULL,
  step   INTEGER NOT NULL,
  kind   TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '{}');
CREATE INDEX events_by_run ON events(run_id, id);
PRAGMA application_id = 1282624622;
PRAGMA user_version = 1;
INSERT INTO runs VALUES(1, 'old', 'finished', 1.7e9, 1.7e9 + 60, 1.7e9 + 60, 'h', 1, '{}', '0.1.0');
INSERT INTO findings VALUES(1, 5, 'loss_spike', 1, 'loss', 100, 140, 'spike',
  '{"advice":"clip","evidence":{"z":9.5},"first_step":100,"id":5,"kind":"loss_spike","last_step":140,"message":"spike","rule":{"name":"loss_spike","params":{"z_threshold":6}},"series":"loss","severity":"warning"}',
  1.7e9);
)sql";

/// The integer a one-row, one-column query returns (-1 on failure).
std::int64_t sql_int(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  std::int64_t out = -1;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_open(db.c_str(), &h) == SQLITE_OK &&
      sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    out = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return out;
}

}  // namespace

TEST_CASE("a version-1 database migrates to version 2, keeps its findings and stores incidents",
          "[storage]") {
  temp_dir dir;
  const auto db = dir.file("v1.db");
  {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(h, schema_v1, nullptr, nullptr, &err);
    INFO((err ? err : ""));
    sqlite3_free(err);
    sqlite3_close(h);
    REQUIRE(rc == SQLITE_OK);
  }
  REQUIRE(sql_int(db, "PRAGMA user_version") == 1);

  finding f;
  f.id = 1;
  f.kind = "loss_spike";
  f.level = severity::warning;
  f.first_step = 377;
  f.last_step = 900;
  f.series = "loss";
  f.rule = {"loss_spike", {{"z_threshold", 6}}};
  f.evidence = {{"z", 9.4}};
  f.message = "spike";
  f.advice = "clip";
  f.episodes = 2;
  f.spans = {{377, 377, severity::warning, 9.4}, {850, 900, severity::error, nan_v}};
  f.cause_id = 7;
  f.cause = "task_dominance at step 0 (recon is 99.98% of the loss)";
  std::int64_t run_id = 0;
  {
    run_writer w(db, one_series("new"));  // migrates
    run_id = w.run_id();
    w.record_finding(f);
    REQUIRE(w.flush());
    f.last_step = 1300;  // a third episode: the incident is upserted in place
    f.episodes = 3;
    f.spans.push_back({1290, 1300, severity::warning, 12.5});
    w.record_finding(f);
  }
  REQUIRE(run_id == 2);
  REQUIRE(sql_int(db, "PRAGMA user_version") == 2);
  REQUIRE(sql_int(db, "PRAGMA application_id") == 0x4c734c6e);
  // The old row gets the defaults; the new one the incident's numbers.
  REQUIRE(sql_int(db, "SELECT episodes FROM findings WHERE run_id = 1 AND finding_id = 5") == 1);
  REQUIRE(sql_int(db, "SELECT cause_id FROM findings WHERE run_id = 1 AND finding_id = 5") == 0);
  REQUIRE(sql_int(db, "SELECT episodes FROM findings WHERE run_id = 2 AND finding_id = 1") == 3);
  REQUIRE(sql_int(db, "SELECT cause_id FROM findings WHERE run_id = 2 AND finding_id = 1") == 7);
  REQUIRE(sql_int(db, "SELECT count(*) FROM findings") == 2);

  run_reader r(db);
  const auto runs = r.runs();
  REQUIRE(runs.size() == 2);
  REQUIRE(runs[0].name == "old");
  REQUIRE(runs[0].findings == 1);
  const auto old = r.findings(1);
  REQUIRE(old.size() == 1);
  REQUIRE(old[0].f.id == 5);
  REQUIRE(old[0].f.last_step == 140);
  REQUIRE(old[0].f.evidence_value("z") == 9.5);
  REQUIRE(old[0].f.episodes == 1);
  REQUIRE(old[0].f.spans.empty());
  REQUIRE(old[0].f.cause_id == 0);
  const auto got = r.findings(run_id);
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].f.last_step == 1300);
  REQUIRE(got[0].f.episodes == 3);
  REQUIRE(got[0].f.spans.size() == 3);
  REQUIRE(got[0].f.spans[1].first_step == 850);
  REQUIRE(got[0].f.spans[1].level == severity::error);
  REQUIRE(std::isnan(got[0].f.spans[1].peak));
  REQUIRE(got[0].f.spans[2].peak == 12.5);
  REQUIRE(got[0].f.cause_id == 7);
  REQUIRE(got[0].f.cause == f.cause);
}

TEST_CASE("a version-1 database is migrated by a reader with write access", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("v1.db");
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, schema_v1, nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(h);
  run_reader r(db);
  REQUIRE(sql_int(db, "PRAGMA user_version") == 2);
  const auto got = r.findings();
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].f.first_step == 100);
  REQUIRE(got[0].f.episodes == 1);
}

namespace {

/// Child function: writes sin(i * 0.001) at step i = 0, 1, ... into a run "doomed" of the
/// database args[0] until it is killed; after each flush every 2000 points, prints the last
/// committed step on a line.
int doomed_writer(const std::vector<std::string>& args) {
  try {
    writer_options wo;
    wo.flush_interval = std::chrono::milliseconds(50);
    run_writer w(args.at(0), one_series("doomed"), wo);
    for (std::int64_t i = 0;; ++i) {
      while (!w.try_append(0, i, double(i), std::sin(i * 0.001))) std::this_thread::yield();
      if (i % 2000 == 1999 && w.flush()) {
        if (std::printf("%lld\n", static_cast<long long>(i)) < 0 || std::fflush(stdout) != 0)
          return 3;  // i is committed
      }
    }
  } catch (...) {
    return 2;
  }
}
const testing::child_function_entry doomed_writer_entry{"storage-doomed-writer", &doomed_writer};

}  // namespace

TEST_CASE("a writer killed with SIGKILL leaves a readable database and a crashed run",
          "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  auto child = testing::spawn_child_function("storage-doomed-writer", {db});
  std::int64_t committed = -1;
  int reports = 0;
  while (reports < 25) {
    const auto line = child.read_line(std::chrono::seconds(60));
    if (!line) break;
    committed = std::stoll(*line);
    ++reports;
  }
  child.kill(SIGKILL);  // mid-run: the child is appending and committing
  const int status = child.wait();
  REQUIRE(reports == 25);
  REQUIRE(status < 0);  // ended by a signal

  run_reader r(db);
  auto runs = r.runs();
  REQUIRE(runs.size() == 1);
  REQUIRE(runs[0].status == run_status::crashed);  // derived: the writer's process is gone
  const auto s = r.series(runs[0].id).at(0);
  // Everything confirmed committed is there, as one gap-free prefix with the right values.
  REQUIRE(s.summary.count >= committed + 1);
  const auto pts = r.points(s.id, 0, std::numeric_limits<std::int64_t>::max());
  REQUIRE(std::int64_t(pts.size()) == s.summary.count);
  for (std::size_t i = 0; i < pts.size(); ++i) {
    REQUIRE(pts[i].step == std::int64_t(i));
    REQUIRE(pts[i].value == std::sin(double(i) * 0.001));
  }
  check_window(r.window(s.id, 0, s.summary.last.step, 500), pts, 500);

  // A writer opening the file records the crash for good.
  { run_writer next(db, one_series("next")); }
  run_reader again(db);
  runs = again.runs();
  REQUIRE(runs.size() == 2);
  REQUIRE(runs[0].status == run_status::crashed);
  REQUIRE(runs[0].ended_at);
  REQUIRE(runs[1].status == run_status::finished);
}

namespace {

/// Child function: as an unprivileged user (when root), opening the read-only database args[0]
/// for writing must fail saying "read-only" while reading it works. Exit status 0 when so.
int read_only_probe(const std::vector<std::string>& args) {
  const std::string& db = args.at(0);
  if (::geteuid() == 0 && ::setuid(65534) != 0) return 10;
  try {
    run_writer w(db, one_series());
    return 11;
  } catch (const losslens::error& e) {
    if (std::string(e.what()).find("read-only") == std::string::npos) return 12;
  }
  try {  // reading still works
    run_reader r(db);
    return r.runs().size() == 1 ? 0 : 13;
  } catch (...) {
    return 14;
  }
}
const testing::child_function_entry read_only_probe_entry{"storage-read-only-probe",
                                                          &read_only_probe};

}  // namespace

TEST_CASE("bad database files give a clear losslens::error", "[storage]") {
  temp_dir dir;
  SECTION("missing file or directory") {
    REQUIRE_THROWS_WITH(run_reader(dir.file("none.db")), Catch::Contains("no database at"));
    REQUIRE_THROWS_WITH(run_writer(dir.file("no/such/dir/runs.db"), one_series()),
                        Catch::Contains("does not exist"));
    REQUIRE_THROWS_WITH(run_writer(dir.path.string(), one_series()),
                        Catch::Contains("is a directory"));
  }
  SECTION("not a database") {
    const auto db = dir.file("garbage.db");
    std::ofstream(db) << std::string(8192, 'x');
    REQUIRE_THROWS_WITH(run_reader(db), Catch::Contains("corrupt"));
    REQUIRE_THROWS_WITH(run_writer(db, one_series()), Catch::Contains("corrupt"));
  }
  SECTION("damaged pages never crash") {
    const auto db = dir.file("damaged.db");
    {
      run_writer w(db, one_series());
      for (int i = 0; i < 50000; ++i) w.append(0, i, i, i * 0.5);
    }
    {
      std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(4096 * 3);
      const std::string junk(4096 * 4, '\x5a');
      f.write(junk.data(), std::streamsize(junk.size()));
    }
    try {
      run_reader r(db);
      for (const auto& run : r.runs())
        for (const auto& s : r.series(run.id)) {
          (void)r.points(s.id, 0, 1 << 30);
          (void)r.window(s.id, 0, 1 << 20, 100);
        }
    } catch (const losslens::error& e) {
      INFO(e.what());
      SUCCEED("damage reported as losslens::error");
    }
  }
  SECTION("a SQLite database of another program") {
    const auto db = dir.file("other.db");
    sqlite3* h = nullptr;
    sqlite3_open(db.c_str(), &h);
    sqlite3_exec(h, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
    sqlite3_close(h);
    REQUIRE_THROWS_WITH(run_reader(db), Catch::Contains("not a losslens one"));
    REQUIRE_THROWS_WITH(run_writer(db, one_series()), Catch::Contains("not a losslens one"));
  }
  SECTION("written by a newer losslens") {
    const auto db = dir.file("newer.db");
    { run_writer w(db, one_series()); }
    sqlite3* h = nullptr;
    sqlite3_open(db.c_str(), &h);
    sqlite3_exec(h, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
    sqlite3_close(h);
    REQUIRE_THROWS_WITH(run_reader(db),
                        Catch::Contains("newer losslens") && Catch::Contains("schema version 99"));
    REQUIRE_THROWS_WITH(run_writer(db, one_series()), Catch::Contains("newer losslens"));
  }
  SECTION("read-only file") {
    const auto db = dir.file("ro.db");
    { run_writer w(db, one_series()); }
    ::chmod(db.c_str(), 0444);
    ::chmod(dir.path.c_str(), 0555);
    // root ignores permission bits: check as an unprivileged user in a child process.
    const auto child = testing::spawn_child_function("storage-read-only-probe", {db})
                           .finish(std::chrono::seconds(60));
    INFO(child.err);
    REQUIRE(child.status >= 0);  // exited, not killed
    REQUIRE(child.status == 0);
  }
  SECTION("invalid config and options") {
    auto ro = one_series();
    ro.config_json = "{not json";
    REQUIRE_THROWS_WITH(run_writer(dir.file("a.db"), ro), Catch::Contains("not valid JSON"));
    ro = one_series();
    ro.extra_series.push_back({"x", series_kind::other});
    REQUIRE_THROWS_WITH(run_writer(dir.file("a.db"), ro), Catch::Contains("declared twice"));
  }
}

TEST_CASE("a write failure after setup degrades the writer instead of throwing", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("small.db");
  writer_options wo;
  wo.max_database_bytes = 256 * 1024;  // acts like a full disk
  wo.report_errors = false;
  wo.retry_interval = std::chrono::milliseconds(20);
  wo.batch_rows = 5000;
  run_writer w(db, one_series(), wo);
  for (int i = 0; i < 100000; ++i) w.append(0, i, i, 1.0);
  REQUIRE_FALSE(w.flush());
  auto st = w.stats();
  REQUIRE(st.degraded);
  REQUIRE(st.write_failures >= 1);
  REQUIRE_THAT(st.last_error, Catch::Contains("full"));
  REQUIRE(st.enqueued + st.dropped == 100000);
  REQUIRE_NOTHROW(w.append(0, 100000, 1, 1.0));
  w.finish();  // never throws; what could not be written is counted
  st = w.stats();
  REQUIRE(st.written + st.lost + st.dropped == 100001);
  REQUIRE(st.lost > 0);
  run_reader r(db);  // what was committed is readable
  const auto s = r.series(1).at(0);
  REQUIRE(std::uint64_t(s.summary.count) == st.written);
}

TEST_CASE("a writer blocked by a lock retries and loses nothing", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  writer_options wo;
  wo.busy_timeout = std::chrono::milliseconds(20);
  wo.retry_interval = std::chrono::milliseconds(10);
  wo.report_errors = false;
  run_writer w(db, one_series(), wo);
  sqlite3* blocker = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &blocker) == SQLITE_OK);
  REQUIRE(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  for (int i = 0; i < 5000; ++i) REQUIRE(w.append(0, i, i, i % 3 ? 1.0 / i : nan_v));
  REQUIRE_FALSE(w.flush());  // the lock outlasts the busy timeout: degraded, data kept
  REQUIRE(w.stats().degraded);
  REQUIRE_THAT(w.stats().last_error, Catch::Contains("locked"));
  sqlite3_exec(blocker, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(blocker);
  bool ok = false;
  for (int attempt = 0; attempt < 1000 && !ok; ++attempt) ok = w.flush();
  REQUIRE(ok);
  REQUIRE(w.stats().written == 5000);
  REQUIRE_FALSE(w.stats().degraded);
  run_reader r(db);
  const auto s = r.series(w.run_id()).at(0);
  REQUIRE(s.summary.count == 5000);
  REQUIRE(s.summary.nan_count == 1667);  // i % 3 == 0 for 0..4999
  bool recovered = false;
  for (const auto& e : r.events(w.run_id())) recovered |= e.kind == "recovered";
  REQUIRE(recovered);
}

TEST_CASE("a full queue drops points, counts them and records the count", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  writer_options wo;
  wo.queue_capacity = 64;
  std::uint64_t dropped = 0, enqueued = 0;
  std::int64_t run_id = 0;
  {
    run_writer w(db, one_series(), wo);
    run_id = w.run_id();
    for (int i = 0; i < 200000; ++i) w.append(0, i, i, 1.0);
    w.finish();
    dropped = w.stats().dropped;
    enqueued = w.stats().enqueued;
    REQUIRE(w.stats().written == enqueued);
    REQUIRE_FALSE(w.append(0, 1 << 30, 0, 1.0));  // finished: refused
  }
  REQUIRE(dropped + enqueued == 200000);
  REQUIRE(dropped > 0);
  run_reader r(db);
  REQUIRE(std::uint64_t(r.series(run_id).at(0).summary.count) == enqueued);
  std::uint64_t recorded = 0;
  for (const auto& e : r.events(run_id))
    if (e.kind == "drops")
      recorded = std::max<std::uint64_t>(
          recorded, std::stoull(e.detail_json.substr(e.detail_json.find("\"total\":") + 8)));
  REQUIRE(recorded == dropped);
}

TEST_CASE("out-of-order steps are rejected and counted", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  run_writer w(db, one_series());
  const std::int64_t steps[] = {5, 6, 6, 4, 7, -1, 9};
  for (auto s : steps) w.append(0, s, 0, double(s));
  REQUIRE(w.flush());
  REQUIRE(w.stats().rejected == 3);
  run_reader r(db);
  const auto pts = r.points(r.series(w.run_id()).at(0).id, -10, 100);
  REQUIRE(pts.size() == 4);
  REQUIRE(pts[3].step == 9);
}

TEST_CASE("points rejected among many accepted ones leave the others stored as given",
          "[storage]") {
  // The writer inserts many rows per statement: the rows around a rejected one, and those of
  // other series in between, keep their own series, step, wall time and value.
  temp_dir dir;
  const auto db = dir.file("runs.db");
  run_options ro;
  ro.name = "interleaved";
  ro.extra_series = {{"a", series_kind::other}, {"b", series_kind::other}};
  std::map<int, std::vector<point>> want;
  std::int64_t run_id = 0;
  std::uint64_t expect_rejected = 0;
  {
    run_writer w(db, ro);
    run_id = w.run_id();
    const run_writer::series_handle handles[] = {*w.find_series("a"), *w.find_series("b")};
    for (int i = 1; i <= 1000; ++i) {
      const int h = i % 3 == 0 ? 1 : 0;  // two of three points to "a"
      // Every 17th point of "a" goes back a step: rejected.
      const bool back = h == 0 && i % 17 == 0;
      const std::int64_t step = back ? i - 3 : i;
      const double wall = 1e9 + 0.25 * i, value = i % 11 == 0 ? nan_v : 1.0 / i;
      while (!w.try_append(handles[h], step, wall, value)) std::this_thread::yield();
      if (back)
        ++expect_rejected;
      else
        want[h].push_back({step, wall, value});
    }
    REQUIRE(w.flush());
    REQUIRE(w.stats().rejected == expect_rejected);
  }
  run_reader r(db);
  for (int h = 0; h < 2; ++h) {
    INFO("series " << h);
    const auto got = r.points(r.find_series(run_id, h == 0 ? "a" : "b").id, 0, 1 << 30);
    REQUIRE(got.size() == want[h].size());
    for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(same_point(got[i], want[h][i]));
  }
}

TEST_CASE("the WAL stays bounded while a reader reads continuously", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  writer_options wo;
  wo.wal_limit_bytes = 2 << 20;
  wo.batch_rows = 5000;
  run_writer w(db, one_series(), wo);
  std::atomic<bool> done{false};
  std::atomic<int> queries{0};
  std::thread reader([&] {
    run_reader r(db);
    const auto id = r.series(w.run_id()).at(0).id;
    while (!done) {
      (void)r.window(id, 0, 600000, 2000);
      ++queries;
    }
  });
  const std::int64_t n = 600000;
  for (std::int64_t i = 0; i < n; ++i)
    while (!w.try_append(0, i, double(i), double(i % 977))) std::this_thread::yield();
  REQUIRE(w.flush());
  done = true;
  reader.join();
  const auto st = w.stats();
  INFO("queries " << queries << ", checkpoints " << st.checkpoints << ", wal max "
                  << st.wal_bytes_max);
  REQUIRE(queries > 0);
  REQUIRE(st.written == std::uint64_t(n));
  REQUIRE(st.wal_bytes_max <= wo.wal_limit_bytes);
}

TEST_CASE("a new finding is committed at once, with the points before it", "[storage]") {
  // With an interval of a minute, only the finding itself can make the writer commit: without
  // that, a process killed right after its first NaN would lose the finding.
  temp_dir dir;
  const auto db = dir.file("runs.db");
  writer_options wo;
  wo.flush_interval = std::chrono::seconds(60);
  wo.heartbeat_interval = std::chrono::seconds(60);
  run_writer w(db, one_series(), wo);
  const std::string points_sql =
      "SELECT count(*) FROM points WHERE series_id = (SELECT min(id) FROM series WHERE run_id = " +
      std::to_string(w.run_id()) + ")";
  for (int i = 0; i < 300; ++i) REQUIRE(w.append(0, i, double(i), 0.5 * i));
  finding f;
  f.id = 3;
  f.kind = "non_finite";
  f.level = severity::error;
  f.first_step = f.last_step = 299;
  f.series = "loss";
  f.message = "loss is NaN";
  w.record_finding(f);
  auto committed = [&] {
    return sql_int(db, "SELECT count(*) FROM findings WHERE finding_id = 3") == 1;
  };
  const auto t0 = std::chrono::steady_clock::now();
  while (!committed() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(committed());
  // The commit that stored it holds every point appended before it.
  REQUIRE(sql_int(db, points_sql) == 300);
  REQUIRE(w.stats().written == 300);
  // A later update of the same finding is an update: stored with the next commit.
  f.last_step = 300;
  w.record_finding(f);
  REQUIRE(w.flush());
  REQUIRE(sql_int(db, "SELECT last_step FROM findings WHERE finding_id = 3") == 300);
}
