#pragma once
// The multi-rank part of a monitor: per-rank summaries gathered to rank 0 through a c10d
// process group, the rank rules, and the per-rank series.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "losslens/rank_analyzer.hpp"
#include "losslens/series_key.hpp"
#include "losslens/torch/distributed.hpp"

namespace losslens::hooks::detail {

/// Summary row per rank: step, loss, grad norm, mean step time, flags, first non-finite step.
/// Owned by a monitor_state. note_grad() runs in gradient hooks, on_step() on the training
/// thread; bind(), poll() and finish() on the monitor thread.
class rank_sync {
 public:
  using record_fn = std::function<void(const finding&, bool is_new)>;
  /// A point of series()[series].
  using point_fn =
      std::function<void(std::size_t series, std::int64_t step, double wall_time, double value)>;
  using log_fn = std::function<void(severity, std::string_view)>;
  /// Summary values per rank, in this order, as doubles.
  static constexpr std::int64_t width = 6;

  /// Throws losslens::error (with what to do) on a null group or invalid options.
  static void validate(const c10::intrusive_ptr<c10d::ProcessGroup>& pg,
                       const distributed_options& o);
  /// Validates; throws losslens::error.
  rank_sync(c10::intrusive_ptr<c10d::ProcessGroup> pg, distributed_options o);
  ~rank_sync();

  int rank() const noexcept { return rank_; }
  int world() const noexcept { return world_; }

  /// A gradient hook fired now (the end of backward is the last one before step()).
  void note_grad() noexcept { last_grad_ns_.store(now_ns(), std::memory_order_relaxed); }
  /// End of step `step` (0-based). Accumulates the window; at a sync step issues the gather.
  /// Never throws, never waits.
  void on_step(std::int64_t step, double loss, std::optional<double> grad_norm) noexcept;

  /// Series rank 0 records: rank/<r>/{loss,grad_norm,step_time} for every rank.
  std::vector<series_key> series() const;
  /// Where rank 0's per-rank points and findings go, and where every rank's messages go.
  /// Before the first on_step() (the training thread reads log too).
  void bind(point_fn point, record_fn record, log_fn log);
  /// Consumes completed gathers in order; true when one was consumed.
  bool poll() noexcept;
  /// Waits up to drain_timeout for gathers in flight, consumes them, flushes the rules.
  void finish() noexcept;

 private:
  /// Rank 0's receive buffer: [world, width] and its row views, made once and reused, since
  /// making `world` views costs about 0.7 us each (0.7 ms per sync at 1000 ranks).
  struct receive_buffer {
    at::Tensor gathered;
    std::vector<std::vector<at::Tensor>> outputs;
    std::atomic<bool> busy{false};  // set by on_step, cleared by consume
  };
  struct pending {
    std::int64_t step;
    c10::intrusive_ptr<c10d::Work> work;
    receive_buffer* buffer = nullptr;  // rank 0 (a reused one, or `spare` when all are busy)
    std::unique_ptr<receive_buffer> spare;
    std::vector<std::vector<at::Tensor>> no_outputs;  // other ranks
    std::vector<at::Tensor> input;
  };
  static std::int64_t now_ns() noexcept;
  void consume(pending& p);
  void make_buffer(receive_buffer& b) const;
  void report_once(const char* what, const std::exception& e) noexcept;

  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  distributed_options o_;
  int rank_ = 0, world_ = 1;

  // Training thread.
  std::atomic<std::int64_t> last_grad_ns_{0};
  std::int64_t prev_end_ns_ = 0;
  double time_sum_ = 0;
  std::int64_t time_count_ = 0;
  bool loss_bad_ = false, grad_bad_ = false;
  std::int64_t bad_step_ = -1;  // first non-finite step of the window
  bool failed_ = false;         // a gather could not be issued: stop issuing on this rank
  std::array<receive_buffer, 4> buffers_;  // rank 0; more in flight fall back to spares

  std::mutex mutex_;  // guards in_flight_ (one push per sync, one swap per poll)
  std::vector<pending> in_flight_;

  // Monitor thread.
  std::vector<pending> taken_;
  std::unique_ptr<rank_analyzer> rules_;  // rank 0 only
  std::vector<rank_summary> summaries_;
  point_fn point_;
  record_fn record_;
  log_fn log_;
  std::atomic<bool> reported_{false};
};

/// The rank_sync for attach_distributed(), or null for a world of one; on ranks other than 0
/// clears options.db (only rank 0 records). Throws losslens::error.
std::unique_ptr<rank_sync> make_rank_sync(const c10::intrusive_ptr<c10d::ProcessGroup>& pg,
                                          distributed_options o, attach_options& options);

}  // namespace losslens::hooks::detail
