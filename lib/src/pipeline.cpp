#include "losslens/pipeline.hpp"

#include <algorithm>
#include <string>

#include "losslens/error.hpp"

namespace losslens {

pipeline::pipeline(pipeline_options options) : options_(std::move(options)) {
  if (options_.queue_capacity < 2) throw error("monitor: queue_capacity must be >= 2");
  // The analyzer is made at start(); check its options now, where the error can be thrown.
  analyzer probe(sample_schema{}, options_.detectors);
  start_.name = options_.run;
  start_.config_json = options_.config_json;
  start_.extra_series = options_.extra_series;
  start_.db = options_.db;
  router_.add_listener([this](const finding& f, bool is_new) { record(f, is_new); });
}

pipeline::~pipeline() { stop(); }

finding_router::source_id pipeline::add_source(std::string_view name) {
  return router_.add_source(name);
}

void pipeline::add_sink(std::unique_ptr<sink> s) {
  if (!s) return;
  std::lock_guard lock(sinks_mutex_);
  if (!started()) {
    sinks_.push_back(std::move(s));
    return;
  }
  new_sinks_.push_back(std::move(s));
  has_new_sinks_.store(true);
  wake();
}

void pipeline::add_task(monitor_task t) { tasks_.push_back(std::move(t)); }

void pipeline::on_finding(std::function<void(const finding&, bool)> cb) {
  std::lock_guard lock(callback_mutex_);
  callback_ = std::move(cb);
}

void pipeline::set_log_sink(log_sink sink) { router_.set_log_sink(std::move(sink)); }

void pipeline::start(sample_schema schema) {
  if (started()) throw error("monitor: started twice");
  start_.schema = std::move(schema);
  start_.parameters = start_.schema.params.size();
  analyzer_ = std::make_unique<analyzer>(start_.schema, options_.detectors, router_);
  queue_owner_ = std::make_unique<sample_queue>(options_.queue_capacity, start_.schema);
  // Under sinks_mutex_: add_sink() either finished before (the thread starts that sink) or
  // sees the pipeline started (the thread adopts it later).
  std::lock_guard lock(sinks_mutex_);
  queue_.store(queue_owner_.get(), std::memory_order_release);
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void pipeline::notify_pushed() noexcept {
  // Pairs with the fence in run(): either the monitor thread sees the new sample before it
  // sleeps, or this sees that it sleeps and wakes it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!sleeping_.load(std::memory_order_relaxed)) return;
  // A napping thread looks at the queue within batch_interval by itself, unless the queue
  // fills up before that.
  if (napping_.load(std::memory_order_relaxed)) {
    const sample_queue* q = queue();
    if (q->pushed() - q->popped() < q->capacity() / 2) return;
  }
  wake();
}

void pipeline::wake() noexcept {
  // Under the mutex: the monitor thread holds it from its last look at the work until it
  // sleeps, so the notification cannot fall in between.
  std::lock_guard lock(mutex_);
  wake_.notify_one();
}

void pipeline::post(finding_router::source_id src, finding f, bool is_new) noexcept {
  try {
    posted p;
    p.is_finding = true;
    p.src = src;
    p.f = std::move(f);
    p.is_new = is_new;
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(p));
    has_posted_.store(true);
  } catch (...) {
    log(severity::warning, "out of memory: a finding was not recorded");
    return;
  }
  wake();
}

void pipeline::post(run_event e) noexcept {
  try {
    posted p;
    p.e = std::move(e);
    std::lock_guard lock(posted_mutex_);
    posted_.push_back(std::move(p));
    has_posted_.store(true);
  } catch (...) {
    return;  // an event is not worth failing for
  }
  wake();
}

void pipeline::log(severity level, std::string_view line) const noexcept {
  router_.log(level, line);
}

std::vector<finding> pipeline::findings() const {
  std::lock_guard lock(findings_mutex_);
  return findings_;
}

void pipeline::wait_idle() const {
  if (!started()) return;
  const std::uint64_t request = sync_request_.fetch_add(1) + 1;
  {
    std::lock_guard lock(mutex_);
    wake_.notify_one();
  }
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return finished_ || sync_done_ >= request; });
}

pipeline_stats pipeline::stats() const noexcept {
  pipeline_stats s;
  if (auto* q = queue()) {
    s.queued = q->pushed();
    s.dropped = q->dropped();
  }
  s.processed = processed_.load();
  s.findings = findings_count_.load();
  try {
    std::lock_guard lock(sinks_mutex_);
    for (const auto& k : sinks_) k->add_stats(s.sinks);
  } catch (...) {
    // A sink that cannot report (out of memory copying a message): the counters remain.
  }
  return s;
}

void pipeline::stop() noexcept {
  std::call_once(stopped_, [this] {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    wake();
    thread_.join();
  });
}

void pipeline::emit_point(std::size_t series, std::int64_t step, double wall_time,
                          double value) noexcept {
  each_sink("on_point", [&](sink& k) { k.on_point(series, step, wall_time, value); });
}

const std::vector<finding>& pipeline::incidents() const noexcept { return router_.incidents(); }

template <class F>
void pipeline::each_sink(const char* what, F&& f) noexcept {
  for (auto& k : sinks_) {
    try {
      f(*k);
    } catch (const std::exception& e) {
      log(severity::warning, std::string("a sink's ") + what + " failed: " + e.what());
    } catch (...) {
      log(severity::warning, std::string("a sink's ") + what + " failed");
    }
  }
}

bool pipeline::has_work() const noexcept {
  const auto* q = queue();
  return (q && q->pushed() != q->popped()) || has_posted_.load() || has_new_sinks_.load() ||
         sync_request_.load() != sync_done_;
}

bool pipeline::adopt_sinks() noexcept {
  if (!has_new_sinks_.load()) return false;
  std::vector<std::unique_ptr<sink>> adopted;
  try {
    std::lock_guard lock(sinks_mutex_);
    has_new_sinks_.store(false);
    for (auto& k : new_sinks_) {
      sinks_.push_back(std::move(k));
      adopted.push_back(nullptr);  // count only
    }
    new_sinks_.clear();
  } catch (...) {
    return false;
  }
  // The newcomers sit at the end of sinks_: start them there.
  const std::size_t first = sinks_.size() - adopted.size();
  for (std::size_t i = first; i < sinks_.size(); ++i) {
    try {
      sinks_[i]->on_start(start_, *this);
    } catch (const std::exception& e) {
      log(severity::warning, std::string("a sink failed to start: ") + e.what());
    }
  }
  return true;
}

bool pipeline::drain_posted() noexcept {
  if (!has_posted_.load()) return false;
  std::vector<posted> items;
  {
    std::lock_guard lock(posted_mutex_);
    items.swap(posted_);
    has_posted_.store(false);
  }
  for (auto& p : items) {
    if (p.is_finding) {
      // A check names the task it was given ("cls"); a run whose loss is one total has no
      // series loss/cls: the finding belongs to the run's loss.
      if (started()) {
        const auto key = series_key::parse(p.f.series);
        const auto& tasks = start_.schema.tasks;
        if (key.kind == series_kind::task_loss &&
            std::find(tasks.begin(), tasks.end(), key.owner) == tasks.end())
          p.f.series = series_key{series_kind::loss, {}}.name();
      }
      router_.publish(p.src, p.f, p.is_new);
    } else
      deliver(p.e);
  }
  return !items.empty();
}

bool pipeline::drain_samples() noexcept {
  sample_queue* q = queue();
  bool did = false;
  while (const sample* s = q->front()) {
    try {
      analyzer_->observe(*s);
    } catch (const std::exception& e) {
      log(severity::error, std::string("monitor error: ") + e.what());
    }
    each_sink("on_sample", [&](sink& k) { k.on_sample(*s); });
    if (options_.on_sample) {
      try {
        options_.on_sample(*s);
      } catch (const std::exception& e) {
        log(severity::warning, std::string("on_sample callback threw: ") + e.what());
      } catch (...) {
        log(severity::warning, "on_sample callback threw");
      }
    }
    last_step_ = s->step;
    q->pop();
    processed_.fetch_add(1);
    did = true;
  }
  // Overflow on the training side: said once, stored per burst.
  const std::uint64_t dropped = q->dropped();
  if (dropped > drops_reported_) {
    if (drops_reported_ == 0)
      log(severity::warning, "the monitor queue was full; " + std::to_string(dropped) +
                                 " samples dropped so far (raise attach_options::queue_capacity)");
    try {
      deliver(events::drops("monitor", dropped - drops_reported_, dropped, last_step_));
    } catch (...) {
    }
    drops_reported_ = dropped;
  }
  return did;
}

void pipeline::record(const finding& f, bool is_new) noexcept {
  try {
    std::lock_guard lock(findings_mutex_);
    // Incident ids are dense (1, 2, ...): the snapshot is indexed by them.
    if (findings_.size() < f.id) findings_.resize(f.id);
    findings_[f.id - 1] = f;
  } catch (...) {
  }
  each_sink("on_finding", [&](sink& k) { k.on_finding(f, is_new); });
  if (is_new) {
    findings_count_.fetch_add(1);
    if (options_.log_findings && f.level >= options_.log_level) {
      try {
        log(f.level, to_line(f));
      } catch (...) {
      }
    }
  }
  std::function<void(const finding&, bool)> cb;
  try {
    std::lock_guard lock(callback_mutex_);
    cb = callback_;
  } catch (...) {
  }
  if (!cb) return;
  try {
    cb(f, is_new);
  } catch (const std::exception& e) {
    log(severity::warning, std::string("on_finding callback threw: ") + e.what());
  } catch (...) {
    log(severity::warning, "on_finding callback threw");
  }
}

void pipeline::deliver(const run_event& e) noexcept {
  each_sink("on_event", [&](sink& k) { k.on_event(e); });
}

void pipeline::run(std::stop_token stop) noexcept {
  each_sink("on_start", [&](sink& k) { k.on_start(start_, *this); });
  for (;;) {
    const std::uint64_t request = sync_request_.load();
    bool did = adopt_sinks();
    did |= drain_posted();
    const bool got_samples = drain_samples();
    did |= got_samples;
    const auto now = clock::now();
    if (got_samples) last_samples_ = now;
    if (!tasks_.empty() && (did || now >= next_task_poll_)) {
      auto every = std::chrono::milliseconds::max();
      for (auto& t : tasks_) {
        every = std::min(every, t.interval);
        try {
          if (t.poll && t.poll()) did = true;
        } catch (...) {
        }
      }
      next_task_poll_ = now + every;
    }
    auto deadline = tasks_.empty() ? clock::time_point::max() : next_task_poll_;
    for (auto& k : sinks_) {
      try {
        if (k->next_timer() <= now) k->on_timer(now);
        deadline = std::min(deadline, k->next_timer());
      } catch (const std::exception& e) {
        log(severity::warning, std::string("a sink's timer failed: ") + e.what());
      }
    }
    // A waiter in wait_idle() wants findings() current: merge what the detectors hold back.
    bool synced = false;
    {
      std::unique_lock lock(mutex_);
      synced = request != sync_done_;
    }
    if (synced) {
      try {
        (void)analyzer_->findings();
        std::lock_guard lock(findings_mutex_);
        findings_ = router_.incidents();
      } catch (...) {
      }
    }
    std::unique_lock lock(mutex_);
    if (synced) {
      sync_done_ = std::max(sync_done_, request);
      idle_.notify_all();
    }
    if (stop.stop_requested()) {
      if (has_work()) continue;  // drain what arrived meanwhile
      break;
    }
    if (did) continue;
    // Samples came in within the last batch_interval: more are likely on their way, and this
    // thread fetches them at the deadline instead of being woken for each.
    const bool nap =
        options_.batch_interval.count() > 0 && now - last_samples_ < options_.batch_interval;
    if (nap) deadline = std::min(deadline, now + options_.batch_interval);
    napping_.store(nap, std::memory_order_relaxed);
    sleeping_.store(true, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with notify_pushed()
    wake_.wait_until(lock, stop, deadline, [&] { return has_work(); });
    sleeping_.store(false, std::memory_order_relaxed);
  }
  finish_run();
}

void pipeline::finish_run() noexcept {
  try {
    analyzer_->flush();
  } catch (...) {
  }
  drain_posted();
  for (auto& t : tasks_) {
    try {
      if (t.finish) t.finish();
    } catch (...) {
    }
  }
  drain_posted();
  try {
    std::lock_guard lock(findings_mutex_);
    findings_ = router_.incidents();
  } catch (...) {
  }
  const sample_queue* q = queue();
  const std::uint64_t steps = q->pushed() + q->dropped();
  try {
    deliver(events::detach(steps, last_step_));
  } catch (...) {
  }
  for (auto it = sinks_.rbegin(); it != sinks_.rend(); ++it) {
    try {
      (*it)->on_finish(steps, last_step_);
    } catch (const std::exception& e) {
      log(severity::warning, std::string("a sink failed to finish: ") + e.what());
    } catch (...) {
    }
  }
  std::lock_guard lock(mutex_);
  finished_ = true;
  idle_.notify_all();
}

}  // namespace losslens
