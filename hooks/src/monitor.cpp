#include "losslens/torch/monitor.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "grad_norms.hpp"
#include "rank_sync.hpp"
#include "losslens/analyzer.hpp"
#include "losslens/error.hpp"
#include "losslens/finding_router.hpp"
#include "losslens/sample_queue.hpp"
#include "losslens/storage/run_reader.hpp"
#include "losslens/storage/run_writer.hpp"
#include "losslens/dashboard/server.hpp"

#include <filesystem>
#include <unistd.h>

namespace losslens {
namespace detail {

namespace {
std::atomic<std::size_t> g_live_hooks{0};
}
std::size_t live_hook_count() noexcept { return g_live_hooks.load(); }

/// Everything a monitor owns. Hooks hold a raw pointer to it, so it lives at a fixed address
/// until the hooks are removed.
class monitor_state {
 public:
  monitor_state(torch::nn::Module& model, torch::optim::Optimizer& optimizer, attach_options o,
                std::unique_ptr<rank_sync> dist = nullptr)
      : model_(model), optimizer_(optimizer), o_(std::move(o)), start_(clock::now()),
        dist_(std::move(dist)) {
    if (o_.accumulation_steps < 1) throw error("attach: accumulation_steps must be >= 1");
    if (o_.queue_capacity < 2) throw error("attach: queue_capacity must be >= 2");
    // Validate the detector options now (the analyzer itself is built on the monitor thread).
    analyzer probe(sample_schema{}, o_.detectors);

    for (const auto& item : model.named_parameters(/*recurse=*/true)) {
      if (!item.value().requires_grad()) continue;
      schema_.params.push_back(item.key());
      params_.push_back(item.value());
    }
    if (params_.empty())
      throw error("attach: the model has no parameters that require grad; attach to the "
                  "module you train (after building its layers)");
    const std::size_t n = params_.size();
    grads_.resize(n);
    norms_.resize(n);
    has_norm_.resize(n);
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
    if (!o_.db.empty()) {
      try {
        preflight_db(o_.db);
      } catch (const error& e) {
        if (o_.require_db) throw;
        // A monitor must not end a long run over its history: say it once, train on, retry.
        report_storage_failure(e.what());
      }
    }
    if (o_.dashboard_port < 0 || o_.dashboard_port > 65535)
      throw error("attach: dashboard_port must be in 0..65535");
    if (o_.dashboard_port != 0 && o_.db.empty())
      throw error("attach: dashboard_port needs db: the dashboard shows the run from the run "
                  "database (set attach_options::db, e.g. \"runs.db\")");
    red_source_ = router_.add_source("red_flags");
    rank_source_ = router_.add_source("ranks");
    router_.add_listener([this](const finding& f, bool is_new) { record(f, is_new); });
    flags_ = std::make_unique<red_flag_checker>(o_.red_flags);
    // Red flags are found on whichever thread calls check_*; they reach the monitor thread
    // through a small inbox (rare: at most one per sampled check).
    flags_->on_finding([this](const finding& f, bool is_new) {
      std::lock_guard lock(inbox_mutex_);
      inbox_.push_back({f, is_new});
    });
    if (o_.guard) guard_ = std::make_unique<step_guard>(o_.guard_settings);
    if (!o_.tasks.empty()) make_queue(o_.tasks);

    hooks_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      hooks_.push_back(params_[i].register_hook([this, i](const torch::Tensor&) { on_grad(i); }));
      hook_count_.fetch_add(1);
      ++g_live_hooks;
    }
    thread_ = std::thread([this] { run(); });
  }

  ~monitor_state() { detach(); }

  void detach() noexcept {
    std::call_once(detached_, [this] {
      is_detached_.store(true);
      for (std::size_t i = 0; i < hooks_.size(); ++i) {
        try {
          params_[i].remove_hook(hooks_[i]);
        } catch (...) {
          // The parameter's autograd state is gone (tensor freed): nothing to remove.
        }
        --g_live_hooks;
      }
      hooks_.clear();
      hook_count_.store(0);
      {
        std::lock_guard lock(mutex_);
        stop_ = true;
      }
      wake_.notify_all();
      if (thread_.joinable()) thread_.join();
    });
  }

  step_decision step(const std::pair<std::string_view, torch::Tensor>* tasks, std::size_t n_tasks,
                     const torch::Tensor& total, const step_extras& extras) noexcept {
    if (is_detached_.load(std::memory_order_relaxed)) {
      // Nothing runs behind a detached monitor: say so once, count the rest.
      if (rejected_.fetch_add(1) == 0)
        router_.log(severity::warning, "step() after detach() is ignored (counted in "
                                       "stats().rejected); attach again to monitor a new run");
      for (std::size_t k = 0; k < named_count_; ++k) named_[k].second.reset();
      named_count_ = 0;
      return step_decision::proceed;
    }
    if (n_tasks == 0 && named_count_ > 0) {  // tasks named with loss() since the last step
      tasks = named_.data();
      n_tasks = named_count_;
    }
    struct clear_named {
      monitor_state* st;
      ~clear_named() {
        for (std::size_t k = 0; k < st->named_count_; ++k) st->named_[k].second.reset();
        st->named_count_ = 0;
      }
    } clear{this};
    try {
      return step_impl(tasks, n_tasks, total, extras);
    } catch (const std::exception& e) {
      // Never into the training loop: count it and say it once.
      if (rejected_.fetch_add(1) == 0)
        router_.log(severity::warning,
                    std::string("step() could not read the step's tensors (") + e.what() +
                        "); further errors are only counted in stats().rejected");
      return step_decision::proceed;
    }
  }

  const torch::Tensor& loss(std::string_view task, const torch::Tensor& value) noexcept {
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
    } else if (!too_many_tasks_.exchange(true)) {
      router_.log(severity::warning,
                  "more than " + std::to_string(named_.size()) +
                      " task losses named with loss() in one step; the rest are not recorded "
                      "(pass them to step() as a vector instead)");
    }
    return value;
  }

  red_flag_checker& red_flags() noexcept { return *flags_; }
  std::int64_t next_step() const noexcept { return std::int64_t(steps_.load()); }

  void on_finding(std::function<void(const finding&, bool)> cb) {
    std::lock_guard lock(findings_mutex_);
    callback_ = std::move(cb);
  }

  monitor_stats stats() const noexcept {
    monitor_stats s;
    s.steps = steps_.load();
    auto* q = queue_.load(std::memory_order_acquire);
    if (q) {
      s.queued = q->pushed();
      s.dropped = q->dropped();
    }
    s.processed = processed_.load();
    s.rejected = rejected_.load();
    s.findings = findings_count_.load();
    s.hooks = hook_count_.load();  // hooks_ itself belongs to attach/detach
    s.run_id = run_id_.load();
    s.dashboard_port = dashboard_port_.load();
    s.storage_failed = storage_failed_.load();
    s.storage_degraded = storage_degraded_.load();
    s.points_written = points_written_.load();
    s.points_lost = points_lost_.load();
    s.write_failures = write_failures_.load();
    try {
      std::lock_guard lock(storage_error_mutex_);
      s.storage_error = storage_error_;
    } catch (...) {
      // Out of memory copying a message: the counters still tell the state.
    }
    return s;
  }

  std::vector<finding> findings() const {
    std::lock_guard lock(findings_mutex_);
    return findings_;
  }

  void wait_idle() const {
    auto* q = queue_.load(std::memory_order_acquire);
    if (!q) return;
    const auto request = sync_request_.fetch_add(1) + 1;
    wake_.notify_all();
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] {
      return stop_ || (processed_.load() >= q->pushed() && sync_done_ >= request);
    });
  }

 private:
  using clock = std::chrono::steady_clock;

  // The run is created on the monitor thread once the task names are known; the common setup
  // errors are caught here, synchronously, with the storage layer's own messages.
  static void preflight_db(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(path, ec)) {
      storage::run_reader probe(path);  // throws on corrupt, foreign or newer databases
      if (::access(path.c_str(), W_OK) != 0)
        throw error("attach: cannot write the run database " + path +
                    " (read-only); choose a writable path in attach_options::db");
      return;
    }
    const fs::path dir = fs::absolute(fs::path(path)).parent_path();
    if (!fs::is_directory(dir, ec))
      throw error("attach: the directory of the run database " + path +
                  " does not exist; create it or choose another attach_options::db");
    if (::access(dir.c_str(), W_OK) != 0)
      throw error("attach: cannot create the run database in " + dir.string() +
                  " (not writable); choose another attach_options::db");
  }

  // Runs in backward, once per parameter, before the gradient is accumulated into .grad.
  void on_grad(std::size_t i) noexcept {
    arrival_[i].store(arrival_counter_.fetch_add(1, std::memory_order_relaxed),
                      std::memory_order_relaxed);
    fired_[i].store(1, std::memory_order_relaxed);
    if (dist_) dist_->note_grad();
    if (!check_fresh_[i].exchange(0, std::memory_order_relaxed)) return;
    // .grad still being the very tensor we measured last step, unmodified since (same version),
    // means nobody zeroed it: this backward adds to last step's gradient.
    const at::Tensor& g = params_[i].grad();
    if (g.defined() && g.unsafeGetTensorImpl() == last_impl_[i] &&
        g._version() == last_version_[i] && last_norm_[i] > 0)
      stale_[i].store(1, std::memory_order_relaxed);
  }

  void make_queue(const std::vector<std::string>& tasks) {
    schema_.tasks = tasks;
    task_values_.assign(tasks.size(), 0.0);
    scalar_ptrs_.reserve(tasks.size() + 1);
    scalar_values_.assign(tasks.size() + 1, 0.0);
    task_slot_.assign(tasks.size(), -1);
    queue_owner_ = std::make_unique<sample_queue>(o_.queue_capacity, schema_);
    queue_.store(queue_owner_.get(), std::memory_order_release);
  }

  step_decision step_impl(const std::pair<std::string_view, torch::Tensor>* tasks,
                          std::size_t n_tasks, const torch::Tensor& total,
                          const step_extras& extras) {
    if (!total.defined()) throw error("the loss tensor is undefined");
    if (total.numel() != 1)
      throw error("the loss must hold one element (reduce it with mean() or sum()), got " +
                  std::to_string(total.numel()) + " elements");
    if (!queue_.load(std::memory_order_relaxed)) {
      // First step: the task names become the schema (one-time allocation).
      std::vector<std::string> names;
      for (std::size_t k = 0; k < n_tasks; ++k) names.emplace_back(tasks[k].first);
      make_queue(names);
    }
    sample_queue& q = *queue_owner_;
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
    for (std::size_t i = 0; i < params_.size(); ++i) grads_[i] = params_[i].grad();
    norms_engine_.compute(grads_, norms_, has_norm_, scalar_ptrs_, scalar_values_);

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

    if (sample* s = q.try_begin_push()) {
      s->step = std::int64_t(index);
      s->wall_time = std::chrono::duration<double>(
          std::chrono::system_clock::now().time_since_epoch()).count();  // Unix seconds
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
      if (has_lr_) s->lr = optimizer_.param_groups()[0].options().get_lr();
      s->accuracy = extras.accuracy;
      // Capacity for the schema's tasks is reserved in the queue's slots: no allocation.
      const std::size_t nt = schema_.tasks.size();
      s->task_weights.assign(extras.task_weights.begin(),
                             extras.task_weights.begin() +
                                 std::ptrdiff_t(std::min(nt, extras.task_weights.size())));
      for (std::size_t t = 0; t < std::min(nt, extras.task_grad_norms.size()); ++t)
        s->task_grad_norms.push_back(extras.task_grad_norms[t]);
      s->eval_mode = !model_.is_training();
      q.commit_push();
      // The monitor thread polls every poll_interval; wake it early only when the queue is
      // filling up, so a normal step costs no syscall.
      if (q.pushed() - q.popped() >= q.capacity() / 2) wake_.notify_one();
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
    if (dist_) dist_->on_step(std::int64_t(index), loss, any_norm ? std::optional(grad_norm)
                                                                   : std::nullopt);
    steps_.fetch_add(1, std::memory_order_relaxed);
    return decision;
  }

  int task_index(std::string_view name) const noexcept {
    for (std::size_t t = 0; t < schema_.tasks.size(); ++t)
      if (schema_.tasks[t] == name) return int(t);
    return -1;
  }

  // The monitor thread: detectors, findings, stderr.
  void run() noexcept {
    std::unique_ptr<analyzer> a;
    std::uint64_t drops_reported = 0;
    std::int64_t last_step = -1;
    for (;;) {
      auto* q = queue_.load(std::memory_order_acquire);
      bool did = false;
      if (q) {
        if (!a) {
          a = make_analyzer();
          if (dist_) dist_->bind(nullptr, rank_listener());
          open_writer();
        }
        while (const sample* s = q->front()) {
          try {
            a->observe(*s);
            if (writer_) writer_->append(*s);
            if (o_.on_sample) o_.on_sample(*s);
          } catch (const std::exception& e) {
            router_.log(severity::error, std::string("monitor error: ") + e.what());
          }
          last_step = s->step;
          processed_last_step_ = last_step;
          q->pop();
          processed_.fetch_add(1);
          did = true;
        }
        watch_storage();
        if (dist_ && dist_->poll()) did = true;
        if (drain_inbox()) did = true;
        // Queue overflow on the training side: say so once per burst, and store it.
        const std::uint64_t dropped = q->dropped();
        if (dropped > drops_reported) {
          if (drops_reported == 0)
            router_.log(severity::warning,
                        "the monitor queue was full; " + std::to_string(dropped) +
                            " samples dropped so far (raise attach_options::queue_capacity)");
          if (writer_)
            writer_->record_event("drops", "{\"source\":\"monitor\",\"count\":" +
                                               std::to_string(dropped - drops_reported) +
                                               ",\"total\":" + std::to_string(dropped) + "}",
                                  last_step);
          drops_reported = dropped;
        }
      }
      // A waiter in wait_idle() wants findings() current: merge what the detectors hold back.
      std::uint64_t synced = 0;
      if (a && (!q || !q->front())) {
        const auto request = sync_request_.load();
        std::unique_lock lock(mutex_);
        const bool due = request != sync_done_;
        lock.unlock();
        if (due) {
          sync_findings(*a);
          synced = request;
          did = true;
        }
      }
      std::unique_lock lock(mutex_);
      if (synced) sync_done_ = std::max(sync_done_, synced);
      if (did) idle_.notify_all();
      if (stop_) {
        lock.unlock();
        if (q && q->front()) continue;  // drain what arrived meanwhile
        break;
      }
      if (!did) wake_.wait_for(lock, o_.poll_interval);
    }
    if (a) a->flush();
    drain_inbox();
    if (dist_ && a) dist_->finish();
    dashboard_.reset();  // stop serving before the run is marked finished
    if (writer_) {
      writer_->record_event("detach", "{\"steps\":" + std::to_string(steps_.load()) + "}",
                            last_step);
      writer_->finish(storage::run_status::finished);
      next_storage_check_ = {};
      watch_storage();  // the final counters (points given up at the end count as lost)
    }
    std::lock_guard lock(mutex_);
    idle_.notify_all();
  }

  // Creates the run in db. A failure is reported once (the attach-time check may have said it
  // already) and retried every db_retry_interval from watch_storage().
  void open_writer(std::int64_t from_step = -1) noexcept {
    if (o_.db.empty()) return;
    try {
      storage::run_options ro;
      ro.name = o_.run;
      ro.config_json = o_.config_json;
      ro.schema = schema_;
      if (dist_) ro.extra_series = dist_->series();
      writer_ = std::make_unique<storage::run_writer>(o_.db, std::move(ro), o_.db_writer);
      writer_->record_event("attach", "{\"parameters\":" + std::to_string(params_.size()) + "}");
      if (storage_failed_.load()) {
        // Opened late: what the run found so far goes in too; its points start here.
        writer_->record_event("storage_opened", "{\"first_step\":" +
                                                    std::to_string(from_step + 1) + "}",
                              from_step + 1);
        std::lock_guard lock(findings_mutex_);
        for (const auto& f : findings_) writer_->record_finding(f);
        router_.log(severity::info, "the run database " + o_.db +
                                        " works now; recording the run from step " +
                                        std::to_string(from_step + 1) + " on");
      }
      run_id_.store(writer_->run_id());
      writer_->flush();  // the run row exists before the dashboard looks for it
      storage_failed_.store(false);
      storage_degraded_.store(false);
      if (dist_) dist_->bind(writer_.get(), rank_listener());
      start_dashboard();
    } catch (const std::exception& e) {
      writer_.reset();
      report_storage_failure(e.what());
    }
    next_open_retry_ = clock::now() + o_.db_retry_interval;
  }

  // First failure to open db: one line on stderr; later ones only update storage_error.
  void report_storage_failure(const std::string& what) noexcept {
    try {
      std::lock_guard lock(storage_error_mutex_);
      storage_error_ = what;
    } catch (...) {
    }
    storage_degraded_.store(true);
    if (storage_failed_.exchange(true)) return;
    router_.log(severity::warning,
                "cannot record the run in " + o_.db + ": " + what +
                    "; training goes on without a history (findings still reach stderr and "
                    "on_finding)" +
                    (o_.db_retry_interval.count() > 0 ? "; retrying to open it" : ""));
  }

  // On the monitor thread, at most every 100 ms: the writer's health into stats(), one line
  // when writes work again, and retries of a database that could not be opened.
  void watch_storage() noexcept {
    const auto now = clock::now();
    if (o_.db.empty() || now < next_storage_check_) return;
    next_storage_check_ = now + std::chrono::milliseconds(100);
    if (!writer_) {
      if (storage_failed_.load() && o_.db_retry_interval.count() > 0 && now >= next_open_retry_ &&
          queue_.load(std::memory_order_acquire))
        open_writer(processed_last_step_);
      return;
    }
    storage::writer_stats ws;
    try {
      ws = writer_->stats();
    } catch (...) {
      return;
    }
    points_written_.store(ws.written);
    points_lost_.store(ws.dropped + ws.lost);
    write_failures_.store(ws.write_failures);
    if (ws.degraded) {
      try {
        std::lock_guard lock(storage_error_mutex_);
        storage_error_ = ws.last_error;
      } catch (...) {
      }
    }
    // The writer says the first failure itself; the way back is said here.
    if (storage_degraded_.exchange(ws.degraded) && !ws.degraded)
      router_.log(severity::info, "writing " + o_.db +
                                      " works again; the points held meanwhile are stored (" +
                                      std::to_string(ws.write_failures) + " failed attempts)");
  }

  std::unique_ptr<analyzer> make_analyzer() {
    // The detectors publish into the monitor's router, like the red flags and the ranks.
    return std::make_unique<analyzer>(schema_, o_.detectors, router_);
  }

  void start_dashboard() noexcept {
    if (o_.dashboard_port == 0) return;
    try {
      dashboard::server_options so;
      so.db_path = o_.db;
      so.host = o_.dashboard_host;
      so.port = static_cast<std::uint16_t>(o_.dashboard_port);
      so.token = o_.dashboard_token;
      auto srv = std::make_unique<dashboard::server>(so);
      srv->start();
      dashboard_port_.store(srv->port());
      router_.log(severity::info, "dashboard at http://" + o_.dashboard_host + ":" +
                                      std::to_string(srv->port()) + "/");
      dashboard_ = std::move(srv);
    } catch (const std::exception& e) {
      router_.log(severity::warning,
                  std::string("cannot serve the dashboard: ") + e.what() + "; training goes on");
    }
  }

  finding_router::listener rank_listener() {
    return [this](const finding& f, bool is_new) { router_.publish(rank_source_, f, is_new); };
  }

  // The router's incidents with every held-back episode update merged in, for findings().
  void sync_findings(analyzer& a) {
    (void)a.findings();
    std::lock_guard lock(findings_mutex_);
    findings_ = router_.incidents();
  }

  // Findings of the red-flag checker, published into the router like every other source.
  bool drain_inbox() {
    std::vector<std::pair<finding, bool>> items;
    {
      std::lock_guard lock(inbox_mutex_);
      if (inbox_.empty()) return false;
      items.swap(inbox_);
    }
    for (auto& [f, is_new] : items) router_.publish(red_source_, f, is_new);
    return true;
  }

  // The router's one listener: the incident goes to the snapshot findings() returns, the run
  // history, stderr (when new) and the user's callback.
  void record(const finding& f, bool is_new) {
    std::function<void(const finding&, bool)> cb;
    {
      std::lock_guard lock(findings_mutex_);
      // Incident ids are dense (1, 2, ...): the snapshot is indexed by them.
      if (findings_.size() < f.id) findings_.resize(f.id);
      findings_[f.id - 1] = f;
      cb = callback_;
    }
    if (writer_) {
      try {
        writer_->record_finding(f);
      } catch (const std::exception& e) {
        router_.log(severity::warning, std::string("cannot store a finding: ") + e.what());
      }
    }
    if (is_new) {
      findings_count_.fetch_add(1);
      if (o_.log_findings && f.level >= o_.log_level) router_.log(f.level, to_line(f));
    }
    if (cb) {
      try {
        cb(f, is_new);
      } catch (const std::exception& e) {
        router_.log(severity::warning, std::string("on_finding callback threw: ") + e.what());
      } catch (...) {
        router_.log(severity::warning, "on_finding callback threw");
      }
    }
  }

  torch::nn::Module& model_;
  torch::optim::Optimizer& optimizer_;
  attach_options o_;
  clock::time_point start_;
  std::unique_ptr<rank_sync> dist_;  // multi-rank view (attach_distributed), else null
  sample_schema schema_;
  std::vector<torch::Tensor> params_;
  std::vector<unsigned> hooks_;
  std::atomic<std::size_t> hook_count_{0};

  // Training-thread state (preallocated).
  std::vector<at::Tensor> grads_;
  std::vector<double> norms_;
  std::vector<std::uint8_t> has_norm_;
  std::vector<const at::Tensor*> scalar_ptrs_;
  std::vector<double> scalar_values_;
  std::vector<double> task_values_;
  std::vector<int> task_slot_;
  norm_engine norms_engine_;
  std::vector<const c10::TensorImpl*> last_impl_;
  std::vector<std::uint32_t> last_version_;
  std::vector<double> last_norm_;
  std::unique_ptr<step_guard> guard_;
  bool has_lr_ = false;

  // Written by hooks (possibly on autograd device threads), read at step().
  std::unique_ptr<std::atomic<std::uint8_t>[]> fired_, stale_, check_fresh_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> arrival_;
  std::atomic<std::uint32_t> arrival_counter_{0};

  // Hand-off.
  std::unique_ptr<sample_queue> queue_owner_;
  std::atomic<sample_queue*> queue_{nullptr};
  std::atomic<std::uint64_t> steps_{0}, processed_{0}, rejected_{0}, findings_count_{0};
  mutable std::mutex mutex_;
  mutable std::condition_variable wake_;
  // wait_idle() asks (request) and the monitor thread answers (done, under mutex_) once the
  // findings snapshot includes every held-back update.
  mutable std::atomic<std::uint64_t> sync_request_{0};
  std::uint64_t sync_done_ = 0;
  mutable std::condition_variable idle_;
  bool stop_ = false;
  std::once_flag detached_;
  std::atomic<bool> is_detached_{false};
  std::thread thread_;

  // Every finding goes through here: the detectors', the red flags' and the ranks'. Used on the
  // monitor thread, except log(), which any thread may call.
  finding_router router_;
  finding_router::source_id red_source_ = 0, rank_source_ = 0;
  std::unique_ptr<red_flag_checker> flags_;
  std::mutex inbox_mutex_;
  std::vector<std::pair<finding, bool>> inbox_;
  std::array<std::pair<std::string_view, torch::Tensor>, 16> named_;  // loss() since last step
  std::array<std::string, 16> named_names_;  // owned copies of their names
  std::atomic<bool> too_many_tasks_{false};
  std::size_t named_count_ = 0;

  // Monitor-thread results.
  std::unique_ptr<dashboard::server> dashboard_;
  std::atomic<int> dashboard_port_{0};
  std::unique_ptr<storage::run_writer> writer_;
  std::atomic<std::int64_t> run_id_{0};
  std::atomic<bool> storage_failed_{false};
  std::atomic<bool> storage_degraded_{false};
  std::atomic<std::uint64_t> points_written_{0}, points_lost_{0}, write_failures_{0};
  mutable std::mutex storage_error_mutex_;
  std::string storage_error_;
  // Monitor-thread only.
  clock::time_point next_storage_check_{}, next_open_retry_{};
  std::int64_t processed_last_step_ = -1;
  mutable std::mutex findings_mutex_;
  std::vector<finding> findings_;
  std::function<void(const finding&, bool)> callback_;
};

}  // namespace detail

monitor::monitor(std::unique_ptr<detail::monitor_state> state) : state_(std::move(state)) {}
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
  return state_->step(nullptr, 0, loss, extras);
}

step_decision monitor::step(std::initializer_list<std::pair<std::string_view, torch::Tensor>> tasks,
                            const torch::Tensor& total, const step_extras& extras) noexcept {
  if (!state_) return step_decision::proceed;
  return state_->step(tasks.begin(), tasks.size(), total, extras);
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
  return state_->step(v, tasks.size(), total, extras);
}

const torch::Tensor& monitor::loss(std::string_view task, const torch::Tensor& value) noexcept {
  return state_ ? state_->loss(task, value) : value;
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
  return monitor(std::make_unique<detail::monitor_state>(model, optimizer, std::move(options)));
}

monitor attach_distributed(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const c10::intrusive_ptr<c10d::ProcessGroup>& process_group,
                           attach_options options, distributed_options distributed) {
  auto sync = detail::make_rank_sync(process_group, std::move(distributed), options);
  return monitor(std::make_unique<detail::monitor_state>(model, optimizer, std::move(options),
                                                         std::move(sync)));
}

}  // namespace losslens
