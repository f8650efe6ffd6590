#pragma once
/// \file run_event.hpp
/// Things that happen to a run besides its numbers and findings: attach and detach, samples or
/// points dropped, the run history failing and working again. Stored with the run (the `events`
/// table, `/api/runs/{id}/events`) and shown by the dashboard.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "losslens/finding.hpp"

namespace losslens {

/// What happened. Most are stored with the run; run_created and stored only pass between the
/// monitor's sinks (the dashboard learns from them which run to serve and when to read).
enum class event_kind {
  attach,          ///< the monitor started: numbers {parameters}
  detach,          ///< the monitor stopped: {steps}
  drops,           ///< a queue was full: {count, total}, text {source: "monitor" | "writer"}
  storage_opened,  ///< the run history could only be opened late: {first_step}
  points_lost,     ///< points that never reached the run history: {count}
  run_created,     ///< (not stored) the run exists in the history: {run_id}, text {db}
  stored,          ///< (not stored) a commit wrote new points or findings: {run_id}
  note,            ///< anything else: numbers and texts as given
  replay_saved     ///< the batch behind a finding was saved: {finding_id, rows, bytes, seed},
                   ///< texts {path, kind}; its step is the batch's
};
/// "attach", "detach", "drops", "storage_opened", "points_lost", "run_created", "stored",
/// "note", "replay_saved" (the names stored in the run history).
std::string_view to_string(event_kind k) noexcept;

/// One event: its kind, the step it belongs to (-1: none) and its numbers and texts.
struct run_event {
  event_kind kind = event_kind::note;
  std::int64_t step = -1;
  std::vector<named_number> numbers;
  std::vector<std::pair<std::string, std::string>> texts;

  /// A number by name, or NaN.
  double number(std::string_view name) const noexcept;
  /// A text by name, or "".
  std::string_view text(std::string_view name) const noexcept;
};

/// The events the monitor and the run recorder emit, built in one place.
namespace events {
run_event attach(std::size_t parameters);
run_event detach(std::uint64_t steps, std::int64_t last_step);
/// `source`: "monitor" (samples the training thread could not hand over) or "writer" (points
/// the run history's queue refused).
run_event drops(std::string_view source, std::uint64_t count, std::uint64_t total,
                std::int64_t step);
run_event storage_opened(std::int64_t first_step);
run_event points_lost(std::uint64_t count, std::int64_t step);
run_event run_created(std::int64_t run_id, std::string_view db);
run_event stored(std::int64_t run_id);
run_event replay_saved(std::uint64_t finding_id, std::string_view kind, std::int64_t step,
                       std::string_view path, std::int64_t rows, std::int64_t bytes,
                       std::uint64_t seed);
}  // namespace events

}  // namespace losslens
