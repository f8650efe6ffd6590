#include "detail/poller.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "detail/json.hpp"
#include "losslens/error.hpp"

namespace losslens::dashboard::detail {

namespace {

shared_message make_message(const nlohmann::json& j) {
  return std::make_shared<const std::string>(dump_json(j));
}

double unix_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

constexpr std::int64_t max_step = std::numeric_limits<std::int64_t>::max();
// Series list and run status are re-read this often (points and findings every cycle).
constexpr std::chrono::milliseconds refresh_interval{500};
constexpr std::size_t max_points_per_cycle = 20000;
constexpr std::chrono::milliseconds findings_interval{100};

}  // namespace

poller::poller(storage::run_reader reader, hub& h, poller_options options)
    : reader_(std::move(reader)), hub_(h), options_(options) {
  hub_.on_change([this] { notify(); });
  thread_ = std::thread([this] { loop(); });
}

poller::~poller() {
  hub_.on_change(nullptr);
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void poller::loop() noexcept {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    lock.unlock();
    try {
      cycle();
    } catch (const std::exception& e) {
      report(e);  // a failed read (e.g. the database is being replaced): retried next cycle
    }
    ++polls_;
    lock.lock();
    wake_.wait_for(lock, options_.interval, [this] { return stop_ || pending_; });
    pending_ = false;
  }
}

void poller::notify() noexcept {
  {
    std::lock_guard lock(mutex_);
    pending_ = true;
  }
  wake_.notify_one();
}

void poller::report(const std::exception& e) noexcept {
  if (errors_.fetch_add(1) == 0) std::fprintf(stderr, "losslens dashboard: %s\n", e.what());
}

void poller::cycle() {
  auto snap = hub_.take();
  // Forget runs nobody watches any more.
  for (auto it = cursors_.begin(); it != cursors_.end();)
    it = snap.subscribers.count(it->first) ? std::next(it) : cursors_.erase(it);

  for (const auto& [run, subs] : snap.subscribers) {
    auto fresh = snap.new_subscribers.find(run);
    try {
      poll_subscribed(run, subs, fresh == snap.new_subscribers.end() ? nullptr : &fresh->second);
    } catch (const std::exception& e) {
      // Retried next cycle (the cursor did not advance); subscribers still waiting for their
      // acknowledgement stay waiting. Other runs go on.
      if (fresh != snap.new_subscribers.end())
        for (const auto& s : fresh->second)
          hub_.subscribe(run, s, std::numeric_limits<std::size_t>::max());
      report(e);
    }
  }

  auto now = std::chrono::steady_clock::now();
  if (!snap.run_watchers.empty() && now - runs_polled_ >= options_.runs_interval) {
    runs_polled_ = now;
    poll_runs(snap.run_watchers);
  }
}

void poller::poll_subscribed(std::int64_t run, const std::vector<std::shared_ptr<subscriber>>& subs,
                             const std::vector<std::shared_ptr<subscriber>>* new_subs) {
  auto found = cursors_.find(run);
  shared_message delta;
  if (found == cursors_.end()) {
    run_cursor c;
    if (!init_cursor(run, c)) {
      auto err = make_message(
          {{"type", "error"}, {"run", run}, {"error", "no run " + std::to_string(run)}});
      for (const auto& s : subs) s->send(err);
      hub_.drop_run(run);
      return;
    }
    found = cursors_.emplace(run, std::move(c)).first;
  } else {
    delta = poll_run(run, found->second);
  }
  // Deltas go to subscribers that were already acknowledged; new ones get the
  // acknowledgement (with the steps it covers) first, then every later delta.
  std::set<const subscriber*> fresh;
  if (new_subs) {
    auto ack = subscribed_message(run, found->second);
    for (const auto& s : *new_subs) {
      s->send(ack);
      fresh.insert(s.get());
    }
  }
  if (delta)
    for (const auto& s : subs)
      if (!fresh.count(s.get())) s->send(delta);
}

bool poller::init_cursor(std::int64_t run, run_cursor& c) {
  storage::run_info info;
  try {
    info = reader_.run(run);
  } catch (const losslens::error&) {
    return false;
  }
  c.status = std::string(to_string(info.status));
  for (const auto& s : reader_.series(run))
    c.series.push_back({s.id, s.name, s.summary.count > 0 ? s.summary.last.step : -1});
  for (const auto& f : reader_.findings(run)) c.findings[f.f.id] = dump_json(finding_json(f));
  for (const auto& e : reader_.events(run)) c.last_event = std::max(c.last_event, e.id);
  c.refreshed = c.findings_polled = std::chrono::steady_clock::now();
  return true;
}

shared_message poller::subscribed_message(std::int64_t run, const run_cursor& c) const {
  nlohmann::json last = nlohmann::json::object();
  for (const auto& s : c.series) last[s.name] = s.last_step;
  return make_message({{"type", "subscribed"},
                       {"run", run},
                       {"status", c.status},
                       {"last_steps", last},
                       {"last_event", c.last_event},
                       {"time", unix_now()}});
}

shared_message poller::poll_run(std::int64_t run, run_cursor& c) {
  // Everything is read first and the cursor advanced only once all reads succeeded, so a
  // failed cycle (it throws) loses nothing: the next one reads the same points again.
  auto now = std::chrono::steady_clock::now();
  bool refresh = now - c.refreshed >= refresh_interval;
  std::string status = c.status;
  std::vector<storage::series_info> all;
  if (refresh) {
    status = std::string(to_string(reader_.run(run).status));
    all = reader_.series(run);
  }
  nlohmann::json points = nlohmann::json::object();
  std::vector<std::int64_t> last_steps;
  for (const auto& s : c.series) {
    // At most max_points_per_cycle per series and cycle: a backlog is spread over cycles so
    // that frames stay small.
    std::vector<storage::point> pts;
    auto cur = reader_.cursor(s.id, s.last_step + 1, max_step);
    storage::point p;
    while (pts.size() < max_points_per_cycle && cur.next(p)) pts.push_back(p);
    last_steps.push_back(pts.empty() ? s.last_step : pts.back().step);
    if (!pts.empty()) points[s.name] = points_json(pts);
  }
  // Findings are read whole (an update changes a row in place), so at most every
  // findings_interval rather than every cycle.
  bool read_findings = now - c.findings_polled >= findings_interval;
  std::vector<storage::stored_finding> stored;
  std::vector<storage::event_info> events;  // appended only: read those after the last sent
  if (read_findings) {
    stored = reader_.findings(run);
    events = reader_.events(run, c.last_event);
  }

  // All reads done: advance.
  bool changed = status != c.status || !points.empty();
  c.status = std::move(status);
  for (std::size_t i = 0; i < last_steps.size(); ++i) c.series[i].last_step = last_steps[i];
  if (refresh) {
    c.refreshed = now;
    for (std::size_t i = c.series.size(); i < all.size(); ++i)
      c.series.push_back({all[i].id, all[i].name, -1});
  }
  if (read_findings) c.findings_polled = now;
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& f : stored) {
    auto j = finding_json(f);
    auto text = dump_json(j);
    auto& old = c.findings[f.f.id];
    if (old == text) continue;
    old = std::move(text);
    findings.push_back(std::move(j));
    changed = true;
  }
  nlohmann::json new_events = nlohmann::json::array();
  for (const auto& e : events) {
    new_events.push_back(event_json(e));
    c.last_event = std::max(c.last_event, e.id);
    changed = true;
  }
  if (!changed) return nullptr;
  return make_message({{"type", "delta"},
                       {"run", run},
                       {"status", c.status},
                       {"points", points},
                       {"findings", findings},
                       {"events", new_events},
                       {"time", unix_now()}});
}

void poller::poll_runs(const std::vector<std::shared_ptr<subscriber>>& watchers) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : reader_.runs()) runs.push_back(run_json(r));
  auto text = dump_json(runs);
  bool changed = text != runs_text_;
  runs_text_ = std::move(text);
  auto msg = make_message({{"type", "runs"}, {"runs", runs}});
  // Everyone gets a changed list; new watchers get the current one.
  std::set<const subscriber*> now_watching;
  for (const auto& s : watchers) {
    now_watching.insert(s.get());
    if (changed || !runs_watchers_.count(s.get())) s->send(msg);
  }
  runs_watchers_ = std::move(now_watching);
}

}  // namespace losslens::dashboard::detail
