#pragma once
// Replay files: the batch behind a non_finite or loss_spike finding, saved as a .pt file next to
// the run database. The training thread keeps the latest batch by reference and, after the
// step, judges the step's loss and gradient norm with a step_guard (non-finite, or a spike
// against a running median): the batch of a suspicious step goes by reference into a bounded
// ring (a full ring drops it), every other batch is let go. Everything else runs on the monitor
// thread as a sink: it holds the suspicious batches for a while and writes one when a finding
// of those kinds names its step.

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "losslens/sink.hpp"
#include "losslens/step_guard.hpp"
#include "losslens/torch/monitor.hpp"

namespace losslens::hooks::detail {

class replay_sink final : public sink {
 public:
  /// Throws losslens::error on invalid options.
  explicit replay_sink(replay_options options);
  ~replay_sink() override;

  /// Training thread: the batch of the coming step (kept by reference until the next call).
  void capture(const at::Tensor& inputs, const at::Tensor& targets) noexcept;
  /// Training thread, in step `step` before its sample is queued (with the step's loss and
  /// total gradient norm): hands the captured
  /// batch (if any) to the monitor thread when the step looks suspicious, else lets it go.
  /// Never blocks; drops it when the ring is full.
  void offer(std::int64_t step, double loss, double grad_norm, bool has_norm) noexcept;
  /// Batches dropped because the monitor thread was behind.
  std::uint64_t dropped() const noexcept { return dropped_.load(); }

  void on_start(const run_start& run, sink_context& ctx) override;
  void on_sample(const sample& s) override;
  void on_finding(const finding& incident, bool is_new) override;
  void on_event(const run_event& e) override;
  void on_finish(std::uint64_t steps, std::int64_t last_step) override;

 private:
  struct batch {
    std::int64_t step = -1;
    at::Tensor inputs, targets;
  };
  /// Moves the ring's batches up to `step` over to the monitor thread's side.
  void take_until(std::int64_t step) noexcept;
  const batch* find(std::int64_t step) const noexcept;
  void save(const finding& f, std::int64_t step) noexcept;

  replay_options o_;
  // The ring between the threads: the training thread writes slot tail % n and publishes tail;
  // the monitor thread empties slot head % n and publishes head.
  std::unique_ptr<batch[]> ring_;
  std::size_t capacity_;
  std::atomic<std::uint64_t> head_{0}, tail_{0}, dropped_{0};
  std::atomic<bool> files_given_up_{false};  // max_files written: hold no more batches
  // Training thread.
  at::Tensor pending_inputs_, pending_targets_;
  step_guard guard_;
  std::int64_t last_step_ = -1;
  bool last_flagged_ = false;  // the previous step was suspicious too

  // Monitor thread.
  sink_context* ctx_ = nullptr;
  std::string dir_;
  std::int64_t run_id_ = 0;
  std::deque<batch> suspects_;  // batches of suspicious steps, kept for hold_steps
  std::map<std::uint64_t, std::int64_t> handled_;  // incident id -> episodes already saved
  struct saved_file {
    std::string path;
    std::int64_t rows = 0, bytes = 0;
    std::uint64_t seed = 0;
  };
  std::map<std::int64_t, saved_file> saved_;  // step -> the file its batch went to
  int files_ = 0;
  bool said_no_dir_ = false, said_failure_ = false;
};

}  // namespace losslens::hooks::detail
