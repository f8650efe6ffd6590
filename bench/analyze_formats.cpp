// `losslens analyze` on one run written in each format it reads: a CSV, a TensorBoard event file
// (one event per value, as SummaryWriter.add_scalar writes them), an MLflow file store run
// (mlruns/) and MLflow's SQLite store (mlflow.db), each holding the same ROWS steps of loss,
// grad_norm and lr (float32 values, which every format holds exactly). Per format: the best of
// REPEAT runs, taken in turn (wall and CPU), steps per second, the ratio to the CSV's time in
// the same run, the file bytes, peak RSS, and whether its findings (kind, series, severity and
// every span's steps, from `analyze --json`) are the CSV's. Prints JSON with the 1-minute load
// average.
// Usage: bench_analyze_formats [ROWS=1000000] [--repeat N] [--losslens PATH]

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.hpp"
#include "cli_runs.hpp"
#include "losslens/tfevents/event_writer.hpp"
#include "mlflow_store.hpp"
#include "traces.hpp"

using namespace losslens;
using namespace losslens::bench;
namespace fs = std::filesystem;

namespace {

struct row {
  std::int64_t step;
  float loss, grad_norm, lr;
};

// A healthy run as bench_analyze_csv writes it: a decaying loss with batch noise, a noisy
// gradient norm, a constant LR; as float32.
std::vector<row> make_rows(std::int64_t rows) {
  traces::generator g(11);
  std::vector<row> out;
  out.reserve(std::size_t(rows));
  for (std::int64_t i = 1; i <= rows; ++i) {
    const double loss = (0.2 + 2.0 * std::exp(-double(i) / double(rows / 4 + 1))) * g.noise(0.1);
    out.push_back({i, float(loss), float(g.noise(0.2)), 0.001f});
  }
  return out;
}

// The series of each row, in the order each format writes them.
struct series_of_row {
  const char* key;
  float row::*value;
};
constexpr series_of_row series[] = {
    {"loss", &row::loss}, {"grad_norm", &row::grad_norm}, {"lr", &row::lr}};

std::FILE* open_or_exit(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::perror(path.c_str());
    std::exit(1);
  }
  return f;
}

constexpr double t0 = 1700000000.0;  // wall time of step 0, seconds

void write_csv(const std::string& path, const std::vector<row>& rows) {
  std::FILE* f = open_or_exit(path);
  std::fputs("step,wall_time,loss,grad_norm,lr\n", f);
  for (const auto& r : rows)  // %.17g: the double of each float, exactly
    std::fprintf(f, "%lld,%lld,%.17g,%.17g,%.17g\n", static_cast<long long>(r.step),
                 static_cast<long long>(t0) + r.step, double(r.loss), double(r.grad_norm),
                 double(r.lr));
  std::fclose(f);
}

void write_tfevents(const std::string& dir, const std::vector<row>& rows) {
  fs::create_directories(dir);
  tfevents::event_writer w(dir + "/events.out.tfevents.1700000000.bench", t0);
  for (const auto& r : rows)
    for (const auto& s : series) w.write_scalar(s.key, r.step, t0 + double(r.step), r.*s.value);
  w.close();
}

void write_mlruns(const std::string& root, const std::vector<row>& rows) {
  const std::string run = root + "/1/0123456789abcdef0123456789abcdef";
  fs::create_directories(run + "/metrics");
  std::FILE* meta = open_or_exit(run + "/meta.yaml");
  std::fputs("run_id: 0123456789abcdef0123456789abcdef\nrun_name: bench\n", meta);
  std::fclose(meta);
  for (const auto& s : series) {
    std::FILE* f = open_or_exit(run + "/metrics/" + s.key);
    for (const auto& r : rows)
      std::fprintf(f, "%lld %.17g %lld\n", static_cast<long long>((t0 + double(r.step)) * 1000),
                   double(r.*s.value), static_cast<long long>(r.step));
    std::fclose(f);
  }
}

void write_mlflow_db(const std::string& path, const std::vector<row>& rows) {
  testing::mlflow_store_run run{"0123456789abcdef0123456789abcdef", "bench", 0, 0, false, {}};
  run.metrics.reserve(rows.size() * 3);
  for (const auto& r : rows) {  // MLflow's log_metrics: the keys of a step together
    const auto ms = static_cast<std::int64_t>((t0 + double(r.step)) * 1000);
    for (const auto& s : series) run.metrics.push_back({s.key, double(r.*s.value), ms, r.step});
  }
  testing::write_mlflow_store(path, {{0, "Default"}}, {run});
}

// What the findings say, without the messages: kind, series, severity and the spans' steps.
nlohmann::json findings_of(const std::string& analyze_json) {
  const auto j = nlohmann::json::parse(analyze_json, nullptr, false);
  nlohmann::json out = nlohmann::json::array();
  if (!j.is_object() || !j.contains("findings")) return nullptr;
  for (const auto& f : j["findings"]) {
    nlohmann::json spans = nlohmann::json::array();
    for (const auto& s : f.value("spans", nlohmann::json::array()))
      spans.push_back({s.value("first_step", -1), s.value("last_step", -1)});
    out.push_back({{"kind", f.value("kind", "")},
                   {"series", f.value("series", "")},
                   {"severity", f.value("severity", "")},
                   {"spans", spans}});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const testing::program_args args(
      argc, argv,
      "usage: bench_analyze_formats [ROWS] [--repeat N] [--losslens PATH]\n\n"
      "Steps per second of `losslens analyze` on one run of ROWS steps (default 1000000) of\n"
      "loss, grad_norm and lr written as a CSV, a TensorBoard event file, an MLflow file store\n"
      "run and an MLflow SQLite store, timed in turn in this run, best of --repeat runs\n"
      "(default 3); each format's time over the CSV's, its peak RSS, and whether its findings\n"
      "are the CSV's. --losslens: the CLI (default: ../tools/losslens/losslens next to this\n"
      "program). Prints JSON with the 1-minute load average.\n"
      "--write DIR: only write the four files into DIR (the bench runs itself so to write\n"
      "them: a child's peak RSS as Linux reports it includes its parent's high-water mark).\n",
      {"repeat", "losslens", "write"}, {}, 1);
  const std::int64_t rows = args.positional_integer(0, 1000000, 10, std::int64_t(1) << 28);
  if (args.has("write")) {
    const std::string d = args.text("write", "");
    const auto data = make_rows(rows);
    write_csv(d + "/run.csv", data);
    write_tfevents(d + "/tb", data);
    write_mlruns(d + "/mlruns", data);
    write_mlflow_db(d + "/mlflow.db", data);
    return 0;
  }
  const int repeat = int(args.integer("repeat", 3, 1, 100));
  const std::string cli = cli_or_exit(args, argv[0], "bench_analyze_formats");
  scratch_dir dir;
  struct format {
    const char* name;
    std::string path;
  };
  const std::vector<format> formats = {
      {"csv", (dir.path / "run.csv").string()},
      {"tensorboard", (dir.path / "tb").string()},
      {"mlflow_file_store", (dir.path / "mlruns").string()},
      {"mlflow_db", (dir.path / "mlflow.db").string()},
  };
  // Written by a child: this process stays small (see --help).
  if (run_child({argv[0], std::to_string(rows), "--write", dir.path.string()}).status != 0) {
    std::fprintf(stderr, "bench_analyze_formats: writing the files failed\n");
    return 1;
  }

  const double load_before = load1();
  std::vector<best> times(formats.size());
  std::vector<long> rss(formats.size(), 0);
  std::vector<int> status(formats.size(), 0);
  for (int r = 0; r < repeat; ++r)
    for (std::size_t i = 0; i < formats.size(); ++i) {
      const auto a = run_child({cli, "analyze", formats[i].path});
      times[i].add(a);
      rss[i] = std::max(rss[i], a.max_rss_kb);
      status[i] = a.status;
    }
  const double load_after = load1();
  std::vector<nlohmann::json> found;
  for (const auto& f : formats)
    found.push_back(findings_of(run_child({cli, "analyze", f.path, "--json"}, true).out));

  nlohmann::json out = {{"rows", rows}, {"repeat", repeat}, {"formats", nlohmann::json::object()}};
  const double mrows = double(rows) / 1e6;
  for (std::size_t i = 0; i < formats.size(); ++i) {
    std::uintmax_t bytes = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(formats[i].path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file(ec)) bytes += it->file_size(ec);
    if (fs::is_regular_file(formats[i].path, ec)) bytes = fs::file_size(formats[i].path, ec);
    out["formats"][formats[i].name] = {
        {"analyze_s", times[i].wall},
        {"analyze_cpu_s", times[i].cpu},
        {"mrows_per_s", mrows / times[i].wall},
        {"over_csv", times[i].wall / times[0].wall},
        {"cpu_over_csv", times[i].cpu / times[0].cpu},
        {"bytes", bytes},
        {"peak_rss_kb", rss[i]},
        {"exit_status", status[i]},
        {"findings", found[i].is_array() ? found[i].size() : 0},
        {"same_findings_as_csv", found[i].is_array() && found[i] == found[0]},
    };
  }
  out["load1_before"] = load_before;
  out["load1_after"] = load_after;
  std::printf("%s\n", out.dump(2).c_str());
}
