#include "losslens/tag_mapping.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>

#include "detail/text.hpp"
#include "losslens/error.hpp"

namespace losslens {
namespace {

using core::detail::iequals;
using core::detail::lower;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

constexpr std::array<std::string_view, 8> held_out = {
    "val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"};
constexpr std::array<std::string_view, 2> phases = {"train", "training"};

template <std::size_t N>
bool one_of(std::string_view s, const std::array<std::string_view, N>& words) {
  return std::find(words.begin(), words.end(), s) != words.end();
}

/// True when a held-out word is a whole word of the (lower-case) tag: `val/loss`, `val_loss`,
/// `loss/val`, `eval-acc`.
bool mentions_held_out(std::string_view low) {
  std::size_t start = 0;
  for (std::size_t i = 0; i <= low.size(); ++i) {
    if (i < low.size() && std::isalnum(static_cast<unsigned char>(low[i]))) continue;
    if (one_of(low.substr(start, i - start), held_out)) return true;
    start = i + 1;
  }
  return false;
}

/// The tag without a training-phase qualifier: `train/loss`, `Loss/train`, `train_loss`,
/// `training-loss`, `epoch_loss` -> `loss` (offsets into the original keep the case).
std::string_view strip_phase(std::string_view tag) {
  std::string low = lower(tag);
  auto drop_front = [&](std::size_t n) {
    tag.remove_prefix(n);
    low.erase(0, n);
  };
  auto drop_back = [&](std::size_t n) {
    tag.remove_suffix(n);
    low.resize(low.size() - n);
  };
  for (bool changed = true; changed;) {
    changed = false;
    for (std::string_view p : phases)
      for (char sep : {'/', '_', '-'}) {
        const std::string front = std::string(p) + sep, back = sep + std::string(p);
        if (low.size() > front.size() && starts_with(low, front)) {
          drop_front(front.size());
          changed = true;
        } else if (low.size() > back.size() && ends_with(low, back)) {
          drop_back(back.size());
          changed = true;
        }
      }
    for (std::string_view p : {"epoch_", "batch_"})  // Keras' per-epoch / per-batch names
      if (low.size() > p.size() && starts_with(low, p)) {
        drop_front(p.size());
        changed = true;
      }
  }
  return tag;
}

constexpr std::array<std::string_view, 5> loss_names = {"loss", "total_loss", "loss_total",
                                                        "losses/total", "loss/total"};
constexpr std::array<std::string_view, 12> grad_names = {"grad_norm",
                                                         "gradnorm",
                                                         "grad-norm",
                                                         "gradient_norm",
                                                         "grad_norm_total",
                                                         "total_grad_norm",
                                                         "global_grad_norm",
                                                         "grad_global_norm",
                                                         "global_norm",
                                                         "gradients/global_norm",
                                                         "gradient/global_norm",
                                                         "grads/global_norm"};
constexpr std::array<std::string_view, 4> lr_names = {"lr", "learning_rate", "learning-rate",
                                                      "learningrate"};
constexpr std::array<std::string_view, 2> accuracy_names = {"accuracy", "acc"};

// How to pick another tag for a role from the command line.
std::string choose_hint(series_role role) {
  switch (role) {
    case series_role::loss:
      return " (choose with --loss TAG)";
    case series_role::task_loss:
      return " (choose with --task NAME=TAG)";
    case series_role::grad_norm:
      return " (choose with --grad-norm TAG)";
    case series_role::lr:
      return " (choose with --lr TAG)";
    default:
      return "";
  }
}

// Words that make `loss_<word>` a statistic of the loss or the AMP loss scale, not a task.
constexpr std::array<std::string_view, 16> loss_modifiers = {
    "scale",    "scaler",  "scaling", "avg", "average", "mean", "ema", "smooth",
    "smoothed", "running", "moving",  "raw", "std",     "min",  "max", "var"};

series_target target(series_role role, std::string_view name = {}) {
  return {role, std::string(name)};
}

}  // namespace

std::string series_target::series_name() const { return series_key{role, name}.name(); }

std::optional<series_target> guess_series(std::string_view tag) {
  const std::string low = lower(tag);
  // The names `losslens analyze` CSVs use, whatever follows the slash.
  if (starts_with(low, "grad_norm/") && low.size() > 10)
    return target(series_role::param_grad_norm, tag.substr(10));
  if (starts_with(low, "lr/") && low.size() > 3)
    return target(series_role::lr_group, tag.substr(3));
  if (mentions_held_out(low)) return std::nullopt;
  // PyTorch Lightning's self.log(..., on_step=True, on_epoch=True): `train_loss_step` is the
  // value of each step, `train_loss_epoch` its mean over the epoch (no step's value).
  if (low.size() > 6 && ends_with(low, "_epoch")) return std::nullopt;
  if (low.size() > 5 && ends_with(low, "_step")) return guess_series(tag.substr(0, tag.size() - 5));
  const std::string_view t = strip_phase(tag);
  const std::string l = lower(t);
  if (one_of(l, loss_names)) return target(series_role::loss);
  if (one_of(l, grad_names)) return target(series_role::grad_norm);
  if (one_of(l, lr_names)) return target(series_role::lr);
  if (one_of(l, accuracy_names)) return target(series_role::accuracy);
  // Lightning's LearningRateMonitor: lr-Adam, and with several param groups one tag per group,
  // lr-SGD/pg1, lr-SGD/pg2 (or the groups' names); with log_momentum or log_weight_decay also
  // lr-Adam-momentum, lr-SGD/pg1-weight_decay, which are not LRs.
  if (starts_with(l, "lr-") && l.size() > 3) {
    if (ends_with(l, "-momentum") || ends_with(l, "-weight_decay")) return std::nullopt;
    if (const auto slash = t.find('/'); slash != std::string_view::npos && slash + 1 < t.size())
      return target(series_role::lr_group, t.substr(slash + 1));
    return target(series_role::lr);
  }
  // Task losses: loss/<task>, loss_<task>, loss-<task>, losses/<task>, <task>_loss, but not a
  // statistic of the loss (loss_avg, running_loss) nor the AMP loss scale (loss_scale).
  auto task = [&](std::size_t from, std::size_t n) -> std::optional<series_target> {
    if (one_of(lower(t.substr(from, n)), loss_modifiers)) return std::nullopt;
    return target(series_role::task_loss, t.substr(from, n));
  };
  for (std::string_view p : {"loss/", "loss_", "loss-", "losses/"})
    if (starts_with(l, p) && l.size() > p.size()) return task(p.size(), std::string_view::npos);
  // <task>_loss only for a one-word task (cls_loss), so that a file name such as
  // tb_export_train_loss is not taken for a task.
  for (std::string_view s : {"_loss", "-loss"})
    if (ends_with(l, s) && l.size() > s.size() &&
        std::all_of(l.begin(), l.end() - std::ptrdiff_t(s.size()),
                    [](unsigned char c) { return std::isalnum(c) != 0; }))
      return task(0, t.size() - s.size());
  return std::nullopt;
}

bool tag_mapping::diagnosable() const noexcept {
  for (const auto& t : targets)
    if (t && t->role != series_role::lr && t->role != series_role::lr_group &&
        t->role != series_role::accuracy)
      return true;
  return false;
}

bool tag_mapping::identity() const {
  for (std::size_t i = 0; i < tags.size(); ++i)
    if (targets[i] && targets[i]->series_name() != tags[i]) return false;
  return true;
}

std::string tag_mapping::describe() const {
  std::string out;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    if (!targets[i]) continue;
    if (!out.empty()) out += ", ";
    out += tags[i] + " -> " + targets[i]->series_name();
  }
  return out;
}

namespace {
// "'a', 'b', ... (+3 more)" over the tags selected by keep.
template <class Keep>
std::string name_list(const std::vector<std::string>& tags, Keep keep, bool quoted,
                      std::size_t& count) {
  constexpr std::size_t max_named = 8;
  std::string out;
  count = 0;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    if (!keep(i)) continue;
    if (++count > max_named) continue;
    if (!out.empty()) out += ", ";
    out += quoted ? "'" + tags[i] + "'" : tags[i];
  }
  if (count > max_named) out += ", ... (" + std::to_string(count) + " in all)";
  return out;
}
}  // namespace

std::string tag_mapping::unused_summary(std::string_view what) const {
  std::size_t n = 0;
  const auto names = name_list(
      tags, [&](std::size_t i) { return !targets[i]; }, true, n);
  if (n == 0) return {};
  return std::to_string(n) + " " + std::string(what) + (n == 1 ? "" : "s") + " not used: " + names;
}

std::string tag_mapping::seen_list() const {
  std::size_t n = 0;
  return name_list(
      tags, [](std::size_t) { return true; }, false, n);
}

std::size_t schema_index(const sample_schema& schema, const series_target& target) {
  auto index_of = [&](const std::vector<std::string>& v) {
    return std::size_t(std::find(v.begin(), v.end(), target.name) - v.begin());
  };
  if (target.role == series_role::task_loss) return index_of(schema.tasks);
  if (target.role == series_role::param_grad_norm) return index_of(schema.params);
  return 0;
}

optimizer_kind tag_mapping::optimizer() const {
  std::optional<optimizer_kind> found;
  for (std::size_t i = 0; i < tags.size(); ++i) {
    if (!targets[i] ||
        (targets[i]->role != series_role::lr && targets[i]->role != series_role::lr_group))
      continue;
    const std::string_view t = strip_phase(tags[i]);
    if (t.size() <= 3 || !iequals(t.substr(0, 3), "lr-")) continue;
    const auto k = parse_optimizer_kind(t.substr(3, t.find_first_of("/-", 3) - 3));
    if (!k || (found && *found != *k)) return optimizer_kind::unknown;
    found = k;
  }
  return found.value_or(optimizer_kind::unknown);
}

tag_mapping map_tags(std::vector<std::string> tags, const tag_map_options& options) {
  tag_mapping m;
  m.tags = std::move(tags);
  m.targets.assign(m.tags.size(), std::nullopt);
  // Candidates with a rank: 0 an explicit rule, 1 spelled like the series, 2 another spelling.
  std::vector<int> rank(m.tags.size(), 3);
  for (const auto& rule : options.rules) {
    bool found = false;
    for (std::size_t i = 0; i < m.tags.size(); ++i)
      if (iequals(m.tags[i], rule.tag) && !m.targets[i]) {
        m.targets[i] = rule.target;
        rank[i] = 0;
        found = true;
        break;
      }
    if (!found) {
      tag_mapping seen;
      seen.tags = m.tags;
      throw error("no tag '" + rule.tag + "' (given for " + rule.target.series_name() +
                  ") in this run; tags seen: " + (m.tags.empty() ? "none" : seen.seen_list()));
    }
  }
  if (options.automatic)
    for (std::size_t i = 0; i < m.tags.size(); ++i) {
      if (m.targets[i]) continue;
      m.targets[i] = guess_series(m.tags[i]);
      if (m.targets[i]) rank[i] = m.targets[i]->series_name() == lower(m.tags[i]) ? 1 : 2;
    }
  // One tag per series: the best rank, then the first.
  std::map<std::string, std::size_t> owner;
  for (int r = 0; r < 3; ++r)
    for (std::size_t i = 0; i < m.tags.size(); ++i) {
      if (rank[i] != r) continue;
      const std::string name = m.targets[i]->series_name();
      auto [it, inserted] = owner.emplace(name, i);
      if (inserted) continue;
      m.notes.push_back("tag '" + m.tags[i] + "' not used: '" + m.tags[it->second] + "' is the " +
                        name + choose_hint(m.targets[i]->role));
      m.targets[i].reset();
    }
  // Param groups logged one tag each (lr-AdamW/pg1, lr-AdamW/pg2) and no plain LR: the first
  // group's is the LR, as the monitor takes it; the others widen the range advice quotes.
  if (!owner.contains("lr"))
    for (auto& t : m.targets)
      if (t && t->role == series_role::lr_group) {
        t = target(series_role::lr);
        break;
      }
  for (std::size_t i = 0; i < m.tags.size(); ++i) {
    if (!m.targets[i]) continue;
    if (m.targets[i]->role == series_role::task_loss) m.schema.tasks.push_back(m.targets[i]->name);
    if (m.targets[i]->role == series_role::param_grad_norm)
      m.schema.params.push_back(m.targets[i]->name);
  }
  return m;
}

}  // namespace losslens
