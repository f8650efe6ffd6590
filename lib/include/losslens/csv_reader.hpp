#pragma once
/// \file csv_reader.hpp
/// Streams a CSV file of per-step training numbers into samples (the input of `losslens analyze`).

#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "losslens/sample.hpp"
#include "losslens/tag_mapping.hpp"

namespace losslens {

/// How a CSV is read.
struct csv_options {
  tag_map_options mapping;  ///< which column is which series (explicit rules, then automatic)
  std::string run;          ///< W&B export with several runs: whose columns (empty: the first)
  std::string value_tag;    ///< TensorBoard export: the tag of its Value column (empty: from
                            ///< the file name, see tensorboard_csv_tag)
  /// Sees the input's bytes as they are read, block by block in order from the first byte
  /// (for a checksum of exactly what was parsed), and with n = 0 each time the input's end
  /// is reached. Called on the thread that reads; must not throw.
  std::function<void(const char* bytes, std::size_t n)> on_read;
};

/// The tag of a TensorBoard "download CSV" file: TensorBoard names it
/// `run-<run>-tag-<tag>.csv` (the tag's slashes as underscores), so the part after the last
/// `-tag-`; otherwise the file name without directory and `.csv`.
std::string tensorboard_csv_tag(std::string_view path);

/// Reads a CSV with a header row, in one of three layouts:
/// - losslens' own: `step` (whole numbers, increasing) and any of `loss`,
///   `loss/<task>`, `grad_norm`, `grad_norm/<name>`, `lr`, `accuracy`, `wall_time`;
/// - TensorBoard's export of one tag: `Wall time,Step,Value` (the tag from csv_options);
/// - W&B's export: `"Step","<run> - <key>",...`, several runs in one file; `<key>__MIN` and
///   `<key>__MAX` columns (W&B's bucket bounds) are ignored, `_step` is a step column and
///   `_timestamp` a wall time.
/// Header names are matched case-insensitively, with or without quotes; other column names go
/// through map_tags (so `train/loss`, `Loss/train`, `train_loss`, `learning_rate` are
/// understood). Empty cells are missing values; `nan`, `inf`, `-inf`, `Infinity` are values.
/// Unused columns are summarised in one warning. A UTF-8 byte-order mark and CRLF line ends are
/// accepted. In the TensorBoard and W&B layouts a row with no value for the run is skipped.
/// Rows that repeat the step of the row before them add their values to its sample (PyTorch
/// Lightning writes the LR, the training metrics and the validation metrics of one step on
/// rows of their own). The first value read for a step is the one used: another value in a
/// column that a row of that step already filled, and the rows of steps that go back (a
/// resumed run appended to the log) until they pass the last step read, are skipped and
/// counted in reading_notes(). Memory use does not grow with the file.
///
/// A last line without a line end that is not a whole row (fewer cells than the header, a
/// cell that is not a number, an open quote: a log still being written) is left out with a
/// note in reading_notes(); a whole one is read.
///
/// Every error is a losslens::error whose message starts with "FILE:LINE: ".
/// Thread-safety: one thread at a time.
class csv_reader {
 public:
  /// Opens the file and reads the header. Throws losslens::error.
  explicit csv_reader(const std::string& path, csv_options options = {});
  /// Reads from a stream that outlives the reader; `name` appears in messages. Throws.
  csv_reader(std::istream& in, std::string name, csv_options options = {});
  ~csv_reader();

  /// The task and parameter names found in the header.
  const sample_schema& schema() const noexcept { return schema_; }
  /// Which column became which series (tags: the column names, without a W&B run prefix).
  const tag_mapping& mapping() const noexcept { return mapping_; }
  /// The W&B runs named in the header (`<run> - <key>` columns), in order; empty when none.
  const std::vector<std::string>& runs() const noexcept { return runs_; }
  /// The run being read: options.run, else the first of runs(); empty when runs() is.
  const std::string& run() const noexcept { return run_; }
  /// True for TensorBoard's `Wall time,Step,Value` layout.
  bool tensorboard_layout() const noexcept { return tensorboard_; }
  /// One-line notes: unused columns, W&B bucket-bound columns, tags that lost to another.
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  /// One-line notes about the rows (steps that went back, values skipped at a repeated step),
  /// each starting with "FILE:LINE: " of its first occurrence; complete once next() returned
  /// false.
  const std::vector<std::string>& reading_notes() const noexcept { return reading_notes_; }
  /// Reads the next step into s (cleared first): its row and the rows right after it at the
  /// same step, skipping rows whose step is not above the last one read; false at the end.
  /// Throws losslens::error. The reader looks one row ahead: an error in that row is thrown
  /// by the next call, so the step before it still arrives.
  bool next(sample& s);
  /// Line number of the last row that went into the sample next() returned (the header's
  /// before the first call; the header is line 1 unless blank lines precede it).
  std::int64_t line() const noexcept { return row_line_; }

 private:
  // In this order: parse_row reads the cells of the kinds up to wall_time.
  enum class column_kind { value, wall_time, step, ignored };
  struct column {
    column_kind kind;
    std::string name;
    series_role role = series_role::other;  // value: the series
    std::size_t index = 0;                  // value: the task's or parameter's place
  };

  enum class step_cell : std::uint8_t { whole, empty, bad };

  bool fill();                            // the next chunk; false at the end
  bool read_line(std::string_view& out);  // into chunk_ or buf_, valid until the next call
  bool read_cells();          // the next row into cells_ and row_step_; false at the end
  bool parse_row(sample& s);  // false: a row to skip
  void merge_row(sample& s);  // adds extra_'s values to s
  void add_reading_notes();   // at the end: what was skipped
  void read_header();
  std::string where() const;  // "FILE:LINE: " of the line read last
  [[noreturn]] void fail(const std::string& reason) const;
  bool cut_short(std::string_view reason);  // the last line is an incomplete row: false

  std::unique_ptr<std::ifstream> file_;
  std::istream* in_;
  std::string name_;
  csv_options options_;
  tag_mapping mapping_;
  std::vector<std::string> runs_;
  std::string run_;
  bool tensorboard_ = false;
  bool skip_empty_rows_ = false;
  std::int64_t line_ = 0;
  std::vector<column> columns_;
  sample_schema schema_;
  std::vector<std::string> warnings_;
  std::vector<char> chunk_;  // the bytes read ahead, [pos_, end_) not yet taken
  std::size_t pos_ = 0, end_ = 0;
  std::string buf_;            // a line that spans two chunks
  bool unterminated_ = false;  // the line read last ended the file without a line end
  std::string cut_short_;      // the note for an incomplete last row, until the end
  std::vector<std::string_view> cells_;
  std::size_t step_column_ = 0;
  std::int64_t row_step_ = 0;  // cells_'s step, when row_step_cell_ is whole
  step_cell row_step_cell_ = step_cell::empty;
  bool have_ahead_ = false;         // cells_ holds a row read ahead, not yet parsed
  std::exception_ptr ahead_error_;  // the error of the row read ahead, for the next call
  sample extra_;                    // a row that repeats the step, before it is merged
  std::int64_t row_line_ = 1;
  bool have_prev_step_ = false;
  std::int64_t prev_step_ = 0;
  // What was skipped, for reading_notes_.
  bool going_back_ = false;  // the last row read was skipped for its step
  std::uint64_t restarts_ = 0, rows_skipped_ = 0, values_skipped_ = 0;
  std::int64_t first_restart_line_ = 0, first_restart_from_ = 0, first_restart_to_ = 0;
  std::int64_t first_skipped_line_ = 0;
  std::string first_skipped_;
  std::vector<std::string> reading_notes_;
};

}  // namespace losslens
