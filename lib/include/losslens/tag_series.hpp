#pragma once
/// \file tag_series.hpp
/// Logs read whole into per-tag series (event files, a Hugging Face Trainer's log history), and
/// fed to the detectors as samples.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
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

/// Collects points into one series per tag, tags in order of first appearance (event files,
/// MLflow's rows, a Trainer's log history). Finding a tag's series is a compare when the tag is
/// the one asked last or the one after it (tags logged one at a time, or together at each step
/// in the same order), else a map lookup. Thread-safety: one thread at a time.
class tag_series_builder {
 public:
  /// The series of `tag`, added empty at its first appearance. Valid until the next call.
  tag_series& series(std::string_view tag) { return tags_[index(tag)]; }
  /// Where the series of `tag` is in all(), added empty at its first appearance.
  std::size_t index(std::string_view tag);
  /// The series collected so far.
  std::vector<tag_series>& all() noexcept { return tags_; }
  const std::vector<tag_series>& all() const noexcept { return tags_; }
  /// Takes the series out; the builder is empty afterwards.
  std::vector<tag_series> take() noexcept;

 private:
  std::vector<tag_series> tags_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::size_t last_ = 0;
};

/// The points of one part of a log read in parts on several threads (an event file cut where
/// records start), per tag in blocks: joining the parts into whole series frees each block once
/// it is copied, so the run is never held twice. Thread-safety: one thread at a time.
class tag_series_part {
 public:
  /// Appends a point to the series of `tag`.
  void add(std::string_view tag, const tag_point& p);
  /// Appends the parts' points, part after part, to `into`'s series of the same tags (tags new
  /// there come in the order they first appear in the parts), each series sized once for all
  /// the parts; the parts are left empty.
  static void join(std::vector<tag_series_part>& parts, tag_series_builder& into);

 private:
  static constexpr std::size_t block_ = std::size_t(1) << 16;  // points (1.5 MiB)
  tag_series_builder tags_;                                    // names; no points
  std::vector<std::vector<std::vector<tag_point>>> blocks_;    // per tag
  std::vector<std::size_t> counts_;                            // per tag: points
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
