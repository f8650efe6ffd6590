#include "losslens/tfevents/scalar_run.hpp"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>

#include "losslens/error.hpp"
#include "detail/record_split.hpp"
#include "losslens/parallel_for.hpp"
#include "losslens/tfevents/event_reader.hpp"

namespace losslens::tfevents {

namespace fs = std::filesystem;

bool is_event_file_name(std::string_view file_name) {
  return file_name.find("tfevents") != std::string_view::npos;
}

std::vector<run_files> find_runs(const std::string& path) {
  std::error_code ec;
  const fs::path root(path);
  const auto st = fs::status(root, ec);
  if (ec || !fs::exists(st)) throw error(path + ": no such file or directory");
  std::vector<run_files> runs;
  if (fs::is_regular_file(st)) {
    if (!is_event_file_name(root.filename().string())) return runs;
    const fs::path dir = fs::absolute(root, ec).parent_path();
    runs.push_back({dir.filename().string(), {path}});
    return runs;
  }
  std::map<fs::path, std::vector<std::string>> by_dir;
  auto add = [&](const fs::directory_entry& e) {
    if (e.is_regular_file(ec) && is_event_file_name(e.path().filename().string()))
      by_dir[e.path().parent_path()].push_back(e.path().string());
  };
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw error(path + ": cannot list: " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw error(path + ": cannot list: " + ec.message());
    add(*it);
  }
  for (auto& [dir, files] : by_dir) {
    std::sort(files.begin(), files.end());
    std::string name = fs::relative(dir, root, ec).generic_string();
    if (ec || name.empty() || name == ".") name = fs::absolute(root, ec).filename().string();
    if (name.empty()) name = fs::absolute(root, ec).parent_path().filename().string();
    runs.push_back({std::move(name), std::move(files)});
  }
  std::sort(runs.begin(), runs.end(),
            [](const run_files& a, const run_files& b) { return a.name < b.name; });
  return runs;
}

std::vector<std::string> scalar_run::tag_names() const { return losslens::tag_names(tags); }

namespace {

// Appends the scalars `reader` returns to their tags' series.
void read_values(event_reader& reader, tag_series_builder& tags) {
  scalar_value v;
  while (reader.next(v)) tags.series(v.tag).points.push_back({v.step, v.wall_time, v.value});
}

// Adds a reader's counts and its note of a cut-short last record (`earlier`: records of the
// file before the reader's start) to the run.
void count(scalar_run& run, const event_reader& reader, std::uint64_t earlier = 0) {
  run.records += reader.stats().records;
  run.scalars += reader.stats().scalars;
  run.skipped += reader.stats().skipped;
  if (auto note = reader.truncated(earlier); !note.empty()) run.notes.push_back(std::move(note));
}

// One part of a file read on its own thread.
struct file_part {
  std::uint64_t start = 0, end = 0;  // records starting in [start, end)
  std::unique_ptr<event_reader> reader;
  std::exception_ptr error;
  void read(const std::string& path, tag_series_part& points) noexcept {
    try {
      reader = std::make_unique<event_reader>(path, start, end);
      scalar_value v;
      while (reader->next(v)) points.add(v.tag, {v.step, v.wall_time, v.value});
    } catch (...) {
      error = std::current_exception();
    }
  }
};

// Reads the file in parts on `parts` threads (this one included) into `tags`; false, with run
// and tags untouched, when the parts do not join up exactly (the caller then reads the file in
// one piece, which gives what one piece gives: the same values or the same error).
bool read_in_parts(scalar_run& run, tag_series_builder& tags, const std::string& path,
                   std::uint64_t size, unsigned parts) {
  std::vector<std::uint64_t> near;
  for (unsigned i = 1; i < parts; ++i) near.push_back(size / parts * i);
  std::vector<std::uint64_t> cuts = detail::record_starts_after(path, size, near);
  if (cuts.empty()) return false;
  std::vector<file_part> part(cuts.size() + 1);
  for (std::size_t i = 0; i < part.size(); ++i) {
    part[i].start = i == 0 ? 0 : cuts[i - 1];
    part[i].end = i < cuts.size() ? cuts[i] : UINT64_MAX;  // the last one reads to the end
  }
  std::vector<tag_series_part> points(part.size());
  parallel_for(part.size(), unsigned(part.size()),
               [&](std::size_t i) { part[i].read(path, points[i]); });
  // A value of a tag whose plugin its part had not seen named was taken as a scalar; one
  // reader would have skipped it had an earlier part named another plugin for the tag (rare:
  // a tag renamed to another plugin's whose values are scalars).
  std::map<std::string, bool, std::less<>> scalars;  // per tag named so far: the latest naming
  for (std::size_t i = 0; i < part.size(); ++i) {
    const file_part& p = part[i];
    if (p.error) return false;
    // Every part but the last stops where the next starts, none inside a record.
    if (i + 1 < part.size() && (p.reader->offset() != p.end || !p.reader->truncated().empty()))
      return false;
    for (const auto& [tag, plugin] : p.reader->plugins()) {
      const auto before = scalars.find(tag);
      if (plugin.unnamed_values > 0 && before != scalars.end() && !before->second) return false;
    }
    for (const auto& [tag, plugin] : p.reader->plugins())
      if (plugin.named) scalars.insert_or_assign(tag, plugin.scalars);
  }
  tag_series_part::join(points, tags);
  std::uint64_t earlier = 0;
  for (const file_part& p : part) {
    count(run, *p.reader, earlier);
    earlier += p.reader->stats().records;
  }
  ++run.files_in_parts;
  return true;
}

// Appends every scalar of one file to the run's tags (in order of first appearance).
void read_file(scalar_run& run, tag_series_builder& tags, const std::string& path,
               const read_options& options) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  unsigned threads = thread_count(options.threads);
  if (!ec && options.part_bytes > 0)
    threads = unsigned(std::min<std::uint64_t>(threads, size / options.part_bytes));
  if (!ec && threads > 1 && read_in_parts(run, tags, path, size, threads)) return;
  event_reader reader(path);
  read_values(reader, tags);
  count(run, reader);
}

}  // namespace

scalar_run read_scalar_run(const run_files& files, const read_options& options) {
  scalar_run run;
  run.name = files.name;
  run.files = files.files;
  tag_series_builder tags;
  for (const auto& file : files.files) read_file(run, tags, file, options);
  run.tags = tags.take();
  one_point_per_step(run.tags, run.notes);
  return run;
}

scalar_run read_scalar_run(std::istream& in, const std::string& name) {
  scalar_run run;
  run.name = name;
  run.files = {name};
  tag_series_builder tags;
  event_reader reader(in, name);
  read_values(reader, tags);
  count(run, reader);
  run.tags = tags.take();
  one_point_per_step(run.tags, run.notes);
  return run;
}

void add_streams(sample_merger& merger, const scalar_run& run, const tag_mapping& mapping) {
  losslens::add_streams(merger, run.tags, mapping);
}

}  // namespace losslens::tfevents
