// Faults around a real training process (tests/fault_trainer.cpp, LibTorch, run as a child):
// SIGKILL mid-run, a disk that fills and frees again, a database directory that is read-only
// and then writable, a corrupt database file, and a monitor thread that stalls under a burst.
// The training process must go on, say what is wrong once, and lose nothing it had accepted.

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"
#include "temp_dir.hpp"

using namespace std::chrono_literals;
using losslens::testing::child_process;
using losslens::testing::temp_dir;
namespace fs = std::filesystem;
namespace storage = losslens::storage;

namespace {

const std::string trainer = LOSSLENS_FAULT_TRAINER;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::size_t count_lines_with(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

/// The "done {...}" line's JSON.
nlohmann::json done_json(child_process& child, std::chrono::milliseconds timeout) {
  auto line = child.wait_for("done ", timeout);
  REQUIRE(line);
  return nlohmann::json::parse(line->substr(5));
}

/// Once storage works again: the child says "healthy", finishes and exits 0. Its final stats
/// and its stderr.
std::pair<nlohmann::json, std::string> finish_healthy(child_process& child, const fs::path& dir) {
  REQUIRE(child.wait_for("healthy ", 60s));
  auto stats = done_json(child, 120s);
  CHECK(child.wait() == 0);
  return {stats, slurp(dir / "stderr.txt")};
}

/// Steps of the run's loss series, in order.
std::vector<std::int64_t> loss_steps(storage::run_reader& r, std::int64_t run_id) {
  auto s = r.find_series(run_id, "loss");
  std::vector<std::int64_t> steps;
  for (const auto& p : r.points(s.id, 0, std::numeric_limits<std::int64_t>::max()))
    steps.push_back(p.step);
  return steps;
}

/// True when every step in [first, last] is present exactly once.
bool contiguous(const std::vector<std::int64_t>& steps) {
  for (std::size_t i = 1; i < steps.size(); ++i)
    if (steps[i] != steps[i - 1] + 1) return false;
  return !steps.empty();
}

/// A small tmpfs mounted for the test (root only, and only where mounts are allowed).
struct tmpfs_mount {
  fs::path dir;
  bool mounted = false;
  tmpfs_mount(fs::path d, const char* opts) : dir(std::move(d)) {
    fs::create_directories(dir);
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts) == 0;
  }
  bool remount(unsigned long flags, const char* opts) {
    return ::mount("tmpfs", dir.c_str(), "tmpfs", MS_REMOUNT | flags, opts) == 0;
  }
  ~tmpfs_mount() {
    if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

}  // namespace

TEST_CASE(
    "a trainer killed with SIGKILL leaves a readable database, a crashed run, its findings "
    "and at most the last flush interval of points missing",
    "[faults]") {
  temp_dir dir("faults_kill");
  const auto db = (dir.path / "runs.db").string();
  const auto flush_ms = 200;
  child_process child(trainer,
                      {"--db", db, "--steps", "0", "--trace", "--nan-at", "300", "--flush-ms",
                       std::to_string(flush_ms), "--step-sleep-us", "200"},
                      (dir.path / "stderr.txt").string());
  // Let it train until the database holds 2000 steps and the NaN finding, then kill it.
  std::vector<std::pair<std::int64_t, long long>> trace;  // step, monotonic ns (child's clock)
  auto record = [&](const std::string& line) {
    std::int64_t step;
    long long ns;
    if (std::sscanf(line.c_str(), "step %ld %lld", &step, &ns) == 2) trace.emplace_back(step, ns);
  };
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  bool ready = false;
  while (!ready && std::chrono::steady_clock::now() < deadline) {
    for (int k = 0; k < 200; ++k)
      if (auto line = child.read_line(1s)) record(*line);
    if (trace.empty() || trace.back().first < 2000) continue;
    try {
      storage::run_reader r(db);
      auto runs = r.runs();
      ready = !runs.empty() && !r.findings(runs[0].id, "non_finite").empty() && runs[0].last_step &&
              *runs[0].last_step >= 2000;
    } catch (const losslens::error&) {
    }
  }
  REQUIRE(ready);
  child.kill(SIGKILL);
  const long long killed_at = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::steady_clock::now().time_since_epoch())
                                  .count();
  while (auto line = child.read_line(2s)) record(*line);
  CHECK(child.wait() == -SIGKILL);
  REQUIRE(!trace.empty());

  storage::run_reader r(db);
  auto runs = r.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].status == storage::run_status::crashed);
  auto nan = r.findings(runs[0].id, "non_finite");
  REQUIRE(!nan.empty());
  CHECK(nan[0].f.first_step == 300);
  const auto steps = loss_steps(r, runs[0].id);
  CHECK(contiguous(steps));
  CHECK(steps.front() == 0);
  // The loss of the last step the trainer finished versus the last one stored: the gap is
  // what the kill cost. It must fit in one flush interval plus the time the monitor thread and
  // the writer need to pick a point up (generous for a loaded CI machine).
  const std::int64_t last_done = trace.back().first;
  const std::int64_t last_stored = steps.back();
  long long stored_at = 0;
  for (auto& [s, ns] : trace)
    if (s == last_stored) stored_at = ns;
  REQUIRE(stored_at > 0);
  const double lost_ms = double(killed_at - stored_at) / 1e6;
  std::printf(
      "sigkill: last step done %ld, last stored %ld: %ld steps lost, covering %.0f ms "
      "before the kill (flush interval %d ms)\n",
      long(last_done), long(last_stored), long(last_done - last_stored), lost_ms, flush_ms);
  CHECK(last_stored <= last_done);
  CHECK(lost_ms < flush_ms + 1000);

  // The file is intact: SQLite's integrity check passes and a new run can be recorded in it.
  {
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok");
    sqlite3_finalize(st);
    sqlite3_close(raw);
  }
  {
    storage::run_writer next(db, storage::run_options{});
    next.append(0, 0, 0.0, 1.0);
    CHECK(next.flush());
  }
  storage::run_reader again(db);
  CHECK(again.runs().size() == 2);
  CHECK(again.runs()[0].status == storage::run_status::crashed);
}

TEST_CASE(
    "a full disk degrades the monitor once, training goes on, and everything held is "
    "written when space returns",
    "[faults]") {
  temp_dir dir("faults_full");
  // Two ways to fill a disk: a real small tmpfs (ENOSPC; needs root and mount rights) and a
  // file-size limit on the trainer (EFBIG; works for anyone). Both run where they can.
  struct variant {
    std::string name;
    bool tmpfs;
  };
  for (const variant& v : {variant{"file-size limit", false}, variant{"tmpfs", true}}) {
    DYNAMIC_SECTION(v.name) {
      std::unique_ptr<tmpfs_mount> mnt;
      fs::path where = dir.path / ("fs_" + std::to_string(v.tmpfs));
      fs::path filler = where / "filler";
      if (v.tmpfs) {
        mnt = std::make_unique<tmpfs_mount>(where, "size=24m");
        if (!mnt->mounted) {
          WARN("cannot mount a tmpfs here (not root or no mount rights): tmpfs variant skipped");
          continue;
        }
      } else {
        fs::create_directories(where);
      }
      const auto db = (where / "runs.db").string();
      std::vector<std::string> args{"--db",
                                    db,
                                    "--steps",
                                    "200000",
                                    "--step-sleep-us",
                                    "100",
                                    "--until-healthy-steps",
                                    "1000",
                                    "--nan-at",
                                    "50"};
      if (!v.tmpfs) {
        args.insert(args.end(), {"--fsize-at", "1500", "--fsize-restore-ms", "1500"});
      }
      child_process child(trainer, args, (dir.path / "stderr.txt").string());
      if (v.tmpfs) {
        // Fill the disk but for 256 KiB once the run exists.
        for (int i = 0; i < 600 && !fs::exists(db + "-wal"); ++i)
          std::this_thread::sleep_for(100ms);
        std::this_thread::sleep_for(500ms);
        auto space = fs::space(where);
        std::vector<char> zeros(1 << 20);
        {
          std::ofstream f(filler, std::ios::binary);  // tmpfs: sparse files take no space
          for (std::uintmax_t left = space.available - (256 << 10); left > 0;) {
            auto n = std::min<std::uintmax_t>(left, zeros.size());
            if (!f.write(zeros.data(), std::streamsize(n))) break;
            left -= n;
          }
        }
      }
      auto degraded = child.wait_for("degraded ", 60s);
      REQUIRE(degraded);
      INFO(*degraded);
      if (v.tmpfs) {
        std::this_thread::sleep_for(1500ms);  // train on for a while with nowhere to write
        fs::remove(filler);                   // space returns
      }
      auto [stats, err] = finish_healthy(child, dir.path);
      INFO(err);
      CHECK(count_lines_with(err, "writing run history") ==
            1);  // said once, however long it lasted
      CHECK(count_lines_with(err, "works again") == 1);
      CHECK(stats["storage_degraded"] == false);
      CHECK(stats["points_lost"] == 0);
      CHECK(stats["write_failures"].get<int>() >= 1);
      CHECK(stats["rejected"] == 0);

      storage::run_reader r(db);
      auto runs = r.runs();
      REQUIRE(runs.size() == 1);
      CHECK(runs[0].status == storage::run_status::finished);
      const auto steps = loss_steps(r, runs[0].id);
      CHECK(contiguous(steps));
      CHECK(steps.front() == 0);
      CHECK(steps.back() + 1 == stats["steps"].get<std::int64_t>());
      CHECK(!r.findings(runs[0].id, "non_finite").empty());
      bool recovered = false;
      for (const auto& e : r.events(runs[0].id)) recovered |= e.kind == "recovered";
      CHECK(recovered);
      std::printf(
          "disk full (%s): %s; %lld steps, %lld points written, %d failed commits, "
          "0 lost\n",
          v.name.c_str(), degraded->c_str(), (long long)stats["steps"].get<std::int64_t>(),
          (long long)stats["points_written"].get<std::int64_t>(),
          stats["write_failures"].get<int>());
    }
  }
}

TEST_CASE(
    "a disk that stays full: the points that never reached it are counted and said at "
    "detach",
    "[faults]") {
  // Issue #18 item 5: the trainer used to print "0 dropped, run stored" while most points
  // were gone. The file-size limit is never lifted here.
  temp_dir dir("faults_stays_full");
  const auto db = (dir.path / "runs.db").string();
  child_process child(trainer,
                      {"--db", db, "--steps", "2000", "--fsize-at", "300", "--fsize-restore-ms",
                       "100000000", "--flush-ms", "20"},
                      (dir.path / "stderr.txt").string());
  const auto stats = done_json(child, 120s);
  CHECK(child.wait() == 0);
  const auto err = slurp(dir.path / "stderr.txt");
  INFO(err);
  INFO(stats.dump());
  const auto lost = stats["points_lost"].get<std::uint64_t>();
  const auto written = stats["points_written"].get<std::uint64_t>();
  CHECK(lost > 0);
  CHECK(count_lines_with(err, "points of this run never reached") == 1);
  CHECK(err.find(std::to_string(lost) + " points of this run never reached") != std::string::npos);
  // Every point of every step is either written or counted as lost (the fault trainer's MLP
  // gives 12 series a step: loss, grad_norm, 8 parameters, lr, accuracy is not reported).
  CHECK(written + lost >= 2000);
  std::printf("disk that stays full: %llu points written, %llu lost and reported\n",
              (unsigned long long)written, (unsigned long long)lost);
}

TEST_CASE(
    "a read-only database directory degrades the monitor, the run is recorded once it is "
    "writable",
    "[faults]") {
  temp_dir dir("faults_ro");
  const fs::path where = dir.path / "ro";
  std::unique_ptr<tmpfs_mount> mnt;
  bool made_read_only = false;
  if (::geteuid() == 0) {
    // Root ignores permission bits: a read-only mount stops root too.
    mnt = std::make_unique<tmpfs_mount>(where, "size=16m");
    made_read_only = mnt->mounted && mnt->remount(MS_RDONLY, "size=16m");
  } else {
    fs::create_directories(where);
    made_read_only = ::chmod(where.c_str(), 0555) == 0;
  }
  if (!made_read_only) {
    WARN("cannot make a read-only directory here (root without mount rights): skipped");
    return;
  }
  const auto db = (where / "runs.db").string();
  child_process child(trainer,
                      {"--db", db, "--steps", "200000", "--step-sleep-us", "100", "--nan-at", "20",
                       "--db-retry-ms", "200", "--until-healthy-steps", "500"},
                      (dir.path / "stderr.txt").string());
  auto degraded = child.wait_for("degraded ", 60s);
  REQUIRE(degraded);
  std::this_thread::sleep_for(1s);  // trains on without a database
  if (mnt)
    REQUIRE(mnt->remount(0, "size=16m"));
  else
    REQUIRE(::chmod(where.c_str(), 0755) == 0);
  auto [stats, err] = finish_healthy(child, dir.path);
  INFO(err);
  CHECK(count_lines_with(err, "cannot record the run") == 1);
  CHECK(count_lines_with(err, "works now") == 1);
  CHECK(stats["storage_failed"] == false);

  storage::run_reader r(db);
  auto runs = r.runs();
  REQUIRE(runs.size() == 1);
  std::int64_t first_step = -1;
  for (const auto& e : r.events(runs[0].id))
    if (e.kind == "storage_opened") first_step = e.step;
  REQUIRE(first_step > 20);
  const auto steps = loss_steps(r, runs[0].id);
  CHECK(contiguous(steps));
  CHECK(steps.front() == first_step);
  CHECK(steps.back() + 1 == stats["steps"].get<std::int64_t>());
  // The finding of step 20, from before the database could be opened, is stored too.
  auto nan = r.findings(runs[0].id, "non_finite");
  REQUIRE(!nan.empty());
  CHECK(nan[0].f.first_step == 20);
  std::printf("read-only directory: %s; recorded from step %ld of %lld\n", degraded->c_str(),
              long(first_step), (long long)stats["steps"].get<std::int64_t>());
}

TEST_CASE("a corrupt database file is reported once, left untouched, and training goes on",
          "[faults]") {
  temp_dir dir("faults_corrupt");
  const auto db = dir.path / "runs.db";
  std::string garbage(8192, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = char((i * 7919) % 251);
  std::memcpy(garbage.data(), "SQLite format 3", 16);  // a valid header over a broken body
  std::ofstream(db, std::ios::binary) << garbage;
  // A queue longer than the run: a monitor thread that a loaded machine leaves without a core
  // for a while cannot drop a step, so "processed" is exact.
  child_process child(
      trainer, {"--db", db.string(), "--steps", "3000", "--db-retry-ms", "100", "--queue", "4096"},
      (dir.path / "stderr.txt").string());
  auto stats = done_json(child, 120s);
  CHECK(child.wait() == 0);
  const auto err = slurp(dir.path / "stderr.txt");
  INFO(err);
  INFO(stats.dump());
  CHECK(stats["steps"] == 3000);
  CHECK(stats["processed"] == 3000);
  CHECK(stats["storage_failed"] == true);
  CHECK(stats["storage_degraded"] == true);
  CHECK(!stats["storage_error"].get<std::string>().empty());
  CHECK(count_lines_with(err, "cannot record the run") == 1);
  CHECK(slurp(db) == garbage);  // nobody wrote over the user's file
}

TEST_CASE(
    "a stalled monitor thread under a burst never blocks step(), drops are counted and "
    "stored",
    "[faults]") {
  temp_dir dir("faults_burst");
  const auto db = (dir.path / "runs.db").string();
  // One second of lens.step() as fast as it returns, while the monitor thread sleeps 5 ms on
  // every sample: the 64-slot queue overflows at once.
  child_process child(trainer,
                      {"--db", db, "--burst-seconds", "1", "--stall-ms", "5", "--queue", "64"},
                      (dir.path / "stderr.txt").string());
  auto stats = done_json(child, 120s);
  CHECK(child.wait() == 0);
  const auto steps = stats["burst_steps"].get<std::uint64_t>();
  const auto processed = stats["processed"].get<std::uint64_t>();
  const auto dropped = stats["dropped"].get<std::uint64_t>();
  std::printf(
      "burst: %llu steps in %.2f s (%.0f steps/s), max step() %.1f us, %ld over 1 ms; "
      "monitor saw %llu, dropped %llu\n",
      (unsigned long long)steps, stats["burst_seconds"].get<double>(),
      double(steps) / stats["burst_seconds"].get<double>(), stats["max_step_us"].get<double>(),
      stats["slow_steps"].get<long>(), (unsigned long long)processed, (unsigned long long)dropped);
  std::printf(
      "burst baseline: the same loop without step(): longest pause %.1f us, %ld over "
      "1 ms\n",
      stats["bare_max_us"].get<double>(), stats["bare_slow"].get<long>());
  CHECK(stats["steps"].get<std::uint64_t>() == steps);
  CHECK(processed + dropped == steps);
  // The consumer could take at most one sample per 5 ms (plus the queue); the trainer went on
  // at its own pace regardless: it made many times more steps than were consumed.
  CHECK(processed <= std::uint64_t(stats["burst_seconds"].get<double>() * 1000 / 5 + 64 + 64));
  CHECK(steps > 20 * processed);
  const auto err = slurp(dir.path / "stderr.txt");
  CHECK(count_lines_with(err, "queue was full") == 1);

  storage::run_reader r(db);
  auto runs = r.runs();
  REQUIRE(runs.size() == 1);
  std::uint64_t stored_total = 0;
  for (const auto& e : r.events(runs[0].id))
    if (e.kind == "drops") {
      auto j = nlohmann::json::parse(e.detail_json);
      if (j.value("source", "") == "monitor") stored_total = j["total"].get<std::uint64_t>();
    }
  CHECK(stored_total == dropped);
  CHECK(loss_steps(r, runs[0].id).size() == processed);
}
