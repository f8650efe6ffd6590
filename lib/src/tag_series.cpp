#include "losslens/tag_series.hpp"

#include <algorithm>

namespace losslens {

std::vector<std::string> tag_names(const std::vector<tag_series>& tags) {
  std::vector<std::string> out;
  out.reserve(tags.size());
  for (const auto& t : tags) out.push_back(t.tag);
  return out;
}

std::size_t tag_series_builder::index(std::string_view tag) {
  const std::size_t n = tags_.size();
  if (n > 0 && tags_[last_].tag == tag) return last_;
  const std::size_t next = last_ + 1 < n ? last_ + 1 : 0;
  if (n > 0 && tags_[next].tag == tag) {
    last_ = next;
  } else if (const auto it = index_.find(tag); it != index_.end()) {
    last_ = it->second;
  } else {
    last_ = n;
    index_.emplace(std::string(tag), n);
    tags_.push_back({std::string(tag), {}});
  }
  return last_;
}

std::vector<tag_series> tag_series_builder::take() noexcept {
  std::vector<tag_series> out = std::move(tags_);
  tags_.clear();
  index_.clear();
  last_ = 0;
  return out;
}

void tag_series_part::add(std::string_view tag, const tag_point& p) {
  const std::size_t t = tags_.index(tag);
  if (t == blocks_.size()) {
    blocks_.emplace_back();
    counts_.push_back(0);
  }
  auto& blocks = blocks_[t];
  if (blocks.empty() || blocks.back().size() == block_) blocks.emplace_back().reserve(block_);
  blocks.back().push_back(p);
  ++counts_[t];
}

void tag_series_part::join(std::vector<tag_series_part>& parts, tag_series_builder& into) {
  std::map<std::string, std::size_t, std::less<>> left;  // per tag: points not joined yet
  for (const auto& part : parts)
    for (std::size_t t = 0; t < part.counts_.size(); ++t)
      left[part.tags_.all()[t].tag] += part.counts_[t];
  for (auto& part : parts) {
    for (std::size_t t = 0; t < part.blocks_.size(); ++t) {
      const std::string& tag = part.tags_.all()[t].tag;
      auto& points = into.series(tag).points;
      std::size_t& rest = left.find(tag)->second;
      points.reserve(points.size() + rest);  // once, at the tag's first part
      rest -= part.counts_[t];
      for (auto& b : part.blocks_[t]) {
        points.insert(points.end(), b.begin(), b.end());
        std::vector<tag_point>().swap(b);
      }
    }
    part = tag_series_part();
  }
}

void one_point_per_step(std::vector<tag_series>& tags, std::vector<std::string>& notes) {
  for (auto& t : tags) {
    auto& p = t.points;
    auto by_step = [](const tag_point& a, const tag_point& b) { return a.step < b.step; };
    auto same_step = [](const tag_point& a, const tag_point& b) { return a.step == b.step; };
    if (std::is_sorted(p.begin(), p.end(), by_step) &&
        std::adjacent_find(p.begin(), p.end(), same_step) == p.end())
      continue;
    if (!std::is_sorted(p.begin(), p.end(), by_step))
      std::stable_sort(p.begin(), p.end(), by_step);  // keeps the write order within a step
    // In place, the last of each step kept (a copy held the tag twice at once).
    std::size_t kept = 0;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (kept > 0 && p[kept - 1].step == p[i].step)
        p[kept - 1] = p[i];
      else
        p[kept++] = p[i];
    }
    notes.push_back("tag '" + t.tag + "': " + std::to_string(p.size() - kept) +
                    " repeated steps (a restarted run?): kept the value written last; points "
                    "sorted by step");
    p.resize(kept);
    if (kept < p.capacity() / 2) p.shrink_to_fit();  // a copy of what is kept, when it pays
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
