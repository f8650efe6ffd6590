#include "losslens/torch/monitor.hpp"

// The wiring of a monitor: the step capture (training thread), the monitor thread with its
// detectors and finding router (losslens::pipeline), the run recorder and the other sinks, the
// input red flags and the multi-rank view. Each lives in its own file; this one connects them.

#include <memory>

#include "losslens/error.hpp"
#include "losslens/pipeline.hpp"
#include "losslens/storage/run_recorder.hpp"
#include "rank_sync.hpp"
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
}  // namespace

/// Everything a monitor owns. Hooks hold a raw pointer to the step capture, so it lives at a
/// fixed address until the hooks are removed.
class monitor_state {
 public:
  monitor_state(torch::nn::Module& model, torch::optim::Optimizer& optimizer, attach_options o,
                std::unique_ptr<rank_sync> dist = nullptr)
      : o_(std::move(o)), dist_(std::move(dist)), pipeline_(pipeline_options_of(o_, dist_.get())) {
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
  }

  ~monitor_state() { detach(); }

  /// Hooks first (no more gradients arrive), then the monitor thread drains and stops.
  void detach() noexcept {
    capture_->detach();
    pipeline_.stop();
  }

  step_capture& capture() noexcept { return *capture_; }
  red_flag_checker& red_flags() noexcept { return *flags_; }
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
  return state_->capture().step(nullptr, 0, loss, extras);
}

step_decision monitor::step(std::initializer_list<std::pair<std::string_view, torch::Tensor>> tasks,
                            const torch::Tensor& total, const step_extras& extras) noexcept {
  if (!state_) return step_decision::proceed;
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

void monitor::check_class_logits(std::string_view task, const torch::Tensor& logits,
                                 const torch::Tensor& target, std::int64_t ignore_index) {
  if (state_) red_flags().check_class_logits(task, logits, target, state_->next_step(), ignore_index);
}
void monitor::check_binary_logits(std::string_view task, const torch::Tensor& logits,
                                  const torch::Tensor& target) {
  if (state_) red_flags().check_binary_logits(task, logits, target, state_->next_step());
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
  return monitor(std::make_unique<hooks::detail::monitor_state>(model, optimizer, std::move(options)));
}

monitor attach_distributed(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           attach_options options, distributed_options distributed) {
  auto sync = hooks::detail::make_rank_sync(process_group, std::move(distributed), options);
  return monitor(std::make_unique<hooks::detail::monitor_state>(model, optimizer, std::move(options),
                                                         std::move(sync)));
}

}  // namespace losslens
