// Query latency of the run history: a long series (10M points by default), 2000-point
// overviews and zoomed windows, p50/p95/max, while a writer keeps writing to the same file.
// Prints one JSON object.
//
//   bench_query [--points N] [--queries Q]      (defaults: 10,000,000 points, 300 queries)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"

using losslens::bench::clock_type;
using losslens::bench::seconds_since;
using namespace losslens::storage;

namespace {

struct latency {
  std::vector<double> ms;
  double quantile(double q) {
    std::sort(ms.begin(), ms.end());
    return ms.empty() ? 0 : ms[std::size_t(q * double(ms.size() - 1))];
  }
};

// A run whose standard "loss" series (handle 0) is the one written.
run_options one_series(const char* name) {
  run_options ro;
  ro.name = name;
  return ro;
}

}  // namespace

int main(int argc, char** argv) {
  const losslens::testing::program_args args(
      argc, argv,
      "usage: bench_query [--points N] [--queries Q]\n\n"
      "Query latency of the run history on one long series of N points (>= 10000, default\n"
      "10,000,000): Q overviews and zoomed windows each (default 300), p50/p95/max, while a\n"
      "writer keeps writing to the same file. Prints JSON.\n",
      {"points", "queries"});
  const auto points = args.integer("points", 10'000'000, 10000, std::int64_t{1} << 40);
  const auto queries = args.integer("queries", 300, 1, 1000000);
  const losslens::bench::scratch_dir dir;
  const std::string db = dir.file("runs.db");

  // The long run: a decaying loss with rare spikes and NaNs.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u01(0, 1);
  auto t0 = clock_type::now();
  {
    run_writer w(db, one_series("long"));
    for (std::int64_t i = 0; i < points; ++i) {
      double v = 2 * std::exp(-double(i) / double(points)) * (1 + 0.05 * u01(rng));
      if (u01(rng) < 1e-5) v *= 100;
      if (u01(rng) < 1e-6) v = std::nan("");
      while (!w.try_append(0, i, double(i) * 0.01, v))
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  const double fill_s = seconds_since(t0);

  // A busy writer on the same file during the queries.
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> busy_points{0};
  std::thread busy([&] {
    run_writer w(db, one_series("busy"));
    for (std::int64_t i = 0; !stop; ++i) {
      while (!w.try_append(0, i, double(i), 1.0 / double(i + 1)) && !stop)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      busy_points = i + 1;
    }
  });

  run_reader r(db);
  const auto id = r.series(1).at(0).id;
  latency overview, zoom;
  std::size_t max_seen = 0;
  std::uniform_int_distribution<std::int64_t> start(0, points - 1);
  for (std::int64_t q = 0; q < queries; ++q) {
    auto t = clock_type::now();
    auto w = r.window(id, 0, points - 1, 2000);
    overview.ms.push_back(seconds_since(t) * 1e3);
    max_seen = std::max(max_seen, w.points.size());

    const std::int64_t width = std::int64_t(std::pow(10.0, 3 + 4 * u01(rng)));  // 1e3 .. 1e7
    const std::int64_t lo = std::min(start(rng), std::max<std::int64_t>(0, points - width));
    t = clock_type::now();
    w = r.window(id, lo, lo + width, 2000);
    zoom.ms.push_back(seconds_since(t) * 1e3);
    max_seen = std::max(max_seen, w.points.size());
  }
  stop = true;
  busy.join();

  std::printf(
      "{\"bench\": \"query\", \"points\": %lld, \"queries_each\": %lld, \"max_points\": 2000,\n"
      " \"fill\": {\"seconds\": %.2f, \"points_per_s\": %.0f},\n"
      " \"overview_ms\": {\"p50\": %.3f, \"p95\": %.3f, \"max\": %.3f},\n"
      " \"zoom_ms\": {\"p50\": %.3f, \"p95\": %.3f, \"max\": %.3f},\n"
      " \"most_points_returned\": %zu,\n"
      " \"busy_writer_points\": %lld,\n"
      " \"targets\": {\"p95_ms\": 50}}\n",
      (long long)points, (long long)queries, fill_s, double(points) / fill_s,
      overview.quantile(0.5), overview.quantile(0.95), overview.quantile(1), zoom.quantile(0.5),
      zoom.quantile(0.95), zoom.quantile(1), max_seen, (long long)busy_points.load());
  return 0;
}
