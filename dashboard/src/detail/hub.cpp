#include "detail/hub.hpp"

namespace losslens::dashboard::detail {

namespace {

std::vector<std::shared_ptr<subscriber>> live(
    const std::map<const subscriber*, std::weak_ptr<subscriber>>& m) {
  std::vector<std::shared_ptr<subscriber>> out;
  out.reserve(m.size());
  for (const auto& [_, w] : m)
    if (auto s = w.lock()) out.push_back(std::move(s));
  return out;
}

}  // namespace

void hub::join(const std::shared_ptr<subscriber>& s) {
  std::lock_guard lock(mutex_);
  sessions_[s.get()] = s;
}

void hub::leave(const subscriber* s) noexcept {
  std::lock_guard lock(mutex_);
  sessions_.erase(s);
  watchers_.erase(s);
  for (auto* m : {&runs_, &new_})
    for (auto it = m->begin(); it != m->end();) {
      it->second.erase(s);
      it = it->second.empty() ? m->erase(it) : std::next(it);
    }
}

bool hub::subscribe(std::int64_t run, const std::shared_ptr<subscriber>& s, std::size_t limit) {
  {
    std::lock_guard lock(mutex_);
    std::size_t count = 0;
    for (const auto& [r, m] : runs_) count += m.count(s.get());
    if (count >= limit && !runs_[run].count(s.get())) return false;
    runs_[run][s.get()] = s;
    new_[run][s.get()] = s;
  }
  changed();
  return true;
}

void hub::on_change(std::function<void()> cb) {
  std::lock_guard lock(mutex_);
  on_change_ = std::move(cb);
}

void hub::changed() {
  std::function<void()> cb;
  {
    std::lock_guard lock(mutex_);
    cb = on_change_;
  }
  if (cb) cb();
}

void hub::unsubscribe(std::int64_t run, const subscriber* s) {
  std::lock_guard lock(mutex_);
  for (auto* m : {&runs_, &new_}) {
    auto it = m->find(run);
    if (it == m->end()) continue;
    it->second.erase(s);
    if (it->second.empty()) m->erase(it);
  }
}

void hub::watch_runs(const std::shared_ptr<subscriber>& s) {
  {
    std::lock_guard lock(mutex_);
    watchers_[s.get()] = s;
  }
  changed();
}

void hub::drop_run(std::int64_t run) {
  std::lock_guard lock(mutex_);
  runs_.erase(run);
  new_.erase(run);
}

hub::snapshot hub::take() {
  std::lock_guard lock(mutex_);
  snapshot snap;
  for (const auto& [run, m] : runs_) snap.subscribers[run] = live(m);
  for (const auto& [run, m] : new_) snap.new_subscribers[run] = live(m);
  new_.clear();
  snap.run_watchers = live(watchers_);
  return snap;
}

std::size_t hub::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace losslens::dashboard::detail
