#pragma once
// The training-thread half of a monitor: the parameters and their gradient hooks, zero_grad and
// call-order bookkeeping, the gradient-norm pass, and filling the preallocated sample that goes
// to the monitor thread. No locks, no allocation per step, never throws from step().

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/function.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "class_metrics.hpp"
#include "grad_norms.hpp"
#include "losslens/pipeline.hpp"
#include "losslens/step_guard.hpp"
#include "losslens/torch/monitor.hpp"
#include "replay.hpp"
#include "update_check.hpp"

namespace losslens::hooks::detail {

class rank_sync;

/// Gradient hooks registered by all monitors in this process (for leak tests).
std::size_t live_hook_count() noexcept;

/// Thread-safety: step(), loss() and the constructor on the training thread; the hooks on
/// whichever thread autograd runs them (atomics only); counters from any thread.
class step_capture {
 public:
  /// Registers a gradient hook on every parameter of `model` that requires grad. Throws
  /// losslens::error when there is none.
  step_capture(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
               const attach_options& options, rank_sync* dist, pipeline& out);
  ~step_capture();
  step_capture(const step_capture&) = delete;
  step_capture& operator=(const step_capture&) = delete;

  /// The parameters watched, in hook order.
  const std::vector<std::string>& parameter_names() const noexcept { return names_; }

  step_decision step(const std::pair<std::string_view, torch::Tensor>* tasks, std::size_t n_tasks,
                     const torch::Tensor& total, const step_extras& extras) noexcept;
  const torch::Tensor& loss(std::string_view task, const torch::Tensor& value) noexcept;
  /// Removes the hooks; later steps are rejected (counted). Idempotent; never throws.
  void detach() noexcept;
  /// Where the class task's sampled metrics come from (set before the first step): the schema
  /// takes its class task and class count, each sample its latest metrics.
  void set_class_metrics(class_metrics_slot* slot) noexcept { class_metrics_ = slot; }
  /// Where each step's captured batch goes, with the step's loss and gradient norm, before
  /// the step's sample is queued (set before the first step).
  void set_replay(replay_sink* r) noexcept { replay_ = r; }

  std::uint64_t steps() const noexcept { return steps_.load(); }

  std::uint64_t rejected() const noexcept { return rejected_.load(); }
  std::size_t hooks() const noexcept { return hook_count_.load(); }

 private:
  void on_grad(std::size_t i) noexcept;
  /// After backward accumulated parameter i's gradient into .grad: its sum of squares, read
  /// while the gradient is still in cache (CPU float/double gradients only).
  void on_accumulated(std::size_t i) noexcept;
  step_decision capture(const std::pair<std::string_view, torch::Tensor>* tasks,
                        std::size_t n_tasks, const torch::Tensor& total, const step_extras& extras);
  void start(const std::vector<std::string>& tasks);
  int task_index(std::string_view name) const noexcept;
  void read_lrs(sample& s) const noexcept;
  /// A message from the training thread: never throws, even when out of memory.
  void say_once(std::atomic<bool>& said, const char* prefix, const char* what) noexcept;

  torch::nn::Module& model_;
  torch::optim::Optimizer& optimizer_;
  const attach_options& o_;
  rank_sync* dist_;
  pipeline& out_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_;
  std::vector<unsigned> hooks_;
  // Each parameter's gradient accumulator (kept alive, so the post hook stays across steps, as
  // c10d's reducer does) and the key of the post hook on it.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<std::uintptr_t> post_hooks_;
  std::atomic<std::size_t> hook_count_{0};
  std::atomic<bool> detached_{false};

  // Training-thread state (preallocated).
  sample_schema schema_;
  std::vector<at::Tensor> grads_;
  std::vector<double> norms_;
  std::vector<std::uint8_t> has_norm_;
  std::vector<const at::Tensor*> scalar_ptrs_;
  std::vector<double> scalar_values_;
  std::vector<int> task_slot_;
  std::vector<std::uint8_t> from_hook_;  // norms_[i] came from on_accumulated() this step
  norm_engine norms_engine_;
  std::vector<const c10::TensorImpl*> last_impl_;
  std::vector<std::uint32_t> last_version_;
  std::vector<double> last_norm_;
  std::unique_ptr<step_guard> guard_;
  std::unique_ptr<update_check> updates_;  // parameters_not_updated's value checksums
  class_metrics_slot* class_metrics_ = nullptr;
  bool last_skipped_ = false;      // the guard advised skipping the previous step's update
  replay_sink* replay_ = nullptr;  // owned by the pipeline
  bool has_lr_ = false;
  std::array<std::pair<std::string_view, torch::Tensor>, 16> named_;  // loss() since last step
  std::array<std::string, 16> named_names_;                           // owned copies of their names
  std::size_t named_count_ = 0;

  // Written by hooks (possibly on autograd device threads), read at step().
  std::unique_ptr<std::atomic<std::uint8_t>[]> fired_, stale_, check_fresh_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> arrival_;
  std::atomic<std::uint32_t> arrival_counter_{0};
  /// The sum of squares on_accumulated() took, and which .grad tensor at which version it
  /// belongs to (impl null: none). step() uses it while .grad is still that tensor unchanged.
  struct accumulated_norm {
    std::atomic<const c10::TensorImpl*> impl{nullptr};
    std::atomic<std::uint32_t> version{0};
    std::atomic<double> sum_sq{0};
  };
  std::unique_ptr<accumulated_norm[]> accumulated_;

  std::atomic<std::uint64_t> steps_{0}, rejected_{0};
  std::atomic<bool> said_rejected_{false}, said_detached_{false}, said_too_many_{false};
};

}  // namespace losslens::hooks::detail
