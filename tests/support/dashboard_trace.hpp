#pragma once
// A synthetic training run written live with storage::run_writer, for the dashboard's browser
// test and bench: losses per task, grad norms per layer, LR, a spike, a NaN and findings.

#include <cstdint>
#include <string>

#include "losslens/finding.hpp"
#include "losslens/sample.hpp"
#include "losslens/storage/run_writer.hpp"

namespace losslens::test {

/// Run options: two tasks (cls, box), five layers, a config.
storage::run_options dashboard_run(const std::string& name);

/// The numbers of step s (spike around spike_at, NaN loss at nan_at).
sample dashboard_sample(std::int64_t s, std::int64_t spike_at = -1, std::int64_t nan_at = -1);

/// A loss_spike warning with evidence and advice over steps first..last.
finding dashboard_finding(std::uint64_t id, std::int64_t first, std::int64_t last);

}  // namespace losslens::test
