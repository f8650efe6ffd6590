#pragma once
/// \file finding_router.hpp
/// One place where every source of findings (the detectors, the input red flags, the
/// multi-rank rules) publishes its episodes: one id allocator, one incident store, the
/// listeners, and the log sink that library messages go through.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <map>
#include <utility>
#include <vector>

#include "losslens/finding.hpp"

namespace losslens {

/// Where library messages go (a stored run that cannot be written, dropped samples, a callback
/// that threw). The default writes "losslens: <line>" to stderr. Must be callable from any
/// thread (the training thread reports its own rare errors through it).
using log_sink = std::function<void(severity level, std::string_view line)>;

/// Rules of the router.
struct router_options {
  /// An incident still active this many steps before another one opens can be named as its
  /// cause (when the pair is plausible: see docs/detectors.md, "Causes").
  std::int64_t cause_window = 200;
  /// A cause may be dated up to this many steps after its effect's onset (onsets of smoothed
  /// rules are estimates).
  std::int64_t onset_slack = 100;
  /// An incident of a symptom group (see docs/detectors.md, "Symptoms of one state") that
  /// opens while an incident of the same group is in an episode, or up to this many steps
  /// before that episode began, is marked as another sign of it (`symptom_of_id`) instead of
  /// standing as an incident of its own.
  std::int64_t symptom_window = 1000;
};

/// Merges episodes into incidents and hands incidents to listeners.
///
/// An episode is what a detector reports: one stretch of steps over which its condition held.
/// Every episode of one kind on one series becomes part of one incident: the
/// incident's first_step is the first episode's, its last_step the latest episode's, its
/// evidence, message and advice those of the worst episode (higher severity, then the larger
/// peak), and `episodes` counts them. When an incident opens while an earlier incident of a
/// kind that can cause it is active (within cause_window steps), it names that one in
/// `cause_id`/`cause` (to_line() then says "preceded by ..."); a cause published after its
/// effect (a spike held back to see whether the loss recovers) is cited retroactively.
///
/// Some rules see one state of the model through different instruments: when a network
/// collapses to a constant output, vanishing_gradients, dead_parameters, constant_predictions
/// and chance_level all hold from about the same step, or one after the other while it lasts.
/// The first of them to open is the incident; the others opening during its latest episode
/// (or up to cause_window steps after it, or symptom_window steps before it), if not more
/// severe, name it in `symptom_of_id`/`symptom_of` and are listed under it (they stay
/// findings of their own kind, with their own episodes and evidence).
///
/// Ids: incidents are numbered 1, 2, ... in the order they open; sources keep their own
/// episode ids, which the router never shows.
///
/// Thread-safety: one thread at a time (the monitor thread, or the CLI), except log(), which
/// may be called from any thread once the sink is set.
class finding_router {
 public:
  /// Called when an incident opens (is_new = true) and whenever it grows or changes.
  using listener = std::function<void(const finding& incident, bool is_new)>;
  /// A publisher's handle (see add_source).
  using source_id = std::uint32_t;

  explicit finding_router(router_options options = {});

  /// Asked of a source before the router places an episode it has not seen (from any
  /// source): a source that holds back updates of its open episodes (the detectors re-publish
  /// an old episode only every few hundred steps) merges them then with merge_quietly(), so
  /// that the new episode's cause and symptom host are chosen against spans as they are now.
  /// Runs on the router's thread, inside publish() or merge_quietly(); it must not publish
  /// episodes the router has not seen. An exception is reported through the log sink.
  using refresh_fn = std::function<void()>;

  /// Registers a source of episodes ("detectors", "red_flags", "ranks") with its refresh
  /// (empty: it publishes every change at once); names appear in no output, they help
  /// debugging. Not thread-safe.
  source_id add_source(std::string_view name, refresh_fn refresh = {});
  /// Replaces (or, with an empty function, clears) a source's refresh: a source that goes
  /// away before the router clears it. Not thread-safe.
  void set_refresh(source_id src, refresh_fn refresh);

  /// Publishes an episode of `src` (its id is the source's own; is_new = first publication of
  /// that episode): merges it into its incident and calls the listeners. Never throws from a
  /// listener: a throwing listener is reported through the log sink.
  void publish(source_id src, const finding& episode, bool is_new);
  /// Merges like publish() without calling the listeners (for a read of current state);
  /// the next publish() of the incident notifies as usual.
  void merge_quietly(source_id src, const finding& episode);

  /// Adds a listener; returns a handle for remove_listener.
  std::size_t add_listener(listener l);
  /// Replaces (or, with an empty function, clears) a listener added before.
  void set_listener(std::size_t handle, listener l);

  /// Replaces the log sink (empty = the default stderr sink).
  void set_log_sink(log_sink sink);
  /// Writes a line through the sink. Thread-safe; never throws.
  void log(severity level, std::string_view line) const noexcept;

  /// Every incident, in the order they opened (index = id - 1).
  const std::vector<finding>& incidents() const noexcept { return incidents_; }
  /// The incident with this id, or nullptr.
  const finding* incident(std::uint64_t id) const noexcept;

 private:
  struct incident_state {
    std::int64_t worst_ordinal = 0;  // which episode the evidence comes from
    double worst_peak = 0;
    std::string base_message;  // the worst episode's message, before episodes and cause
    bool announced = false;    // the listeners have heard of it
  };
  struct episode_ref {
    std::size_t incident;
    std::int64_t ordinal;  // 0-based episode number within the incident
  };
  std::size_t merge(source_id src, const finding& episode, bool* opened);
  void refresh_sources() noexcept;
  void compose(std::size_t index);
  void notify(std::size_t index, bool is_new);
  bool could_cause(const finding& cause, const finding& effect) const;
  void find_cause(finding& incident) const;
  void find_symptom_host(finding& incident) const;
  void cite_as_cause(std::size_t index);

  router_options options_;
  std::vector<std::string> sources_;
  std::vector<refresh_fn> refresh_;  // per source
  bool refreshing_ = false;          // inside refresh_sources()
  std::vector<finding> incidents_;
  std::vector<incident_state> state_;
  std::map<std::string, std::size_t> by_key_;  // "kind\nseries" -> incident index
  std::map<std::pair<source_id, std::uint64_t>, episode_ref> episodes_;
  std::vector<listener> listeners_;
  log_sink sink_;
};

/// The episode's own measure of how bad it was (a ratio, z-score, share, step count), used to
/// pick an incident's worst episode; NaN when the kind has none.
double episode_peak(const finding& episode) noexcept;

/// The one line that the monitor writes to stderr for an incident:
/// "<severity> <kind> at step N (<series>): <message>; fix: <advice>" (plus the episode count
/// and cause, or the incident it is a symptom of, when present).
std::string to_line(const finding& incident);

}  // namespace losslens
