#include "detail/detector.hpp"

namespace losslens::core::detail {

finding new_finding(std::string kind, severity level, std::int64_t first_step,
                    std::int64_t last_step, std::string series, std::string rule,
                    std::vector<named_number> params) {
  finding f;
  f.kind = std::move(kind);
  f.level = level;
  f.first_step = first_step;
  f.last_step = last_step;
  f.series = std::move(series);
  f.rule.name = std::move(rule);
  f.rule.params = std::move(params);
  return f;
}

std::vector<std::unique_ptr<detector>> make_detectors(const detector_options& o,
                                                      const sample_schema& schema) {
  std::vector<std::unique_ptr<detector>> out;
  auto add = [&](bool enabled, auto make) {
    if (enabled) out.push_back(make(o, schema));
  };
  add(o.non_finite.enabled, make_non_finite);
  // divergence and oscillation run before loss_spike, which stays quiet while they are active.
  add(o.divergence.enabled, make_divergence);
  add(o.oscillation.enabled, make_oscillation);
  add(o.loss_spike.enabled, make_loss_spike);
  add(o.plateau.enabled, make_plateau);
  add(o.chance_level.enabled, make_chance_level);
  add(o.task_dominance.enabled && schema.tasks.size() >= 2, make_task_dominance);
  add(o.task_stalled.enabled && !schema.tasks.empty(), make_task_stalled);
  add(o.exploding.enabled, make_exploding);
  add(o.vanishing.enabled, make_vanishing);
  add(o.missing_zero_grad.enabled, make_missing_zero_grad);
  add(o.dead_parameters.enabled, make_dead_parameters);
  add(o.eval_mode.enabled, make_eval_mode);
  add(o.call_order.enabled, make_call_order);
  add(o.initial_loss.enabled, make_initial_loss);
  add(o.parameters_not_updated.enabled, make_not_updated);
  add(o.clipping_saturated.enabled, make_clipping);
  return out;
}

}  // namespace losslens::core::detail
