#include "losslens/sample_prefetcher.hpp"

#include <utility>

#include "losslens/error.hpp"

namespace losslens {

sample_prefetcher::sample_prefetcher(source_fn source, std::size_t batch, std::size_t depth,
                                     prepare_fn prepare)
    : source_(std::move(source)), prepare_(std::move(prepare)), batch_(batch) {
  if (batch == 0 || depth == 0)
    throw error("sample_prefetcher: batch and depth must be at least 1");
  if (!source_) throw error("sample_prefetcher: no source given");
  slots_.resize(depth);
  for (auto& s : slots_) s.rows.resize(batch);
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

sample_prefetcher::~sample_prefetcher() {
  // The stop request wakes a reader waiting for a free slot (condition_variable_any with the
  // token); one inside source_ stops after that call.
  thread_.request_stop();
}

void sample_prefetcher::run(std::stop_token stop) {
  std::size_t tail = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      // Once the ring is full, wait until half of it is free (next() wakes it only then): one
      // wake-up per half ring rather than per batch when next() is the slower side (the usual
      // case).
      if (filled_ == slots_.size() &&
          !freed_cv_.wait(lock, stop, [&] { return filled_ <= resume_at(); }))
        return;
    }
    // Filled without the lock: next() does not read this slot until filled_ counts it.
    slot& s = slots_[tail];
    s.count = 0;
    s.last = false;
    s.error = nullptr;
    try {
      while (s.count < s.rows.size() && !stop.stop_requested()) {
        if (!source_(s.rows[s.count])) {
          s.last = true;
          break;
        }
        if (prepare_) prepare_(s.rows[s.count], tail * batch_ + s.count);
        ++s.count;
      }
    } catch (...) {
      s.error = std::current_exception();
      s.last = true;
    }
    if (stop.stop_requested()) s.last = true;
    {
      std::lock_guard lock(mutex_);
      ++filled_;
    }
    filled_cv_.notify_one();
    if (s.last) return;
    tail = (tail + 1) % slots_.size();
  }
}

const sample* sample_prefetcher::next() {
  for (;;) {
    if (done_) return nullptr;
    if (holding_) {
      slot& h = slots_[head_];
      if (pos_ < h.count) return &h.rows[pos_++];
      if (h.last) {
        done_ = true;
        if (h.error) std::rethrow_exception(h.error);
        return nullptr;
      }
      // This slot is read: hand it back to the reader.
      holding_ = false;
      head_ = (head_ + 1) % slots_.size();
      bool wake = false;
      {
        std::lock_guard lock(mutex_);
        wake = --filled_ == resume_at();
      }
      if (wake) freed_cv_.notify_one();
    }
    std::unique_lock lock(mutex_);
    if (filled_ == 0) ++waits_;
    filled_cv_.wait(lock, [&] { return filled_ > 0; });
    ++batches_;
    holding_ = true;
    pos_ = 0;
  }
}

}  // namespace losslens
