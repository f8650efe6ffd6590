#include "losslens/parallel_for.hpp"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace losslens {

unsigned thread_count(unsigned threads) noexcept {
  return threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
}

void parallel_for(std::size_t count, unsigned threads,
                  const std::function<void(std::size_t)>& task) noexcept {
  threads = thread_count(threads);
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) task(i);
  };
  std::vector<std::jthread> helpers;
  try {
    const std::size_t more = std::min<std::size_t>(threads, count) - (count > 0);
    helpers.reserve(more);
    for (std::size_t k = 0; k < more; ++k) helpers.emplace_back(work);
  } catch (...) {
    // No (further) thread: the ones started and this one share the work.
  }
  work();
}  // the helpers join here

}  // namespace losslens
