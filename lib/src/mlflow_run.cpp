#include "losslens/mlflow_run.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <filesystem>
#include <fstream>

#include "detail/text.hpp"
#include "losslens/error.hpp"
#include "losslens/parallel_for.hpp"

namespace losslens {
namespace {

namespace fs = std::filesystem;

bool parse_int(std::string_view s, std::int64_t& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc{} && p == s.data() + s.size();
}

/// How many fields the line has, split on single spaces as MLflow splits them; the first `max`
/// are put in out.
std::size_t fields_of(std::string_view line, std::string_view* out, std::size_t max) {
  std::size_t n = 0;
  for (std::size_t at = 0;; ++n) {
    const std::size_t space = line.find(' ', at);
    if (n < max) out[n] = line.substr(at, space == std::string_view::npos ? space : space - at);
    if (space == std::string_view::npos) return n + 1;
    at = space + 1;
  }
}

tag_series read_metric(const fs::path& file, std::string key, std::size_t& stepless,
                       std::vector<std::string>& notes) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw error(file.string() + ": cannot open");
  tag_series series{std::move(key), {}};
  // A line MLflow writes is at least 18 bytes ("<13-digit ms> <value> <step>\n"): room for that
  // many points spares the copies of a growing vector (and pages never written cost nothing).
  std::error_code size_error;
  if (const auto bytes = fs::file_size(file, size_error); !size_error)
    series.points.reserve(std::size_t(bytes / 18 + 1));
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    // Only messages need the place (a string per line was a tenth of reading the file).
    const auto where = [&] { return file.string() + ":" + std::to_string(n) + ": "; };
    std::string_view l = line;
    while (!l.empty() && (l.back() == '\r' || l.back() == ' ' || l.back() == '\t'))
      l.remove_suffix(1);
    while (!l.empty() && (l.front() == ' ' || l.front() == '\t')) l.remove_prefix(1);
    if (l.empty()) continue;
    if (in.eof()) {
      // MLflow ends every line it appends: one without a line end is still being written (a
      // cut step or value would read as another point).
      notes.push_back(where() +
                      "the last line has no line end: left out (a run still being "
                      "written?)");
      break;
    }
    std::string_view f[3];
    const std::size_t fields = fields_of(l, f, 3);
    if (fields != 2 && fields != 3)
      throw error(where() + std::to_string(fields) +
                  " fields; a metric line is '<timestamp ms> <value> <step>'");
    tag_point p;
    std::int64_t ts = 0;
    if (!parse_int(f[0], ts)) throw error(where() + "timestamp '" + std::string(f[0]) + "'");
    if (!core::detail::parse_double(f[1], p.value))
      throw error(where() + "value '" + std::string(f[1].substr(0, 40)) + "' is not a number");
    if (fields == 3 && !parse_int(f[2], p.step))
      throw error(where() + "step '" + std::string(f[2]) + "' is not a whole number");
    if (fields == 2) ++stepless;
    p.wall_time = double(ts) / 1000.0;
    series.points.push_back(p);
  }
  return series;
}

}  // namespace

std::string mlflow_run_name(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "meta.yaml");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("run_name:")) continue;
    std::string v = line.substr(9);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.erase(0, 1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front())
      v = v.substr(1, v.size() - 2);
    if (!v.empty()) return v;
  }
  return fs::path(dir).filename().string();
}

bool is_mlflow_run_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / "meta.yaml", ec) &&
         fs::is_directory(fs::path(dir) / "metrics", ec);
}

std::vector<std::string> find_mlflow_runs(const std::string& path) {
  std::vector<std::string> out;
  std::error_code ec;
  auto walk = [&](auto&& self, const fs::path& dir, int depth) -> void {
    if (is_mlflow_run_dir(dir.string())) {
      out.push_back(dir.string());
      return;
    }
    if (depth == 2) return;
    fs::directory_iterator it(dir, ec), end;
    if (ec) throw error(dir.string() + ": cannot list: " + ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) throw error(dir.string() + ": cannot list: " + ec.message());
      const std::string name = it->path().filename().string();
      if (name == ".trash" || !it->is_directory(ec) || it->is_symlink(ec)) continue;
      self(self, it->path(), depth + 1);
    }
  };
  if (fs::is_directory(path, ec)) walk(walk, fs::path(path), 0);
  std::sort(out.begin(), out.end());
  return out;
}

mlflow_run read_mlflow_run(const std::string& dir) {
  mlflow_run run;
  run.dir = dir;
  const fs::path root(dir);
  run.name = mlflow_run_name(dir);
  std::error_code ec;
  const fs::path metrics = root / "metrics";
  fs::recursive_directory_iterator it(metrics, ec), end;
  if (ec) throw error(metrics.string() + ": cannot list: " + ec.message());
  // The metric files are read on the machine's cores, each into its own slot; their notes and
  // the first error come out in the order one thread would have met them.
  struct metric_file {
    fs::path path;
    tag_series series;
    std::size_t stepless = 0;
    std::vector<std::string> notes;
    std::exception_ptr error;
  };
  std::vector<metric_file> files;
  for (; it != end; it.increment(ec)) {
    if (ec) throw error(metrics.string() + ": cannot list: " + ec.message());
    if (!it->is_regular_file(ec)) continue;
    files.push_back({it->path(), {}, 0, {}, nullptr});
  }
  parallel_for(files.size(), 0, [&](std::size_t i) {
    metric_file& f = files[i];
    try {
      // A key with '/' is a nested file: its path below metrics/ is the key.
      f.series = read_metric(f.path, f.path.lexically_relative(metrics).generic_string(),
                             f.stepless, f.notes);
    } catch (...) {
      f.error = std::current_exception();
    }
  });
  std::size_t stepless = 0;
  for (auto& f : files) {
    if (f.error) std::rethrow_exception(f.error);
    run.metrics.push_back(std::move(f.series));
    stepless += f.stepless;
    for (auto& n : f.notes) run.notes.push_back(std::move(n));
  }
  std::sort(run.metrics.begin(), run.metrics.end(),
            [](const tag_series& a, const tag_series& b) { return a.tag < b.tag; });
  if (stepless > 0)
    run.notes.push_back(std::to_string(stepless) +
                        " metric lines without a step (logged without step=): step 0, as "
                        "MLflow reads them");
  one_point_per_step(run.metrics, run.notes);
  return run;
}

}  // namespace losslens
