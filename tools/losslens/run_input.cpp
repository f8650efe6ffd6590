#include "run_input.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>

#include "losslens/analyzer.hpp"
#include "losslens/error.hpp"

namespace losslens::cli {

namespace fs = std::filesystem;

const std::vector<std::string_view> input_value_options = {"loss", "grad-norm", "lr",
                                                           "task", "run",       "class-task"};

namespace {

std::string file_stem(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  if (name.size() > 4 && name.compare(name.size() - 4, 4, ".csv") == 0)
    name.resize(name.size() - 4);
  return name;
}

// TensorBoard names its CSV downloads run-<run>-tag-<tag>.csv; the <run> part, if any.
std::string tensorboard_run_of(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  const auto tag = name.rfind("-tag-");
  if (name.rfind("run-", 0) != 0 || tag == std::string::npos || tag <= 4) return {};
  return name.substr(4, tag - 4);
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

// The trainer_state.json of the checkpoint-<step>/ directory with the largest step in `dir`
// (a Hugging Face Trainer's output directory); empty when there is none.
std::string latest_checkpoint_state(const fs::path& dir) {
  std::error_code ec;
  std::int64_t best = -1;
  std::string out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    constexpr std::string_view prefix = "checkpoint-";
    if (!name.starts_with(prefix) || !e.is_directory(ec)) continue;
    std::int64_t step = -1;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size();
    if (auto [p, err] = std::from_chars(first, last, step); err != std::errc{} || p != last)
      continue;
    if (const auto state = e.path() / "trainer_state.json";
        step > best && fs::is_regular_file(state, ec)) {
      best = step;
      out = state.string();
    }
  }
  return out;
}

bool is_csv_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".csv";
}

}  // namespace

input_options parse_input_options(const parsed_args& args) {
  input_options o;
  auto add = [&](const std::string& value, series_target target, const char* flag) {
    if (value.empty()) throw usage_error(std::string("--") + flag + " needs a tag or a file");
    std::error_code ec;
    if (fs::is_regular_file(value, ec))
      o.files.push_back({value, std::move(target)});
    else
      o.mapping.rules.push_back({value, std::move(target)});
  };
  for (const auto& v : args.all("loss")) add(v, {series_role::loss, ""}, "loss");
  for (const auto& v : args.all("grad-norm")) add(v, {series_role::grad_norm, ""}, "grad-norm");
  for (const auto& v : args.all("lr")) add(v, {series_role::lr, ""}, "lr");
  for (const auto& v : args.all("task")) {
    const auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
      throw usage_error("--task expects NAME=TAG (e.g. --task cls=train/loss_cls), got '" + v +
                        "'");
    add(v.substr(eq + 1), {series_role::task_loss, v.substr(0, eq)}, "task");
  }
  o.run = args.get("run");
  o.class_task = args.get("class-task");
  if (args.options.count("class-task") != 0 && o.class_task.empty())
    throw usage_error("--class-task needs the name of a task (a loss/NAME series)");
  return o;
}

optimizer_kind parse_optimizer_option(const parsed_args& args) {
  const std::string name = args.get("optimizer");
  if (name.empty()) return optimizer_kind::unknown;
  if (const auto k = parse_optimizer_kind(name)) return *k;
  throw usage_error("--optimizer: unknown optimizer '" + name +
                    "' (SGD, Adam, AdamW, RMSprop, Adagrad or LBFGS)");
}

input_set::input_set(const std::string& given, input_options options, bool buffer_stdin)
    : options_(std::move(options)), stdin_buffered_(buffer_stdin) {
  // An MLflow tracking URI as MLFLOW_TRACKING_URI holds it: sqlite:///relative.db,
  // sqlite:////absolute.db.
  constexpr std::string_view sqlite_uri = "sqlite:///";
  const std::string path = given.starts_with(sqlite_uri) ? given.substr(sqlite_uri.size()) : given;
  if (path.empty()) {
    // Only --loss FILE style options: one run of TensorBoard exports.
    std::vector<std::string> files;
    for (const auto& f : options_.files) files.push_back(f.tag);
    add_tensorboard_group(files, fs::absolute(files[0]).parent_path().filename().string());
    for (std::size_t i = 0; i < options_.files.size(); ++i)
      runs_.back().forced[i] = options_.files[i].target;
    return;
  }
  if (!options_.files.empty())
    throw usage_error(
        "give either PATH or TensorBoard CSV files with --loss FILE (and "
        "--grad-norm FILE...), not both");
  if (path == "-") {
    if (stdin_buffered_)
      stdin_text_.assign(std::istreambuf_iterator<char>(std::cin),
                         std::istreambuf_iterator<char>());
    run_input r;
    r.name = "stdin";
    r.source = "<stdin>";
    r.files = {"-"};
    r.csv_run = options_.run;
    runs_.push_back(std::move(r));
    return;
  }
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw error(path +
                ": cannot open: no such file or directory (give a CSV, an event file, a "
                "trainer_state.json, an mlflow.db or a directory of runs)");
  if (!fs::is_directory(st)) {
    add_file(path);
    return;
  }
  for (auto& r : tfevents::find_runs(path)) {
    run_input in;
    in.name = r.name;
    in.kind = input_kind::tfevents;
    in.source = r.files.size() == 1 ? r.files[0]
                                    : fs::path(r.files[0]).parent_path().string() + " (" +
                                          std::to_string(r.files.size()) + " event files)";
    in.files = std::move(r.files);
    runs_.push_back(std::move(in));
  }
  if (!runs_.empty()) return;
  // A Trainer's checkpoint directory: its trainer_state.json. Its output directory: that of
  // the latest checkpoint-<step>/, which holds the whole log history up to that step.
  if (const auto state = fs::path(path) / "trainer_state.json"; fs::is_regular_file(state, ec)) {
    add_trainer_state(state.string());
    return;
  }
  if (const auto latest = latest_checkpoint_state(path); !latest.empty()) {
    add_trainer_state(latest);
    runs_.back().name = fs::absolute(path, ec).filename().string();
    return;
  }
  // MLflow's file store: a run, an experiment or mlruns/ itself.
  for (const auto& dir : find_mlflow_runs(path)) {
    run_input in;
    in.name = mlflow_run_name(dir);
    in.kind = input_kind::mlflow;
    in.source = dir;
    in.run_id = fs::path(dir).filename().string();
    // The metric files: what the import's identity is taken over.
    for (const auto& e : fs::recursive_directory_iterator(fs::path(dir) / "metrics", ec))
      if (e.is_regular_file(ec)) in.files.push_back(e.path().string());
    std::sort(in.files.begin(), in.files.end());
    runs_.push_back(std::move(in));
  }
  if (!runs_.empty()) return;
  // MLflow's SQLite store, where `mlflow ui` and `mlflow server` keep it by default (3.7+).
  if (const auto db = fs::path(path) / "mlflow.db";
      fs::is_regular_file(db, ec) && storage::is_sqlite_file(db.string())) {
    add_mlflow_database(db.string());
    return;
  }
  // No event files: the CSV files of the directory (TensorBoard exports, W&B exports, CSVs).
  std::vector<std::string> csvs;
  for (const auto& e : fs::directory_iterator(path, ec))
    if (e.is_regular_file(ec) && is_csv_name(e.path())) csvs.push_back(e.path().string());
  if (ec) throw error(path + ": cannot list: " + ec.message());
  std::sort(csvs.begin(), csvs.end());
  std::vector<std::string> tensorboard;
  for (const auto& f : csvs) add_csv_file(f, &tensorboard);
  // TensorBoard exports of one run (run-<run>-tag-<tag>.csv) form one run.
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& f : tensorboard) groups[tensorboard_run_of(f)].push_back(f);
  const std::string dir_name = fs::absolute(path, ec).filename().string();
  for (auto& [run, files] : groups) add_tensorboard_group(files, run.empty() ? dir_name : run);
  if (runs_.empty())
    throw error(path +
                ": no event files (names containing 'tfevents') in it or below, no MLflow "
                "runs or mlflow.db, and no CSV files or trainer_state.json in it: nothing to "
                "read");
}

void input_set::add_file(const std::string& path) {
  if (tfevents::is_event_file_name(fs::path(path).filename().string())) {
    for (auto& r : tfevents::find_runs(path)) {
      run_input in;
      in.name = r.name;
      in.kind = input_kind::tfevents;
      in.source = path;
      in.files = std::move(r.files);
      runs_.push_back(std::move(in));
    }
    return;
  }
  if (is_json_name(fs::path(path).filename().string())) {
    add_trainer_state(path);
    return;
  }
  if (storage::is_sqlite_file(path)) {
    add_mlflow_database(path);
    return;
  }
  std::vector<std::string> tensorboard;
  add_csv_file(path, &tensorboard);
  for (const auto& f : tensorboard) {
    const std::string run = tensorboard_run_of(f);
    add_tensorboard_group({f}, run.empty() ? file_stem(f) : run);
  }
}

void input_set::add_csv_file(const std::string& path, std::vector<std::string>* tensorboard_files) {
  // The header says the layout and the W&B runs; the mapping comes when the run is opened.
  csv_options probe;
  probe.mapping.automatic = false;
  csv_reader header(path, probe);
  if (header.tensorboard_layout()) {
    tensorboard_files->push_back(path);
    return;
  }
  const std::vector<std::string> wandb_runs =
      header.runs().empty() ? std::vector<std::string>{""} : header.runs();
  for (const auto& w : wandb_runs) {
    run_input in;
    in.name = w.empty() ? file_stem(path) : w;
    in.kind = input_kind::csv;
    in.source = w.empty() ? path : path + " (W&B run " + w + ")";
    in.files = {path};
    in.csv_run = w;
    runs_.push_back(std::move(in));
  }
}

void input_set::add_trainer_state(const std::string& path) {
  // Named after its directory: a Trainer saves one in every checkpoint-<step>/.
  const fs::path p(path);
  run_input in;
  in.name = p.has_parent_path() ? p.parent_path().filename().string() : file_stem(path);
  if (in.name.empty()) in.name = file_stem(path);
  in.kind = input_kind::trainer_state;
  in.source = path;
  in.files = {path};
  runs_.push_back(std::move(in));
}

void input_set::add_mlflow_database(const std::string& path) {
  const auto runs = storage::find_mlflow_db_runs(path);
  if (runs.empty()) throw error(path + ": an MLflow database without runs: nothing to read");
  for (const auto& r : runs) {
    run_input in;
    in.name = r.name;
    in.kind = input_kind::mlflow_db;
    in.source = path + " (MLflow run " + r.id + ", experiment " + r.experiment + ")";
    in.files = {path};
    in.run_id = r.id;
    runs_.push_back(std::move(in));
  }
}

void input_set::add_tensorboard_group(std::vector<std::string> files,
                                      const std::string& fallback_name) {
  run_input in;
  const std::string run = files.empty() ? "" : tensorboard_run_of(files[0]);
  in.name = run.empty() ? fallback_name : run;
  in.kind = input_kind::tensorboard_csv;
  in.source = files.size() == 1 ? files[0] : join(files);
  in.forced.assign(files.size(), std::nullopt);
  in.files = std::move(files);
  runs_.push_back(std::move(in));
}

std::unique_ptr<opened_run> input_set::open(const run_input& run, bool checksum) const {
  auto out = std::make_unique<opened_run>();
  opened_run& o = *out;
  auto in_context = [&](auto&& fn) {
    try {
      fn();
    } catch (const error& e) {
      throw error(run.source + ": " + e.what());  // map_tags' errors do not know the file
    }
  };
  // A log read whole into per-tag series (event files, a Trainer's log history).
  auto open_series = [&](const std::vector<tag_series>& series,
                         const std::vector<std::string>& notes) {
    in_context([&] { o.mapping = map_tags(tag_names(series), options_.mapping); });
    o.notes = notes;
    if (auto unused = o.mapping.unused_summary(o.tag_word); !unused.empty())
      o.notes.insert(o.notes.begin(), unused);
    for (const auto& n : o.mapping.notes) o.notes.push_back(n);
    // The series live in o (its events, trainer_state or mlflow): a new merger over them
    // starts the run again.
    o.rewind = [&o, all = &series] {
      o.merger = std::make_unique<sample_merger>();
      add_streams(*o.merger, *all, o.mapping);
      sample_merger* m = o.merger.get();
      o.next = [m](sample& s) { return m->next(s); };
    };
    o.rewind();
    o.schema = o.merger->schema();
  };
  switch (run.kind) {
    case input_kind::csv: {
      o.tag_word = "column";
      csv_options co;
      co.mapping = options_.mapping;
      co.run = run.csv_run;
      if (run.files[0] == "-") {
        if (stdin_buffered_) {
          o.text = std::make_unique<std::istringstream>(stdin_text_);
          o.readers.push_back(std::make_unique<csv_reader>(*o.text, "<stdin>", co));
        } else {
          o.readers.push_back(std::make_unique<csv_reader>(std::cin, "<stdin>", co));
        }
        if (o.readers[0]->runs().size() > 1 && run.csv_run.empty())
          throw error("<stdin>: holds " + std::to_string(o.readers[0]->runs().size()) +
                      " W&B runs (" + join(o.readers[0]->runs()) +
                      "): choose one with --run NAME, or give the file's path");
      } else {
        // An import's identity is the checksum of the bytes its analysis read: no second pass
        // over the file for it.
        if (checksum) {
          o.read_checksum = std::make_unique<content_checksum>();
          co.on_read = [sum = o.read_checksum.get()](const char* bytes, std::size_t n) {
            sum->add(bytes, n);
          };
        }
        o.readers.push_back(std::make_unique<csv_reader>(run.files[0], co));
      }
      csv_reader* r = o.readers[0].get();
      o.mapping = r->mapping();
      o.schema = r->schema();
      o.notes = r->warnings();
      o.next = [r](sample& s) { return r->next(s); };
      break;
    }
    case input_kind::tensorboard_csv: {
      o.tag_word = "tag";
      std::vector<std::string> tags;
      tag_map_options mo = options_.mapping;
      for (std::size_t i = 0; i < run.files.size(); ++i) {
        tags.push_back(tensorboard_csv_tag(run.files[i]));
        if (run.forced[i]) mo.rules.push_back({tags.back(), *run.forced[i]});
      }
      in_context([&] { o.mapping = map_tags(tags, mo); });
      o.merger = std::make_unique<sample_merger>();
      for (std::size_t i = 0; i < run.files.size(); ++i) {
        csv_options co;
        co.value_tag = tags[i];
        co.mapping.automatic = false;
        if (o.mapping.targets[i]) co.mapping.rules.push_back({tags[i], *o.mapping.targets[i]});
        auto reader = std::make_unique<csv_reader>(run.files[i], co);
        if (!reader->tensorboard_layout())
          throw error(run.files[i] +
                      ":1: not a TensorBoard CSV export (its header should be "
                      "Wall time,Step,Value)");
        if (o.mapping.targets[i]) {
          csv_reader* r = reader.get();
          o.merger->add(r->schema(), [r](sample& s) { return r->next(s); });
        }
        o.readers.push_back(std::move(reader));
      }
      o.notes = o.mapping.notes;
      if (auto unused = o.mapping.unused_summary("tag"); !unused.empty())
        o.notes.insert(o.notes.begin(), unused);
      sample_merger* m = o.merger.get();
      o.schema = m->schema();
      o.next = [m](sample& s) { return m->next(s); };
      break;
    }
    case input_kind::tfevents: {
      o.tag_word = "tag";
      o.events =
          std::make_unique<tfevents::scalar_run>(tfevents::read_scalar_run({run.name, run.files}));
      const tfevents::scalar_run& ev = *o.events;
      open_series(ev.tags, ev.notes);
      if (ev.skipped > 0)
        o.notes.push_back(std::to_string(ev.skipped) +
                          " summary values that are not scalars (images, histograms, text...) "
                          "skipped");
      break;
    }
    case input_kind::mlflow: {
      o.tag_word = "metric";
      o.mlflow = std::make_unique<mlflow_run>(read_mlflow_run(run.source));
      open_series(o.mlflow->metrics, o.mlflow->notes);
      break;
    }
    case input_kind::mlflow_db: {
      o.tag_word = "metric";
      o.mlflow =
          std::make_unique<mlflow_run>(storage::read_mlflow_db_run(run.files[0], run.run_id));
      open_series(o.mlflow->metrics, o.mlflow->notes);
      break;
    }
    case input_kind::trainer_state: {
      o.tag_word = "key";
      o.trainer_state = std::make_unique<trainer_state_log>(read_trainer_state(run.files[0]));
      const trainer_state_log& log = *o.trainer_state;
      open_series(log.keys, log.notes);
      break;
    }
  }
  if (!options_.class_task.empty()) {
    const auto& t = o.schema.tasks;
    if (std::find(t.begin(), t.end(), options_.class_task) == t.end())
      throw error(run.source + ": --class-task " + options_.class_task + ": no such task (" +
                  (t.empty() ? std::string("the run has no task losses") : "tasks: " + join(t)) +
                  ")");
    o.schema.class_task = options_.class_task;
  }
  if (!o.mapping.diagnosable()) {
    // What the user names a series by: a column, a tag, or (TensorBoard exports) the file.
    const std::string w = o.tag_word,
                      arg = run.kind == input_kind::csv             ? "COLUMN"
                            : run.kind == input_kind::tfevents      ? "TAG"
                            : run.kind == input_kind::trainer_state ? "KEY"
                            : run.kind == input_kind::mlflow || run.kind == input_kind::mlflow_db
                                ? "METRIC"
                                : "FILE";
    throw error(run.source + ": " + w + "s seen: " +
                (o.mapping.tags.empty() ? std::string("none") : o.mapping.seen_list()) +
                "; none is a loss or a gradient norm: map one with --loss " + arg +
                " (or --grad-norm " + arg + ", --task NAME=" + arg + ")" +
                // A cut-short file may be why nothing is there.
                (o.events && !o.events->notes.empty() ? "; note: " + o.events->notes.back()
                                                      : std::string()));
  }
  return out;
}

void content_checksum::add(const void* bytes, std::size_t n) noexcept {
  ended_ = n == 0;
  crc_.process_bytes(bytes, n);
  total_ += n;
}

std::string content_checksum::text() const {
  char out[64];
  std::snprintf(out, sizeof out, "crc64:%016llx:%llu", (unsigned long long)crc_.checksum(),
                (unsigned long long)total_);
  return out;
}

std::string input_set::fingerprint(const run_input& run, const opened_run* opened) const {
  if (opened && opened->read_checksum && opened->read_checksum->ended())
    return opened->read_checksum->text();
  content_checksum sum;
  if (run.kind == input_kind::mlflow_db) {
    // The run's rows, not the whole database, which changes with every other run.
    sum.add(run.run_id.data(), run.run_id.size());
    std::unique_ptr<mlflow_run> read;
    if (!opened || !opened->mlflow)
      read = std::make_unique<mlflow_run>(storage::read_mlflow_db_run(run.files[0], run.run_id));
    for (const auto& m : (read ? *read : *opened->mlflow).metrics) {
      sum.add(m.tag.data(), m.tag.size() + 1);  // with its NUL: "ab"+"c" is not "a"+"bc"
      for (const auto& p : m.points) {
        sum.add(&p.step, sizeof p.step);
        sum.add(&p.value, sizeof p.value);
        sum.add(&p.wall_time, sizeof p.wall_time);
      }
    }
  } else {
    for (const auto& f : run.files) {
      if (f == "-") {
        sum.add(stdin_text_.data(), stdin_text_.size());
        continue;
      }
      std::ifstream in(f, std::ios::binary);
      if (!in) throw error(f + ": cannot open");
      char buf[1 << 16];
      while (in.read(buf, sizeof buf) || in.gcount() > 0) sum.add(buf, std::size_t(in.gcount()));
    }
  }
  return sum.text();
}

run_analysis analyze_run(const input_set& inputs, const run_input& run,
                         const detector_options& options, std::string_view command,
                         const std::function<void(const sample&)>& each,
                         std::unique_ptr<opened_run>* keep) {
  auto opened = inputs.open(run, keep != nullptr);
  print_mapping(command, run, *opened);
  std::vector<std::string> notes = opened->notes;
  auto note = [&](const std::string& n) {
    std::fprintf(stderr, "losslens %s: %s\n", std::string(command).c_str(), n.c_str());
    notes.push_back(n);
  };
  // Advice quotes the LR range of the run's optimizer: Lightning's LR tags name it.
  detector_options o = options;
  if (o.optimizer == optimizer_kind::unknown && opened->mapping.optimizer() != o.optimizer) {
    o.optimizer = opened->mapping.optimizer();
    note(run.name + ": optimizer " + to_string(o.optimizer) +
         ", as its LR tags name it (advice quotes its LR range; --optimizer NAME to say "
         "otherwise)");
  }
  if (o.chance_level.num_classes >= 2 && !class_loss_index(opened->schema))
    note(run.name + ": --classes " + std::to_string(o.chance_level.num_classes) +
         " is not applied: the loss is the sum of the task losses " + join(opened->schema.tasks) +
         " and no class count predicts its level (initial_loss and chance_level stay off); name "
         "the classification task with --class-task NAME");
  analyzer a(opened->schema, o);
  // The reader parses (and derives the rules' shared numbers) on a thread of its own while the
  // rules take the rows before.
  a.observe_stream(opened->next, each);
  a.flush();
  for (const auto& r : opened->readers)
    for (const auto& n : r->reading_notes()) note(n);
  // Most rules judge a step against the run's history: finding nothing in a short log is not
  // a clean bill of health.
  const int full = options.chance_level.warmup + options.chance_level.patience;
  if (a.steps() > 0 && a.steps() < full)
    note(run.name + ": only " + extent_text({a.steps(), a.first_step(), a.last_step()}) +
         ": most rules first need a history (loss spikes " +
         std::to_string(options.loss_spike.warmup) + " steps, divergence " +
         std::to_string(options.divergence.warmup) + ", oscillation " +
         std::to_string(options.oscillation.window) + ", chance level " + std::to_string(full) +
         ", plateau " + std::to_string(options.plateau.patience) +
         " without improvement), so a log this short shows little of what went wrong");
  if (a.steps() == 0)
    throw error(run.source + ": no data rows" +
                (run.kind == input_kind::csv
                     ? std::string(" after the header")
                     : " for the " + opened->tag_word + "s " + opened->mapping.describe()) +
                ": nothing to analyse");
  run_analysis out{a.findings(),
                   {a.steps(), a.first_step(), a.last_step()},
                   series_of(*opened),
                   std::move(notes)};
  if (keep) *keep = std::move(opened);
  return out;
}

void print_mapping(std::string_view command, const run_input& run, const opened_run& opened) {
  const std::string prefix = "losslens " + std::string(command) + ": ";
  if (!opened.mapping.identity())
    std::fprintf(stderr, "%s%s: %s\n", prefix.c_str(), run.name.c_str(),
                 opened.mapping.describe().c_str());
  // A CSV reader's notes start with FILE:LINE; the others get the run's name.
  const std::string run_prefix = run.kind == input_kind::csv ? "" : run.name + ": ";
  for (const auto& n : opened.notes)
    std::fprintf(stderr, "%s%s%s\n", prefix.c_str(), run_prefix.c_str(), n.c_str());
}

std::vector<run_input> select_runs(const std::vector<run_input>& runs, const std::string& name) {
  // Standard input: the W&B run is chosen by the reader (run_input::csv_run).
  if (name.empty() || (runs.size() == 1 && runs[0].files == std::vector<std::string>{"-"}))
    return runs;
  std::vector<run_input> out;
  std::vector<std::string> names;
  for (const auto& r : runs) {
    names.push_back(r.name);
    if (r.name == name || (!r.run_id.empty() && r.run_id == name)) out.push_back(r);
  }
  if (out.empty()) throw error("no run '" + name + "' here; runs: " + join(names));
  return out;
}

nlohmann::json series_of(const opened_run& opened) {
  auto j = nlohmann::json::object();
  for (std::size_t i = 0; i < opened.mapping.tags.size(); ++i)
    if (opened.mapping.targets[i])
      j[opened.mapping.tags[i]] = opened.mapping.targets[i]->series_name();
  return j;
}

}  // namespace losslens::cli
