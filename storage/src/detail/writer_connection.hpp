#pragma once
// The SQL side of run_writer: owns the connection, the prepared statements and the rollup
// state of every series, and writes one batch per transaction. Used by one thread at a time.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "detail/point_queue.hpp"
#include "detail/rollup.hpp"
#include "detail/sqlite.hpp"
#include "losslens/storage/run_writer.hpp"

namespace losslens::storage::detail {

class writer_connection {
 public:
  /// Opens path for writing and applies the writer's PRAGMAs; throws losslens::error.
  writer_connection(const std::string& path, const storage::writer_options& options);
  ~writer_connection();

  /// Marks runs whose writer died as crashed, then inserts the run, its series and an
  /// "attach" event. Returns the run id; throws losslens::error.
  std::int64_t start_run(const storage::run_options& run,
                         const std::vector<storage::series_spec>& series);

  /// Points waiting for the next commit (kept across failed commits).
  std::vector<point_record>& batch() noexcept { return batch_; }
  /// Queues findings and events for the next commit.
  void add(std::map<std::uint64_t, finding>&& findings, std::vector<storage::event_info>&& events);
  /// Whether anything besides the heartbeat waits for a commit.
  bool has_pending() const noexcept;
  /// Findings and events waiting for a commit (lost if the writer gives up now).
  std::size_t pending_findings() const noexcept { return findings_.size(); }
  std::size_t pending_events() const noexcept { return events_.size(); }

  /// Writes everything pending in one transaction, with the heartbeat, drop and rejection
  /// events and, when final_status is set, the run's end. On failure nothing is lost from
  /// memory and stats reports it. Never throws. Returns success.
  bool commit(std::uint64_t dropped_total, std::optional<storage::run_status> final_status,
              storage::writer_stats& stats) noexcept;

 private:
  struct series_state {
    std::int64_t db_id = 0;
    std::int64_t last_step = -1;
    bool dirty = false;
    static constexpr std::size_t levels = rollup_levels.size() + 1;  // + total_level
    std::array<storage::bucket_summary, levels> open{};
    std::array<std::int64_t, levels> open_bucket{};
  };
  static int level_at(std::size_t i) noexcept;

  void write_all(std::optional<storage::run_status> final_status, std::uint64_t dropped_total,
                 std::uint64_t& written, std::uint64_t& rejected);
  void add_point(series_state& s, const point_record& r);
  void write_rollup(const series_state& s, std::size_t level, std::int64_t bucket,
                    const storage::bucket_summary& summary);
  void insert_event(std::string_view kind, const std::string& detail, std::int64_t step);
  /// Inserts n points, as many as fit in each of insert_points_ in turn, largest first.
  void insert_rows(const point_record* const* rows, std::size_t n);
  void maybe_checkpoint(storage::writer_stats& stats) noexcept;

  std::string path_;
  storage::writer_options options_;
  db_handle db_;
  std::int64_t run_id_ = 0;
  std::vector<series_state> series_;
  std::vector<point_record> batch_;
  std::map<std::uint64_t, finding> findings_;
  std::vector<storage::event_info> events_;
  std::uint64_t dropped_recorded_ = 0;
  std::uint64_t rejected_total_ = 0;
  std::uint64_t rejected_recorded_ = 0;
  std::uint64_t failures_since_success_ = 0;

  std::array<statement, 3> insert_points_;  // of 256, 16 and 1 rows (see insert_rows)
  statement upsert_rollup_;
  statement upsert_finding_;
  statement insert_event_;
  statement heartbeat_;
  statement finish_run_;
};

}  // namespace losslens::storage::detail
