#pragma once
/// \file rank_analyzer.hpp
/// Findings that only a multi-rank (data-parallel) view can give: rank_divergence, straggler and
/// desync, computed from small per-rank summaries gathered every few steps. Torch-free.

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "losslens/finding.hpp"

namespace losslens {

namespace core::detail {
class finding_log;
enum class publication : unsigned char;
class rank_rule;
}  // namespace core::detail

/// One rank's numbers at one sync step. NaN means unknown (except for loss and grad_norm,
/// where the flags below say whether a value was non-finite).
struct rank_summary {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double grad_norm = std::numeric_limits<double>::quiet_NaN();  ///< after the all-reduce
  double step_time = std::numeric_limits<double>::quiet_NaN();  ///< seconds of own work
  bool loss_non_finite = false;  ///< the loss was NaN/Inf on this rank
  bool grad_non_finite = false;  ///< the total grad norm was NaN/Inf on this rank
  bool has_grad = false;         ///< grad_norm (or grad_non_finite) is known
  /// Step of the first non-finite loss or grad norm since the previous sync (the flags above
  /// cover the same steps); -1 when none or unknown.
  std::int64_t non_finite_step = -1;
};

/// Rule parameters of rank_analyzer (defaults in docs/distributed.md).
struct rank_options {
  /// An open finding that keeps growing is re-published at most once per this many syncs.
  int update_interval = 16;
  /// `rank_divergence`: a rank's loss at least `loss_ratio` x (or at most 1/loss_ratio x) the
  /// median of the other ranks for `patience` consecutive syncs (needs >= 3 ranks); or a
  /// non-finite loss or grad norm on some ranks but not all (at once, any world size).
  struct rank_divergence_t {
    bool enabled = true;
    double loss_ratio = 3.0;
    int patience = 2;
  } rank_divergence;
  /// `straggler`: a rank's step time at least `ratio` x the median of the others, and at least
  /// `min_excess` seconds more, for `patience` consecutive syncs.
  struct straggler_t {
    bool enabled = true;
    double ratio = 1.5;
    double min_excess = 0.005;
    int patience = 3;
  } straggler;
  /// `desync`: finite grad norms (measured after the gradient all-reduce) that differ across
  /// ranks by more than `tolerance` (relative to the median) for `patience` consecutive syncs.
  struct desync_t {
    bool enabled = true;
    double tolerance = 1e-5;
    int patience = 2;
  } desync;
};

/// Streaming diagnosis over per-rank summaries. Feed one call per sync step, in step order.
///
/// Thread-safety: one thread at a time (the rank-0 monitor thread).
/// Cost: O(world size) per sync; memory fixed after construction, except for the findings.
/// Every finding carries the offending rank as evidence "rank" and its series is
/// "rank/<r>/<loss|grad_norm|step_time>".
class rank_analyzer {
 public:
  using listener = std::function<void(const finding&, bool is_new)>;

  /// Throws losslens::error when world_size < 2 or an option is out of range.
  rank_analyzer(int world_size, rank_options options = {});
  ~rank_analyzer();
  rank_analyzer(rank_analyzer&&) noexcept;
  rank_analyzer& operator=(rank_analyzer&&) noexcept;

  /// Feeds one sync step: ranks[r] is rank r's summary (size must equal world_size, else the
  /// call is ignored and counted). Steps that do not increase are ignored and counted.
  void observe(std::int64_t step, std::span<const rank_summary> ranks);
  /// Sets the listener: called once per new finding and for grown findings at most once per
  /// update_interval syncs.
  void on_finding(listener l);
  /// Publishes every update still held back by update_interval.
  void flush();
  /// All findings (episodes, numbered from 1) so far, with up-to-date messages. The monitor
  /// publishes them into its finding_router, which gives them their run-wide ids.
  std::vector<finding> findings() const;
  /// Syncs accepted, and syncs ignored (bad size or step order).
  std::int64_t syncs() const noexcept { return syncs_; }
  std::int64_t ignored() const noexcept { return ignored_; }
  int world_size() const noexcept { return world_; }

 private:
  static void notify(void* self, const finding& f, core::detail::publication p);

  int world_;
  rank_options options_;
  std::unique_ptr<core::detail::finding_log> log_;
  std::vector<std::unique_ptr<core::detail::rank_rule>> rules_;
  listener listener_;
  std::int64_t syncs_ = 0, ignored_ = 0, last_step_ = 0;
};

}  // namespace losslens
