#pragma once
// Detection rate, delay and onset error of each detector over many generated traces, and the
// false-positive rate on healthy traces. Used by tests/test_quality.cpp (assertions) and
// bench/detector_quality.cpp (the numbers in docs/detectors.md).

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "losslens/analyzer.hpp"
#include "traces.hpp"

namespace losslens::traces {

struct case_def {
  std::string kind;                          ///< expected finding kind
  std::function<trace(std::uint64_t)> make;  ///< trace generator with a known onset
};

/// One case per detector with a trace generator.
std::vector<case_def> all_cases();

/// Detector options for the generated runs (10-class classifiers).
detector_options quality_options();

struct detection_stats {
  std::string kind;
  int traces = 0;
  int detected = 0;
  std::vector<std::int64_t> delays;        ///< step reported - onset
  std::vector<std::int64_t> onset_errors;  ///< first_step - onset
  int with_errors_elsewhere = 0;           ///< traces that also had an error of another kind
};

/// Runs an analyzer over n traces of case c (seeds seed0, seed0 + 1, ...).
detection_stats measure_detection(const case_def& c, int n, std::uint64_t seed0 = 1);

struct healthy_stats {
  int traces = 0;
  int with_warning = 0;                ///< traces with any warning or error
  std::map<std::string, int> by_kind;  ///< warning/error findings per kind
  std::map<std::string, int> info_by_kind;
};

/// Runs an analyzer over n_per_shape healthy traces of every shape.
healthy_stats measure_healthy(int n_per_shape, std::uint64_t seed0 = 1000);

/// The q-quantile (0..1) of a list of integers (nearest rank); 0 for an empty list.
std::int64_t quantile(std::vector<std::int64_t> v, double q);

}  // namespace losslens::traces
