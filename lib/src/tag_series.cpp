#include "losslens/tag_series.hpp"

#include <algorithm>

namespace losslens {

std::vector<std::string> tag_names(const std::vector<tag_series>& tags) {
  std::vector<std::string> out;
  out.reserve(tags.size());
  for (const auto& t : tags) out.push_back(t.tag);
  return out;
}

void one_point_per_step(std::vector<tag_series>& tags, std::vector<std::string>& notes) {
  for (auto& t : tags) {
    auto& p = t.points;
    auto by_step = [](const tag_point& a, const tag_point& b) { return a.step < b.step; };
    auto same_step = [](const tag_point& a, const tag_point& b) { return a.step == b.step; };
    if (std::is_sorted(p.begin(), p.end(), by_step) &&
        std::adjacent_find(p.begin(), p.end(), same_step) == p.end())
      continue;
    std::stable_sort(p.begin(), p.end(), by_step);  // keeps the write order within a step
    std::vector<tag_point> kept;
    kept.reserve(p.size());
    for (const auto& x : p) {
      if (!kept.empty() && kept.back().step == x.step)
        kept.back() = x;
      else
        kept.push_back(x);
    }
    notes.push_back("tag '" + t.tag + "': " + std::to_string(p.size() - kept.size()) +
                    " repeated steps (a restarted run?): kept the value written last; points "
                    "sorted by step");
    p = std::move(kept);
  }
}

void add_streams(sample_merger& merger, const std::vector<tag_series>& tags,
                 const tag_mapping& mapping) {
  for (std::size_t i = 0; i < tags.size() && i < mapping.targets.size(); ++i) {
    if (!mapping.targets[i]) continue;
    const series_target target = *mapping.targets[i];
    sample_schema schema;
    if (target.role == series_role::task_loss) schema.tasks = {target.name};
    if (target.role == series_role::param_grad_norm) schema.params = {target.name};
    const std::vector<tag_point>* points = &tags[i].points;
    merger.add(schema, [points, target, tasks = schema.tasks.size(), params = schema.params.size(),
                        at = std::size_t(0)](sample& s) mutable {
      if (at >= points->size()) return false;
      const tag_point& p = (*points)[at++];
      reset_sample(s, tasks, params);  // this stream's task or parameter is its schema's first
      s.step = p.step;
      s.wall_time = p.wall_time;
      put_value(s, target.role, 0, p.value);
      return true;
    });
  }
}

}  // namespace losslens
