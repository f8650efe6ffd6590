// Ingest throughput of the run-history writer against bare prepared-statement insert loops
// (256 rows and one row per statement) into the same table layout, in the same process.
// Prints one JSON object.
//
//   bench_ingest [--points N] [--series S]      (defaults: 4,000,000 points over 8 series)
//   bench_ingest --live SECONDS [--rate R] [--series S]   (bytes a live run writes)

#include <sqlite3.h>
#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "bench_util.hpp"
#include "losslens/storage/run_writer.hpp"

using losslens::bench::clock_type;
using losslens::bench::load1;
using losslens::bench::seconds_since;
using namespace losslens::storage;

namespace {

double value_at(std::int64_t step, std::int64_t series) {
  return 2.0 * std::exp(-1e-6 * double(step)) + 0.01 * double(series);
}

void must(int rc, sqlite3* db) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    std::fprintf(stderr, "bench_ingest: sqlite: %s\n", sqlite3_errmsg(db));
    std::exit(1);
  }
}

// The baseline: what a hand-written loop gets from SQLite with the same settings, the same
// points table and the same batch size, without queue, rollups or bookkeeping. It inserts
// `per_statement` rows with each statement (the writer's largest is 256) and the rest of a
// transaction one row at a time.
double bare_loop(const std::string& path, std::int64_t points, std::int64_t series,
                 std::int64_t batch, std::int64_t per_statement) {
  sqlite3* db = nullptr;
  must(sqlite3_open(path.c_str(), &db), db);
  must(sqlite3_exec(db,
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                    "PRAGMA cache_size=-32768; "
                    "CREATE TABLE points(series_id INTEGER NOT NULL, step INTEGER NOT NULL, "
                    "wall_time REAL NOT NULL, value REAL, PRIMARY KEY(series_id, step)) "
                    "WITHOUT ROWID;",
                    nullptr, nullptr, nullptr),
       db);
  auto prepare = [&](std::int64_t rows) {
    std::string sql = "INSERT INTO points VALUES(?,?,?,?)";
    for (std::int64_t r = 1; r < rows; ++r) sql += ",(?,?,?,?)";
    sqlite3_stmt* st = nullptr;
    must(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), db);
    return st;
  };
  sqlite3_stmt* many = prepare(per_statement);
  sqlite3_stmt* one = prepare(1);
  auto t0 = clock_type::now();
  must(sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr), db);
  for (std::int64_t i = 0; i < points;) {
    const std::int64_t txn_end = std::min(points, i + batch);
    while (i < txn_end) {
      sqlite3_stmt* st = txn_end - i >= per_statement ? many : one;
      const std::int64_t rows = st == many ? per_statement : 1;
      for (std::int64_t r = 0; r < rows; ++r, ++i) {
        const std::int64_t s = i % series, step = i / series;
        const int at = int(4 * r);
        sqlite3_bind_int64(st, at + 1, s + 1);
        sqlite3_bind_int64(st, at + 2, step);
        sqlite3_bind_double(st, at + 3, double(step) * 0.01);
        sqlite3_bind_double(st, at + 4, value_at(step, s));
      }
      must(sqlite3_step(st), db);
      sqlite3_reset(st);
    }
    must(sqlite3_exec(db, i < points ? "COMMIT; BEGIN" : "COMMIT", nullptr, nullptr, nullptr), db);
  }
  double secs = seconds_since(t0);
  sqlite3_finalize(many);
  sqlite3_finalize(one);
  // Every point stored, or the figure means nothing.
  sqlite3_stmt* count = nullptr;
  must(sqlite3_prepare_v2(db, "SELECT count(*) FROM points", -1, &count, nullptr), db);
  must(sqlite3_step(count), db);
  if (sqlite3_column_int64(count, 0) != points) {
    std::fprintf(stderr, "bench_ingest: the bare loop stored %lld of %lld points\n",
                 (long long)sqlite3_column_int64(count, 0), (long long)points);
    std::exit(1);
  }
  sqlite3_finalize(count);
  sqlite3_close(db);
  return secs;
}

// Bytes this process has handed to write() and its kin so far (/proc/self/io's wchar): what a
// run costs the disk, WAL and checkpoints included. -1 where /proc does not say.
std::int64_t bytes_written() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::int64_t v = 0;
  while (io >> key >> v)
    if (key == "wchar:") return v;
  return -1;
}

struct live_result {
  double seconds = 0;
  std::int64_t bytes = -1;
  std::uint64_t points = 0, commits = 0;
};

// A live run as a trainer makes it: `rate` steps a second, one point per series per step, for
// `seconds`, committed every `flush` (or sooner when batch_rows points are pending).
live_result live_run(const std::string& path, std::int64_t series, double rate, double seconds,
                     std::chrono::milliseconds flush) {
  run_options ro;
  ro.name = "live";
  for (std::int64_t s = 0; s < series; ++s)
    ro.extra_series.push_back({"s" + std::to_string(s), series_kind::other});
  writer_options wo;
  wo.flush_interval = flush;
  live_result r;
  const std::int64_t b0 = bytes_written();
  const auto t0 = clock_type::now();
  const auto steps = std::int64_t(rate * seconds);
  {
    run_writer w(path, ro, wo);
    for (std::int64_t step = 0; step < steps; ++step) {
      for (std::int64_t s = 0; s < series; ++s)
        w.append(run_writer::series_handle(s), step, double(step) / rate, value_at(step, s));
      std::this_thread::sleep_until(t0 +
                                    std::chrono::duration_cast<clock_type::duration>(
                                        std::chrono::duration<double>(double(step + 1) / rate)));
    }
    w.finish();
    const writer_stats st = w.stats();
    r.points = st.written;
    r.commits = st.batches;
  }
  r.seconds = seconds_since(t0);
  const std::int64_t b1 = bytes_written();
  r.bytes = b0 < 0 || b1 < 0 ? -1 : b1 - b0;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_ingest [--points N] [--series S]\n"
      "       bench_ingest --live SECONDS [--rate R] [--series S]\n\n"
      "Ingest throughput of the run-history writer against two bare prepared-statement insert\n"
      "loops into the same table layout, one with 256 rows per statement as the writer's largest\n"
      "(writer_vs_bare) and one with a row per statement (writer_vs_bare_one_row): N points\n"
      "(>= 1000, default 4,000,000) over S series (default 8). Prints JSON with the 1-minute\n"
      "load average.\n\n"
      "--live: instead, what a live run writes to disk: R steps a second (default 200) of S\n"
      "series for SECONDS, once with flush_interval 200 ms and once with 1 s (the default);\n"
      "the bytes the process wrote (/proc/self/io wchar: WAL, checkpoints, everything) per\n"
      "point, per commit and per hour.\n",
      {"points", "series", "live", "rate"});
  const auto series = args.integer("series", 8, 1, 100000);
  const losslens::bench::scratch_dir dir;
  writer_options wo;
  const double load_before = load1();
  if (args.has("live")) {
    const double seconds = args.number("live", 10, 1, 3600),
                 rate = args.number("rate", 200, 1, 1e5);
    std::printf("{\"bench\": \"ingest_live\", \"series\": %lld, \"steps_per_s\": %g, \"runs\": [",
                (long long)series, rate);
    const char* sep = "";
    for (const int ms : {200, 1000}) {
      const live_result r = live_run(dir.file((ms == 200 ? "live200.db" : "live1000.db")), series,
                                     rate, seconds, std::chrono::milliseconds(ms));
      const double per_point = r.points > 0 ? double(r.bytes) / double(r.points) : 0;
      std::printf(
          "%s\n  {\"flush_interval_ms\": %d, \"seconds\": %.2f, \"points\": %llu, "
          "\"commits\": %llu, \"bytes_written\": %lld, \"bytes_per_point\": %.0f, "
          "\"bytes_per_commit\": %.0f, \"mb_per_hour\": %.1f}",
          sep, ms, r.seconds, (unsigned long long)r.points, (unsigned long long)r.commits,
          (long long)r.bytes, per_point, r.commits > 0 ? double(r.bytes) / double(r.commits) : 0,
          double(r.bytes) / r.seconds * 3600 / 1e6);
      sep = ",";
    }
    std::printf("],\n \"load1_before\": %.2f, \"load1_after\": %.2f}\n", load_before, load1());
    return 0;
  }
  const auto points = args.integer("points", 4'000'000, 1000, std::int64_t{1} << 40);

  // The writer's largest insert statement has 256 rows (writer_connection): the fair baseline
  // inserts as many; the one-row loop shows what the statement shape alone is worth.
  const auto batch = std::int64_t(wo.batch_rows);
  const double bare1_s = bare_loop(dir.file("bare1.db"), points, series, batch, 1);
  const double bare_s = bare_loop(dir.file("bare256.db"), points, series, batch, 256);

  run_options ro;
  ro.name = "bench";
  for (std::int64_t s = 0; s < series; ++s)
    ro.extra_series.push_back({"s" + std::to_string(s), series_kind::other});
  double writer_s = 0, producer_ns = 0;
  std::uint64_t full_waits = 0;
  writer_stats st;
  {
    run_writer w(dir.file("writer.db"), ro, wo);
    auto t0 = clock_type::now();
    for (std::int64_t i = 0; i < points; ++i) {
      const std::int64_t s = i % series, step = i / series;
      while (!w.try_append(run_writer::series_handle(s), step, double(step) * 0.01,
                           value_at(step, s))) {
        ++full_waits;  // the bench wants every point: wait for room instead of dropping
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    w.flush();
    writer_s = seconds_since(t0);
    st = w.stats();
    // Producer cost alone: appends into a queue with room (no waiting).
    const std::int64_t n = std::int64_t(wo.queue_capacity / 2);
    auto t1 = clock_type::now();
    for (std::int64_t i = 0; i < n; ++i) w.append(0, points + i, 0.0, 1.0);
    producer_ns = seconds_since(t1) * 1e9 / double(n);
  }

  const double bare_rate = double(points) / bare_s, writer_rate = double(points) / writer_s;
  const double bare1_rate = double(points) / bare1_s;
  std::printf(
      "{\"bench\": \"ingest\", \"points\": %lld, \"series\": %lld, \"batch_rows\": %zu,\n"
      " \"bare_loop_one_row\": {\"seconds\": %.3f, \"points_per_s\": %.0f},\n"
      " \"bare_loop_256_rows\": {\"seconds\": %.3f, \"points_per_s\": %.0f},\n"
      " \"writer\": {\"seconds\": %.3f, \"points_per_s\": %.0f, \"batches\": %llu, "
      "\"checkpoints\": %llu, \"wal_bytes_max\": %lld, \"dropped\": %llu, "
      "\"producer_waits_for_room\": %llu},\n"
      " \"writer_vs_bare\": %.3f, \"writer_vs_bare_one_row\": %.3f,\n"
      " \"append_ns\": %.1f,\n"
      " \"load1_before\": %.2f, \"load1_after\": %.2f,\n"
      " \"targets\": {\"points_per_s\": 500000, \"writer_vs_bare\": 0.7}}\n",
      (long long)points, (long long)series, wo.batch_rows, bare1_s, bare1_rate, bare_s, bare_rate,
      writer_s, writer_rate, (unsigned long long)st.batches, (unsigned long long)st.checkpoints,
      (long long)st.wal_bytes_max, (unsigned long long)st.dropped, (unsigned long long)full_waits,
      writer_rate / bare_rate, writer_rate / bare1_rate, producer_ns, load_before, load1());
  return 0;
}
