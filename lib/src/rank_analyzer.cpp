// rank_divergence, straggler and desync: rules over per-rank summaries of a data-parallel run.

#include "losslens/rank_analyzer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "detail/detector.hpp"
#include "losslens/error.hpp"
#include "losslens/series_key.hpp"

namespace losslens::core::detail {

/// A rule over one sync's per-rank summaries. The detector base supplies describe() to the
/// finding_log; the per-sample observe() is unused.
class rank_rule : public detector {
 public:
  void observe(const step_context&, finding_log&) override {}
  /// prev_step: the step of the previous sync (an episode hit there continues).
  virtual void observe_ranks(std::int64_t step, std::int64_t prev_step,
                             std::span<const rank_summary> ranks, finding_log& log) = 0;
};

namespace {

std::string rank_series(std::size_t rank, const char* what) {
  return losslens::rank_series(rank, what).name();
}

/// Sorted finite values and, per rank, the median of the *other* ranks' finite values.
class others_median {
 public:
  explicit others_median(std::size_t world) { sorted_.reserve(world); }

  void reset(std::span<const rank_summary> ranks, double rank_summary::*field) {
    sorted_.clear();
    for (const auto& r : ranks)
      if (std::isfinite(r.*field)) sorted_.push_back(r.*field);
    std::sort(sorted_.begin(), sorted_.end());
  }
  std::size_t count() const noexcept { return sorted_.size(); }
  /// Median of all finite values.
  double all() const noexcept { return median_skipping(sorted_.size()); }
  /// Median of the finite values without one occurrence of v (v must be among them).
  double without(double v) const noexcept {
    const auto pos =
        std::size_t(std::lower_bound(sorted_.begin(), sorted_.end(), v) - sorted_.begin());
    return median_skipping(pos);
  }

 private:
  // Median of sorted_ with index `skip` removed (skip >= size: nothing removed).
  double median_skipping(std::size_t skip) const noexcept {
    const std::size_t n = sorted_.size() - (skip < sorted_.size() ? 1 : 0);
    if (n == 0) return nan;
    auto at = [&](std::size_t k) { return sorted_[k < skip ? k : k + 1]; };
    return n % 2 ? at(n / 2) : 0.5 * (at(n / 2 - 1) + at(n / 2));
  }
  std::vector<double> sorted_;
};

/// Per-rank consecutive-hit counters and episodes.
struct per_rank_state {
  explicit per_rank_state(std::size_t world) : streak(world, 0), start(world, 0), ep(world) {}
  /// Counts a hit of rank r at step; true once the streak reaches patience.
  bool hit(std::size_t r, std::int64_t step, int patience) {
    if (streak[r]++ == 0) start[r] = step;
    return streak[r] >= patience;
  }
  std::vector<int> streak;
  std::vector<std::int64_t> start;
  std::vector<episode> ep;
};

constexpr const char* non_finite_rule = "non_finite_on_some_ranks";
constexpr const char* loss_rule = "loss_far_from_other_ranks";

class rank_divergence final : public rank_rule {
 public:
  rank_divergence(const rank_options& o, std::size_t world)
      : o_(o.rank_divergence), world_(world), loss_(world), nf_(world), median_(world) {}

  void observe_ranks(std::int64_t step, std::int64_t prev_step, std::span<const rank_summary> ranks,
                     finding_log& log) override {
    median_.reset(ranks, &rank_summary::loss);
    // Non-finite on some ranks only, separately for losses and gradients (after an all-reduce a
    // NaN gradient is on every rank, while the NaN loss stays on the rank that made it).
    std::size_t bad_loss = 0, bad_grad = 0;
    for (const auto& r : ranks) {
      bad_loss += r.loss_non_finite ? 1 : 0;
      bad_grad += r.grad_non_finite ? 1 : 0;
    }
    const std::int64_t gap = step - prev_step;
    for (std::size_t r = 0; r < world_; ++r) {
      const rank_summary& s = ranks[r];
      const bool odd_loss = s.loss_non_finite && bad_loss < world_;
      const bool odd_grad = s.grad_non_finite && bad_grad < world_;
      if (odd_loss || odd_grad) {
        const std::size_t bad = odd_loss ? bad_loss : bad_grad;
        const std::int64_t first =
            s.non_finite_step >= 0 && s.non_finite_step < step ? s.non_finite_step : step;
        auto [f, is_new] = open_or_extend(log, this, nf_.ep[r], step, gap, [&] {
          auto f =
              new_finding("rank_divergence", severity::error, first, step,
                          rank_series(r, odd_loss ? "loss" : "grad_norm"), non_finite_rule, {});
          f.advice = format(
              "rank %zu produced NaN/Inf where the other ranks did not: look at the batches of "
              "that rank's data shard (a corrupt sample or label), run the same batch on "
              "another rank to rule out a faulty device, and skip such steps (attach option "
              "guard) or check gradients before the all-reduce, which spreads the NaN to "
              "every replica",
              r);
          return f;
        });
        f.set_evidence("rank", double(r));
        f.set_evidence("non_finite_ranks", double(bad));
        f.set_evidence("world_size", double(world_));
        f.set_evidence("loss", s.loss);
        f.set_evidence("loss_non_finite", odd_loss ? 1 : 0);
        f.set_evidence("grad_non_finite", odd_grad ? 1 : 0);
        f.set_evidence("median_loss", median_.all());
        f.set_evidence("non_finite_step", double(first));
        f.set_evidence("syncs", is_new ? 1.0 : f.evidence_value("syncs") + 1);
      }
      // A loss far from the others' (with two ranks neither can be called the odd one).
      const bool far = world_ >= 3 && median_.count() >= 3 && std::isfinite(s.loss) &&
                       far_from(s.loss, median_.without(s.loss));
      if (!far) {
        loss_.streak[r] = 0;
        continue;
      }
      if (!loss_.hit(r, step, o_.patience)) continue;
      const double others = median_.without(s.loss);
      auto [f, is_new] = open_or_extend(log, this, loss_.ep[r], step, gap, [&] {
        auto f = new_finding("rank_divergence", severity::warning, loss_.start[r], step,
                             rank_series(r, "loss"), loss_rule,
                             {{"loss_ratio", o_.loss_ratio}, {"patience", double(o_.patience)}});
        f.advice = format(
            "rank %zu trains on different data or different weights than the others: check "
            "its shard (DistributedSampler with the right rank and world size, shuffling, a "
            "corrupt or different file, wrong labels) and that all ranks start from the same "
            "weights (broadcast them from rank 0); see also any desync finding",
            r);
        return f;
      });
      f.set_evidence("rank", double(r));
      f.set_evidence("loss", s.loss);
      f.set_evidence("median_loss", others);
      f.set_evidence("ratio", s.loss / others);
      f.set_evidence("syncs", double(loss_.streak[r]));
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    const int r = int(f.evidence_value("rank"));
    if (f.rule.name == non_finite_rule)
      f.message = format(
          "rank %d had a non-finite %s at step %g while %g of %g ranks did "
          "(median loss of the ranks with a finite loss: %g); %g sync(s) with "
          "non-finite values up to step %lld",
          r, f.evidence_value("loss_non_finite") > 0 ? "loss" : "gradient norm",
          f.evidence_value("non_finite_step"), f.evidence_value("non_finite_ranks"),
          f.evidence_value("world_size"), f.evidence_value("median_loss"),
          f.evidence_value("syncs"), static_cast<long long>(f.last_step));
    else
      f.message = format(
          "rank %d's loss %g is %.3gx the median of the other ranks (%g) for "
          "%g consecutive syncs from step %lld",
          r, f.evidence_value("loss"), f.evidence_value("ratio"), f.evidence_value("median_loss"),
          f.evidence_value("syncs"), static_cast<long long>(f.first_step));
  }

 private:
  bool far_from(double v, double others) const noexcept {
    if (!(others > 0) || !(v > 0)) return false;
    const double ratio = v / others;
    return ratio >= o_.loss_ratio || ratio <= 1 / o_.loss_ratio;
  }

  rank_options::rank_divergence_t o_;
  std::size_t world_;
  per_rank_state loss_, nf_;
  others_median median_;
};

class straggler final : public rank_rule {
 public:
  straggler(const rank_options& o, std::size_t world)
      : o_(o.straggler), world_(world), state_(world), median_(world) {}

  void observe_ranks(std::int64_t step, std::int64_t prev_step, std::span<const rank_summary> ranks,
                     finding_log& log) override {
    median_.reset(ranks, &rank_summary::step_time);
    for (std::size_t r = 0; r < world_; ++r) {
      const double t = ranks[r].step_time;
      const double others = std::isfinite(t) ? median_.without(t) : nan;
      const bool slow = std::isfinite(others) && others >= 0 && t >= o_.ratio * others &&
                        t - others >= o_.min_excess;
      if (!slow) {
        state_.streak[r] = 0;
        continue;
      }
      if (!state_.hit(r, step, o_.patience)) continue;
      auto [f, is_new] = open_or_extend(log, this, state_.ep[r], step, step - prev_step, [&] {
        auto f = new_finding("straggler", severity::warning, state_.start[r], step,
                             rank_series(r, "step_time"), "step_time_above_other_ranks",
                             {{"ratio", o_.ratio},
                              {"min_excess", o_.min_excess},
                              {"patience", double(o_.patience)}});
        return f;
      });
      f.set_evidence("rank", double(r));
      f.set_evidence("step_time", t);
      f.set_evidence("median_step_time", others);
      f.set_evidence("ratio", others > 0 ? t / others : std::numeric_limits<double>::infinity());
      f.set_evidence("wait_per_step", t - others);
      f.set_evidence("syncs", double(state_.streak[r]));
    }
  }

  void describe(finding& f, const sample_schema&) const override {
    const int r = int(f.evidence_value("rank"));
    f.message = format(
        "rank %d needs %.3g s of own work per step, %.3gx the median of the "
        "other ranks (%.3g s), for %g consecutive syncs from step %lld",
        r, f.evidence_value("step_time"), f.evidence_value("ratio"),
        f.evidence_value("median_step_time"), f.evidence_value("syncs"),
        static_cast<long long>(f.first_step));
    f.advice = format(
        "every other rank waits about %.3g s per step for rank %d in the gradient all-reduce: "
        "check that rank's data loading (more loader workers, local or faster storage), other "
        "processes on its host or accelerator, thermal throttling, and batches that are larger "
        "or longer on that rank",
        f.evidence_value("wait_per_step"), r);
  }

 private:
  rank_options::straggler_t o_;
  std::size_t world_;
  per_rank_state state_;
  others_median median_;
};

class desync final : public rank_rule {
 public:
  desync(const rank_options& o, std::size_t world) : o_(o.desync), median_(world) {}

  void observe_ranks(std::int64_t step, std::int64_t prev_step, std::span<const rank_summary> ranks,
                     finding_log& log) override {
    bool all = true;
    for (const auto& r : ranks) all = all && r.has_grad && std::isfinite(r.grad_norm);
    median_.reset(ranks, &rank_summary::grad_norm);
    const double med = median_.all();
    // The rank farthest from the median.
    std::size_t worst = 0;
    double lo = med, hi = med;
    for (std::size_t r = 0; all && r < ranks.size(); ++r) {
      const double g = ranks[r].grad_norm;
      lo = std::min(lo, g);
      hi = std::max(hi, g);
      if (std::abs(g - med) > std::abs(ranks[worst].grad_norm - med)) worst = r;
    }
    const double spread = all && med > 0 ? (hi - lo) / med : 0.0;
    if (!(spread > o_.tolerance)) {
      streak_ = 0;
      return;
    }
    if (streak_++ == 0) start_ = step;
    if (streak_ < o_.patience) return;
    auto [f, is_new] = open_or_extend(log, this, ep_, step, step - prev_step, [&] {
      auto f = new_finding("desync", severity::error, start_, step, rank_series(worst, "grad_norm"),
                           "grad_norms_differ_after_allreduce",
                           {{"tolerance", o_.tolerance}, {"patience", double(o_.patience)}});
      f.advice =
          "the replicas no longer see the same gradients, so their weights drift apart: make "
          "sure every rank all-reduces every gradient (same parameters, same order, every step, "
          "none skipped on some ranks), divides by the same world size, starts from the same "
          "weights (broadcast from rank 0) and takes the same optimizer steps; call lens.step() "
          "after the all-reduce, or the local (pre-reduce) norms are compared";
      return f;
    });
    f.set_evidence("rank", double(worst));
    f.set_evidence("grad_norm", ranks[worst].grad_norm);
    f.set_evidence("median_grad_norm", med);
    f.set_evidence("relative_spread", spread);
    f.set_evidence("syncs", double(streak_));
  }

  void describe(finding& f, const sample_schema&) const override {
    f.message = format(
        "gradient norms after the all-reduce differ across ranks by %.3g "
        "(relative) for %g consecutive syncs from step %lld; rank %d is "
        "farthest from the median (%g vs %g)",
        f.evidence_value("relative_spread"), f.evidence_value("syncs"),
        static_cast<long long>(f.first_step), int(f.evidence_value("rank")),
        f.evidence_value("grad_norm"), f.evidence_value("median_grad_norm"));
  }

 private:
  rank_options::desync_t o_;
  others_median median_;
  int streak_ = 0;
  std::int64_t start_ = 0;
  episode ep_;
};

}  // namespace
}  // namespace losslens::core::detail

namespace losslens {

rank_analyzer::rank_analyzer(int world_size, rank_options options)
    : world_(world_size), options_(options), log_(std::make_unique<core::detail::finding_log>()) {
  if (world_size < 2)
    throw error("rank_analyzer: world_size must be >= 2 (got " + std::to_string(world_size) +
                "); use losslens::analyzer for a single process");
  if (options_.update_interval < 1 || options_.rank_divergence.patience < 1 ||
      options_.straggler.patience < 1 || options_.desync.patience < 1)
    throw error("rank_options: update_interval and every patience must be >= 1");
  if (!(options_.rank_divergence.loss_ratio > 1) || !(options_.straggler.ratio > 1) ||
      !(options_.desync.tolerance >= 0))
    throw error(
        "rank_options: loss_ratio and straggler.ratio must be > 1, desync.tolerance "
        ">= 0");
  const auto w = std::size_t(world_size);
  if (options_.rank_divergence.enabled)
    rules_.push_back(std::make_unique<core::detail::rank_divergence>(options_, w));
  if (options_.straggler.enabled)
    rules_.push_back(std::make_unique<core::detail::straggler>(options_, w));
  if (options_.desync.enabled)
    rules_.push_back(std::make_unique<core::detail::desync>(options_, w));
}

rank_analyzer::~rank_analyzer() = default;
rank_analyzer::rank_analyzer(rank_analyzer&&) noexcept = default;
rank_analyzer& rank_analyzer::operator=(rank_analyzer&&) noexcept = default;

void rank_analyzer::observe(std::int64_t step, std::span<const rank_summary> ranks) {
  if (ranks.size() != std::size_t(world_) || (syncs_ > 0 && step <= last_step_)) {
    ++ignored_;
    return;
  }
  // The first sync continues nothing: pretend the previous one was long ago.
  const std::int64_t prev = syncs_ > 0 ? last_step_ : std::numeric_limits<std::int64_t>::min() / 2;
  ++syncs_;
  last_step_ = step;
  for (auto& rule : rules_) rule->observe_ranks(step, prev, ranks, *log_);
  // update_interval counts syncs; the log counts steps, so scale by this sync's stride.
  const std::int64_t stride = syncs_ > 1 ? step - prev : 1;
  const std::int64_t interval = stride * options_.update_interval;
  log_->flush(step, interval, interval, sample_schema{}, &rank_analyzer::notify, this);
}

void rank_analyzer::on_finding(listener l) { listener_ = std::move(l); }

void rank_analyzer::flush() { log_->flush_all(sample_schema{}, &rank_analyzer::notify, this); }

std::vector<finding> rank_analyzer::findings() const {
  log_->describe_pending(sample_schema{});
  return log_->all();
}

void rank_analyzer::notify(void* self, const finding& f, core::detail::publication p) {
  // Nothing refreshes this log (its episodes reach a router through the listener): no rank
  // kind is a cause or a symptom host, so the router never needs a rank episode's current
  // span to place another (test_router checks that).
  auto* a = static_cast<rank_analyzer*>(self);
  if (a->listener_) a->listener_(f, p == core::detail::publication::opened);
}

}  // namespace losslens
