#pragma once
/// \file csv_reader.hpp
/// Streams a CSV file of per-step training numbers into samples (the input of `losslens analyze`).

#include <cstdint>
#include <fstream>
#include <istream>
#include <memory>
#include <string>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens {

/// Reads a CSV with a header row. Columns: `step` (required, whole numbers, strictly
/// increasing) and any of `loss`, `loss/<task>`, `grad_norm`, `grad_norm/<name>`, `lr`,
/// `accuracy`, `wall_time`. Empty cells are missing values; `nan`, `inf`, `-inf` are values.
/// Other columns are ignored with a warning. Memory use does not grow with the file.
///
/// Every error is a losslens::error whose message starts with "FILE:LINE: ".
/// Thread-safety: one thread at a time.
class csv_reader {
 public:
  /// Opens the file and reads the header. Throws losslens::error.
  explicit csv_reader(const std::string& path);
  /// Reads from a stream that outlives the reader; `name` appears in messages. Throws.
  csv_reader(std::istream& in, std::string name);
  ~csv_reader();

  /// The task and parameter names found in the header.
  const sample_schema& schema() const noexcept { return schema_; }
  /// Notes about ignored columns.
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  /// Reads the next data row into s (cleared first); false at the end. Throws losslens::error.
  bool next(sample& s);
  /// Line number of the last line read (1 = header).
  std::int64_t line() const noexcept { return line_; }

 private:
  enum class column_kind { step, wall_time, loss, task, grad_norm, param, lr, accuracy, ignored };
  struct column {
    column_kind kind;
    std::size_t index;  // task or param index
    std::string name;
  };

  bool read_line(std::string& out);
  void read_header();
  [[noreturn]] void fail(const std::string& reason) const;

  std::unique_ptr<std::ifstream> file_;
  std::istream* in_;
  std::string name_;
  std::int64_t line_ = 0;
  std::vector<column> columns_;
  sample_schema schema_;
  std::vector<std::string> warnings_;
  std::string buf_;
  std::vector<std::string_view> cells_;
  bool have_prev_step_ = false;
  std::int64_t prev_step_ = 0;
};

}  // namespace losslens
