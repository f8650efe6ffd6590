#pragma once
/// \file distributed.hpp
/// Attach losslens to one rank of a data-parallel run that uses LibTorch's c10d process groups
/// (Gloo, NCCL). Every rank attaches; rank 0 gathers per-rank summaries and records them.
///
/// \code
/// auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo_options);
/// auto lens = losslens::attach(model, optimizer, pg, {.run = "ddp", .db = "runs.db"},
///                              {.sync_every = 10});
/// for (...) {
///   ... loss.backward(); all-reduce and average the gradients with pg; ...
///   optimizer.step();
///   lens.step(loss);  // after the all-reduce
/// }
/// \endcode
/// See docs/distributed.md.

#include <chrono>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "losslens/rank_analyzer.hpp"
#include "losslens/torch/monitor.hpp"

namespace losslens {

/// Options of the multi-rank view.
struct distributed_options {
  /// Per-rank summaries are gathered to rank 0 every this many step() calls. Each sync is one
  /// asynchronous gather of 6 doubles per rank, issued by step() at the same steps on every
  /// rank and collected by the monitor thread later, so the training thread never waits.
  int sync_every = 10;
  /// Device of the summary tensor: CPU for Gloo; the rank's CUDA device for NCCL.
  c10::Device device = c10::Device(c10::kCPU);
  /// At detach, rank 0 waits this long for gathers still in flight (other ranks detaching).
  std::chrono::milliseconds drain_timeout{10000};
  rank_options rules;  ///< rank_divergence, straggler and desync parameters
};

/// Attaches to one rank of a process group: like attach_module(), plus every sync_every steps
/// this rank's loss, grad norm, step time (its own work: from the previous step() to the end
/// of backward, so the wait inside gradient all-reduces is left out) and non-finite flags are
/// gathered to rank 0 with process_group->gather(). Rank 0 runs the multi-rank rules
/// (rank_divergence, straggler, desync), writes series "rank/<r>/loss", "rank/<r>/grad_norm"
/// and "rank/<r>/step_time" to options.db and records the findings with evidence "rank".
/// Other ranks ignore options.db (only rank 0 records; a live_dashboard there serves nothing)
/// and keep their own per-rank findings (stderr, findings()).
///
/// Every rank must attach with the same sync_every and call step() the same number of times,
/// as with any collective. With a world size of 1 this is attach_module().
/// Throws losslens::error when process_group is null, sync_every < 1, an option is invalid
/// (see attach_module() and rank_analyzer), or on rank 0 when options.db cannot be written.
monitor attach_distributed(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           attach_options options = {}, distributed_options distributed = {});

/// attach_distributed() for a module holder or a std::shared_ptr to a module.
template <class ModuleRef>
monitor attach(ModuleRef& model, torch::optim::Optimizer& optimizer,
               const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
               attach_options options = {}, distributed_options distributed = {}) {
  return attach_distributed(*model, optimizer, process_group, std::move(options),
                            std::move(distributed));
}

}  // namespace losslens
