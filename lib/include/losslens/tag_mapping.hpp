#pragma once
/// \file tag_mapping.hpp
/// Which logged tag (a TensorBoard tag, a CSV column, a W&B key) is which series of a sample.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "losslens/detector_options.hpp"
#include "losslens/sample.hpp"
#include "losslens/series_key.hpp"

namespace losslens {

/// What a series is to the detectors: a series_kind (loss, task_loss, grad_norm,
/// param_grad_norm, lr, lr_group or accuracy; a tag is never mapped to the other kinds).
using series_role = series_kind;

/// A series of a sample: its role and, for a per-task loss, a per-parameter gradient norm or a
/// param group's LR, the task, parameter or group name.
struct series_target {
  series_role role = series_role::loss;
  std::string name;  ///< task, parameter or param group name; empty for the other roles

  /// The name the rest of losslens uses: "loss", "loss/<task>", "grad_norm",
  /// "grad_norm/<name>", "lr", "lr/<group>" or "accuracy" (the `losslens analyze` CSV columns).
  std::string series_name() const;
  friend bool operator==(const series_target&, const series_target&) = default;
};

/// One explicit mapping: the tag (matched case-insensitively) that is this series.
struct tag_rule {
  std::string tag;
  series_target target;
};

/// How tags are mapped: the explicit rules (`--loss TAG`, `--grad-norm TAG`, `--lr TAG`,
/// `--task NAME=TAG`) first, then, when `automatic`, the common names (guess_series).
struct tag_map_options {
  std::vector<tag_rule> rules;
  bool automatic = true;
};

/// The automatic rule, case-insensitive:
/// - the loss: `loss`, `train/loss`, `Loss/train`, `train_loss`, `total_loss`;
/// - a task loss: `loss/<task>`, `train/loss_<task>`, `<task>_loss` (a one-word task), but not
///   `loss_scale` (AMP) nor `loss_avg`, `running_loss` and other statistics of the loss;
/// - the gradient norm: `grad_norm`, `train/grad_norm`, `gradients/global_norm`,
///   `global_grad_norm`; a parameter's: `grad_norm/<name>`;
/// - the learning rate: `lr`, `learning_rate`, `lr-<optimizer>`; one param group's: `lr/<group>`,
///   `lr-<optimizer>/<group>` (Lightning's `lr-AdamW/pg2`); the accuracy: `accuracy`, `acc`.
/// A `train`/`training` path part, prefix or suffix and Keras' `epoch_`/`batch_` prefixes are
/// dropped first. Held-out curves (`val`, `valid`, `validation`, `eval`, `test`, `dev` as a word
/// anywhere in the tag) are never taken. Task and parameter names keep their case. Returns
/// nothing for any other tag.
std::optional<series_target> guess_series(std::string_view tag);

/// The tags of one run, mapped.
struct tag_mapping {
  std::vector<std::string> tags;                      ///< every tag seen, in order
  std::vector<std::optional<series_target>> targets;  ///< per tag; empty: not used
  sample_schema schema;            ///< tasks and parameters, in the order of their tags
  std::vector<std::string> notes;  ///< tags left out because another claimed the same series

  /// True when a loss, a task loss, a gradient norm or a parameter's gradient norm is mapped:
  /// something the detectors can diagnose.
  bool diagnosable() const noexcept;
  /// True when every used tag is spelled like its series (nothing worth printing).
  bool identity() const;
  /// "train/loss -> loss, train/grad_norm -> grad_norm, lr -> lr" (used tags only).
  std::string describe() const;
  /// The unused tags in one line, at most 8 of them named:
  /// "3 tags not used: 'a', 'b', 'c'"; empty when every tag is used. `what`: "tag"/"column".
  std::string unused_summary(std::string_view what) const;
  /// Every tag, comma-separated, at most 8 named ("a, b, c, ... (12 in all)").
  std::string seen_list() const;
  /// The optimizer that PyTorch Lightning's LearningRateMonitor names in the used LR tags
  /// (lr-AdamW, lr-SGD/pg1, lr-Adam-1 for a second Adam): unknown when none names one that
  /// parse_optimizer_kind knows, or they name different ones.
  optimizer_kind optimizer() const;
};

/// Maps the tags of one run: explicit rules first, then (when options.automatic) guess_series.
/// When several tags would be the same series, an explicit rule wins, then a tag spelled exactly
/// like the series, then the first; each tag left out gets a note. Without an `lr` tag, the
/// first `lr/<group>` tag is the `lr`.
/// Throws losslens::error when an explicit rule names a tag that is not there (the message lists
/// the tags seen).
tag_mapping map_tags(std::vector<std::string> tags, const tag_map_options& options = {});

/// The place of a task loss or a parameter's gradient norm in the schema's tasks or params
/// (the list's size when it is not there); 0 for the other roles.
std::size_t schema_index(const sample_schema& schema, const series_target& target);

/// The field of `s` that holds a value of `role`: for a task loss or a parameter's gradient norm,
/// place `index` of its vector, which must hold it. nullptr for a param group's LR (a range: see
/// put_value) and for the roles no tag is mapped to. Inlined: readers store every value through
/// it. Never throws.
inline std::optional<double>* value_slot(sample& s, series_role role, std::size_t index) noexcept {
  switch (role) {
    case series_role::loss:
      return &s.loss;
    case series_role::task_loss:
      return &s.task_losses[index];
    case series_role::grad_norm:
      return &s.grad_norm;
    case series_role::param_grad_norm:
      return &s.param_grad_norms[index];
    case series_role::lr:
      return &s.lr;
    case series_role::accuracy:
      return &s.accuracy;
    case series_role::lr_group:
    case series_role::task_grad_norm:
    case series_role::other:
      break;
  }
  return nullptr;
}

/// Stores one value of `role` in `s` (value_slot's field; a param group's LR widens the LR
/// range). Never throws.
inline void put_value(sample& s, series_role role, std::size_t index, double v) noexcept {
  if (auto* to = value_slot(s, role, index)) [[likely]]
    *to = v;
  else if (role == series_role::lr_group)
    widen_lr_range(s, v, v);
}

}  // namespace losslens
