#include "quality.hpp"

#include <algorithm>

namespace losslens::traces {

std::vector<case_def> all_cases() {
  return {{"non_finite", nan_trace},
          {"loss_spike", spike_trace},
          {"divergence", divergence_trace},
          {"plateau", plateau_trace},
          {"oscillation", oscillation_trace},
          {"chance_level", chance_trace},
          {"task_dominance", dominance_trace},
          {"task_stalled", stalled_trace},
          {"exploding_gradients", exploding_trace},
          {"vanishing_gradients", vanishing_trace}};
}

detector_options quality_options() {
  detector_options o;
  o.chance_level.num_classes = 10;  // the generated runs are 10-class classifiers
  return o;
}

detection_stats measure_detection(const case_def& c, int n, std::uint64_t seed0) {
  detection_stats st;
  st.kind = c.kind;
  for (int i = 0; i < n; ++i) {
    const trace t = c.make(seed0 + std::uint64_t(i));
    analyzer a(t.schema, quality_options());
    std::int64_t reported = -1, first = -1, step = 0;
    a.on_finding([&](const finding& f, bool is_new) {
      if (is_new && f.kind == c.kind && reported < 0) {
        reported = step;
        first = f.first_step;
      }
    });
    for (const auto& s : t.samples) {
      step = s.step;
      a.observe(s);
    }
    ++st.traces;
    if (reported >= 0) {
      ++st.detected;
      st.delays.push_back(reported - t.onset);
      st.onset_errors.push_back(first - t.onset);
    }
  }
  return st;
}

healthy_stats measure_healthy(int n_per_shape, std::uint64_t seed0) {
  healthy_stats st;
  for (auto shape : all_shapes)
    for (int i = 0; i < n_per_shape; ++i) {
      generator g(seed0 + std::uint64_t(i));
      const trace t = g.healthy(shape);
      analyzer a(t.schema, quality_options());
      for (const auto& s : t.samples) a.observe(s);
      ++st.traces;
      bool any = false;
      for (const auto& f : a.findings()) {
        if (f.level >= severity::warning) {
          any = true;
          ++st.by_kind[f.kind];
        } else {
          ++st.info_by_kind[f.kind];
        }
      }
      if (any) ++st.with_warning;
    }
  return st;
}

std::int64_t quantile(std::vector<std::int64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(q * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace losslens::traces
