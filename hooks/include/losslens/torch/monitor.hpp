#pragma once
/// \file monitor.hpp
/// Attach losslens to a LibTorch trainer with one call; report each step with one more.
///
/// \code
/// auto lens = losslens::attach(model, optimizer, {.run = "fmnist-cnn", .db = "runs.db"});
/// for (auto& batch : loader) {
///   optimizer.zero_grad();
///   auto loss = torch::nn::functional::cross_entropy(model->forward(batch.data), batch.target);
///   loss.backward();
///   optimizer.step();
///   lens.step(loss);   // or lens.step({{"cls", l_cls}, {"box", l_box}}, total)
/// }
/// \endcode

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "losslens/detector_options.hpp"
#include "losslens/finding.hpp"
#include "losslens/finding_router.hpp"
#include "losslens/sample.hpp"
#include "losslens/sink.hpp"
#include "losslens/step_guard.hpp"
#include "losslens/storage/run_writer.hpp"
#include "losslens/torch/red_flags.hpp"

namespace c10d {
class ProcessGroup;
}

namespace losslens {

namespace hooks::detail {
class monitor_state;
}
struct distributed_options;

/// Saving the batch behind a non_finite or loss_spike finding (monitor::capture): a `.pt` file
/// (torch::pickle_save; Python's torch.load reads it) with the batch, its step, the seed and the
/// finding's id, next to the run database. See docs/monitor.md, "Replaying the bad step".
struct replay_options {
  std::string dir;                                  ///< "" = "<db>.replay" next to db (no db: none)
  int max_files = 4;                                ///< files per run
  std::int64_t max_bytes = std::int64_t{64} << 20;  ///< per file: a larger batch keeps its
                                                    ///< leading rows
  int depth = 4;         ///< suspicious batches on their way to the monitor thread (held by
                         ///< reference; a full ring drops the next)
  int max_suspects = 4;  ///< suspicious batches the monitor thread holds while their finding
                         ///< may come
  std::int64_t hold_steps = 600;  ///< ... for this many steps (a spike is published up to
                                  ///< ~512 steps late, once it is known not to recover)
};

/// Options of attach().
struct attach_options {
  std::string run = "run";         ///< run name (stored with the run)
  std::string db;                  ///< SQLite run-history file; "" = do not store. The live
                                   ///< dashboard is a sink of its own: monitor::add_sink() with
                                   ///< losslens::dashboard::live_dashboard (losslens::dashboard)
  std::string config_json = "{}";  ///< the trainer's configuration, stored with the run
  /// When db cannot be used at attach (missing directory, read-only, corrupt or newer
  /// database): false (default) says so once on stderr, reports stats().storage_degraded and
  /// trains on, retrying to open db every db_retry_interval (the run is then recorded from that
  /// step on); true makes attach throw losslens::error instead.
  bool require_db = false;
  std::chrono::milliseconds db_retry_interval{5000};  ///< 0: never retry opening db
  storage::writer_options db_writer;  ///< flush interval, memory held while writes fail, ...

  detector_options detectors;      ///< rule parameters (e.g. detectors.chance_level.num_classes)
  std::vector<std::string> tasks;  ///< task names, if known up front (else taken from step())

  /// Number of lens.step() calls per optimizer step when gradients are accumulated on purpose
  /// over micro-batches; missing_zero_grad is only checked at the first micro-batch.
  int accumulation_steps = 1;

  red_flag_options red_flags;  ///< sampling and thresholds of the check_*() input checks
  replay_options replay;       ///< where and how many batches capture() may save

  bool guard = false;  ///< step() returns skip decisions for non-finite/spiking steps
  guard_options guard_settings;

  /// Called on the monitor thread with every sample the detectors see (raw numbers for custom
  /// logging or tests); keep it short.
  std::function<void(const sample&)> on_sample;

  std::size_t queue_capacity = 1024;       ///< samples buffered for the monitor thread
  bool log_findings = true;                ///< one line per new finding on stderr (the log sink)
  severity log_level = severity::warning;  ///< lowest severity printed
  /// Where the monitor's lines go (new findings, storage trouble, dropped samples): any
  /// thread may call it; empty = "losslens: <line>" on stderr.
  log_sink log;
  /// Unused since the monitor thread is woken by the training thread instead of polling; kept
  /// so that code setting it still builds.
  std::chrono::milliseconds poll_interval{5};
};

/// Extra per-step numbers.
struct step_extras {
  std::optional<double> accuracy{};  ///< batch accuracy in [0, 1]
  /// Effective weights of the task losses in the total (e.g. task_weighting::weights()), so
  /// task_dominance judges weighted shares; empty = all 1.
  std::span<const double> task_weights{};
  /// Per-task gradient norms on the shared parameters (gradnorm_weighting::task_grad_norms()).
  std::span<const double> task_grad_norms{};
  /// Gradient clipping: the total norm before clipping (what clip_grad_norm_ returns) and the
  /// max_norm it clipped to; clipping_saturated then judges how much the clip removes.
  std::optional<double> clip_norm{};
  std::optional<double> max_norm{};
};

/// Counters of the hand-off between the training thread and the monitor thread.
struct monitor_stats {
  std::uint64_t steps = 0;      ///< step() calls accepted
  std::uint64_t queued = 0;     ///< samples handed to the monitor thread
  std::uint64_t processed = 0;  ///< samples the detectors have seen
  std::uint64_t dropped = 0;    ///< samples dropped because the queue was full
  std::uint64_t rejected = 0;   ///< step() calls whose tensors could not be read (see stderr)
  std::uint64_t findings = 0;   ///< findings opened so far
  std::size_t hooks = 0;        ///< gradient hooks currently registered
  std::int64_t run_id = 0;      ///< the run's id in options.db once created (0: none yet)
  int dashboard_port = 0;       ///< port a live_dashboard sink listens on (0: not serving)
  bool storage_failed = false;  ///< db could not be opened (yet; see stderr); training goes on
  /// Nothing reaches db right now: it cannot be opened, or writes fail (disk full, I/O error).
  /// Points are held in memory (up to db_writer.max_pending_rows) and retried; see stderr.
  bool storage_degraded = false;
  std::uint64_t points_written = 0;  ///< points committed to db
  std::uint64_t points_lost = 0;     ///< points db never got (writer queue full, or given up)
  std::uint64_t write_failures = 0;  ///< failed commits so far
  std::string storage_error;         ///< the last storage error ("" when none)
};

/// A monitor attached to one model and optimizer. Movable, not copyable. Destroying it (or
/// detach()) removes the hooks, drains the queue and joins the monitor thread; the model keeps
/// training unaffected.
///
/// Thread-safety: step() from the training thread only; stats(), findings() and on_finding()
/// from any thread.
class monitor {
 public:
  monitor(monitor&&) noexcept;
  monitor& operator=(monitor&&) noexcept;
  ~monitor();

  /// Reports one training step: reads the loss and the gradient norms (at most one host
  /// synchronisation per device) and hands the numbers to the monitor thread. Call after
  /// backward() (before or after optimizer.step()). Never throws and never blocks; with
  /// options.guard it returns whether to skip the update, else always proceed.
  step_decision step(const torch::Tensor& loss, const step_extras& extras = {}) noexcept;
  /// Same, with named per-task losses and the total that was back-propagated.
  step_decision step(std::initializer_list<std::pair<std::string_view, torch::Tensor>> tasks,
                     const torch::Tensor& total, const step_extras& extras = {}) noexcept;
  step_decision step(const std::vector<std::pair<std::string, torch::Tensor>>& tasks,
                     const torch::Tensor& total, const step_extras& extras = {}) noexcept;

  /// Records a task's loss for the next step() and returns it unchanged, so the loss is named
  /// where it is computed: `auto total = lens.loss("cls", l_cls) + lens.loss("box", l_box);
  /// ...; lens.step(total);`. Up to 16 tasks per step; never throws.
  const torch::Tensor& loss(std::string_view task, const torch::Tensor& value) noexcept;

  /// Input red flags, sampled every options.red_flags.every_n_steps steps (see red_flags.hpp):
  /// the findings go through the monitor (stderr, on_finding, the run history). Throws
  /// losslens::error on a wrong shape or dtype, saying what was expected.
  void check_class_logits(std::string_view task, const torch::Tensor& logits,
                          const torch::Tensor& target, std::int64_t ignore_index = -100);
  void check_binary_logits(std::string_view task, const torch::Tensor& logits,
                           const torch::Tensor& target);
  void check_regression(std::string_view task, const torch::Tensor& pred,
                        const torch::Tensor& target);
  void check_probabilities(std::string_view task, const torch::Tensor& probs,
                           const torch::Tensor& target);
  /// sum_reduction: the reduced loss of a batch and its size (no tensors, always checked).
  void check_loss_scale(std::string_view task, double loss, std::int64_t batch_size);
  /// The checker itself (its findings also reach the monitor).
  red_flag_checker& red_flags();

  /// Keeps this step's batch, by reference (no copy, no device transfer), until step(): when
  /// the step's loss or gradient norm is non-finite or spikes against its running median, the
  /// batch goes on to the monitor thread, else it is let go. When a non_finite or loss_spike
  /// finding opens on that step, the batch is saved as a .pt file next to the database
  /// (options.replay) and a replay_saved event names it (`losslens findings` shows it). Call
  /// it once per step, before step(). Training thread; never throws, never blocks.
  void capture(const torch::Tensor& inputs, const torch::Tensor& targets) noexcept;

  /// Calls cb(finding, is_new) on the monitor thread when a finding opens (is_new) or grows.
  /// Keep it short; to act in the training loop, set an atomic flag there. Replaces the
  /// previous callback (of this and of on_new_finding).
  void on_finding(std::function<void(const finding&, bool is_new)> cb);
  /// Calls cb(finding) on the monitor thread once per new incident (losslens::to_line(f) is
  /// the line stderr shows). Replaces the previous callback.
  void on_new_finding(std::function<void(const finding&)> cb);
  /// Adds a sink (the live dashboard, a logger of your own): it hears the run's samples,
  /// incidents and events on the monitor thread (see losslens/sink.hpp); added before the
  /// first step it hears the whole run. The monitor owns it until detach. Never throws but
  /// bad_alloc.
  void add_sink(std::unique_ptr<sink> s);

  monitor_stats stats() const noexcept;
  /// A copy of the findings so far (current as of the last processed sample).
  std::vector<finding> findings() const;
  /// Waits until every queued sample has been processed (for tests and end-of-run reports).
  void wait_idle() const;
  /// Removes the hooks, drains the queue, joins the thread. Idempotent; never throws.
  void detach() noexcept;

 private:
  friend monitor attach_module(torch::nn::Module&, torch::optim::Optimizer&, attach_options);
  friend monitor attach_distributed(torch::nn::Module&, torch::optim::Optimizer&,
                                    const c10::intrusive_ptr<c10d::ProcessGroup>&, attach_options,
                                    distributed_options);  // losslens/torch/distributed.hpp
  explicit monitor(std::unique_ptr<hooks::detail::monitor_state> state);
  std::unique_ptr<hooks::detail::monitor_state> state_;
};

/// Attaches to a module: registers a gradient hook on every parameter that requires grad and
/// starts the monitor thread. Throws losslens::error when the module has no trainable
/// parameters or an option is invalid, and, with options.require_db, when options.db cannot be
/// written (missing directory, read-only, corrupt or newer database; without require_db that is
/// reported once and retried). The run is created in options.db when the first step arrives
/// (its task names are then known).
monitor attach_module(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                      attach_options options = {});

/// attach_module() for a module holder (`torch::nn::Linear`, a TORCH_MODULE) or a
/// std::shared_ptr to a module.
template <class ModuleRef>
monitor attach(ModuleRef& model, torch::optim::Optimizer& optimizer, attach_options options = {}) {
  return attach_module(*model, optimizer, std::move(options));
}

}  // namespace losslens
