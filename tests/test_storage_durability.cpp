// Run history under concurrency and failure (issue #18): processes creating one database at
// once, unknown schema versions, repeated write-failure episodes, the writer's accounting of
// points that never reached the file, and copies of the files taken mid-write as a crash or a
// power loss would leave them.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "child_functions.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using namespace losslens;
using namespace losslens::storage;
using namespace std::chrono_literals;
using losslens::testing::temp_dir;

namespace {

run_options one_series(const std::string& name) {
  run_options r;
  r.name = name;
  r.extra_series = {{"x", series_kind::other}};
  return r;
}

/// The value the writers below store at step i (an independent formula for the checks).
double value_at(std::int64_t i) { return std::sin(double(i) * 0.001) + 1e-9 * double(i); }

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), std::streamsize(bytes.size()));
}

/// PRAGMA integrity_check of path, read with SQLite alone.
std::string integrity(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "cannot open";
  }
  std::string out;
  sqlite3_exec(
      db, "PRAGMA integrity_check",
      [](void* o, int, char** v, char**) {
        *static_cast<std::string*>(o) += v[0] ? v[0] : "";
        return 0;
      },
      &out, nullptr);
  sqlite3_close(db);
  return out;
}

/// Sets PRAGMA user_version of path.
void set_user_version(const std::string& path, int v) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, ("PRAGMA user_version = " + std::to_string(v)).c_str(), nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

/// How many points of series "x" of the first run the database holds; checks that they are
/// steps 0..n-1 with the values of value_at().
std::int64_t prefix_points(const std::string& path) {
  run_reader r(path);
  auto runs = r.runs();
  if (runs.empty()) return 0;
  const auto s = r.series(runs[0].id).at(0);
  const auto pts = r.points(s.id, 0, std::numeric_limits<std::int64_t>::max());
  REQUIRE(std::int64_t(pts.size()) == s.summary.count);
  for (std::size_t i = 0; i < pts.size(); ++i) {
    REQUIRE(pts[i].step == std::int64_t(i));
    REQUIRE(pts[i].value == value_at(std::int64_t(i)));
  }
  return std::int64_t(pts.size());
}

/// Redirects stderr (fd 2) to a file for its lifetime.
struct stderr_capture {
  std::string path;
  int saved = -1;
  explicit stderr_capture(std::string p) : path(std::move(p)) {
    std::fflush(stderr);
    saved = ::dup(2);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~stderr_capture() { release(); }
  void release() {
    if (saved < 0) return;
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    saved = -1;
  }
  std::string text() {
    release();
    return read_all(path);
  }
};

int count_lines_with(const std::string& text, const std::string& a, const std::string& b) {
  int n = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const auto line = text.substr(start, end - start);
    n += line.find(a) != std::string::npos && line.find(b) != std::string::npos;
    start = end + 1;
  }
  return n;
}

/// Child function: writes value_at(i) for i = 0, 1, ... into series "x" of the database
/// args[0] (WAL limit args[1] bytes) until it is killed, flushing every 500 points and then
/// printing the last committed step on a line.
int power_writer(const std::vector<std::string>& args) {
  try {
    writer_options wo;
    wo.flush_interval = 10ms;
    wo.wal_limit_bytes = std::stoll(args.at(1));
    run_writer w(args.at(0), one_series("power"), wo);
    for (std::int64_t i = 0;; ++i) {
      while (!w.try_append(0, i, double(i), value_at(i))) std::this_thread::yield();
      if (i % 500 == 499 && w.flush() &&
          (std::printf("%lld\n", static_cast<long long>(i)) < 0 || std::fflush(stdout) != 0))
        return 3;
    }
  } catch (...) {
    return 2;
  }
}
const testing::child_function_entry power_writer_entry{"storage-power-writer", &power_writer};

/// power_writer in a child process, and its reports.
struct writer_child {
  testing::child_process process;
  pid_t pid;
  writer_child(const std::string& path, std::int64_t wal_limit_bytes)
      : process(testing::spawn_child_function("storage-power-writer",
                                              {path, std::to_string(wal_limit_bytes)})),
        pid(process.pid()) {}
  /// Blocks for the next report: a step known to be committed.
  std::int64_t next_report() {
    const auto line = process.read_line(60s);
    REQUIRE(line);
    return std::stoll(*line);
  }
  /// The latest report already sent (the child is stopped): drains the pipe without blocking.
  std::int64_t drain_reports(std::int64_t last) {
    while (const auto line = process.read_line(0ms)) last = std::stoll(*line);
    return last;
  }
};

/// Child function: one of the processes racing to create the database args[0]; args[1] is its
/// number k (even: a trainer, odd: a reader). Prints "ready", waits for a byte on stdin (the
/// start shot), exits 0 on success or 1 with the error on stderr.
int create_racer(const std::vector<std::string>& args) {
  const std::string& db = args.at(0);
  const int k = std::stoi(args.at(1));
  std::puts("ready");
  std::fflush(stdout);
  char c = 0;
  if (::read(0, &c, 1) != 1) return 4;
  try {
    if (k % 2 == 0) {
      if (fs::exists(db)) run_reader probe(db);
      run_writer w(db, one_series("trainer " + std::to_string(k)));
      for (int i = 0; i < 50; ++i) w.append(0, i, i, value_at(i));
    } else {
      const auto give_up = std::chrono::steady_clock::now() + 10s;
      while (!fs::exists(db))
        if (std::chrono::steady_clock::now() > give_up) return 6;
      run_reader r(db);
      (void)r.runs();
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s%s\n", k % 2 ? "reader: " : "trainer: ", e.what());
    return 1;
  }
}
const testing::child_function_entry create_racer_entry{"storage-create-racer", &create_racer};

}  // namespace

TEST_CASE("processes creating the same database at once never see it half-made",
          "[storage][concurrency]") {
  // Per trial, at the same moment: three trainers (a reader probe when the file exists, as
  // attach() does, then a writer) and three readers that open the file the moment it appears.
  constexpr int trials = 20;
  int failed_processes = 0;
  std::string messages;
  for (int trial = 0; trial < trials; ++trial) {
    temp_dir dir("create-race");
    const auto db = dir.file("runs.db");
    // Per trial, six processes wait at the start line, then all are released at once.
    std::vector<testing::child_process> kids;
    for (int k = 0; k < 6; ++k) {
      testing::child_options o;
      o.in = testing::stream::pipe;
      kids.push_back(
          testing::spawn_child_function("storage-create-racer", {db, std::to_string(k)}, o));
    }
    for (auto& kid : kids) REQUIRE(kid.wait_for("ready", 60s));
    for (auto& kid : kids) REQUIRE(kid.write_stdin("g"));
    for (auto& kid : kids) {
      const auto r = kid.finish(60s);
      failed_processes += r.status != 0;
      messages += r.err;
    }
    // Whatever the order, the file holds the three runs, each whole.
    INFO(messages);
    REQUIRE(integrity(db) == "ok");
    run_reader r(db);
    const auto runs = r.runs();
    REQUIRE(runs.size() == 3);
    for (const auto& run : runs) CHECK(r.series(run.id).at(0).summary.count == 50);
  }
  INFO(messages);
  CHECK(failed_processes == 0);
}

TEST_CASE("a database with an unknown schema version says so", "[storage]") {
  temp_dir dir;
  for (int version : {-1, 0, -7}) {
    INFO("user_version " << version);
    const auto db = dir.file(("v" + std::to_string(version) + ".db").c_str());
    { run_writer w(db, one_series("r")); }
    set_user_version(db, version);
    const auto message = "its schema version (" + std::to_string(version) + ") is unknown";
    REQUIRE_THROWS_WITH(run_reader(db), Catch::Contains(message) &&
                                            Catch::Contains("not a losslens database") &&
                                            !Catch::Contains("disk space"));
    REQUIRE_THROWS_WITH(run_writer(db, one_series("again")),
                        Catch::Contains(message) && !Catch::Contains("already exists"));
    set_user_version(db, 2);  // the file was not touched: with its version back, it reads
    REQUIRE(run_reader(db).runs().size() == 1);
  }
}

TEST_CASE("every write-failure episode is reported when it starts", "[storage]") {
  temp_dir dir;
  const auto db = dir.file("runs.db");
  writer_options wo;
  wo.busy_timeout = 20ms;
  wo.retry_interval = 10ms;
  wo.report_errors = true;
  stderr_capture err(dir.file("stderr.txt"));
  run_writer w(db, one_series("episodes"), wo);
  std::int64_t step = 0;
  for (int episode = 1; episode <= 3; ++episode) {
    sqlite3* blocker = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &blocker) == SQLITE_OK);
    REQUIRE(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
    for (int i = 0; i < 100; ++i, ++step) REQUIRE(w.append(0, step, 0, value_at(step)));
    REQUIRE_FALSE(w.flush());  // locked past the busy timeout: a failure episode starts
    REQUIRE_FALSE(w.flush());  // still the same episode
    REQUIRE(w.stats().failure_episodes == std::uint64_t(episode));
    sqlite3_exec(blocker, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(blocker);
    bool ok = false;
    for (int attempt = 0; attempt < 1000 && !ok; ++attempt) ok = w.flush();
    REQUIRE(ok);
  }
  w.finish();
  const auto text = err.text();
  INFO(text);
  CHECK(count_lines_with(text, "writing run history", "failed") == 3);
  CHECK(w.stats().written == 300);
  CHECK(w.stats().write_failures >= 6);
  run_reader r(db);
  int recovered = 0;
  for (const auto& e : r.events(w.run_id())) recovered += e.kind == "recovered";
  CHECK(recovered == 3);
}

TEST_CASE("the writer accounts for every point: written, dropped, rejected, lost or held",
          "[storage]") {
  temp_dir dir;
  const auto db = dir.file("small.db");
  writer_options wo;
  wo.max_database_bytes = 256 * 1024;  // acts like a disk that fills and stays full
  wo.report_errors = false;
  wo.retry_interval = 20ms;
  wo.batch_rows = 5000;
  wo.queue_capacity = 1 << 16;
  wo.max_pending_rows = 20000;
  run_writer w(db, one_series("full"), wo);
  const std::int64_t n = 120000;
  for (std::int64_t i = 0; i < n; ++i) w.append(0, i, 0, value_at(i));
  w.append(0, 5, 0, 1.0);  // out of order: rejected (or lost with its batch)
  REQUIRE_FALSE(w.flush());
  // Recorded once the disk is full: they can only go with the points that do not fit.
  w.record_finding(finding{});
  w.record_event("note");
  auto st = w.stats();
  REQUIRE(st.degraded);
  CHECK(st.enqueued + st.dropped == std::uint64_t(n) + 1);
  CHECK(st.held > 0);
  CHECK(st.held == st.enqueued - st.written - st.rejected - st.lost);
  w.finish();
  st = w.stats();
  INFO("written " << st.written << ", dropped " << st.dropped << ", rejected " << st.rejected
                  << ", lost " << st.lost << ", failures " << st.write_failures << ", last error "
                  << st.last_error);
  CHECK(st.held == 0);
  CHECK(st.lost > 0);
  CHECK(st.lost_findings == 1);
  CHECK(st.lost_events == 1);
  // Every point is in exactly one place, and what is stored is what written says.
  CHECK(st.written + st.not_stored() == std::uint64_t(n) + 1);
  CHECK(st.not_stored() == st.dropped + st.rejected + st.lost);
  CHECK(std::uint64_t(prefix_points(db)) == st.written);
}

TEST_CASE("copies of the files taken mid-write open as after a crash or a power loss",
          "[storage][crash]") {
  temp_dir dir("powerloss");
  const auto db = dir.file("runs.db");

  SECTION("process-crash images across checkpoints: whole, every confirmed commit present") {
    // A 1 MiB WAL limit: checkpoints run every few hundred milliseconds, so the copies land
    // before, during and after them. The writer is stopped (SIGSTOP) while both files are
    // copied: an image of what the page cache held at one instant, as a crash leaves it.
    writer_child child(db, std::int64_t{1} << 20);
    std::int64_t confirmed = -1;
    std::vector<std::int64_t> counts;
    for (int copy = 0; copy < 12; ++copy) {
      for (int r = 0; r < 3; ++r) confirmed = child.next_report();
      ::kill(child.pid, SIGSTOP);
      confirmed = child.drain_reports(confirmed);
      const auto image = dir.file(("crash" + std::to_string(copy) + ".db").c_str());
      write_all(image, read_all(db));
      if (fs::exists(db + "-wal")) write_all(image + "-wal", read_all(db + "-wal"));
      ::kill(child.pid, SIGCONT);
      INFO("copy " << copy << ", confirmed step " << confirmed);
      REQUIRE(integrity(image) == "ok");
      const auto n = prefix_points(image);
      CHECK(n >= confirmed + 1);  // nothing committed before the copy is missing
      counts.push_back(n);
    }
    CHECK(std::is_sorted(counts.begin(), counts.end()));
  }

  SECTION("power-loss images: the WAL's unsynced tail lost or torn, a prefix of commits left") {
    // synchronous=NORMAL syncs the WAL only at checkpoints. Before the first checkpoint (the
    // default 64 MiB limit is far away here) none of the WAL is synced, so power loss may keep
    // any prefix of its bytes, the last sector possibly half-written.
    writer_child child(db, std::int64_t{64} << 20);
    std::int64_t confirmed = -1;
    for (int r = 0; r < 20; ++r) confirmed = child.next_report();
    ::kill(child.pid, SIGSTOP);
    confirmed = child.drain_reports(confirmed);
    const auto main_file = read_all(db);
    const auto wal = read_all(db + "-wal");
    ::kill(child.pid, SIGKILL);
    REQUIRE(wal.size() > 100000);
    std::mt19937_64 rng(18);
    std::vector<std::size_t> cuts = {0, 31, 32, wal.size()};
    for (int i = 0; i < 24; ++i) cuts.push_back(std::size_t(rng() % wal.size()));
    std::sort(cuts.begin(), cuts.end());
    std::int64_t previous = -1;
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      const auto image = dir.file(("power" + std::to_string(k) + ".db").c_str());
      std::string torn = wal.substr(0, cuts[k]);
      if (k % 2 == 1) {  // a torn write: garbage where the next sectors were being written
        std::string junk(512 + rng() % 4096, '\0');
        for (auto& c : junk) c = char(rng());
        torn += junk;
      }
      write_all(image, main_file);
      write_all(image + "-wal", torn);
      INFO("WAL cut at " << cuts[k] << " of " << wal.size() << (k % 2 ? " + junk" : ""));
      REQUIRE(integrity(image) == "ok");
      const auto n = prefix_points(image);
      CHECK(n >= previous);  // a longer WAL never holds fewer commits
      previous = n;
      if (cuts[k] == wal.size()) CHECK(n >= confirmed + 1);
    }
    CHECK(previous >= confirmed + 1);
  }
}
