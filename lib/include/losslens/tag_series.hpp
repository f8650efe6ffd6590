#pragma once
/// \file tag_series.hpp
/// Logs read whole into per-tag series (event files, a Hugging Face Trainer's log history), and
/// fed to the detectors as samples.

#include <cstdint>
#include <string>
#include <vector>

#include "losslens/sample_merger.hpp"
#include "losslens/tag_mapping.hpp"

namespace losslens {

/// One number of a tag.
struct tag_point {
  std::int64_t step = 0;
  double wall_time = 0;
  double value = 0;
};

/// The numbers of one tag; in step order, one point per step, once one_point_per_step ran.
struct tag_series {
  std::string tag;
  std::vector<tag_point> points;
};

/// The tags' names, in order (what map_tags maps).
std::vector<std::string> tag_names(const std::vector<tag_series>& tags);

/// Sorts each tag's points by step; when a step repeats (a restarted run that logged it
/// again) the point written last is kept. Adds one note per tag that needed it.
void one_point_per_step(std::vector<tag_series>& tags, std::vector<std::string>& notes);

/// Adds one stream per mapped tag to `merger` (mapping must come from map_tags over the tags'
/// names, in order). `tags` must outlive the merger.
void add_streams(sample_merger& merger, const std::vector<tag_series>& tags,
                 const tag_mapping& mapping);

}  // namespace losslens
