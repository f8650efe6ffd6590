#pragma once
/// \file report.hpp
/// Human-readable and JSON renderings of a list of findings.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "losslens/finding.hpp"

namespace losslens {

/// What a report covers: `rows` samples analysed, the first at `first_step` and the last at
/// `last_step`. From a count alone (a monitor that saw every step) the steps are 1..rows.
struct report_extent {
  std::int64_t rows = 0;
  std::int64_t first_step = 1;
  std::int64_t last_step = 0;
  report_extent() = default;
  /// rows steps, 1..rows (implicit: a step count is such an extent).
  report_extent(std::int64_t steps) noexcept  // NOLINT(google-explicit-constructor)
      : rows(steps), last_step(steps) {}
  report_extent(std::int64_t rows_, std::int64_t first, std::int64_t last) noexcept
      : rows(rows_), first_step(first), last_step(last) {}
  /// Whether the rows are every step from first_step to last_step (then "N steps" says it all).
  bool every_step() const noexcept;
};

/// "N steps", or "N rows over steps A-B" when the rows are not every step between their first
/// and last (a log written every 100 steps). Thread-safe; throws nothing but std::bad_alloc.
std::string extent_text(const report_extent& extent);

/// A readable report: one block per finding (incident) or a line saying there are none, its
/// first line ending " in " + extent_text(extent). A block is
///   SEVERITY  kind  steps FIRST[-LAST]  series[  (N episodes)]
///     message
///     preceded by: cause          (when f.cause is set)
///     another sign of the ...     (when f.symptom_of is set and that incident is not listed)
///     also: symptom_line(g)       (for each listed g that is another sign of f)
///     evidence: name=value ...    (when there is evidence)
///     rule: name param=value ...
///     fix: advice
/// followed, with `all_episodes`, by the lines of format_episodes_text(f, "  ") and, for each
/// such g with several episodes, "  <g.kind>:" and format_episodes_text(g, "    "). A finding
/// whose symptom_of_id names a listed finding has no block of its own; the first line counts
/// the blocks and says how many were listed under another.
/// Thread-safe (reads only its arguments); throws nothing but std::bad_alloc.
std::string format_findings_text(const std::vector<finding>& findings, const report_extent& extent,
                                 bool all_episodes = false);

/// The lines that relate f to other incidents, each between `indent` and `end`: "preceded
/// by: CAUSE" when f.cause is set, "another sign of SYMPTOM_OF" when f.symptom_of is set
/// (listings show such a finding under that incident instead when they list it). With
/// indent "; " and end "" the clauses of a one-line message (to_line). Throws nothing but
/// std::bad_alloc.
std::string format_relations_text(const finding& f, std::string_view indent,
                                  std::string_view end = "\n");

/// "SEVERITY kind at steps FIRST[-LAST] (series): message" (severity in lower case): a
/// finding listed under the incident it is another sign of. Throws nothing but
/// std::bad_alloc.
std::string symptom_line(const finding& f);

/// One line per stored span of f, each starting with `indent`:
///   episode K: steps FIRST[-LAST] SEVERITY[ peak P]
/// numbered 1..episodes (peak omitted when NaN). When f.episodes exceeds f.spans.size() the
/// spans are the first finding::max_spans / 2 episodes and the latest ones, and a line
///   ... M episodes not kept (episodes A-B)
/// sits between them (or "... M [later ]episodes not kept" after them when only the first
/// ones, or none, were kept). Empty when f has no spans and one episode. Thread-safe; throws
/// nothing but std::bad_alloc.
std::string format_episodes_text(const finding& f, std::string_view indent);

/// {"findings":[to_json(f)...],"steps":steps}
nlohmann::json findings_report_json(const std::vector<finding>& findings, std::int64_t steps);

/// Which finding of a list is listed under which: a finding whose symptom_of_id names another
/// finding of the same group (a run) in the list goes under it, every other one heads a block
/// of its own. `group` tells runs apart in a list of several (0 when there is one).
struct finding_ref {
  std::int64_t group = 0;
  std::uint64_t id = 0;
  std::uint64_t symptom_of_id = 0;
};

/// The nesting of a list of findings (see finding_ref), indexes into that list.
struct finding_nesting {
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  /// Per finding: the index of the finding it is listed under, or none when it heads a block.
  std::vector<std::size_t> host;
  /// Per finding: the indexes of the findings listed under it, in list order.
  std::vector<std::vector<std::size_t>> signs;
  /// How many head a block of their own.
  std::size_t incidents = 0;
};

/// Nests `refs` (O(n log n)). Thread-safe; throws nothing but std::bad_alloc.
finding_nesting nest_findings(const std::vector<finding_ref>& refs);

/// The most severe level among the findings, or -1 when there are none.
int worst_severity(const std::vector<finding>& findings) noexcept;

}  // namespace losslens
