#pragma once
// The poller: one thread with its own reader connection that turns database changes into
// websocket messages (deltas of subscribed runs, the run list) and hands them to the hub.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "detail/hub.hpp"
#include "losslens/storage/run_reader.hpp"

namespace losslens::dashboard::detail {

struct poller_options {
  std::chrono::milliseconds interval{50};
  std::chrono::milliseconds runs_interval{1000};
};

/// Owns its thread: the constructor starts it, the destructor signals and joins it.
class poller {
 public:
  /// Takes an open reader (opened by the caller so that errors surface at start()).
  poller(storage::run_reader reader, hub& h, poller_options options);
  ~poller();
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  std::uint64_t polls() const noexcept { return polls_.load(); }
  /// Runs a cycle now instead of at the next interval (new data was committed, a client
  /// subscribed). Any thread; never blocks for long.
  void notify() noexcept;
  std::uint64_t errors() const noexcept { return errors_.load(); }

 private:
  struct series_cursor {
    std::int64_t id = 0;
    std::string name;
    std::int64_t last_step = -1;
  };
  struct run_cursor {
    std::string status;
    std::vector<series_cursor> series;
    std::map<std::uint64_t, std::string> findings;    ///< id -> JSON text last sent
    std::int64_t last_event = 0;                      ///< id of the last event sent
    std::chrono::steady_clock::time_point refreshed;  ///< series list and status read
    std::chrono::steady_clock::time_point findings_polled;
  };

  void loop() noexcept;
  void cycle();
  /// Counts a failed read; prints the first one.
  void report(const std::exception& e) noexcept;
  /// Sends run's delta to its subscribers and acknowledges the new ones (new_subs, if any).
  void poll_subscribed(std::int64_t run, const std::vector<std::shared_ptr<subscriber>>& subs,
                       const std::vector<std::shared_ptr<subscriber>>* new_subs);
  /// Reads the run's state; false when the run does not exist.
  bool init_cursor(std::int64_t run, run_cursor& c);
  /// The delta since the cursor, or null when nothing changed.
  shared_message poll_run(std::int64_t run, run_cursor& c);
  shared_message subscribed_message(std::int64_t run, const run_cursor& c) const;
  void poll_runs(const std::vector<std::shared_ptr<subscriber>>& watchers);

  storage::run_reader reader_;
  hub& hub_;
  poller_options options_;
  std::map<std::int64_t, run_cursor> cursors_;
  std::string runs_text_;
  std::set<const subscriber*> runs_watchers_;
  std::chrono::steady_clock::time_point runs_polled_{};
  std::atomic<std::uint64_t> polls_{0};
  std::atomic<std::uint64_t> errors_{0};

  std::mutex mutex_;
  std::condition_variable wake_;
  bool pending_ = false;  // under mutex_: notify() asked for a cycle
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace losslens::dashboard::detail
