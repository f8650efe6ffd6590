#include "losslens/sample_merger.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace losslens {
namespace {

std::size_t index_in(std::vector<std::string>& names, const std::string& name) {
  auto it = std::find(names.begin(), names.end(), name);
  if (it != names.end()) return std::size_t(it - names.begin());
  names.push_back(name);
  return names.size() - 1;
}

// Copies each present value of `from` whose slot in `to` is still empty.
void fill(std::vector<std::optional<double>>& to, const std::vector<std::optional<double>>& from,
          const std::vector<std::size_t>& map) {
  for (std::size_t i = 0; i < from.size() && i < map.size(); ++i)
    if (from[i] && !to[map[i]]) to[map[i]] = from[i];
}

void fill(std::optional<double>& to, const std::optional<double>& from) {
  if (from && !to) to = from;
}

}  // namespace

void sample_merger::add(const sample_schema& schema, next_fn next) {
  stream st;
  st.next = std::move(next);
  for (const auto& t : schema.tasks) st.task_map.push_back(index_in(schema_.tasks, t));
  for (const auto& p : schema.params) st.param_map.push_back(index_in(schema_.params, p));
  streams_.push_back(std::move(st));
}

bool sample_merger::next(sample& s) {
  if (!started_) {
    started_ = true;
    for (auto& st : streams_) st.live = st.next(st.current);
  }
  std::int64_t step = std::numeric_limits<std::int64_t>::max();
  bool any = false;
  for (const auto& st : streams_)
    if (st.live) {
      step = std::min(step, st.current.step);
      any = true;
    }
  if (!any) return false;
  reset_sample(s, schema_.tasks.size(), schema_.params.size());
  s.step = step;
  bool have_wall = false;
  for (auto& st : streams_) {
    if (!st.live || st.current.step != step) continue;
    const sample& c = st.current;
    if (!have_wall || c.wall_time < s.wall_time) s.wall_time = c.wall_time;
    have_wall = true;
    fill(s.loss, c.loss);
    fill(s.grad_norm, c.grad_norm);
    fill(s.lr, c.lr);
    fill(s.accuracy, c.accuracy);
    widen_lr_range(s, c.lr_min.value_or(NAN), c.lr_max.value_or(NAN));
    fill(s.task_losses, c.task_losses, st.task_map);
    fill(s.param_grad_norms, c.param_grad_norms, st.param_map);
    st.live = st.next(st.current);
  }
  include_lr_in_range(s);
  return true;
}

}  // namespace losslens
