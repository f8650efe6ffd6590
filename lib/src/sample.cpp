#include "losslens/sample.hpp"

#include <algorithm>

namespace losslens {

std::optional<int> class_loss_index(const sample_schema& schema) {
  const auto& t = schema.tasks;
  if (t.empty()) return -1;
  if (schema.class_task.empty()) {
    if (t.size() == 1) return 0;
    return std::nullopt;
  }
  const auto it = std::find(t.begin(), t.end(), schema.class_task);
  if (it == t.end()) return std::nullopt;  // the class task's loss is not among the tasks
  return int(it - t.begin());
}

}  // namespace losslens
