#include "step_capture.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <tuple>

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "losslens/error.hpp"
#include "rank_sync.hpp"

namespace losslens::hooks::detail {

namespace {
std::atomic<std::size_t> g_live_hooks{0};

/// Runs after a parameter's AccumulateGrad node (the engine calls a node's post hooks right
/// after it, on the same thread).
class accumulated_hook final : public torch::autograd::FunctionPostHook {
 public:
  explicit accumulated_hook(std::function<void()> fn) : fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    fn_();
    return outputs;
  }

 private:
  std::function<void()> fn_;
};
}  // namespace
std::size_t live_hook_count() noexcept { return g_live_hooks.load(); }

step_capture::step_capture(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const attach_options& options, rank_sync* dist, pipeline& out)
    : model_(model), optimizer_(optimizer), o_(options), dist_(dist), out_(out) {
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    names_.push_back(item.key());
    params_.push_back(item.value());
  }
  if (params_.empty())
    throw error(
        "attach: the model has no parameters that require grad; attach to the "
        "module you train (after building its layers)");
  schema_.params = names_;
  const std::size_t n = params_.size();
  grads_.resize(n);
  norms_.resize(n);
  has_norm_.resize(n);
  from_hook_.assign(n, 0);
  accumulated_ = std::make_unique<accumulated_norm[]>(n);
  fired_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  stale_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  check_fresh_ = std::make_unique<std::atomic<std::uint8_t>[]>(n);
  arrival_ = std::make_unique<std::atomic<std::uint32_t>[]>(n);
  last_impl_.assign(n, nullptr);
  last_version_.assign(n, 0);
  last_norm_.assign(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    fired_[i] = 0;
    stale_[i] = 0;
    check_fresh_[i] = 0;
    arrival_[i] = 0;
  }
  try {
    (void)optimizer_.param_groups().at(0).options().get_lr();
    has_lr_ = true;
  } catch (const std::exception&) {
    has_lr_ = false;  // an optimizer whose options have no learning rate
  }
  if (o_.guard) guard_ = std::make_unique<step_guard>(o_.guard_settings);
  updates_ = std::make_unique<update_check>(params_, optimizer_);

  hooks_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    hooks_.push_back(params_[i].register_hook([this, i](const torch::Tensor&) { on_grad(i); }));
    hook_count_.fetch_add(1);
    ++g_live_hooks;
  }
  // The norms: taken right after backward wrote each gradient, not in a sweep over all of them
  // at step() (see on_accumulated). Only where the gradient lives in host memory, and not with
  // several ranks: their norms are compared after the all-reduce, which writes .grad in place
  // without a version bump (step() measures them then).
  accumulators_.resize(n);
  post_hooks_.resize(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    if (dist_ || !params_[i].device().is_cpu()) continue;
    try {
      accumulators_[i] = torch::autograd::impl::grad_accumulator(params_[i]);
    } catch (const std::exception&) {
      accumulators_[i].reset();  // no accumulator: step() measures this one itself
    }
    if (accumulators_[i])
      post_hooks_[i] = accumulators_[i]->add_post_hook(
          std::make_unique<accumulated_hook>([this, i] { on_accumulated(i); }));
  }
}

step_capture::~step_capture() { detach(); }

void step_capture::detach() noexcept {
  if (detached_.exchange(true)) return;
  for (std::size_t i = 0; i < hooks_.size(); ++i) {
    try {
      params_[i].remove_hook(hooks_[i]);
    } catch (...) {
      // The parameter's autograd state is gone (tensor freed): nothing to remove.
    }
    --g_live_hooks;
  }
  hooks_.clear();
  for (std::size_t i = 0; i < accumulators_.size(); ++i)
    if (accumulators_[i]) accumulators_[i]->del_post_hook(post_hooks_[i]);
  accumulators_.clear();
  hook_count_.store(0);
}

void step_capture::say_once(std::atomic<bool>& said, const char* prefix,
                            const char* what) noexcept {
  if (said.exchange(true)) return;
  try {
    out_.log(severity::warning, std::string(prefix) + what);
  } catch (...) {
    // Out of memory building the line: the counters in stats() still tell.
  }
}

step_decision step_capture::step(const std::pair<std::string_view, torch::Tensor>* tasks,
                                 std::size_t n_tasks, const torch::Tensor& total,
                                 const step_extras& extras) noexcept {
  struct clear_named {
    step_capture* c;
    ~clear_named() {
      for (std::size_t k = 0; k < c->named_count_; ++k) c->named_[k].second.reset();
      c->named_count_ = 0;
    }
  } clear{this};
  if (detached_.load(std::memory_order_relaxed)) {
    // Nothing runs behind a detached monitor: say so once, count the rest.
    rejected_.fetch_add(1);
    say_once(said_detached_, "step() after detach() is ignored (counted in stats().rejected); ",
             "attach again to monitor a new run");
    return step_decision::proceed;
  }
  if (n_tasks == 0 && named_count_ > 0) {  // tasks named with loss() since the last step
    tasks = named_.data();
    n_tasks = named_count_;
  }
  try {
    return capture(tasks, n_tasks, total, extras);
  } catch (const c10::Error& e) {
    // LibTorch's own message without its backtrace (30 lines for a loss on the meta device).
    rejected_.fetch_add(1);
    say_once(said_rejected_,
             "step() could not read the step's tensors: ", e.what_without_backtrace());
  } catch (const std::exception& e) {
    // Never into the training loop: count it and say it once.
    rejected_.fetch_add(1);
    say_once(said_rejected_, "step() could not read the step's tensors: ", e.what());
  }
  return step_decision::proceed;
}

const torch::Tensor& step_capture::loss(std::string_view task,
                                        const torch::Tensor& value) noexcept {
  if (named_count_ < named_.size()) {
    try {
      // A copy: the caller's string may be a temporary. After the first steps the strings
      // have their capacity and assign() allocates nothing.
      named_names_[named_count_].assign(task);
    } catch (...) {
      return value;  // out of memory: this task's loss is not recorded this step
    }
    named_[named_count_].first = named_names_[named_count_];
    named_[named_count_].second = value;
    ++named_count_;
  } else {
    say_once(said_too_many_, "more than 16 task losses named with loss() in one step; ",
             "the rest are not recorded (pass them to step() as a vector instead)");
  }
  return value;
}

void step_capture::on_grad(std::size_t i) noexcept {
  arrival_[i].store(arrival_counter_.fetch_add(1, std::memory_order_relaxed),
                    std::memory_order_relaxed);
  fired_[i].store(1, std::memory_order_relaxed);
  if (dist_) dist_->note_grad();
  if (!check_fresh_[i].exchange(0, std::memory_order_relaxed)) return;
  // .grad still being the very tensor we measured last step, unmodified since (same version),
  // means nobody zeroed it: this backward adds to last step's gradient.
  const at::Tensor& g = params_[i].grad();
  if (g.defined() && g.unsafeGetTensorImpl() == last_impl_[i] && g._version() == last_version_[i] &&
      last_norm_[i] > 0)
    stale_[i].store(1, std::memory_order_relaxed);
}

void step_capture::on_accumulated(std::size_t i) noexcept {
  accumulated_norm& a = accumulated_[i];
  try {
    const at::Tensor& g = params_[i].grad();
    if (!g.defined() || !sum_of_squares_ok(g)) {
      a.impl.store(nullptr, std::memory_order_relaxed);
      return;
    }
    // Just written by backward: for most layers still in the cache. A later change through
    // autograd (zero_grad, an in-place op, another backward) bumps the version and step()
    // measures that gradient again.
    a.sum_sq.store(sum_of_squares_cpu(g), std::memory_order_relaxed);
    a.version.store(g._version(), std::memory_order_relaxed);
    a.impl.store(g.unsafeGetTensorImpl(), std::memory_order_release);
  } catch (...) {
    a.impl.store(nullptr, std::memory_order_relaxed);  // a tensor without a version counter
  }
}

void step_capture::start(const std::vector<std::string>& tasks) {
  schema_.tasks = tasks;
  if (class_metrics_) std::tie(schema_.class_task, schema_.classes) = class_metrics_->task();
  scalar_ptrs_.reserve(tasks.size() + 1);
  scalar_values_.assign(tasks.size() + 1, 0.0);
  task_slot_.assign(tasks.size(), -1);
  out_.start(schema_);
}

int step_capture::task_index(std::string_view name) const noexcept {
  for (std::size_t t = 0; t < schema_.tasks.size(); ++t)
    if (schema_.tasks[t] == name) return int(t);
  return -1;
}

void step_capture::read_lrs(sample& s) const noexcept {
  if (!has_lr_) return;
  try {
    // Every param group: the first one's LR is the run's `lr`; with several groups their
    // range goes along (lr_min / lr_max) so that advice can quote it.
    const auto& groups = optimizer_.param_groups();
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& g : groups) {
      const double lr = g.options().get_lr();
      lo = std::min(lo, lr);
      hi = std::max(hi, lr);
    }
    if (groups.empty()) return;
    s.lr = groups[0].options().get_lr();
    if (groups.size() > 1) {
      s.lr_min = lo;
      s.lr_max = hi;
    }
  } catch (...) {
  }
}

step_decision step_capture::capture(const std::pair<std::string_view, torch::Tensor>* tasks,
                                    std::size_t n_tasks, const torch::Tensor& total,
                                    const step_extras& extras) {
  // Checked before the run starts, so a loss that cannot be read leaves no empty run behind.
  if (!total.defined()) throw error("the loss tensor is undefined");
  if (total.is_meta())
    throw error(
        "the loss is on the meta device (it has no values); compute it on a real "
        "device (cpu, cuda)");
  if (total.numel() != 1)
    throw error("the loss must hold one element (reduce it with mean() or sum()), got " +
                std::to_string(total.numel()) + " elements");
  if (!out_.started()) {
    // First step: the task names (declared, or this step's) become the schema (one-time
    // allocation); the red flags checked before it name the class task.
    std::vector<std::string> names = o_.tasks;
    if (names.empty())
      for (std::size_t k = 0; k < n_tasks; ++k) names.emplace_back(tasks[k].first);
    start(names);
  }
  sample_queue& q = *out_.queue();
  const std::uint64_t index = steps_.load(std::memory_order_relaxed);

  // Gather every number of the step: scalars first (losses), then the gradient norms.
  scalar_ptrs_.clear();
  scalar_ptrs_.push_back(&total);
  for (std::size_t t = 0; t < schema_.tasks.size(); ++t) task_slot_[t] = -1;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto t = task_index(tasks[k].first);
    if (t < 0 || !tasks[k].second.defined() || tasks[k].second.numel() != 1) continue;
    task_slot_[std::size_t(t)] = int(scalar_ptrs_.size());
    scalar_ptrs_.push_back(&tasks[k].second);
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    grads_[i] = params_[i].grad();
    const accumulated_norm& a = accumulated_[i];
    const c10::TensorImpl* impl = a.impl.load(std::memory_order_acquire);
    from_hook_[i] = impl && grads_[i].defined() && grads_[i].unsafeGetTensorImpl() == impl &&
                    grads_[i]._version() == a.version.load(std::memory_order_relaxed);
  }
  norms_engine_.compute(grads_, norms_, has_norm_, scalar_ptrs_, scalar_values_, &from_hook_);
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (from_hook_[i]) {
      norms_[i] = std::sqrt(accumulated_[i].sum_sq.load(std::memory_order_relaxed));
      has_norm_[i] = 1;
    }

  const double loss = scalar_values_[0];
  // Backward reached these parameters since the last step(), yet their .grad is gone (or
  // every one of them is zero): step() was called before backward, or zero_grad() ran in
  // between. Their norms would be fake zeros, so they are left out and flagged instead.
  bool any_fired = false, all_fired_gone = true;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!fired_[i].load(std::memory_order_relaxed)) continue;
    any_fired = true;
    if (has_norm_[i] && norms_[i] != 0) all_fired_gone = false;
  }
  const bool cleared = any_fired && all_fired_gone;
  double sq = 0;
  bool any_norm = false;
  int first_bad = -1;
  std::uint32_t first_bad_arrival = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (cleared || !has_norm_[i] || !fired_[i].load(std::memory_order_relaxed)) continue;
    any_norm = true;
    sq += norms_[i] * norms_[i];
    if (!std::isfinite(norms_[i])) {
      const std::uint32_t a = arrival_[i].load(std::memory_order_relaxed);
      if (first_bad < 0 || a < first_bad_arrival) {
        first_bad = int(i);
        first_bad_arrival = a;
      }
    }
  }
  const double grad_norm = std::sqrt(sq);
  step_decision decision = step_decision::proceed;
  if (guard_) decision = guard_->check(loss, grad_norm, any_norm);
  // Before the sample is queued: a finding on this step must find the batch already handed over.
  if (replay_) replay_->offer(std::int64_t(index), loss, grad_norm, any_norm);

  if (sample* s = q.try_begin_push()) {
    s->step = std::int64_t(index);
    s->wall_time =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
            .count();  // Unix seconds
    s->loss = loss;
    for (std::size_t t = 0; t < schema_.tasks.size(); ++t)
      if (task_slot_[t] >= 0) s->task_losses[t] = scalar_values_[std::size_t(task_slot_[t])];
    if (any_norm) s->grad_norm = grad_norm;
    s->first_non_finite_param = first_bad;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const bool fired = fired_[i].load(std::memory_order_relaxed);
      if (has_norm_[i] && fired && !cleared) s->param_grad_norms[i] = norms_[i];
      std::uint8_t flags = 0;
      if (!fired) flags |= param_flag::no_grad;
      if (fired && cleared) flags |= param_flag::grad_cleared;
      if (stale_[i].load(std::memory_order_relaxed)) flags |= param_flag::stale_grad;
      s->param_flags[i] = flags;
    }
    // At the end of an optimizer step: did the parameters that got gradients change?
    if ((index + 1) % std::uint64_t(o_.accumulation_steps) == 0)
      updates_->check(s->param_flags, s->param_grad_norms, last_skipped_);
    if (class_metrics_) class_metrics_->read_into(*s);
    s->clip_norm = extras.clip_norm;
    s->max_norm = extras.max_norm;
    read_lrs(*s);
    s->accuracy = extras.accuracy;
    // Capacity for the schema's tasks is reserved in the queue's slots: no allocation.
    const std::size_t nt = schema_.tasks.size();
    s->task_weights.assign(
        extras.task_weights.begin(),
        extras.task_weights.begin() + std::ptrdiff_t(std::min(nt, extras.task_weights.size())));
    for (std::size_t t = 0; t < std::min(nt, extras.task_grad_norms.size()); ++t)
      s->task_grad_norms.push_back(extras.task_grad_norms[t]);
    s->eval_mode = !model_.is_training();
    q.commit_push();
    out_.notify_pushed();  // a syscall only when the monitor thread sleeps
  }

  // Arm the next step's zero_grad check: remember which tensor each .grad is and its version.
  // With accumulation, only the first micro-batch of each optimizer step must find it reset.
  const bool window_end = (index + 1) % std::uint64_t(o_.accumulation_steps) == 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    fired_[i].store(0, std::memory_order_relaxed);
    stale_[i].store(0, std::memory_order_relaxed);
    if (!window_end) continue;
    const at::Tensor& g = grads_[i];
    last_impl_[i] = g.defined() ? g.unsafeGetTensorImpl() : nullptr;
    last_version_[i] = g.defined() ? g._version() : 0;
    last_norm_[i] = has_norm_[i] ? norms_[i] : 0.0;
    check_fresh_[i].store(g.defined() ? 1 : 0, std::memory_order_relaxed);
  }
  for (auto& g : grads_) g.reset();  // do not keep gradients alive between steps
  if (dist_)
    dist_->on_step(std::int64_t(index), loss, any_norm ? std::optional(grad_norm) : std::nullopt);
  last_skipped_ = decision != step_decision::proceed;
  steps_.fetch_add(1, std::memory_order_relaxed);
  return decision;
}

}  // namespace losslens::hooks::detail
