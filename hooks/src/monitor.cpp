#include "losslens/torch/monitor.hpp"

// The wiring of a monitor: the step capture (training thread), the monitor thread with its
// detectors and finding router (losslens::pipeline), the run recorder and the other sinks, the
// input red flags and the multi-rank view. Each lives in its own file; this one connects them.

#include <limits>
#include <memory>

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "class_metrics.hpp"
#include "losslens/error.hpp"
#include "losslens/pipeline.hpp"
#include "losslens/storage/run_recorder.hpp"
#include "rank_sync.hpp"
#include "replay.hpp"
#include "step_capture.hpp"

namespace losslens {
namespace hooks::detail {

namespace {
pipeline_options pipeline_options_of(const attach_options& o, const rank_sync* dist) {
  pipeline_options p;
  p.run = o.run;
  p.config_json = o.config_json;
  p.detectors = o.detectors;
  p.queue_capacity = o.queue_capacity;
  p.log_findings = o.log_findings;
  p.log_level = o.log_level;
  p.on_sample = o.on_sample;
  p.db = o.db;
  if (dist) p.extra_series = dist->series();
  return p;
}

optimizer_kind kind_of(const torch::optim::Optimizer& opt) noexcept {
  if (dynamic_cast<const torch::optim::AdamW*>(&opt)) return optimizer_kind::adamw;
  if (dynamic_cast<const torch::optim::Adam*>(&opt)) return optimizer_kind::adam;
  if (dynamic_cast<const torch::optim::SGD*>(&opt)) return optimizer_kind::sgd;
  if (dynamic_cast<const torch::optim::RMSprop*>(&opt)) return optimizer_kind::rmsprop;
  if (dynamic_cast<const torch::optim::Adagrad*>(&opt)) return optimizer_kind::adagrad;
  if (dynamic_cast<const torch::optim::LBFGS*>(&opt)) return optimizer_kind::lbfgs;
  return optimizer_kind::unknown;
}

/// The options with the optimizer's kind filled in (for the LR ranges in advice) unless given.
attach_options with_optimizer(attach_options o, const torch::optim::Optimizer& opt) {
  if (o.detectors.optimizer == optimizer_kind::unknown) o.detectors.optimizer = kind_of(opt);
  return o;
}

/// The optimizer's learning rates, read on the thread that runs a sampled input check.
learning_rate_info learning_rates(torch::optim::Optimizer& opt, optimizer_kind kind) {
  learning_rate_info r;
  r.optimizer = kind;
  const auto& groups = opt.param_groups();
  if (groups.empty()) return r;
  r.lr = groups[0].options().get_lr();
  if (groups.size() < 2) return r;
  r.lr_min = r.lr_max = r.lr;
  for (const auto& g : groups) {
    r.lr_min = std::min(r.lr_min, g.options().get_lr());
    r.lr_max = std::max(r.lr_max, g.options().get_lr());
  }
  return r;
}
}  // namespace

/// Everything a monitor owns. Hooks hold a raw pointer to the step capture, so it lives at a
/// fixed address until the hooks are removed.
class monitor_state {
 public:
  monitor_state(torch::nn::Module& model, torch::optim::Optimizer& optimizer, attach_options o,
                std::unique_ptr<rank_sync> dist = nullptr)
      : o_(with_optimizer(std::move(o), optimizer)),
        dist_(std::move(dist)),
        pipeline_(pipeline_options_of(o_, dist_.get())) {
    if (o_.accumulation_steps < 1) throw error("attach: accumulation_steps must be >= 1");
    if (o_.log) pipeline_.set_log_sink(o_.log);
    if (!o_.db.empty()) {
      storage::recorder_options ro;
      ro.db = o_.db;
      ro.require_db = o_.require_db;
      ro.retry_interval = o_.db_retry_interval;
      ro.writer = o_.db_writer;
      try {
        pipeline_.add_sink(std::make_unique<storage::run_recorder>(std::move(ro)));
      } catch (const error& e) {
        throw error(std::string("attach: ") + e.what());
      }
    }
    // Red flags are found on whichever thread calls check_*; the pipeline merges them.
    red_source_ = pipeline_.add_source("red_flags");
    flags_ = std::make_unique<red_flag_checker>(o_.red_flags);
    flags_->on_finding(
        [this](const finding& f, bool is_new) { pipeline_.post(red_source_, f, is_new); });
    // The class task's metrics go into the next samples (series balanced_accuracy, recall/*).
    flags_->on_class_metrics([this](const class_metrics& m) {
      if (classes_.claim(m.task, m.recall.size()))
        classes_.publish(m.recall.data(), m.recall.size(), m.balanced_accuracy);
    });
    flags_->set_learning_rate_source(
        [&optimizer, kind = o_.detectors.optimizer] { return learning_rates(optimizer, kind); });
    // Replay files of the batches behind non_finite / loss_spike findings (capture()).
    auto replay = std::make_unique<replay_sink>(o_.replay);
    replay_ = replay.get();
    pipeline_.add_sink(std::move(replay));
    if (dist_) {
      const auto ranks = pipeline_.add_source("ranks");
      dist_->bind(
          [this](std::size_t series, std::int64_t step, double wall, double value) {
            pipeline_.emit_point(series, step, wall, value);
          },
          [this, ranks](const finding& f, bool is_new) { pipeline_.post(ranks, f, is_new); },
          [this](severity level, std::string_view line) { pipeline_.log(level, line); });
      pipeline_.add_task({[this] { return dist_->poll(); }, [this] { dist_->finish(); }});
    }
    capture_ = std::make_unique<step_capture>(model, optimizer, o_, dist_.get(), pipeline_);
    capture_->set_class_metrics(&classes_);
    capture_->set_replay(replay_);
  }

  ~monitor_state() { detach(); }

  /// Hooks first (no more gradients arrive), then the monitor thread drains and stops.
  void detach() noexcept {
    capture_->detach();
    pipeline_.stop();
  }

  step_capture& capture() noexcept { return *capture_; }
  red_flag_checker& red_flags() noexcept { return *flags_; }
  replay_sink& replay() noexcept { return *replay_; }
  /// The first classification task checked names the class task (its class count).
  void claim_class_task(std::string_view task, std::int64_t classes) {
    if (class_task_claimed_.load(std::memory_order_relaxed) || classes < 2) return;
    classes_.claim(task, std::size_t(classes));
    class_task_claimed_.store(true, std::memory_order_relaxed);
  }
  /// Training thread, before each step: reported accuracy enables misleading_accuracy.
  void before_step(const step_extras& extras) noexcept {
    if (extras.accuracy) flags_->note_accuracy_reported();
  }
  std::int64_t next_step() const noexcept { return std::int64_t(capture_->steps()); }
  void on_finding(std::function<void(const finding&, bool)> cb) {
    pipeline_.on_finding(std::move(cb));
  }
  void add_sink(std::unique_ptr<sink> s) { pipeline_.add_sink(std::move(s)); }
  std::vector<finding> findings() const { return pipeline_.findings(); }
  void wait_idle() const { pipeline_.wait_idle(); }

  monitor_stats stats() const noexcept {
    const pipeline_stats p = pipeline_.stats();
    monitor_stats s;
    s.steps = capture_->steps();
    s.queued = p.queued;
    s.dropped = p.dropped;
    s.processed = p.processed;
    s.rejected = capture_->rejected();
    s.findings = p.findings;
    s.hooks = capture_->hooks();
    s.run_id = p.sinks.run_id;
    s.dashboard_port = p.sinks.dashboard_port;
    s.storage_failed = p.sinks.storage_failed;
    s.storage_degraded = p.sinks.storage_degraded;
    s.points_written = p.sinks.points_written;
    s.points_lost = p.sinks.points_lost;
    s.write_failures = p.sinks.write_failures;
    try {
      s.storage_error = p.sinks.storage_error;
    } catch (...) {
      // Out of memory copying a message: the counters still tell the state.
    }
    return s;
  }

 private:
  attach_options o_;
  std::unique_ptr<rank_sync> dist_;  // multi-rank view (attach_distributed), else null
  pipeline pipeline_;
  finding_router::source_id red_source_ = 0;
  std::unique_ptr<red_flag_checker> flags_;
  class_metrics_slot classes_;
  std::atomic<bool> class_task_claimed_{false};
  replay_sink* replay_ = nullptr;          // owned by pipeline_
  std::unique_ptr<step_capture> capture_;  // last: its hooks go first
};

}  // namespace hooks::detail

monitor::monitor(std::unique_ptr<hooks::detail::monitor_state> state) : state_(std::move(state)) {}
monitor::monitor(monitor&&) noexcept = default;
monitor& monitor::operator=(monitor&& other) noexcept {
  if (this != &other) {
    if (state_) state_->detach();
    state_ = std::move(other.state_);
  }
  return *this;
}
monitor::~monitor() {
  if (state_) state_->detach();
}

step_decision monitor::step(const torch::Tensor& loss, const step_extras& extras) noexcept {
  if (!state_) return step_decision::proceed;
  state_->before_step(extras);
  return state_->capture().step(nullptr, 0, loss, extras);
}

step_decision monitor::step(std::initializer_list<std::pair<std::string_view, torch::Tensor>> tasks,
                            const torch::Tensor& total, const step_extras& extras) noexcept {
  if (!state_) return step_decision::proceed;
  state_->before_step(extras);
  return state_->capture().step(tasks.begin(), tasks.size(), total, extras);
}

step_decision monitor::step(const std::vector<std::pair<std::string, torch::Tensor>>& tasks,
                            const torch::Tensor& total, const step_extras& extras) noexcept {
  if (!state_) return step_decision::proceed;
  // Up to 16 tasks without allocating; more is unusual and allowed to allocate.
  std::pair<std::string_view, torch::Tensor> small[16];
  std::vector<std::pair<std::string_view, torch::Tensor>> big;
  std::pair<std::string_view, torch::Tensor>* v = small;
  if (tasks.size() > 16) {
    big.resize(tasks.size());
    v = big.data();
  }
  for (std::size_t k = 0; k < tasks.size(); ++k) v[k] = {tasks[k].first, tasks[k].second};
  state_->before_step(extras);
  return state_->capture().step(v, tasks.size(), total, extras);
}

const torch::Tensor& monitor::loss(std::string_view task, const torch::Tensor& value) noexcept {
  return state_ ? state_->capture().loss(task, value) : value;
}

namespace {
// A monitor that was moved from has no state: its checks do nothing.
red_flag_checker& no_checker() {
  static red_flag_checker idle;
  return idle;
}
}  // namespace

red_flag_checker& monitor::red_flags() { return state_ ? state_->red_flags() : no_checker(); }

void monitor::capture(const torch::Tensor& inputs, const torch::Tensor& targets) noexcept {
  if (state_) state_->replay().capture(inputs, targets);
}

void monitor::check_class_logits(std::string_view task, const torch::Tensor& logits,
                                 const torch::Tensor& target, std::int64_t ignore_index) {
  if (!state_) return;
  if (logits.defined() && logits.dim() >= 2) state_->claim_class_task(task, logits.size(1));
  red_flags().check_class_logits(task, logits, target, state_->next_step(), ignore_index);
}
void monitor::check_binary_logits(std::string_view task, const torch::Tensor& logits,
                                  const torch::Tensor& target) {
  if (!state_) return;
  state_->claim_class_task(task, 2);
  red_flags().check_binary_logits(task, logits, target, state_->next_step());
}
void monitor::check_regression(std::string_view task, const torch::Tensor& pred,
                               const torch::Tensor& target) {
  if (state_) red_flags().check_regression(task, pred, target, state_->next_step());
}
void monitor::check_probabilities(std::string_view task, const torch::Tensor& probs,
                                  const torch::Tensor& target) {
  if (state_) red_flags().check_probabilities(task, probs, target, state_->next_step());
}
void monitor::check_loss_scale(std::string_view task, double loss, std::int64_t batch_size) {
  if (state_) red_flags().check_loss_scale(task, loss, batch_size, state_->next_step());
}

void monitor::on_finding(std::function<void(const finding&, bool)> cb) {
  if (state_) state_->on_finding(std::move(cb));
}
void monitor::on_new_finding(std::function<void(const finding&)> cb) {
  if (!state_) return;
  if (!cb) {
    state_->on_finding(nullptr);
    return;
  }
  state_->on_finding([cb = std::move(cb)](const finding& f, bool is_new) {
    if (is_new) cb(f);
  });
}
void monitor::add_sink(std::unique_ptr<sink> s) {
  if (state_) state_->add_sink(std::move(s));
}
monitor_stats monitor::stats() const noexcept { return state_ ? state_->stats() : monitor_stats{}; }
std::vector<finding> monitor::findings() const {
  return state_ ? state_->findings() : std::vector<finding>{};
}
void monitor::wait_idle() const {
  if (state_) state_->wait_idle();
}
void monitor::detach() noexcept {
  if (state_) state_->detach();
}

monitor attach_module(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                      attach_options options) {
  return monitor(
      std::make_unique<hooks::detail::monitor_state>(model, optimizer, std::move(options)));
}

monitor attach_distributed(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           attach_options options, distributed_options distributed) {
  auto sync = hooks::detail::make_rank_sync(process_group, std::move(distributed), options);
  return monitor(std::make_unique<hooks::detail::monitor_state>(
      model, optimizer, std::move(options), std::move(sync)));
}

}  // namespace losslens
