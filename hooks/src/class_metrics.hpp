#pragma once
// The hand-off of the class task's sampled metrics (balanced accuracy, per-class recall) from the
// red flag checks (any thread) to the step capture (training thread), which puts them in the
// next sample. The writer takes a mutex (a sampled check, every every_n_steps steps); the
// training thread reads with a sequence counter: no lock, no allocation, never blocks.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "losslens/sample.hpp"

namespace losslens::hooks::detail {

class class_metrics_slot {
 public:
  class_metrics_slot();

  /// The first classification task checked becomes the class task (later ones are ignored);
  /// returns whether `task` is it. Any thread.
  bool claim(std::string_view task, std::size_t classes);
  /// The class task and its class count (0 when none was checked yet). Any thread.
  std::pair<std::string, std::size_t> task() const;
  /// Publishes the latest pooled metrics of the class task (recall: one per class, NaN for a
  /// class without targets). Any thread; never throws.
  void publish(const double* recall, std::size_t classes, double balanced_accuracy) noexcept;
  /// Copies metrics published since the last call into s (balanced_accuracy, class_recall as
  /// sized by the queue). Training thread only; lock-free; false when there is nothing new.
  bool read_into(sample& s) noexcept;

 private:
  mutable std::mutex mutex_;  // claim and the writers
  std::string task_;
  std::size_t classes_ = 0;
  std::atomic<std::uint64_t> sequence_{0};  // odd while a writer copies
  std::uint64_t read_ = 0;                  // training thread: the last sequence read
  std::atomic<double> balanced_{0};
  std::unique_ptr<std::atomic<double>[]> recall_;
};

}  // namespace losslens::hooks::detail
