#pragma once
// Who is subscribed to what: websocket sessions register here; the poller broadcasts through it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace losslens::dashboard::detail {

/// A message shared, unchanged, by every session it is sent to.
using shared_message = std::shared_ptr<const std::string>;

/// Something that receives messages (a websocket session). send() must not block: it queues
/// the message on the session's strand.
class subscriber {
 public:
  virtual ~subscriber() = default;
  virtual void send(shared_message message) = 0;
};

/// The subscription registry. Thread-safe (one mutex, held only to copy lists).
class hub {
 public:
  /// What the poller needs for one cycle.
  struct snapshot {
    std::map<std::int64_t, std::vector<std::shared_ptr<subscriber>>> subscribers;  ///< by run
    std::map<std::int64_t, std::vector<std::shared_ptr<subscriber>>> new_subscribers;
    std::vector<std::shared_ptr<subscriber>> run_watchers;  ///< want the run list
  };

  void join(const std::shared_ptr<subscriber>& s);
  /// Removes s from everything (called from the session's destructor or on close).
  void leave(const subscriber* s) noexcept;
  /// Returns false when s already has `limit` subscriptions.
  bool subscribe(std::int64_t run, const std::shared_ptr<subscriber>& s, std::size_t limit);
  void unsubscribe(std::int64_t run, const subscriber* s);
  void watch_runs(const std::shared_ptr<subscriber>& s);
  /// Drops every subscription to run (it does not exist).
  void drop_run(std::int64_t run);
  /// Live subscribers; clears the "new" marks.
  snapshot take();
  /// Called (outside the lock) when a session subscribes or watches the run list, so that the
  /// poller serves it at once. Set before sessions exist; empty = nothing.
  void on_change(std::function<void()> cb);
  std::size_t size() const;

 private:
  using weak_map = std::map<const subscriber*, std::weak_ptr<subscriber>>;
  mutable std::mutex mutex_;
  weak_map sessions_;
  std::map<std::int64_t, weak_map> runs_;
  std::map<std::int64_t, weak_map> new_;
  weak_map watchers_;
  std::function<void()> on_change_;  // under mutex_
  void changed();
};

}  // namespace losslens::dashboard::detail
