// `losslens import`: analyse runs logged elsewhere (TensorBoard event files, TensorBoard / W&B
// CSV exports, CSVs, a Trainer's trainer_state.json) and store them, with their findings, in
// the run history.

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/error.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"
#include "run_input.hpp"

namespace losslens::cli {

const std::string_view import_usage =
    "usage: losslens import PATH [--db PATH] [--run NAME] [--classes C] [--optimizer NAME]\n"
    "                       [--json] [--loss TAG] [--grad-norm TAG] [--lr TAG]\n"
    "                       [--task NAME=TAG]... [--class-task NAME]\n"
    "       losslens import --loss FILE [--grad-norm FILE] [--lr FILE] ... [--db PATH]\n"
    "\n"
    "Reads runs as `losslens analyze` does (a CSV; TensorBoard event files\n"
    "events.out.tfevents.*, a run directory or a logdir; TensorBoard or W&B CSV exports;\n"
    "a Hugging Face Trainer's trainer_state.json, its checkpoint or output directory;\n"
    "MLflow's file store mlruns/, an experiment or a run; MLflow's mlflow.db),\n"
    "runs the detectors over each, and stores each run in the run-history database: its\n"
    "series with their wall times, its findings, and where it came from (the run's config:\n"
    "{\"import\": {identity, kind, source, files, series, wall_time, notes...}}).\n"
    "`losslens runs`, `findings`, `metrics`, `compare`, `export` and `serve` then show it\n"
    "next to monitored runs.\n"
    "\n"
    "Importing the same run again (same file contents, or the same rows of an mlflow.db\n"
    "run; same W&B run, series mapping, --classes, --class-task and --optimizer) stores\n"
    "nothing and names the run that holds it; a run whose files changed (e.g. grew) is\n"
    "stored as a new run.\n"
    "A log that grows while it is imported is stored up to the last step diagnosed, with\n"
    "a note.\n"
    "Every file is read in full before anything is written, so a malformed input stores\n"
    "nothing. A run's started/ended times are those of the import; its points keep their\n"
    "original wall times.\n"
    "\n"
    "options:\n"
    "  --db PATH        run-history database, created if missing (default runs.db)\n"
    "  --run NAME       PATH holds one run: store it under NAME (default: its directory,\n"
    "                   file, W&B or MLflow run name); several: import only the run NAME\n"
    "                   (MLflow: its run name or id)\n"
    "  --classes C      number of classes of the classification loss (as in analyze; see\n"
    "                   --class-task)\n" LOSSLENS_OPTIMIZER_OPTION
    "  --json           print {\"imported\":[{\"run\",\"id\",\"status\",\"steps\",\"points\",\n"
    "                   \"findings\"},...]} (status: imported, already imported, "
    "failed)\n" LOSSLENS_INPUT_OPTIONS
    "\n"
    "exit status: 0 every run imported or already there, 1 malformed input, nothing to\n"
    "analyse or a database error (the other runs are still imported), 2 bad usage\n";

namespace {

struct import_result {
  std::int64_t id = 0;
  bool existing = false;
  report_extent extent;  // the rows analysed and stored, and their first and last step
  std::uint64_t points = 0;
  std::vector<finding> findings;
};

// The id of a run already imported with this identity, or 0.
std::int64_t imported_before(const std::string& db, const std::string& identity) {
  std::error_code ec;
  if (!std::filesystem::exists(db, ec)) return 0;
  storage::run_reader reader(db);
  for (const auto& r : reader.runs()) {
    const auto config = nlohmann::json::parse(r.config_json, nullptr, false);
    if (!config.is_object() || !config.contains("import")) continue;
    const auto& imp = config["import"];
    if (imp.is_object() && imp.value("identity", "") == identity) return r.id;
  }
  return 0;
}

import_result import_run(const input_set& inputs, const run_input& run, const std::string& name,
                         const std::string& db, const detector_options& options) {
  // Pass 1: read everything (a malformed file stores nothing) and diagnose.
  double first_wall = std::numeric_limits<double>::quiet_NaN(), last_wall = first_wall;
  std::int64_t lowest_step = std::numeric_limits<std::int64_t>::max();
  std::int64_t last_step = std::numeric_limits<std::int64_t>::min();
  std::unique_ptr<opened_run> opened;
  auto analysis = analyze_run(
      inputs, run, options, "import",
      [&](const sample& s) {
        if (std::isnan(first_wall)) first_wall = s.wall_time;
        last_wall = s.wall_time;
        lowest_step = std::min(lowest_step, s.step);
        last_step = s.step;  // steps increase
      },
      &opened);
  if (lowest_step < 0)
    throw error(run.source + ": step " + std::to_string(lowest_step) +
                ": the run history stores steps from 0 up; shift the steps to import this run");

  // The identity of an import: contents, W&B run, mapping and detector options. A CSV file's
  // bytes are those pass 1 read, and an MLflow database's run is fingerprinted from the rows
  // it read (neither is read again for it, and what is stored is what the identity says).
  const std::string content = inputs.fingerprint(run, opened.get());
  // A run read whole into memory (event files, MLflow, a Trainer's log) is stored from what
  // pass 1 read: not read (and parsed) again, and what is stored is what was diagnosed. A CSV
  // streams, and is read again below.
  if (opened && opened->rewind)
    opened->rewind();
  else
    opened.reset();
  const std::string identity =
      content + "|run=" + run.csv_run + "|series=" + analysis.series.dump() +
      "|classes=" + std::to_string(options.chance_level.num_classes) +
      // Given, it changes the advice stored (older imports: none).
      (options.optimizer == optimizer_kind::unknown
           ? std::string()
           : std::string("|optimizer=") + to_string(options.optimizer)) +
      // The same (older imports: none).
      (inputs.options().class_task.empty() ? std::string()
                                           : "|class_task=" + inputs.options().class_task);
  import_result out;
  out.extent = analysis.extent;
  out.findings = analysis.findings;
  if ((out.id = imported_before(db, identity)) != 0) {
    out.existing = true;
    return out;
  }

  // Pass 2: store the points, then the findings.
  if (!opened) opened = inputs.open(run);
  const char* kinds[] = {"csv",    "tensorboard-csv", "tfevents", "hf-trainer-state",
                         "mlflow", "mlflow-db"};
  nlohmann::json config = {{"import",
                            {{"identity", identity},
                             {"kind", kinds[int(run.kind)]},
                             {"source", run.source},
                             {"files", run.files},
                             {"wandb_run", run.csv_run},
                             {"series", analysis.series},
                             {"classes", options.chance_level.num_classes},
                             {"steps", analysis.extent.rows},
                             {"wall_time", {{"first", first_wall}, {"last", last_wall}}},
                             {"notes", analysis.notes}}}};
  if (!run.run_id.empty()) config["import"]["mlflow_run"] = run.run_id;
  if (!inputs.options().class_task.empty())
    config["import"]["class_task"] = inputs.options().class_task;
  storage::run_options ro;
  ro.name = name;
  ro.schema = opened->schema;
  ro.config_json = config.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  storage::run_writer w(db, ro);
  out.id = w.run_id();
  try {
    using handle = storage::run_writer::series_handle;
    // The writer's handles follow the schema's series layout.
    const series_layout layout(opened->schema);
    const handle loss = handle(layout.loss()), grad = handle(layout.grad_norm()),
                 lr = handle(layout.lr()), accuracy = handle(layout.accuracy());
    std::vector<handle> tasks, params;
    for (std::size_t t = 0; t < opened->schema.tasks.size(); ++t)
      tasks.push_back(handle(layout.task(t)));
    for (std::size_t p = 0; p < opened->schema.params.size(); ++p)
      params.push_back(handle(layout.param(p)));
    const sample* cur = nullptr;
    // An import waits for the writer instead of dropping points (try_append, then flush).
    auto put = [&](handle h, const std::optional<double>& v) {
      if (!v) return;
      while (!w.try_append(h, cur->step, cur->wall_time, *v))
        if (!w.flush()) throw error(db + ": writing failed: " + w.stats().last_error);
      ++out.points;
    };
    sample s;
    bool grew = false;
    while (opened->next(s)) {
      // A log still being written has more steps now than pass 1 diagnosed: the run stored is
      // the one its findings describe.
      if (s.step > last_step) {
        grew = true;
        break;
      }
      cur = &s;
      put(loss, s.loss);
      for (std::size_t i = 0; i < tasks.size() && i < s.task_losses.size(); ++i)
        put(tasks[i], s.task_losses[i]);
      put(grad, s.grad_norm);
      for (std::size_t i = 0; i < params.size() && i < s.param_grad_norms.size(); ++i)
        put(params[i], s.param_grad_norms[i]);
      put(lr, s.lr);
      put(accuracy, s.accuracy);
    }
    for (const auto& f : analysis.findings) w.record_finding(f);
    nlohmann::json detail = {{"source", run.source}, {"points", out.points}};
    if (grew) {
      detail["grew_after_step"] = last_step;
      std::fprintf(stderr,
                   "losslens import: %s: the log grew while it was imported: the steps after "
                   "%lld are not stored (import it again once the run has ended)\n",
                   run.name.c_str(), static_cast<long long>(last_step));
    }
    w.record_event("import", detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (!w.flush()) throw error(db + ": writing failed: " + w.stats().last_error);
    const auto st = w.stats();
    if (st.written != out.points || st.rejected != 0 || st.dropped != 0)
      throw error(db + ": stored " + std::to_string(st.written) + " of " +
                  std::to_string(out.points) + " points (" + std::to_string(st.rejected) +
                  " rejected, " + std::to_string(st.dropped) + " dropped)");
  } catch (const error& e) {
    w.finish(storage::run_status::crashed);
    throw error(std::string(e.what()) + "; run " + std::to_string(out.id) +
                " is incomplete and marked crashed");
  }
  w.finish();
  return out;
}

std::string findings_text(const std::vector<finding>& findings) {
  if (findings.empty()) return "no findings";
  const finding* worst = &findings[0];
  for (const auto& f : findings)
    if (f.level > worst->level) worst = &f;
  return std::to_string(findings.size()) + (findings.size() == 1 ? " finding" : " findings") +
         ", worst " + std::string(to_string(worst->level)) + " " + worst->kind + " @ step " +
         std::to_string(worst->first_step);
}

}  // namespace

int run_import(int argc, char** argv) {
  auto value_options = input_value_options;
  value_options.insert(value_options.end(), {"db", "classes", "optimizer"});
  const auto args = parse_args(argc, argv, 1, value_options, {"json"});
  if (args.positional.size() > 1) throw usage_error("expected one PATH");
  const auto io = parse_input_options(args);
  if (args.positional.empty() && io.files.empty())
    throw usage_error(
        "missing PATH (a CSV, an event file, a trainer_state.json, an mlflow.db or a directory of "
        "runs)");
  detector_options opts;
  opts.chance_level.num_classes = static_cast<int>(args.get_int("classes", 0, 2, 1'000'000'000));
  opts.optimizer = parse_optimizer_option(args);
  const std::string db = args.get("db", "runs.db");

  const input_set inputs(args.positional.empty() ? "" : args.positional[0], io,
                         /*buffer_stdin=*/true);
  std::vector<run_input> runs = inputs.runs();
  std::string rename;
  if (!io.run.empty()) {
    if (runs.size() == 1)
      rename = io.run;
    else
      runs = select_runs(runs, io.run);
  }
  bool failed = false;
  auto results = nlohmann::json::array();
  for (const auto& run : runs) {
    const std::string name = rename.empty() ? run.name : rename;
    try {
      const auto r = import_run(inputs, run, name, db, opts);
      results.push_back({{"run", name},
                         {"id", r.id},
                         {"status", r.existing ? "already imported" : "imported"},
                         {"steps", r.extent.rows},
                         {"points", r.points},
                         {"findings", r.findings.size()}});
      if (args.has("json")) continue;
      if (r.existing)
        std::printf(
            "%s: already imported as run %lld (same contents, series and options): "
            "nothing stored\n",
            name.c_str(), (long long)r.id);
      else
        std::printf("imported %s as run %lld: %s, %llu points, %s\n", name.c_str(), (long long)r.id,
                    extent_text(r.extent).c_str(), (unsigned long long)r.points,
                    findings_text(r.findings).c_str());
    } catch (const error& e) {
      failed = true;
      std::fprintf(stderr, "losslens import: %s\n", e.what());
      results.push_back({{"run", name}, {"status", "failed"}, {"error", e.what()}});
    }
    std::fflush(stdout);
  }
  if (args.has("json"))
    std::printf("%s\n", nlohmann::json{{"imported", results}}
                            .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                            .c_str());
  return failed ? 1 : 0;
}

}  // namespace losslens::cli
