// `losslens analyze`: run the detectors offline over a CSV, TensorBoard event files,
// TensorBoard / W&B CSV exports, a Hugging Face Trainer's trainer_state.json or MLflow's
// file store or SQLite store.

#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "args.hpp"
#include "commands.hpp"
#include "losslens/error.hpp"
#include "losslens/report.hpp"
#include "run_input.hpp"

namespace losslens::cli {

// The --all text below names the spans kept per incident.
static_assert(finding::max_spans == 64,
              "update the --all text of analyze_usage and findings_usage");

const std::string_view analyze_usage =
    "usage: losslens analyze PATH [--classes C] [--optimizer NAME] [--all] [--json]\n"
    "                        [--fail-on LEVEL] [--run NAME] [--loss TAG] [--grad-norm TAG]\n"
    "                        [--lr TAG] [--task NAME=TAG]... [--class-task NAME]\n"
    "       losslens analyze --loss FILE [--grad-norm FILE] [--lr FILE] [--task NAME=FILE] ...\n"
    "\n"
    "Runs every detector over a run's per-step numbers and prints the findings. PATH is\n"
    "  - a CSV file (- for standard input): losslens' layout, TensorBoard's \"download CSV\"\n"
    "    (Wall time,Step,Value: one tag per file) or W&B's export (\"Step\",\"<run> - <key>\",\n"
    "    ...; several runs in one file are analysed one by one);\n"
    "  - a TensorBoard event file (events.out.tfevents.*), a run directory holding event\n"
    "    files, or a logdir: every directory below it with event files is a run, as\n"
    "    TensorBoard's --logdir sees it;\n"
    "  - a directory of TensorBoard CSV exports (run-<run>-tag-<tag>.csv: one run per <run>);\n"
    "  - a Hugging Face Trainer's trainer_state.json (any .json file), a checkpoint\n"
    "    directory holding one, or the Trainer's output directory (its latest\n"
    "    checkpoint-<step>/): the log_history, one entry per logged step (loss, grad_norm,\n"
    "    learning_rate; NaN and Infinity as Python writes them; the summary entry written\n"
    "    when training ends is left out);\n"
    "  - MLflow's file store: mlruns/, an experiment or a run directory (every run below\n"
    "    it; metrics/<key> files of \"<timestamp ms> <value> <step>\" lines; a last line\n"
    "    without a line end, still being written, is left out with a note);\n"
    "  - MLflow's SQLite store: mlflow.db (MLflow 3.7's default), the directory holding it,\n"
    "    or the tracking URI sqlite:///FILE (every run not deleted; opened read-only).\n"
    "Or give the TensorBoard CSV exports of one run series by series with --loss FILE etc.\n"
    "\n"
    "Tags and columns are mapped to series case-insensitively: loss, train/loss, Loss/train,\n"
    "train_loss -> loss; train/loss_<task>, loss/<task>, <task>_loss -> loss/<task>;\n"
    "grad_norm, train/grad_norm, gradients/global_norm -> grad_norm; lr, learning_rate,\n"
    "lr-<optimizer> -> lr; one LR per param group (Lightning's lr-AdamW/pg1, lr-AdamW/pg2)\n"
    "-> the first is lr, the others lr/<group>: advice quotes the range of all of them;\n"
    "accuracy, acc -> accuracy. Validation and test curves (val, eval, test...) are not\n"
    "used. How tags were mapped, unused tags (in one line) and notes go to standard error;\n"
    "a run of fewer than 300 steps (chance_level's warmup and patience) gets a note that\n"
    "most rules first need more history.\n"
    "A run in which no series is a loss or a gradient norm, or without data rows, is an\n"
    "error (exit 1) that says what was seen.\n"
    "\n"
    "A finding is an incident (every episode of one kind on one series), printed as one\n"
    "block; its first line counts the episodes when there are several, e.g.\n"
    "  WARNING  loss_spike  steps 377-15020  loss  (12 episodes)\n"
    "a `preceded by:` line names the earlier incident it follows, and `also:` lines the\n"
    "findings that are other signs of the same state (chance_level beside the\n"
    "vanishing_gradients of one collapse), listed there instead of as blocks of their own.\n"
    "Several runs are printed one after the other, each under a `== run NAME (SOURCE)`\n"
    "line.\n"
    "\n"
    "CSV (losslens' layout): a header row naming `step` (increasing whole numbers;\n"
    "  without one, Keras' `epoch`) and any of loss, loss/<task>, grad_norm, grad_norm/<name>,\n"
    "  lr, accuracy, wall_time. Empty cells are missing; nan, inf and -inf are values. Rows\n"
    "  that repeat the step of the row before them add their values to it (PyTorch\n"
    "  Lightning writes a step's LR, training and validation metrics on rows of their own).\n"
    "  The first value read for a step is used: rows whose step goes back (a resumed run\n"
    "  appended to the log) are skipped until they pass the last step read, and so is\n"
    "  another value at a step already read, with a note on stderr. Lightning's\n"
    "  `<name>_step` columns are the steps' values, `<name>_epoch` ones (epoch means) are\n"
    "  not used. A last line without a line end that is not a whole row (a log still being\n"
    "  written) is left out, with a note.\n"
    "Event files: scalars from simple_value and from scalar float/double tensors; every\n"
    "  record's CRC32C is checked; a cut-short last record (a run still being written) is\n"
    "  read up to the last complete record, with a note.\n"
    "\n"
    "options:\n"
    "  --classes C      number of classes of a classification loss (2 = binary): the first\n"
    "                   loss is then expected near ln C (initial_loss) and a loss stuck\n"
    "                   there is reported (chance_level, which otherwise infers C from the\n"
    "                   level); with several task losses, see "
    "--class-task\n" LOSSLENS_OPTIMIZER_OPTION
    "  --all            also list each incident's episodes, one line each:\n"
    "                     episode 3: steps 900-912 warning peak 14.2\n"
    "                   (the first 32 and the latest 32 are kept; a line counts the others)\n"
    "  --json           print {\"findings\":[...],\"steps\":ROWS,\"first_step\":A,\n"
    "                   \"last_step\":B,\"run\":NAME,\"source\":PATH,\n"
    "                   \"series\":{TAG:SERIES},\"notes\":[...]} instead of the readable\n"
    "                   report (each finding with episodes, spans, cause_id, cause,\n"
    "                   symptom_of_id and symptom_of; the notes are those printed on\n"
    "                   stderr but the mapping line); several runs:\n"
    "                   {\"runs\":[{...},...]}, a run that failed with its \"error\"\n"
    "  --fail-on LEVEL  exit 3 when a finding of LEVEL (info, warning, error) or worse exists\n"
    "  --run NAME       only the run NAME (of a logdir, a W&B export with several runs, or\n"
    "                   MLflow's runs: their run name or id)\n" LOSSLENS_INPUT_OPTIONS
    "\n"
    "exit status: 0 analysed, 1 unreadable or malformed input (FILE:LINE or FILE: offset N,\n"
    "and the reason) or nothing to analyse, 2 bad usage, 3 --fail-on hit\n";

namespace {

nlohmann::json run_json(const run_input& run, const run_analysis& r) {
  auto j = findings_report_json(r.findings, r.extent.rows);
  j["first_step"] = r.extent.first_step;
  j["last_step"] = r.extent.last_step;
  j["run"] = run.name;
  j["source"] = run.source;
  j["series"] = r.series;
  j["notes"] = r.notes;
  return j;
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

}  // namespace

int run_analyze(int argc, char** argv) {
  auto value_options = input_value_options;
  value_options.insert(value_options.end(), {"classes", "fail-on", "optimizer"});
  const auto args = parse_args(argc, argv, 1, value_options, {"json", "all"});
  if (args.positional.size() > 1) throw usage_error("expected one PATH");
  const auto inputs_options = parse_input_options(args);
  if (args.positional.empty() && inputs_options.files.empty())
    throw usage_error(
        "missing PATH (a CSV, an event file, a trainer_state.json, an mlflow.db or a directory of "
        "runs)");
  int fail_on = -1;
  if (auto lvl = args.get("fail-on"); !lvl.empty()) {
    try {
      fail_on = static_cast<int>(parse_severity(lvl));
    } catch (const error& e) {
      throw usage_error(std::string("--fail-on: ") + e.what());
    }
  }
  detector_options opts;
  opts.chance_level.num_classes = static_cast<int>(args.get_int("classes", 0, 2, 1'000'000'000));
  opts.optimizer = parse_optimizer_option(args);

  const input_set inputs(args.positional.empty() ? "" : args.positional[0], inputs_options,
                         /*buffer_stdin=*/false);
  const auto runs = select_runs(inputs.runs(), inputs_options.run);
  const bool json = args.has("json");

  if (runs.size() == 1) {  // one run: errors go to main() (exit 1)
    const auto& run = runs[0];
    const auto r = analyze_run(inputs, run, opts, "analyze");
    if (json) {
      print_json(run_json(run, r));
    } else {
      std::fputs(format_findings_text(r.findings, r.extent, args.has("all")).c_str(), stdout);
    }
    return fail_on >= 0 && worst_severity(r.findings) >= fail_on ? 3 : 0;
  }

  // Several runs: each one analysed and printed; a failed run is reported and the others go on.
  int worst = -1;
  bool failed = false;
  auto all = nlohmann::json::array();
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const auto& run = runs[i];
    try {
      const auto r = analyze_run(inputs, run, opts, "analyze");
      worst = std::max(worst, worst_severity(r.findings));
      if (json) {
        all.push_back(run_json(run, r));
      } else {
        std::printf("%s== run %s  (%s)\n%s", i ? "\n" : "", run.name.c_str(), run.source.c_str(),
                    format_findings_text(r.findings, r.extent, args.has("all")).c_str());
      }
    } catch (const error& e) {
      failed = true;
      std::fprintf(stderr, "losslens analyze: %s\n", e.what());
      if (json)
        all.push_back({{"run", run.name}, {"source", run.source}, {"error", e.what()}});
      else
        std::printf("%s== run %s  (%s)\nnot analysed: %s\n", i ? "\n" : "", run.name.c_str(),
                    run.source.c_str(), e.what());
    }
    std::fflush(stdout);
  }
  if (json) print_json({{"runs", all}});
  if (failed) return 1;
  return fail_on >= 0 && worst >= fail_on ? 3 : 0;
}

}  // namespace losslens::cli
