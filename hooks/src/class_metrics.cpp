#include "class_metrics.hpp"

#include <algorithm>
#include <limits>

#include "losslens/series_key.hpp"

namespace losslens::hooks::detail {

class_metrics_slot::class_metrics_slot()
    : recall_(std::make_unique<std::atomic<double>[]>(series_layout::max_class_recall)) {}

bool class_metrics_slot::claim(std::string_view task, std::size_t classes) {
  std::lock_guard lock(mutex_);
  if (classes_ == 0) {
    task_ = std::string(task);
    classes_ = classes;
  }
  return task_ == task;
}

std::pair<std::string, std::size_t> class_metrics_slot::task() const {
  std::lock_guard lock(mutex_);
  return {task_, classes_};
}

void class_metrics_slot::publish(const double* recall, std::size_t classes,
                                 double balanced_accuracy) noexcept {
  std::lock_guard lock(mutex_);
  const std::size_t n = std::min(classes, series_layout::max_class_recall);
  // Seqlock write: odd while the values change, so that a reader that overlaps retries later.
  sequence_.fetch_add(1, std::memory_order_acq_rel);
  balanced_.store(balanced_accuracy, std::memory_order_relaxed);
  for (std::size_t c = 0; c < series_layout::max_class_recall; ++c)
    recall_[c].store(c < n ? recall[c] : std::numeric_limits<double>::quiet_NaN(),
                     std::memory_order_relaxed);
  sequence_.fetch_add(1, std::memory_order_release);
}

bool class_metrics_slot::read_into(sample& s) noexcept {
  const std::uint64_t before = sequence_.load(std::memory_order_acquire);
  if (before == read_ || (before & 1)) return false;
  const double balanced = balanced_.load(std::memory_order_relaxed);
  std::size_t n = 0;
  for (; n < s.class_recall.size(); ++n) {
    const double r = recall_[n].load(std::memory_order_relaxed);
    if (r == r) s.class_recall[n] = r;  // NaN: a class without sampled targets stays missing
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  if (sequence_.load(std::memory_order_relaxed) != before) {
    for (auto& v : s.class_recall) v.reset();  // overlapped a write: try at the next step
    return false;
  }
  if (balanced == balanced) s.balanced_accuracy = balanced;
  read_ = before;
  return true;
}

}  // namespace losslens::hooks::detail
