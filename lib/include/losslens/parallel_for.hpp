#pragma once
/// \file parallel_for.hpp
/// Independent pieces of one read (an event file's parts, an MLflow run's metric files) on the
/// machine's cores.

#include <cstddef>
#include <functional>

namespace losslens {

/// How many threads a read asked to use `threads` (0: the machine's) may start: `threads`, or
/// the machine's CPU count (at least 1) when 0. Thread-safe.
unsigned thread_count(unsigned threads) noexcept;

/// Calls task(i) once for every i in [0, count), on up to `threads` threads (the calling thread
/// among them; 0: as many as the machine has CPUs), and returns when every call has returned.
/// Which thread runs which i is not fixed: each task writes its own result (and catches its own
/// errors to keep them there). When no thread can be started the calling thread runs them all.
/// Thread-safety: task is called concurrently with different i.
void parallel_for(std::size_t count, unsigned threads,
                  const std::function<void(std::size_t)>& task) noexcept;

}  // namespace losslens
