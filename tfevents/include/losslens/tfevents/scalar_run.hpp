#pragma once
/// \file scalar_run.hpp
/// Runs of event files as TensorBoard's `--logdir` sees them, read into per-tag series, and fed
/// to the detectors as samples.

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/sample_merger.hpp"
#include "losslens/tag_mapping.hpp"
#include "losslens/tag_series.hpp"

namespace losslens::tfevents {

/// True for a file name TensorBoard reads as an event file (it contains "tfevents").
bool is_event_file_name(std::string_view file_name);

/// One run: its name and its event files, in name order (the order they were written).
struct run_files {
  std::string name;
  std::vector<std::string> files;
};

/// The runs under `path`: an event file is one run (named after its directory); in a directory,
/// every directory (itself included) holding event files is a run, named by its path below
/// `path` (the directory's own name for `path` itself), sorted by name. Symbolic links to
/// directories are not followed. Empty when there are no event files. Throws losslens::error
/// when path does not exist or cannot be listed.
std::vector<run_files> find_runs(const std::string& path);

/// One point of a tag.
using scalar_point = losslens::tag_point;
/// The scalars of one tag, in step order, one point per step.
using tag_series = losslens::tag_series;

/// The scalars of a run's event files, in memory (24 bytes a point).
struct scalar_run {
  std::string name;
  std::vector<std::string> files;
  std::vector<tag_series> tags;      ///< in order of first appearance
  std::uint64_t records = 0;         ///< events read
  std::uint64_t scalars = 0;         ///< scalar values read
  std::uint64_t skipped = 0;         ///< non-scalar summary values skipped
  std::uint64_t files_in_parts = 0;  ///< files read in parts on several threads (read_options)
  std::vector<std::string> notes;    ///< a cut-short last record, steps re-ordered or repeated

  /// The tag names, in order.
  std::vector<std::string> tag_names() const;
};

/// How read_scalar_run reads each file.
struct read_options {
  /// A file is read in parts, one per thread, when each part gets at least this many bytes;
  /// the result is the same as one thread's (see read_scalar_run).
  std::uint64_t part_bytes = std::uint64_t(4) << 20;
  /// Threads (parts) at most for one file; 0: as many as the machine has CPUs.
  unsigned threads = 0;
};
/// Reads every scalar of the run's files (in order). Within a tag, points are sorted by step;
/// when a step repeats (a restarted run that logged it again), the one written last is kept,
/// with a note. Throws losslens::error ("FILE: offset N: reason") on a corrupt record.
///
/// A large file is read in parts on several threads (options), cut where records start and
/// joined in file order, with the same result, notes and errors as reading it in one piece: a
/// tag's plugin named before a part's start decides that part's values of the tag, and a file
/// whose parts do not join up exactly (an error in one, a cut in the middle of a record) is
/// read again in one piece.
scalar_run read_scalar_run(const run_files& run, const read_options& options = {});
/// The same for one event file in a stream (e.g. in memory); `name` appears in messages and is
/// the run's name.
scalar_run read_scalar_run(std::istream& in, const std::string& name);

/// Adds one stream per mapped tag of `run` to `merger` (tags mapping maps; mapping must come
/// from map_tags(run.tag_names(), ...)). `run` must outlive the merger.
void add_streams(sample_merger& merger, const scalar_run& run, const tag_mapping& mapping);

}  // namespace losslens::tfevents
