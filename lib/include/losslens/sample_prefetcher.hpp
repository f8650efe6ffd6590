#pragma once
/// \file sample_prefetcher.hpp
/// Reads a stream of samples on a thread of its own while the caller analyses the earlier ones
/// (parsing a CSV and running the detectors then take one core each).

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens {

/// Runs `source` (a reader's next(): fills a sample, false at the end) on a thread that stays up
/// to `depth` batches of `batch` samples ahead of next(). Memory is those batches, whatever the
/// length of the stream; no allocation per sample once the batches' vectors have grown to the
/// rows' width, and no copy: next() hands out the sample where the source wrote it.
///
/// An exception from `source` ends the stream: next() returns every sample read before it, then
/// rethrows it. Destroying the prefetcher early stops the thread after its current call.
///
/// Thread-safety: next() from one thread at a time. `source` runs on the prefetcher's thread only,
/// from construction until it returns false or throws (or the prefetcher is destroyed): the
/// caller does not touch what it reads meanwhile.
class sample_prefetcher {
 public:
  using source_fn = std::function<bool(sample&)>;
  /// Per-sample work done on the prefetcher's thread right after `source` filled the sample,
  /// ahead of next(): `place` (< batch x depth) is where the sample sits in the ring, the value
  /// place() gives once next() has handed the sample out, so the caller can keep what it
  /// computed in an array of its own indexed by place. An exception ends the stream like one
  /// from `source`.
  using prepare_fn = std::function<void(const sample&, std::size_t place)>;
  static constexpr std::size_t default_batch = 1024, default_depth = 4;

  /// Starts the thread. Throws losslens::error when batch or depth is 0, std::system_error when
  /// no thread can be started.
  explicit sample_prefetcher(source_fn source, std::size_t batch = default_batch,
                             std::size_t depth = default_depth, prepare_fn prepare = {});
  sample_prefetcher(const sample_prefetcher&) = delete;
  sample_prefetcher& operator=(const sample_prefetcher&) = delete;
  /// Stops and joins the thread. Never throws.
  ~sample_prefetcher();

  /// The next sample, valid until the following call (or the destructor); nullptr at the end.
  /// Rethrows the source's exception after the samples read before it.
  const sample* next();
  /// Batches next() has begun to hand out, and how many of them it had to wait for (none was
  /// read yet): the share of waits says whether the reading is the slower half. Same thread as
  /// next().
  std::size_t batches() const noexcept { return batches_; }
  std::size_t waits() const noexcept { return waits_; }
  /// Where the sample last returned by next() sits in the ring (see prepare_fn).
  std::size_t place() const noexcept { return head_ * batch_ + pos_ - 1; }
  /// The sample `k` places after the one last returned by next() when next() will hand it out
  /// from the same batch (it is already read, and its place is place() + k), else nullptr.
  /// For prefetching: the caller may read it, not keep it. Same thread as next().
  const sample* ahead(std::size_t k) const noexcept {
    if (done_ || !holding_ || pos_ - 1 + k >= slots_[head_].count) return nullptr;
    return &slots_[head_].rows[pos_ - 1 + k];
  }

 private:
  struct slot {
    std::vector<sample> rows;
    std::size_t count = 0;
    bool last = false;         // the stream ends after these rows
    std::exception_ptr error;  // ... because the source threw this
  };
  void run(std::stop_token stop);
  /// A full ring's reader resumes when this many slots are filled (half of them free).
  std::size_t resume_at() const noexcept { return slots_.size() / 2; }

  source_fn source_;
  prepare_fn prepare_;
  std::size_t batch_;
  std::vector<slot> slots_;  // a ring: the reader fills at tail, next() reads at head
  std::mutex mutex_;
  std::condition_variable_any filled_cv_, freed_cv_;
  std::size_t filled_ = 0;  // slots ready for next(), under mutex_
  std::size_t head_ = 0, pos_ = 0;
  bool holding_ = false;  // next() is reading slots_[head_]
  bool done_ = false;     // next() has seen the end
  std::size_t batches_ = 0, waits_ = 0;
  std::jthread thread_;  // last: started once everything above exists
};

}  // namespace losslens
