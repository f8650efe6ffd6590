#include "update_check.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "losslens/sample.hpp"

namespace losslens::hooks::detail {

update_check::update_check(const std::vector<at::Tensor>& params,
                           torch::optim::Optimizer& optimizer)
    : params_(params),
      optimizer_(optimizer),
      sum_(params.size(), 0.0),
      next_(params.size(), 0.0),
      group_(params.size(), -1) {
  map_groups();
}

std::size_t update_check::groups_signature() const noexcept {
  // Groups are added (add_param_group), rarely changed otherwise: their count and sizes tell.
  std::size_t sig = optimizer_.param_groups().size();
  for (const auto& g : optimizer_.param_groups()) sig = sig * 31 + g.params().size();
  return sig;
}

void update_check::map_groups() {
  signature_ = groups_signature();
  std::vector<std::pair<const c10::TensorImpl*, int>> held;
  const auto& groups = optimizer_.param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (const auto& p : groups[g].params()) held.emplace_back(p.unsafeGetTensorImpl(), int(g));
  std::sort(held.begin(), held.end());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto* impl = params_[i].unsafeGetTensorImpl();
    const auto it = std::lower_bound(held.begin(), held.end(), std::make_pair(impl, -1));
    group_[i] = it != held.end() && it->first == impl ? it->second : -1;
  }
  group_lr_.assign(groups.size(), 1.0);
}

namespace {
/// Weight of the k-th sampled value in the checksum, in [1, 2) and different for each k.
inline double position_weight(std::uint64_t k) noexcept {
  return 1.0 + double((k * 0x9E3779B97F4A7C15ull) >> 11) * 0x1p-53;
}

template <class T>
double sampled_sum(const T* data, std::int64_t n) noexcept {
  constexpr std::int64_t samples = 256, run = 16;  // 16 runs of 16 consecutive values
  // A weighted sum, not a plain one: an update can keep the plain sum exactly (softmax
  // cross-entropy's gradient of the output bias sums to zero over the classes, so SGD never
  // changes the sum of that bias). Double sums keep a change of one float ulp visible.
  double sum = 0;
  if (n <= samples) {
    for (std::int64_t k = 0; k < n; ++k)
      sum += position_weight(std::uint64_t(k)) * static_cast<double>(data[k]);
    return sum;
  }
  // Runs that start at positions scattered by a multiplicative hash, not at a fixed stride: a
  // stride that is a multiple of a row would read one input column only (an image's
  // always-black corner pixel, whose weights never get a gradient). Runs of consecutive values
  // cost a cache miss or two each where 256 single values cost 256 (this runs on the training
  // thread after every optimizer step).
  const auto starts = std::uint64_t(n - run + 1);
  for (std::uint64_t r = 0; r < std::uint64_t(samples / run); ++r) {
    // The hash's top bits scaled to [0, starts) (a multiply, not a division).
    const auto h = r * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    const auto at = std::uint64_t((static_cast<unsigned __int128>(h) * starts) >> 64);
    const T* p = data + at;
    for (std::uint64_t j = 0; j < std::uint64_t(run); ++j)
      sum += position_weight(r * run + j) * static_cast<double>(p[j]);
  }
  return sum;
}
}  // namespace

double update_check::checksum(std::size_t i) const noexcept {
  const at::Tensor& p = params_[i];
  constexpr double unknown = std::numeric_limits<double>::quiet_NaN();
  if (!p.defined() || !p.device().is_cpu() || !p.is_contiguous() || p.numel() == 0) return unknown;
  if (p.scalar_type() == at::kFloat) return sampled_sum(p.data_ptr<float>(), p.numel());
  if (p.scalar_type() == at::kDouble) return sampled_sum(p.data_ptr<double>(), p.numel());
  return unknown;
}

void update_check::check(std::vector<std::uint8_t>& flags,
                         const std::vector<std::optional<double>>& norms, bool skipped) noexcept {
  try {
    if (groups_signature() != signature_) map_groups();  // allocates only when groups change
    const auto& groups = optimizer_.param_groups();
    for (std::size_t g = 0; g < groups.size() && g < group_lr_.size() && has_lr_; ++g)
      group_lr_[g] = groups[g].options().get_lr();
  } catch (...) {
    has_lr_ = false;  // an optimizer without a learning rate (or out of memory): checksums only
  }
  const std::size_t n = std::min(params_.size(), flags.size());
  // The causes (no optimizer.step(), step() before backward()) leave every parameter as it
  // was; one parameter of many that keeps its sampled values is a sparse or tiny gradient (the
  // weights of dead units, an update below a float's resolution), not a skipped update. So an
  // unchanged checksum counts only when most parameters with a gradient kept theirs.
  std::size_t with_grad = 0, unchanged = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = next_[i] = checksum(i);
    const bool got_grad = !(flags[i] & (param_flag::no_grad | param_flag::grad_cleared)) &&
                          i < norms.size() && norms[i] && *norms[i] > 0;
    if (!got_grad || v != v || sum_[i] != sum_[i]) continue;
    ++with_grad;
    unchanged += v == sum_[i];
  }
  const bool most_unchanged = with_grad > 0 && 2 * unchanged > with_grad;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = next_[i];
    const bool got_grad = !(flags[i] & (param_flag::no_grad | param_flag::grad_cleared)) &&
                          i < norms.size() && norms[i] && *norms[i] > 0;
    const int g = group_[i];
    if (has_baseline_ && !skipped && got_grad) {
      // Values not read (another device): unknown, which only the optimizer's causes decide.
      const bool read = v == v && sum_[i] == sum_[i];
      const bool same = read && v == sum_[i];
      // Outside this optimizer but changing: another optimizer trains it (a GAN's two).
      if (g < 0 && (same || !read))
        flags[i] |= param_flag::not_updated | param_flag::not_in_optimizer;
      else if (g >= 0 && has_lr_ && std::size_t(g) < group_lr_.size() &&
               group_lr_[std::size_t(g)] == 0)
        flags[i] |= param_flag::not_updated | param_flag::zero_lr;  // stepped by 0: no change
      else if (g >= 0 && same && most_unchanged)
        flags[i] |= param_flag::not_updated;
    }
    sum_[i] = v;
  }
  has_baseline_ = true;
}

}  // namespace losslens::hooks::detail
