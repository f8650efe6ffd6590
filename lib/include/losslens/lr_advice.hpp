#pragma once
/// \file lr_advice.hpp
/// The learning rate in advice, as every rule writes it: the current LR (or the range over the
/// param groups) and the range the methodology gives for the run's optimizer.

#include <limits>
#include <string>

#include "losslens/detector_options.hpp"

namespace losslens {

/// "; Adam trains between about 1e-06 (below: no learning) and 0.01 (above: unstable)", or,
/// when the LR is out of that range, what happens there ("; 0.05 is above 1e-02, where Adam
/// training turns unstable ..."). `lo`/`hi`: the smallest and largest LR over several param
/// groups (NaN with one group). "" when the optimizer is unknown or the methodology gives no
/// range for it (LBFGS). Thread-safe; throws nothing but std::bad_alloc.
std::string lr_range_note(optimizer_kind k, double lr,
                          double lo = std::numeric_limits<double>::quiet_NaN(),
                          double hi = std::numeric_limits<double>::quiet_NaN());

/// "lower the learning rate 10x (from 0.05 to 0.005)" (or, with several param groups, "lower
/// the learning rates 10x (param groups at 0.001-0.1, to 0.0001-0.01)") followed by
/// lr_range_note. Thread-safe; throws nothing but std::bad_alloc.
std::string lower_lr_hint(optimizer_kind k, double lr,
                          double lo = std::numeric_limits<double>::quiet_NaN(),
                          double hi = std::numeric_limits<double>::quiet_NaN());

}  // namespace losslens
