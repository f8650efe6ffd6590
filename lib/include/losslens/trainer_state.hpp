#pragma once
/// \file trainer_state.hpp
/// Reads the log history of a Hugging Face Trainer (`trainer_state.json`, saved in every
/// checkpoint directory) into per-key series.

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/tag_series.hpp"

namespace losslens {

/// What a trainer_state.json logged: one series per numeric key of its `log_history` entries
/// (loss, grad_norm, learning_rate, eval_loss...; not `step` and `epoch`, the position), in
/// order of first appearance.
struct trainer_state_log {
  std::string name;                ///< the file, for messages
  std::vector<tag_series> keys;    ///< in step order, one point per step
  std::size_t entries = 0;         ///< log_history entries read (the final summary included)
  std::int64_t global_step = -1;   ///< the file's global_step (-1: not given)
  std::vector<std::string> notes;  ///< repeated steps, the summary entry left out

  /// The keys' names, in order (the tags to map with map_tags).
  std::vector<std::string> key_names() const;
};

/// True for a file name that may hold a Trainer's state: it ends in `.json`.
bool is_json_name(std::string_view file_name);

/// Reads a trainer_state.json. Each `log_history` entry is one step's numbers (`step` is the
/// optimizer step); numbers, and Python's `NaN`, `Infinity` and `-Infinity` (which Python's
/// json module writes for a loss that diverged), are values; other values are left out. The
/// entry the Trainer writes when training ends (`train_runtime`, `total_flos`, and `train_loss`:
/// the mean loss of the whole run) is not a step and is left out with a note; so is
/// `logging_steps` above 1 (each entry's loss is then a mean over that many steps). When a
/// step repeats the value written last is kept (one_point_per_step).
/// Throws losslens::error ("NAME: reason") for a file that is not JSON, has no `log_history`
/// list, or has an entry without a whole `step`.
trainer_state_log read_trainer_state(std::istream& in, const std::string& name);
/// The same for a file. Throws losslens::error (also when it cannot be opened).
trainer_state_log read_trainer_state(const std::string& path);

}  // namespace losslens
