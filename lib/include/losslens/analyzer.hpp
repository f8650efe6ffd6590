#pragma once
/// \file analyzer.hpp
/// Runs every detector over a stream of samples and keeps the findings.

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "losslens/detector_options.hpp"
#include "losslens/finding.hpp"
#include "losslens/finding_router.hpp"
#include "losslens/sample.hpp"
#include "losslens/sample_prefetcher.hpp"

namespace losslens {

namespace core::detail {
class detector;
class finding_log;
enum class publication : unsigned char;
class clipped_scale;
class grad_baseline;
class level_filter;
class task_weights;
struct step_context;
}  // namespace core::detail

/// Streaming diagnosis of one run. Feed samples in step order with observe(); the detectors'
/// episodes are merged into incidents by a finding_router (its own, or one shared with other
/// sources of findings), which appear in findings() and are passed to the listener when they
/// open or grow.
///
/// Thread-safety: one thread at a time (the monitor's background thread, or the CLI).
/// Cost: O(1) amortized per step and per series; memory fixed after construction, except for
/// the findings themselves.
class analyzer {
 public:
  /// Called once per new finding (is_new = true), and for an open finding that grew, at most
  /// once per options.update_interval steps, or an eighth of its age up to
  /// options.max_update_interval (immediately when its severity changes). flush() publishes
  /// the remaining updates.
  using listener = std::function<void(const finding&, bool is_new)>;

  /// Throws losslens::error on inconsistent options (e.g. window < 4).
  explicit analyzer(sample_schema schema, detector_options options = {});
  /// Publishes into `router`, which must outlive the analyzer (the monitor shares one router
  /// between the detectors, the input red flags and the multi-rank rules). Registers as a
  /// source whose held-back updates the router refreshes before it places any new episode.
  /// Throws like above.
  analyzer(sample_schema schema, detector_options options, finding_router& router);
  ~analyzer();
  analyzer(analyzer&&) noexcept;
  analyzer& operator=(analyzer&&) noexcept;

  /// Feeds one step. Samples whose step does not increase are ignored and counted.
  void observe(const sample& s);

  /// observe() on every sample `source` gives (a reader's next(): fills a sample, false at the
  /// end), on two threads: a sample_prefetcher's reads the samples and derives the numbers
  /// every rule shares (the running baselines of the loss and the grad norm), the caller's runs
  /// the rules, which makes a long file's analysis up to twice as fast on two cores. `each`,
  /// when given, sees every sample on the caller's thread just before the rules. Findings,
  /// steps() and out_of_order() end up as with observe(). Rethrows the source's exception
  /// once the samples read before it were observed.
  void observe_stream(sample_prefetcher::source_fn source,
                      const std::function<void(const sample&)>& each = {});

  /// Sets the listener (replaces any previous one set here). With a shared router it hears every
  /// incident of the router.
  void on_finding(listener l);

  /// Publishes every finding update still held back by update_interval (call at the end of a
  /// run so the listener sees final last_step and evidence).
  void flush();

  /// All incidents so far (of the router: with a shared one, other sources' too), in the order
  /// they opened, with up-to-date messages and evidence.
  const std::vector<finding>& findings() const;
  /// The detectors' episodes before merging (each with the detector's own id), for tests and
  /// `--all` style listings.
  const std::vector<finding>& episodes() const;
  /// The router this analyzer publishes into.
  finding_router& router() noexcept { return *router_; }
  /// Samples accepted so far.
  std::int64_t steps() const noexcept;
  /// The steps of the first and the last sample accepted (0 before any): with steps(), what
  /// a report covers (report_extent).
  std::int64_t first_step() const noexcept { return first_step_; }
  std::int64_t last_step() const noexcept { return last_step_; }
  /// Samples ignored because their step did not increase.
  std::int64_t out_of_order() const noexcept;
  const sample_schema& schema() const noexcept;
  const detector_options& options() const noexcept;

 private:
  analyzer(sample_schema schema, detector_options options, finding_router* router);
  static void notify(void* self, const finding& f, core::detail::publication p);
  // observe() in two halves: most of the shared numbers (false for an out-of-order step),
  // which observe_stream() runs on its reader's thread, then the loss's level filter and the
  // rules. The loss's working scale goes with either (take_working_scale; run_rules takes it
  // when the context has not).
  bool prepare(const sample& s, core::detail::step_context& ctx) noexcept;
  void take_working_scale(core::detail::step_context& ctx) noexcept;
  void run_rules(core::detail::step_context& ctx);

  // On the heap, as the log: the router's refresh of this source points at both, and they stay
  // where they are when the analyzer moves.
  std::unique_ptr<const sample_schema> schema_;
  detector_options options_;
  std::unique_ptr<finding_router> own_router_;  // null when a shared router is used
  finding_router* router_ = nullptr;
  finding_router::source_id source_ = 0;
  std::size_t listener_handle_ = 0;
  std::unique_ptr<core::detail::finding_log> log_;
  std::unique_ptr<core::detail::grad_baseline> grad_;
  std::unique_ptr<core::detail::level_filter> level_;
  std::unique_ptr<core::detail::clipped_scale> scale_;
  std::unique_ptr<core::detail::task_weights> weights_;  // null without tasks
  std::vector<std::unique_ptr<core::detail::detector>> detectors_;
  // The same rules in the same order less those that only read param_flags: what a sample
  // without them (every CSV row, most offline logs) runs.
  std::vector<core::detail::detector*> unflagged_;
  double last_lr_ = std::numeric_limits<double>::quiet_NaN();
  double last_lr_min_ = std::numeric_limits<double>::quiet_NaN();
  double last_lr_max_ = std::numeric_limits<double>::quiet_NaN();
  std::int64_t steps_ = 0;
  std::int64_t out_of_order_ = 0;
  std::int64_t first_step_ = 0;
  std::int64_t last_step_ = 0;
};

}  // namespace losslens
