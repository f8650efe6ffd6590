#include "losslens/series_key.hpp"

#include <algorithm>
#include <array>

#include "losslens/error.hpp"

namespace losslens {
namespace {
constexpr std::array<std::string_view, 9> kind_names = {
    "loss",     "task_loss", "grad_norm", "param_grad_norm", "task_grad_norm", "lr",
    "accuracy", "lr_group",  "other"};
// The name prefix of each per-owner kind.
constexpr std::string_view prefix_of(series_kind k) noexcept {
  switch (k) {
    case series_kind::task_loss:
      return "loss/";
    case series_kind::param_grad_norm:
      return "grad_norm/";
    case series_kind::task_grad_norm:
      return "task_grad_norm/";
    case series_kind::lr_group:
      return "lr/";
    default:
      return {};
  }
}
}  // namespace

std::string_view to_string(series_kind k) noexcept { return kind_names[std::size_t(k)]; }

series_kind parse_series_kind(std::string_view s) {
  for (std::size_t i = 0; i < kind_names.size(); ++i)
    if (kind_names[i] == s) return series_kind(i);
  throw error("unknown series kind '" + std::string(s) +
              "' (expected loss, task_loss, grad_norm, param_grad_norm, task_grad_norm, lr, "
              "accuracy, lr_group or other)");
}

std::string series_key::name() const {
  switch (kind) {
    case series_kind::loss:
    case series_kind::grad_norm:
    case series_kind::lr:
    case series_kind::accuracy:
      return std::string(to_string(kind));
    case series_kind::task_loss:
    case series_kind::param_grad_norm:
    case series_kind::task_grad_norm:
    case series_kind::lr_group:
      return std::string(prefix_of(kind)) + owner;
    case series_kind::other:
      break;
  }
  return owner;
}

series_key series_key::parse(std::string_view name) {
  for (series_kind k :
       {series_kind::loss, series_kind::grad_norm, series_kind::lr, series_kind::accuracy})
    if (name == to_string(k)) return {k, {}};
  for (series_kind k : {series_kind::task_loss, series_kind::param_grad_norm,
                        series_kind::task_grad_norm, series_kind::lr_group}) {
    const std::string_view p = prefix_of(k);
    if (name.size() > p.size() && name.substr(0, p.size()) == p)
      return {k, std::string(name.substr(p.size()))};
  }
  return {series_kind::other, std::string(name)};
}

series_key rank_series(std::size_t rank, std::string_view what) {
  return {series_kind::other, "rank/" + std::to_string(rank) + "/" + std::string(what)};
}

series_key balanced_accuracy_series() { return {series_kind::other, "balanced_accuracy"}; }
series_key class_recall_series(std::size_t c) {
  return {series_kind::other, "recall/" + std::to_string(c)};
}

series_layout::series_layout(const sample_schema& schema)
    : tasks_(schema.tasks.size()),
      params_(schema.params.size()),
      recalls_(std::min(schema.classes, max_class_recall)),
      class_metrics_(schema.classes > 0) {
  keys_.reserve(4 + 2 * tasks_ + params_ + (class_metrics_ ? 1 + recalls_ : 0));
  keys_.push_back({series_kind::loss, {}});
  for (const auto& t : schema.tasks) keys_.push_back({series_kind::task_loss, t});
  keys_.push_back({series_kind::grad_norm, {}});
  for (const auto& p : schema.params) keys_.push_back({series_kind::param_grad_norm, p});
  for (const auto& t : schema.tasks) keys_.push_back({series_kind::task_grad_norm, t});
  keys_.push_back({series_kind::lr, {}});
  keys_.push_back({series_kind::accuracy, {}});
  if (!class_metrics_) return;
  keys_.push_back(balanced_accuracy_series());
  for (std::size_t c = 0; c < recalls_; ++c) keys_.push_back(class_recall_series(c));
}

}  // namespace losslens
