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
#include "losslens/sample.hpp"

namespace losslens {

namespace detail {
class detector;
class finding_log;
class grad_baseline;
}  // namespace detail

/// Streaming diagnosis of one run. Feed samples in step order with observe(); findings appear in
/// findings() and are passed to the listener when they open or grow.
///
/// Thread-safety: one thread at a time (the monitor's background thread, or the CLI).
/// Cost: O(1) amortized per step and per series; memory fixed after construction, except for
/// the findings themselves.
class analyzer {
 public:
  /// Called once per new finding (is_new = true), and for an open finding that grew, at most
  /// once per options.update_interval steps (immediately when its severity changes). flush()
  /// publishes the remaining updates.
  using listener = std::function<void(const finding&, bool is_new)>;

  /// Throws losslens::error on inconsistent options (e.g. window < 4).
  explicit analyzer(sample_schema schema, detector_options options = {});
  ~analyzer();
  analyzer(analyzer&&) noexcept;
  analyzer& operator=(analyzer&&) noexcept;

  /// Feeds one step. Samples whose step does not increase are ignored and counted.
  void observe(const sample& s);

  /// Sets the listener (replaces any previous one).
  void on_finding(listener l);

  /// Publishes every finding update still held back by update_interval (call at the end of a
  /// run so the listener sees final last_step and evidence).
  void flush();

  /// All findings so far, in the order they opened, with up-to-date messages.
  const std::vector<finding>& findings() const;
  /// Samples accepted so far.
  std::int64_t steps() const noexcept;
  /// Samples ignored because their step did not increase.
  std::int64_t out_of_order() const noexcept;
  const sample_schema& schema() const noexcept;
  const detector_options& options() const noexcept;

 private:
  static void notify(void* self, const finding& f, bool is_new);

  sample_schema schema_;
  detector_options options_;
  std::unique_ptr<detail::finding_log> log_;
  std::unique_ptr<detail::grad_baseline> grad_;
  std::vector<std::unique_ptr<detail::detector>> detectors_;
  listener listener_;
  double last_lr_ = std::numeric_limits<double>::quiet_NaN();
  std::int64_t steps_ = 0;
  std::int64_t out_of_order_ = 0;
  std::int64_t last_step_ = 0;
};

}  // namespace losslens
