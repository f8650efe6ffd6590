#pragma once
// The stored downsampling pyramid: per series, an M4 bucket_summary for every bucket of 2^L
// steps at each level L in rollup_levels, plus one whole-series summary (total_level).

#include <array>
#include <cstdint>

#include "losslens/storage/types.hpp"

namespace losslens::storage::detail {

class statement;

/// Bucket sizes are 2^L steps; neighbouring levels differ by 16x.
inline constexpr std::array<int, 8> rollup_levels = {4, 8, 12, 16, 20, 24, 28, 32};
/// The level under which the whole-series summary is stored (bucket 0).
inline constexpr int total_level = 64;

/// Bucket index of a step (step >= 0) at a level (total_level: always 0).
inline std::int64_t bucket_of(std::int64_t step, int level) noexcept {
  return level >= total_level ? 0 : (step >> level);
}

/// Column list of a summary in the rollups table, in bind/read order (19 columns).
inline constexpr const char* summary_columns =
    "count, nan_count, pos_inf_count, neg_inf_count, first_step, first_wall, first_value, "
    "last_step, last_wall, last_value, min_step, min_wall, min_value, max_step, max_wall, "
    "max_value, nf_step, nf_wall, nf_value";
inline constexpr int summary_column_count = 19;

/// Binds s to parameters first .. first+18 (absent min/max/non-finite as NULL).
void bind_summary(statement& st, int first, const storage::bucket_summary& s);
/// Reads a summary from columns first .. first+18; from/to_step become first/last step.
storage::bucket_summary read_summary(const statement& st, int first);

}  // namespace losslens::storage::detail
