#pragma once
/// \file sample_queue.hpp
/// The hand-off between the training thread and the monitor thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens {

/// A bounded single-producer/single-consumer ring of preallocated samples. The producer (the
/// training thread) fills a slot in place and commits it; when the ring is full the sample is
/// dropped and counted. Neither side blocks, locks or allocates after construction.
///
/// Thread-safety: exactly one producer thread and one consumer thread.
class sample_queue {
 public:
  /// Preallocates `capacity` (rounded up to a power of two, at least 2) samples whose vectors
  /// are sized for the schema. Throws losslens::error when capacity is 0.
  sample_queue(std::size_t capacity, const sample_schema& schema);

  /// Producer: a slot to fill, with optionals cleared and vectors at the schema's sizes; or
  /// nullptr when the queue is full (the drop is counted). Call commit_push() after filling.
  sample* try_begin_push() noexcept;
  /// Producer: publishes the slot returned by the last try_begin_push().
  void commit_push() noexcept;

  /// Consumer: the oldest committed sample, or nullptr when empty.
  const sample* front() noexcept;
  /// Consumer: releases the sample returned by front().
  void pop() noexcept;

  std::size_t capacity() const noexcept { return slots_.size(); }
  /// Samples committed, dropped because the queue was full, and consumed so far.
  std::uint64_t pushed() const noexcept { return tail_.load(std::memory_order_acquire); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t popped() const noexcept { return head_.load(std::memory_order_acquire); }

 private:
  std::vector<sample> slots_;
  std::size_t mask_;
  alignas(64) std::atomic<std::uint64_t> head_{0};  // next slot to consume
  alignas(64) std::atomic<std::uint64_t> tail_{0};  // next slot to fill
  alignas(64) std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace losslens
