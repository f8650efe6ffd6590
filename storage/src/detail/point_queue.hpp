#pragma once
// A bounded lock-free multi-producer queue of fixed-size point records (Vyukov's
// sequence-numbered ring). Producers never block and never allocate; a full queue refuses.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace losslens::storage::detail {

/// One number on its way to the database.
struct point_record {
  std::uint32_t series = 0;  ///< index into the writer's series table
  std::int64_t step = 0;
  double wall_time = 0;
  double value = 0;
};

class point_queue {
 public:
  /// capacity is rounded up to a power of two (at least 2). Allocates once, here.
  explicit point_queue(std::size_t capacity);

  /// Enqueues; false when full. Thread-safe for any number of producers; wait-free when not
  /// contended, never blocks.
  bool try_push(const point_record& r) noexcept;
  /// Dequeues into r; false when empty. Any number of consumers.
  bool try_pop(point_record& r) noexcept;
  /// Approximate number of queued records.
  std::size_t size_approx() const noexcept;
  std::size_t capacity() const noexcept { return mask_ + 1; }

 private:
  struct cell {
    std::atomic<std::size_t> sequence;
    point_record data;
  };
  std::unique_ptr<cell[]> cells_;
  std::size_t mask_;
  alignas(64) std::atomic<std::size_t> head_{0};  // next position to push
  alignas(64) std::atomic<std::size_t> tail_{0};  // next position to pop
};

}  // namespace losslens::storage::detail
