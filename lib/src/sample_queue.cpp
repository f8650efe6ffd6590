#include "losslens/sample_queue.hpp"

#include <algorithm>

#include "losslens/error.hpp"
#include "losslens/series_key.hpp"

namespace losslens {

sample_queue::sample_queue(std::size_t capacity, const sample_schema& schema) {
  if (capacity == 0) throw error("sample_queue capacity must be at least 1");
  std::size_t n = 2;
  while (n < capacity) n <<= 1;
  slots_.resize(n);
  for (auto& s : slots_) {
    s.task_losses.resize(schema.tasks.size());
    s.task_weights.reserve(schema.tasks.size());
    s.task_grad_norms.reserve(schema.tasks.size());
    s.param_grad_norms.resize(schema.params.size());
    s.param_flags.resize(schema.params.size());
    s.class_recall.resize(std::min(schema.classes, series_layout::max_class_recall));
  }
  mask_ = n - 1;
}

sample* sample_queue::try_begin_push() noexcept {
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail - head_.load(std::memory_order_acquire) >= slots_.size()) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  sample& s = slots_[tail & mask_];
  // Clear in place: sizes (and so capacity) stay, nothing is allocated.
  s.loss.reset();
  s.grad_norm.reset();
  s.lr.reset();
  s.lr_min.reset();
  s.lr_max.reset();
  s.accuracy.reset();
  s.balanced_accuracy.reset();
  s.clip_norm.reset();
  s.max_norm.reset();
  for (auto& v : s.class_recall) v.reset();
  s.first_non_finite_param = -1;
  s.eval_mode = false;
  for (auto& v : s.task_losses) v.reset();
  for (auto& v : s.param_grad_norms) v.reset();
  for (auto& f : s.param_flags) f = 0;
  s.task_weights.clear();
  s.task_grad_norms.clear();
  return &s;
}

void sample_queue::commit_push() noexcept {
  tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

const sample* sample_queue::front() noexcept {
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  if (head == tail_.load(std::memory_order_acquire)) return nullptr;
  return &slots_[head & mask_];
}

void sample_queue::pop() noexcept {
  head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

}  // namespace losslens
