#pragma once
/// \file sample_merger.hpp
/// Merges several streams of samples (one per exported tag, one per event-file tag) into one
/// stream, step by step.

#include <cstdint>
#include <functional>
#include <vector>

#include "losslens/sample.hpp"

namespace losslens {

/// Joins streams that each carry some of a run's numbers (TensorBoard exports one CSV per tag;
/// event files hold one series per tag) into the samples the detectors read: one per step that
/// any stream has, with every stream's numbers at that step.
///
/// Thread-safety: one thread at a time. Memory: one buffered sample per stream.
class sample_merger {
 public:
  /// Reads the next sample of a stream into s; false at the end. May throw (the error passes
  /// through next()).
  using next_fn = std::function<bool(sample& s)>;

  /// Adds a stream whose samples are indexed by `schema` (its tasks and parameters are added to
  /// the merged schema, each name once, in order of first appearance). Steps must increase
  /// within a stream. Call before the first next().
  void add(const sample_schema& schema, next_fn next);
  /// The union of the streams' schemas.
  const sample_schema& schema() const noexcept { return schema_; }
  /// The next merged sample: the smallest step of any stream, with each number taken from the
  /// first stream (in add order) that has it at that step, and the smallest wall time among
  /// them. false when every stream has ended.
  bool next(sample& s);

 private:
  struct stream {
    next_fn next;
    std::vector<std::size_t> task_map;   // stream task index -> merged index
    std::vector<std::size_t> param_map;  // stream param index -> merged index
    sample current;
    bool live = false;
  };
  std::vector<stream> streams_;
  sample_schema schema_;
  bool started_ = false;
};

}  // namespace losslens
