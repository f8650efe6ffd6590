// `losslens analyze` on a long 4-column CSV (step,loss,grad_norm,lr) against baselines timed in
// the same run on the same file: `wc -l` (the I/O floor), Python's csv module merely reading the
// rows, and csv_reader alone in this process (parsing without the detectors). Each is a best of
// REPEAT runs, taken in turn. Also the analyze process's peak RSS, at ROWS and at ROWS/10 rows
// (memory must not grow with the file). Wall and CPU (user + system) times: on a shared machine
// the CPU times are the steadier figure. Prints JSON with the 1-minute load average.
// With --wall-time a fifth column, wall_time (seconds since the epoch with milliseconds, as
// TensorBoard and W&B exports carry): one more number per row for the reader to parse.
// Usage: bench_analyze_csv [ROWS=2000000] [--repeat N] [--losslens PATH] [--wall-time]

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.hpp"
#include "cli_runs.hpp"
#include "losslens/csv_reader.hpp"
#include "traces.hpp"

using namespace losslens;
using namespace losslens::bench;

namespace {
void write_csv(const std::string& path, std::int64_t rows, bool wall_time) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::perror(path.c_str());
    std::exit(1);
  }
  // A healthy run: decaying loss with noise, noisy grad norm, a constant LR.
  traces::generator g(11);
  std::fputs(wall_time ? "step,wall_time,loss,grad_norm,lr\n" : "step,loss,grad_norm,lr\n", f);
  for (std::int64_t i = 1; i <= rows; ++i) {
    const double loss = (0.2 + 2.0 * std::exp(-double(i) / double(rows / 4 + 1))) * g.noise(0.1);
    if (wall_time)
      std::fprintf(f, "%lld,%.3f,", static_cast<long long>(i), 1.7e9 + 0.05 * double(i));
    else
      std::fprintf(f, "%lld,", static_cast<long long>(i));
    std::fprintf(f, "%.6g,%.6g,0.001\n", loss, g.noise(0.2));
  }
  std::fclose(f);
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

/// Reads every row with csv_reader in this process: parsing without the detectors.
child_result read_in_process(const std::string& path, std::int64_t& rows) {
  const auto t0 = bench::clock_type::now();
  const double c0 = process_cpu_seconds();
  csv_reader r(path);
  sample s;
  rows = 0;
  while (r.next(s)) ++rows;
  child_result out;
  out.seconds = bench::seconds_since(t0);
  out.cpu_seconds = process_cpu_seconds() - c0;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const testing::program_args args(
      argc, argv,
      "usage: bench_analyze_csv [ROWS] [--repeat N] [--losslens PATH] [--wall-time]\n\n"
      "Rows per second of `losslens analyze` on a CSV of ROWS rows (default 2000000) with the\n"
      "columns step,loss,grad_norm,lr, against `wc -l`, Python's csv module reading the rows\n"
      "(skipped without python3) and csv_reader alone, all timed in this run on the same file,\n"
      "best of --repeat runs (default 3). Peak RSS of analyze at ROWS and ROWS/10 rows.\n"
      "--losslens: the CLI (default: ../tools/losslens/losslens next to this program).\n"
      "--wall-time: a fifth column, wall_time, before loss (as exports of TensorBoard and\n"
      "W&B carry).\n"
      "Prints JSON with the 1-minute load average.\n",
      {"repeat", "losslens"}, {"wall-time"}, 1);
  const std::int64_t rows = args.positional_integer(0, 2000000, 10, std::int64_t(1) << 32);
  const int repeat = int(args.integer("repeat", 3, 1, 100));
  const std::string cli = cli_or_exit(args, argv[0], "bench_analyze_csv");
  bench::scratch_dir dir;
  const std::string big = (dir.path / "run.csv").string();
  const std::string small = (dir.path / "run_small.csv").string();
  const bool wall_time = args.has("wall-time");
  write_csv(big, rows, wall_time);
  write_csv(small, rows / 10, wall_time);
  const bool python = run_child({"python3", "-c", "pass"}).status == 0;
  const std::string py =
      "import csv,sys\nn=0\nwith open(sys.argv[1],newline='') as f:\n"
      "  for row in csv.reader(f): n+=1\n";

  const double load_before = load1();
  best wc, pyt, an, rd;
  long rss = 0;
  int an_status = 0;
  std::int64_t read_rows = 0;
  for (int r = 0; r < repeat; ++r) {
    wc.add(run_child({"wc", "-l", big}));
    if (python) pyt.add(run_child({"python3", "-c", py, big}));
    const auto a = run_child({cli, "analyze", big});
    an.add(a);
    rss = std::max(rss, a.max_rss_kb);
    an_status = a.status;
    rd.add(read_in_process(big, read_rows));
  }
  const auto a_small = run_child({cli, "analyze", small});
  const double mrows = double(rows) / 1e6;
  nlohmann::json out = {
      {"rows", rows},
      {"columns", wall_time ? 5 : 4},
      {"file_bytes", std::filesystem::file_size(big)},
      {"repeat", repeat},
      {"wc_l_s", wc.wall},
      {"wc_l_cpu_s", wc.cpu},
      {"analyze_s", an.wall},
      {"analyze_cpu_s", an.cpu},
      {"analyze_exit_status", an_status},
      {"analyze_mrows_per_s", mrows / an.wall},
      {"analyze_mrows_per_cpu_s", mrows / an.cpu},
      {"csv_reader_only_s", rd.wall},
      {"csv_reader_only_cpu_s", rd.cpu},
      {"csv_reader_only_mrows_per_cpu_s", mrows / rd.cpu},
      {"csv_reader_rows_read", read_rows},
      {"analyze_over_wc_l", an.wall / wc.wall},
      {"analyze_peak_rss_kb", rss},
      {"analyze_peak_rss_kb_at_tenth_rows", a_small.max_rss_kb},
      {"load1_before", load_before},
      {"load1_after", load1()},
      {"targets", {{"analyze_mrows_per_s_min", 10.0}, {"python_csv_over_analyze_min", 3.0}}}};
  if (python) {
    out["python_csv_read_s"] = pyt.wall;
    out["python_csv_read_cpu_s"] = pyt.cpu;
    out["python_csv_over_analyze"] = pyt.wall / an.wall;
    out["python_csv_over_analyze_cpu"] = pyt.cpu / an.cpu;
  }
  std::printf("%s\n", out.dump(2).c_str());
}
