#pragma once
// The runs that `losslens analyze` and `losslens import` read: a CSV (losslens', TensorBoard's
// or W&B's layout, W&B files with several runs), TensorBoard event files (one file, a run
// directory, or a logdir of runs), TensorBoard CSV exports (one file per tag) in a directory or
// given per series (--loss FILE), a Hugging Face Trainer's trainer_state.json, runs of MLflow's
// file store (mlruns/) or of its SQLite database (mlflow.db).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/crc.hpp>
#include <nlohmann/json.hpp>

#include "args.hpp"
#include "losslens/csv_reader.hpp"
#include "losslens/detector_options.hpp"
#include "losslens/finding.hpp"
#include "losslens/report.hpp"
#include "losslens/sample_merger.hpp"
#include "losslens/tag_mapping.hpp"
#include "losslens/mlflow_run.hpp"
#include "losslens/storage/mlflow_db.hpp"
#include "losslens/tfevents/scalar_run.hpp"
#include "losslens/trainer_state.hpp"

namespace losslens::cli {

/// The options that say which tag is which series, shared by analyze and import.
struct input_options {
  tag_map_options mapping;      ///< --loss TAG, --grad-norm TAG, --lr TAG, --task NAME=TAG
  std::vector<tag_rule> files;  ///< --loss FILE ...: TensorBoard CSV exports (tag = the path)
  std::string run;              ///< --run NAME
  /// --class-task NAME: the task whose loss --classes counts the classes of (the schema's
  /// class_task); every run read must have that task.
  std::string class_task;
};

/// The value options behind input_options, for parse_args.
extern const std::vector<std::string_view> input_value_options;
/// Their --help lines (a macro so that usage texts are string literals).
#define LOSSLENS_INPUT_OPTIONS                                                                   \
  "  --loss TAG       the tag (or CSV column) that is the loss; other loss-like tags are then\n" \
  "                   not used. A FILE instead of a TAG: a TensorBoard CSV export of the loss\n" \
  "  --grad-norm TAG  the same for the gradient norm (TAG or FILE)\n"                            \
  "  --lr TAG         the same for the learning rate (TAG or FILE)\n"                            \
  "  --task NAME=TAG  the tag (TAG or FILE) that is task NAME's loss (series loss/NAME);\n"      \
  "                   repeatable\n"                                                              \
  "  --class-task NAME in a run with several task losses, the task whose loss is the\n"          \
  "                   classification loss (--classes C): initial_loss and chance_level judge\n"  \
  "                   it against ln C instead of the total, which mixes in the other tasks\n"    \
  "                   (without this flag they are off for such a run, with a note)\n"
/// Reads --loss, --grad-norm, --lr, --task (a value naming an existing file is a TensorBoard
/// CSV export of that series, otherwise a tag) and --run. Throws usage_error.
input_options parse_input_options(const parsed_args& args);

/// --optimizer NAME (analyze, import): the run's optimizer, whose LR range advice quotes;
/// unknown when not given. Throws usage_error for a name parse_optimizer_kind does not know.
optimizer_kind parse_optimizer_option(const parsed_args& args);
/// Its --help lines.
#define LOSSLENS_OPTIMIZER_OPTION                                                                \
  "  --optimizer NAME the run's optimizer (SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS): advice\n" \
  "                   then quotes the LR range the methodology gives for it. Without it,\n"      \
  "                   the one PyTorch Lightning's LR tags name (lr-AdamW, lr-SGD/pg1)\n"

enum class input_kind { csv, tensorboard_csv, tfevents, trainer_state, mlflow, mlflow_db };

/// A run found in the input, not read yet.
struct run_input {
  std::string name;
  input_kind kind = input_kind::csv;
  std::string source;              ///< for messages: a path, "PATH (W&B run X)"...
  std::vector<std::string> files;  ///< what is read ("-": standard input)
  std::vector<std::optional<series_target>>
      forced;           ///< tensorboard_csv: per file, from --loss FILE...
  std::string csv_run;  ///< W&B: the run's columns to read
  std::string run_id;   ///< MLflow: the run's id (mlflow_db: its run_uuid in the database,
                        ///< files[0]; the file store: its directory's name)
};

/// CRC-64/XZ (ECMA-182 polynomial, reflected; Boost.CRC) of the bytes given and their count:
/// the content part of an import's identity. Thread-safety: one thread at a time.
class content_checksum {
 public:
  /// Adds n bytes; n = 0 marks the input's end (more bytes after it clear the mark).
  void add(const void* bytes, std::size_t n) noexcept;
  /// Whether the last call marked the end.
  bool ended() const noexcept { return ended_; }
  /// "crc64:<16 hex digits>:<byte count>".
  std::string text() const;

 private:
  boost::crc_optimal<64, 0x42F0E1EBA9EA3693ULL, ~0ULL, ~0ULL, true, true> crc_;
  std::uint64_t total_ = 0;
  bool ended_ = false;
};

/// A run being read: its mapping, notes and samples.
struct opened_run {
  tag_mapping mapping;             ///< tag -> series (CSV: the columns of the run)
  std::string tag_word;            ///< "column" or "tag", for messages
  std::vector<std::string> notes;  ///< unused tags, cut-short files, ambiguities (one line each)
  sample_schema schema;
  std::function<bool(sample&)> next;
  /// For a run read whole into memory (event files, a Trainer's log, MLflow): makes next()
  /// start again from the first step without reading the input again. Empty for a streamed
  /// CSV (open it again instead).
  std::function<void()> rewind;
  /// A CSV file: the checksum of the bytes next() has read so far, all of them once it
  /// returned false; fingerprint() takes it instead of reading the file again.
  std::unique_ptr<content_checksum> read_checksum;
  // What next() reads from.
  std::vector<std::unique_ptr<csv_reader>> readers;
  std::unique_ptr<std::istringstream> text;
  std::unique_ptr<tfevents::scalar_run> events;
  std::unique_ptr<trainer_state_log> trainer_state;
  std::unique_ptr<mlflow_run> mlflow;
  std::unique_ptr<sample_merger> merger;
};

/// Finds and opens the runs of one command line.
class input_set {
 public:
  /// path: a file, a directory, "-" (standard input) or empty (the --loss FILE options).
  /// buffer_stdin: keep standard input in memory so that a run can be opened more than once.
  /// Throws losslens::error (missing path, nothing readable) or usage_error.
  input_set(const std::string& path, input_options options, bool buffer_stdin);

  /// Every run found, in order.
  const std::vector<run_input>& runs() const noexcept { return runs_; }
  /// The options given at construction.
  const input_options& options() const noexcept { return options_; }
  /// Opens a run; with `checksum`, a CSV file's bytes are checksummed as they are read
  /// (opened_run::read_checksum, for fingerprint()). Throws losslens::error with the file and
  /// the position of a malformed input, or when none of its series is a loss or a gradient
  /// norm (what was seen, and how to map).
  std::unique_ptr<opened_run> open(const run_input& run, bool checksum = false) const;
  /// A content fingerprint of the run's files (CRC-64 of their bytes, and their sizes); of an
  /// MLflow database's run, of its rows. Taken from `opened` when given and it holds them (the
  /// run as open() read it: a CSV file read to its end, an MLflow database's run), else read.
  /// Throws losslens::error (a file that cannot be read).
  std::string fingerprint(const run_input& run, const opened_run* opened = nullptr) const;

 private:
  void add_file(const std::string& path);
  void add_csv_file(const std::string& path, std::vector<std::string>* tensorboard_files);
  void add_trainer_state(const std::string& path);
  void add_mlflow_database(const std::string& path);
  void add_tensorboard_group(std::vector<std::string> files, const std::string& fallback_name);

  input_options options_;
  std::vector<run_input> runs_;
  bool stdin_buffered_ = false;
  std::string stdin_text_;
};

/// A run after the detectors.
struct run_analysis {
  std::vector<finding> findings;
  report_extent extent;   ///< the rows analysed and their first and last step
  nlohmann::json series;  ///< series_of(opened)
  /// The input's notes (unused tags, ambiguities, cut-short files) and those about its rows,
  /// known once they were read (a CSV's steps that went back, values skipped at a repeated
  /// step); analyze_run prints each on stderr.
  std::vector<std::string> notes;
};

/// Opens the run, prints its mapping and notes (print_mapping), runs every detector over it
/// (with the optimizer its LR tags name when options has none, with a note) and prints the notes
/// about its rows; `each` (optional) sees every sample; `keep` (optional) receives the opened
/// run once read (to rewind a run held in memory instead of reading it again), with a CSV
/// file's checksum taken as it was read (opened_run::read_checksum). Throws
/// losslens::error for a malformed input, for a run with nothing to diagnose, and for one with
/// no data rows.
run_analysis analyze_run(const input_set& inputs, const run_input& run,
                         const detector_options& options, std::string_view command,
                         const std::function<void(const sample&)>& each = {},
                         std::unique_ptr<opened_run>* keep = nullptr);

/// Prints how a run's tags were mapped and its notes on stderr, prefixed with "losslens CMD: ".
void print_mapping(std::string_view command, const run_input& run, const opened_run& opened);

/// The run's series names as JSON: {"tag": "series", ...} (used tags only).
nlohmann::json series_of(const opened_run& opened);

/// The runs to read: all of them, or those called `name` (or, for MLflow runs, with that id).
/// Throws losslens::error naming the runs there are when none is called so.
std::vector<run_input> select_runs(const std::vector<run_input>& runs, const std::string& name);

}  // namespace losslens::cli
