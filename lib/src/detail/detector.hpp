#pragma once
// Internal interface between the analyzer and its detectors.

#include <cmath>

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/detector_options.hpp"
#include "losslens/finding.hpp"
#include "losslens/lr_advice.hpp"
#include "losslens/sample.hpp"

namespace losslens::core::detail {

inline constexpr double nan = std::numeric_limits<double>::quiet_NaN();

class task_weights;

/// Numbers the analyzer derives once per step for all detectors.
struct step_context {
  const sample* s = nullptr;
  const sample_schema* schema = nullptr;
  double lr = nan;                    ///< latest known learning rate (first param group)
  double lr_min = nan, lr_max = nan;  ///< latest range over several param groups (else NaN)
  double grad_median = nan;           ///< running median of the total grad norm, before this step
  bool grad_spike = false;            ///< this step's grad norm is a robust outlier
  std::int64_t last_grad_spike_step = std::numeric_limits<std::int64_t>::min();
  double last_grad_spike_value = nan;
  double last_grad_spike_ratio = nan;  ///< grad norm / running median at that spike
  double grad_early = nan;             ///< running median of the grad norm once `window` norms
                                       ///< were seen: the run's scale of gradients early on
  double grad_tail_ratio = nan;        ///< the recent norms' 99th percentile / their median (NaN
                                       ///< until enough norms were seen)
  /// pow(grad_tail_ratio (1 while NaN), exploding.tail_factor): the factor a grad norm must
  /// exceed its median by beyond the run's own tail.
  double grad_tail_bar = 1;
  /// The bits of param_flags set on any parameter at this step.
  std::uint8_t param_flags_any = 0;
  // One pass over s->param_grad_norms for every rule that needs it:
  /// The largest and smallest finite norms (-Inf and +Inf when none is finite). Which
  /// parameter has the largest: find_norm (norm_summary.hpp), asked only when reported.
  double top_param_norm = -std::numeric_limits<double>::infinity();
  double min_param_norm = std::numeric_limits<double>::infinity();
  int first_non_finite_norm = -1;  ///< index of the first NaN/Inf norm (-1: none)
  double total_loss = nan;         ///< s->loss, or the weighted sum of task losses if absent
  double log_loss = nan;           ///< std::log(total_loss) when total_loss > 0 (taken once)
  /// total_loss winsorized to the recent median +- 5 robust scales: the input of the rules on
  /// the loss's level (divergence, plateau, oscillation, chance_level), so that one outlier
  /// (a -50 batch of a density model, a single bad batch) moves no level. NaN when the loss is.
  double level_loss = nan;
  /// How far the run has come: the mean of its first 50 losses minus the lowest value of a
  /// slow average since (or |initial| while it has not improved). Rules on near-zero or
  /// negative losses weigh their numbers against this instead of ratios. NaN before 50 losses.
  double loss_range = nan;
  /// total_loss on the working scale of the rules that look at its shape (oscillation, the
  /// divergence onset): log while every loss so far was positive, else linear, with single
  /// outliers clipped (see clipped_scale). NaN when the loss is not finite.
  double work_loss = nan;
  bool work_log = true;     ///< work_loss is a log
  bool work_reset = false;  ///< the scale switched to linear at this step: forget earlier values
  /// work_loss, work_log and work_reset are set already (analyzer::observe_stream's reader
  /// thread took them): run_rules leaves them.
  bool work_taken = false;
  optimizer_kind optimizer = optimizer_kind::unknown;  ///< detector_options::optimizer
  /// The task losses and weights of this step (null without tasks); set by run_rules.
  const task_weights* weights = nullptr;
};

/// The class count of the rules on the class loss (initial_loss, chance_level):
/// chance_level.num_classes when given, else the count the monitor read off the class task's
/// logits (schema.classes); 0 when neither is known.
inline int known_class_count(const detector_options& o, const sample_schema& schema) noexcept {
  if (o.chance_level.num_classes >= 2) return o.chance_level.num_classes;
  return schema.classes >= 2 ? int(schema.classes) : 0;
}

class detector;

/// How a finding reaches a finding_log's notify: opened (its first publication), updated (it
/// grew or changed severity), or refreshed (brought up to date for the router's decisions on a
/// new finding, without telling the listeners).
enum class publication : unsigned char { opened, updated, refreshed };

/// The findings of one analyzer. Detectors update evidence every step; messages are rebuilt
/// (by the owning detector's describe()) only when a finding is published: when it opens, when
/// its severity changes, and otherwise at most once per `interval` steps (less often as it ages,
/// see flush). That keeps printf off the per-step path and bounds how often sinks (storage,
/// dashboard) see an update.
class finding_log {
 public:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  /// Stores a new finding of `owner`, assigns its id and returns its index.
  std::size_t open(finding f, const detector* owner);
  finding& at(std::size_t i) { return findings_[i]; }
  /// Marks an existing finding as updated in this step.
  void touch(std::size_t i);
  const std::vector<finding>& all() const noexcept { return findings_; }
  /// The last step covered by any finding of this kind, or INT64_MIN when there is none.
  std::int64_t last_step_of(std::string_view kind) const noexcept;
  /// The step of the last row flush() was called for (none before the first): while the rules
  /// see a row, the row before it. An episode hit on that row goes on at this one, whatever
  /// the steps between them (a log written every 100 steps).
  std::optional<std::int64_t> prev_row() const noexcept { return prev_row_; }

  using notify_fn = void (*)(void* ctx, const finding&, publication);
  /// Publishes what is due at `step` through notify: a finding grown since its last
  /// publication is due once `interval` steps have passed, or once an eighth of its age has
  /// when that is longer, up to `max_interval` steps (a long plateau is not re-described
  /// every few steps). (The router weighs a new finding against the others as they are now
  /// by asking the analyzer for refresh_pending first, see finding_router::refresh_fn.)
  void flush(std::int64_t step, std::int64_t interval, std::int64_t max_interval,
             const sample_schema& schema, notify_fn notify, void* ctx);
  /// Publishes every pending update now.
  void flush_all(const sample_schema& schema, notify_fn notify, void* ctx);
  /// Rebuilds the messages of pending findings without publishing them.
  void describe_pending(const sample_schema& schema);
  /// Rebuilds the messages of pending findings and hands each to notify as `refreshed` (the
  /// router merges it without telling listeners); they stay pending. With `published_only`,
  /// only those published before and not held.
  void refresh_pending(const sample_schema& schema, notify_fn notify, void* ctx,
                       bool published_only);
  /// Indexes of the findings that changed since they were last published.
  const std::vector<std::size_t>& pending() const noexcept { return pending_; }
  /// Keeps a finding from being published until release() (a detector that waits to see
  /// whether the series recovers before it settles the severity); flush_all() publishes it
  /// regardless.
  void hold(std::size_t i) { held_[i] = 1; }
  void release(std::size_t i) {
    held_[i] = 0;
    touch(i);
  }
  bool held(std::size_t i) const noexcept { return held_[i] != 0; }

 private:
  void publish(std::size_t i, const sample_schema& schema, std::int64_t step, notify_fn notify,
               void* ctx);
  std::int64_t due_after(std::size_t i, std::int64_t step, std::int64_t interval,
                         std::int64_t max_interval) const noexcept;
  // Whether pending finding i is published at this step: not held, and new, of another level,
  // or last published at least due_after steps ago.
  bool due(std::size_t i, std::int64_t step, std::int64_t interval,
           std::int64_t max_interval) const noexcept;

  std::vector<finding> findings_;
  std::vector<const detector*> owners_;
  std::vector<std::int64_t> published_step_;  // INT64_MIN: never published
  std::vector<severity> published_level_;
  std::vector<char> is_pending_;
  std::vector<char> held_;
  std::vector<std::size_t> pending_;
  std::vector<std::size_t> keep_;  // scratch for flush
  std::uint64_t next_id_ = 1;
  std::optional<std::int64_t> prev_row_;  // see prev_row()
};

/// a - b saturated to the int64 range. Steps may span all of it (a CSV can say anything), and
/// saturating keeps every comparison of the difference with an in-range bound exact.
constexpr std::int64_t step_diff(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t d = 0;
  if (!__builtin_sub_overflow(a, b, &d)) return d;
  return a < b ? std::numeric_limits<std::int64_t>::min()
               : std::numeric_limits<std::int64_t>::max();
}

/// One open episode of a pathology: the finding it feeds and when it last held.
struct episode {
  std::size_t index = finding_log::none;
  std::int64_t last_hit = 0;
  bool open() const noexcept { return index != finding_log::none; }
  void close() noexcept { index = finding_log::none; }
  /// True when an open episode may absorb a hit at `step`: within merge_gap steps of its last
  /// hit, or hit on the log's previous row (see finding_log::prev_row: a sparse log's rows are
  /// further apart than any gap).
  bool continues(const finding_log& log, std::int64_t step, std::int64_t merge_gap) const noexcept {
    return open() && (step_diff(step, last_hit) <= merge_gap || log.prev_row() == last_hit);
  }
};

class detector {
 public:
  virtual ~detector() = default;
  virtual void observe(const step_context& ctx, finding_log& log) = 0;
  /// True when observe() reads only sample::param_flags and does nothing on a sample without
  /// them: the analyzer then skips it on such samples.
  virtual bool flags_only() const noexcept { return false; }
  /// Rebuilds f.message (and f.advice where it quotes changing numbers) from f's evidence.
  virtual void describe(finding& f, const sample_schema& schema) const = 0;
};

std::vector<std::unique_ptr<detector>> make_detectors(const detector_options& o,
                                                      const sample_schema& schema);

/// printf into a std::string (messages are built only when a finding opens or grows).
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/// Series name of task i ("loss/<task>") and of parameter i ("grad_norm/<name>").
std::string task_series(const sample_schema& s, std::size_t i);
std::string param_series(const sample_schema& s, std::size_t i);
inline bool finite(const std::optional<double>& v) noexcept { return v && std::isfinite(*v); }
/// Whether the double x / m rounds below bar for sure (m > 0), from a product instead of a
/// division (a bar most steps are far under need not wait for a divide): with bar * m normal,
/// x below it by a relative 1e-12, far more than the three roundings, gives a quotient that
/// rounds below bar. False says nothing: divide then.
inline bool quotient_surely_below(double x, double bar, double m) noexcept {
  const double bm = bar * m;
  return bm >= 1e-300 && x < bm * (1 - 1e-12);
}
/// "lower the learning rate 10x (from 5 to 0.5)"; with several param groups (lo, hi finite
/// and different) "lower the learning rates 10x (param groups at 0.001-0.1, to 0.0001-0.01)".
std::string lr_hint(double lr, double lo = nan, double hi = nan);
/// Calls set(slot, name, value) for each LR evidence value of ctx: slot 0 "lr" (when finite),
/// 1 "lr_min" and 2 "lr_max" (several param groups at different rates).
template <class Set>
void for_lr_evidence(const step_context& ctx, Set&& set) {
  if (std::isfinite(ctx.lr)) set(0, "lr", ctx.lr);
  if (std::isfinite(ctx.lr_min) && std::isfinite(ctx.lr_max) && ctx.lr_min != ctx.lr_max) {
    set(1, "lr_min", ctx.lr_min);
    set(2, "lr_max", ctx.lr_max);
  }
}
/// Sets the LR evidence of f from ctx (see for_lr_evidence).
void set_lr_evidence(finding& f, const step_context& ctx);

// Learning rates in advice (lr_advice.cpp): the current LR of the param groups and the range
// the methodology gives for the run's optimizer.
// An advice puts lr_hint where its sentence says what to do and lr_note at its end (the note
// starts with "; ", so spliced into a sentence it would cut it in two).
/// lr_hint(lr, lo, hi) of the step.
std::string lr_hint(const step_context& ctx);
/// lr_hint of the LR evidence a finding carries.
std::string lr_hint(const finding& f);
/// lr_range_note (losslens/lr_advice.hpp) of the step's LR and optimizer.
std::string lr_note(const step_context& ctx);
/// lr_range_note of the LR evidence a finding carries.
std::string lr_note(const finding& f, optimizer_kind k);
/// "the learning rate is 0.05" (or "the param groups' learning rates are 0.001-0.1") plus
/// lr_range_note, from the finding's LR evidence; "" without it.
std::string lr_quote(const finding& f, optimizer_kind k);

}  // namespace losslens::core::detail

namespace losslens::core::detail {

/// The finding an episode feeds this step, and whether it was just opened.
struct hit_result {
  finding& f;
  bool is_new;
};

/// Extends the episode's finding to `step` when it continues (within merge_gap, or hit on the
/// log's previous row), else opens a new finding made by make(); either way the episode now
/// points at it.
template <class Make>
hit_result open_or_extend(finding_log& log, const detector* owner, episode& ep, std::int64_t step,
                          std::int64_t merge_gap, Make&& make) {
  const bool cont = ep.continues(log, step, merge_gap);
  if (cont) {
    log.at(ep.index).last_step = step;
    log.touch(ep.index);
  } else {
    ep.index = log.open(make(), owner);
  }
  ep.last_hit = step;
  return {log.at(ep.index), !cont};
}

/// Holds a new spike episode back for `confirm` steps after its last hit and then settles its
/// severity: a series back near its level from before the episode had a transient that
/// recovered (info, with "recovered" evidence); otherwise the episode keeps its severity. A run
/// that memorises its data has such transients (a batch with one hard example, an Adam step
/// near a zero loss) that recover by themselves; a corrupted shard or an LR that is too high
/// does not recover.
class recovery_gate {
 public:
  /// Waits at least `confirm` steps after the last hit, and at most `max_wait` more for the
  /// series to recover before the episode is published with its severity.
  recovery_gate(std::int64_t confirm, std::int64_t max_wait)
      : confirm_(confirm), max_wait_(max_wait) {}
  /// The episode at `index` opened or grew at `step`; `before` is the series' level before it.
  /// With `hold` false (too early in the run to know its normal level) the episode is
  /// published at once with its severity.
  void hit(finding_log& log, std::size_t index, bool is_new, std::int64_t step, double before,
           bool hold = true) {
    if (is_new && index_ != finding_log::none && index_ != index && !released_)
      log.release(index_);  // a new episode replaces one still held: publish that one as it is
    if (is_new && !hold) {
      index_ = finding_log::none;
      return;
    }
    if (is_new) {
      index_ = index;
      before_ = before;
      opened_ = step;
      released_ = false;
      log.hold(index);
    }
    if (index == index_) deadline_ = step + confirm_;
  }
  /// Call every step after the detector's own update; `now` is the series' current level
  /// (a short rolling median). Recovered: now <= factor x before + tolerance. Clearly not
  /// recovering (published at once): now >= elevated x before + stuck_tolerance. In between it
  /// waits up to max_wait steps. Settles a due episode. True when check() has something to decide
  /// at `step` (the caller computes `now` only then).
  bool waiting(std::int64_t step) const noexcept {
    return index_ != finding_log::none && step >= opened_ + confirm_;
  }
  /// `also_ok`: a second condition the detector requires for a recovery (gradient norms that
  /// fell back because the network died are no recovery: the loss must be back too).
  void check(finding_log& log, std::int64_t step, double now, double tolerance, double factor,
             double elevated, double stuck_tolerance, bool also_ok = true) {
    // Stuck high confirm steps after the onset: published then, even while it still grows.
    if (index_ == finding_log::none || step < opened_ + confirm_) return;
    finding& f = log.at(index_);
    const bool recovered =
        also_ok && step >= deadline_ && std::isfinite(now) && now <= factor * before_ + tolerance;
    const bool stuck = !std::isfinite(now) || now >= elevated * before_ + stuck_tolerance;
    if (released_) {
      // Published as stuck; it may still come back within max_wait: say so, and an error that
      // recovered by itself is a warning.
      if (recovered) {
        f.set_evidence("recovered", 1);
        f.set_evidence("recovered_level", now);
        f.set_evidence("recovered_after", double(step - opened_));
        if (f.level == severity::error) f.level = severity::warning;
        log.touch(index_);
      }
      if (recovered || step >= deadline_ + max_wait_) index_ = finding_log::none;
      return;
    }
    if (!recovered && !stuck && step < deadline_ + max_wait_) return;
    if (recovered) {
      f.level = severity::info;
      f.set_evidence("recovered", 1);
      f.set_evidence("recovered_level", now);
      f.set_evidence("recovered_after", double(step - opened_));
    }
    log.release(index_);
    released_ = !recovered && step < deadline_ + max_wait_;
    if (!released_) index_ = finding_log::none;
  }

 private:
  std::int64_t confirm_, max_wait_;
  std::size_t index_ = finding_log::none;
  std::int64_t deadline_ = 0, opened_ = 0;
  double before_ = 0;
  bool released_ = false;  // published as stuck, still watched for a late recovery
};

/// A finding with its identity filled in; the caller adds evidence, message and advice.
finding new_finding(std::string kind, severity level, std::int64_t first_step,
                    std::int64_t last_step, std::string series, std::string rule,
                    std::vector<named_number> params);

std::unique_ptr<detector> make_non_finite(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_loss_spike(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_divergence(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_plateau(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_oscillation(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_chance_level(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_task_dominance(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_task_stalled(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_exploding(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_vanishing(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_missing_zero_grad(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_dead_parameters(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_eval_mode(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_call_order(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_initial_loss(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_not_updated(const detector_options&, const sample_schema&);
std::unique_ptr<detector> make_clipping(const detector_options&, const sample_schema&);

}  // namespace losslens::core::detail
