#include "losslens/tfevents/scalar_run.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include "losslens/error.hpp"
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

// Appends every scalar of one file to the run (tags in order of first appearance).
void read_into(scalar_run& run, event_reader& reader,
               std::map<std::string, std::size_t, std::less<>>& index) {
  scalar_value v;
  while (reader.next(v)) {
    auto it = index.find(v.tag);
    if (it == index.end()) {
      it = index.emplace(v.tag, run.tags.size()).first;
      run.tags.push_back({v.tag, {}});
    }
    run.tags[it->second].points.push_back({v.step, v.wall_time, v.value});
  }
  run.records += reader.stats().records;
  run.scalars += reader.stats().scalars;
  run.skipped += reader.stats().skipped;
  if (!reader.truncated().empty()) run.notes.push_back(reader.truncated());
}

}  // namespace

scalar_run read_scalar_run(const run_files& files) {
  scalar_run run;
  run.name = files.name;
  run.files = files.files;
  std::map<std::string, std::size_t, std::less<>> index;
  for (const auto& file : files.files) {
    event_reader reader(file);
    read_into(run, reader, index);
  }
  one_point_per_step(run.tags, run.notes);
  return run;
}

scalar_run read_scalar_run(std::istream& in, const std::string& name) {
  scalar_run run;
  run.name = name;
  run.files = {name};
  std::map<std::string, std::size_t, std::less<>> index;
  event_reader reader(in, name);
  read_into(run, reader, index);
  one_point_per_step(run.tags, run.notes);
  return run;
}

void add_streams(sample_merger& merger, const scalar_run& run, const tag_mapping& mapping) {
  losslens::add_streams(merger, run.tags, mapping);
}

}  // namespace losslens::tfevents
