#include "detail/point_queue.hpp"

namespace losslens::storage::detail {

namespace {
std::size_t round_up_pow2(std::size_t n) {
  std::size_t p = 2;
  while (p < n) p <<= 1;
  return p;
}
}  // namespace

point_queue::point_queue(std::size_t capacity)
    : cells_(new cell[round_up_pow2(capacity)]), mask_(round_up_pow2(capacity) - 1) {
  for (std::size_t i = 0; i <= mask_; ++i) cells_[i].sequence.store(i, std::memory_order_relaxed);
}

bool point_queue::try_push(const point_record& r) noexcept {
  std::size_t pos = head_.load(std::memory_order_relaxed);
  for (;;) {
    cell& c = cells_[pos & mask_];
    std::size_t seq = c.sequence.load(std::memory_order_acquire);
    auto diff = std::ptrdiff_t(seq) - std::ptrdiff_t(pos);
    if (diff == 0) {
      if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        c.data = r;
        c.sequence.store(pos + 1, std::memory_order_release);
        return true;
      }
    } else if (diff < 0) {
      return false;  // full
    } else {
      pos = head_.load(std::memory_order_relaxed);
    }
  }
}

bool point_queue::try_pop(point_record& r) noexcept {
  std::size_t pos = tail_.load(std::memory_order_relaxed);
  for (;;) {
    cell& c = cells_[pos & mask_];
    std::size_t seq = c.sequence.load(std::memory_order_acquire);
    auto diff = std::ptrdiff_t(seq) - std::ptrdiff_t(pos + 1);
    if (diff == 0) {
      if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        r = c.data;
        c.sequence.store(pos + mask_ + 1, std::memory_order_release);
        return true;
      }
    } else if (diff < 0) {
      return false;  // empty
    } else {
      pos = tail_.load(std::memory_order_relaxed);
    }
  }
}

std::size_t point_queue::size_approx() const noexcept {
  std::size_t h = head_.load(std::memory_order_relaxed);
  std::size_t t = tail_.load(std::memory_order_relaxed);
  return h > t ? h - t : 0;
}

}  // namespace losslens::storage::detail
