#include "losslens/analyzer.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <new>

#include "detail/detector.hpp"
#include "detail/level_filter.hpp"
#include "detail/norm_summary.hpp"
#include "detail/rolling.hpp"
#include "detail/task_weights.hpp"
#include "losslens/error.hpp"
#include "losslens/series_key.hpp"

namespace losslens {
namespace core::detail {

std::size_t finding_log::open(finding f, const detector* owner) {
  f.id = next_id_++;
  findings_.push_back(std::move(f));
  owners_.push_back(owner);
  published_step_.push_back(std::numeric_limits<std::int64_t>::min());
  published_level_.push_back(findings_.back().level);
  is_pending_.push_back(0);
  held_.push_back(0);
  touch(findings_.size() - 1);
  return findings_.size() - 1;
}

void finding_log::touch(std::size_t i) {
  if (is_pending_[i]) return;
  is_pending_[i] = 1;
  pending_.push_back(i);
}

void finding_log::publish(std::size_t i, const sample_schema& schema, std::int64_t step,
                          notify_fn notify, void* ctx) {
  finding& f = findings_[i];
  owners_[i]->describe(f, schema);
  const bool is_new = published_step_[i] == std::numeric_limits<std::int64_t>::min();
  published_step_[i] = step;
  published_level_[i] = f.level;
  is_pending_[i] = 0;
  if (notify) notify(ctx, f, is_new ? publication::opened : publication::updated);
}

std::int64_t finding_log::due_after(std::size_t i, std::int64_t step, std::int64_t interval,
                                    std::int64_t max_interval) const noexcept {
  // An eighth of the age: the message of a finding open for 10000 steps barely changes in 16.
  const std::int64_t age = step_diff(step, findings_[i].first_step);
  return std::max(interval, std::min(age / 8, max_interval));
}

bool finding_log::due(std::size_t i, std::int64_t step, std::int64_t interval,
                      std::int64_t max_interval) const noexcept {
  return !held_[i] &&
         (published_step_[i] == std::numeric_limits<std::int64_t>::min() ||
          findings_[i].level != published_level_[i] ||
          step_diff(step, published_step_[i]) >= due_after(i, step, interval, max_interval));
}

void finding_log::flush(std::int64_t step, std::int64_t interval, std::int64_t max_interval,
                        const sample_schema& schema, notify_fn notify, void* ctx) {
  prev_row_ = step;  // the rules have seen this row: see prev_row()
  // Most steps publish nothing (an open episode grows and is not due yet): the list is then
  // left as it is. Those before the first due one stay pending.
  const auto first = std::find_if(pending_.begin(), pending_.end(), [&](std::size_t i) {
    return due(i, step, interval, max_interval);
  });
  if (first == pending_.end()) return;
  keep_.assign(pending_.begin(), first);
  for (auto it = first; it != pending_.end(); ++it) {
    const std::size_t i = *it;
    if (!due(i, step, interval, max_interval)) {
      keep_.push_back(i);
      continue;
    }
    publish(i, schema, step, notify, ctx);
  }
  pending_.swap(keep_);
}

void finding_log::flush_all(const sample_schema& schema, notify_fn notify, void* ctx) {
  for (std::size_t i : pending_) publish(i, schema, findings_[i].last_step, notify, ctx);
  pending_.clear();
}

void finding_log::describe_pending(const sample_schema& schema) {
  for (std::size_t i : pending_) owners_[i]->describe(findings_[i], schema);
}

void finding_log::refresh_pending(const sample_schema& schema, notify_fn notify, void* ctx,
                                  bool published_only) {
  constexpr std::int64_t never = std::numeric_limits<std::int64_t>::min();
  for (std::size_t i : pending_) {
    // Inside flush(), those published in this flush already are no longer pending.
    if (!is_pending_[i] || (published_only && (held_[i] || published_step_[i] == never))) continue;
    owners_[i]->describe(findings_[i], schema);
    notify(ctx, findings_[i], publication::refreshed);
  }
}

std::int64_t finding_log::last_step_of(std::string_view kind) const noexcept {
  // Findings are few (one per episode), and only rare events ask.
  std::int64_t last = std::numeric_limits<std::int64_t>::min();
  for (const auto& f : findings_)
    if (f.kind == kind) last = std::max(last, f.last_step);
  return last;
}

std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return {};
  if (static_cast<std::size_t>(n) < sizeof buf)
    return std::string(buf, static_cast<std::size_t>(n));
  std::string out(static_cast<std::size_t>(n), '\0');
  va_start(ap, fmt);
  std::vsnprintf(out.data(), out.size() + 1, fmt, ap);
  va_end(ap);
  return out;
}

std::string task_series(const sample_schema& s, std::size_t i) {
  return series_key{series_kind::task_loss, s.tasks[i]}.name();
}
std::string param_series(const sample_schema& s, std::size_t i) {
  return series_key{series_kind::param_grad_norm, s.params[i]}.name();
}

std::string lr_hint(double lr, double lo, double hi) {
  if (std::isfinite(lo) && std::isfinite(hi) && lo != hi)
    return format("lower the learning rates 10x (param groups at %.3g-%.3g, to %.3g-%.3g)", lo, hi,
                  lo / 10, hi / 10);
  if (!std::isfinite(lr)) return "lower the learning rate 10x";
  return format("lower the learning rate 10x (from %.3g to %.3g)", lr, lr / 10);
}

void set_lr_evidence(finding& f, const step_context& ctx) {
  for_lr_evidence(ctx,
                  [&](std::size_t, std::string_view name, double v) { f.set_evidence(name, v); });
}

/// Running baseline of the total grad norm shared by loss_spike (which cites grad spikes) and
/// exploding_gradients, so both agree on what "its running median" is.
class grad_baseline {
 public:
  explicit grad_baseline(const detector_options& o)
      : median_(static_cast<std::size_t>(o.exploding.window)),
        tail_(static_cast<std::size_t>(o.exploding.tail_window), 64, 64),
        z_(o.loss_spike.z_threshold),
        ratio_(o.loss_spike.min_ratio),
        tail_factor_(o.exploding.tail_factor),
        window_(static_cast<std::size_t>(o.exploding.window)),
        warmup_(o.exploding.warmup),
        tail_warmup_(o.exploding.tail_warmup) {}

  void update(step_context& ctx) {
    ctx.grad_spike = false;
    ctx.grad_median = median_.count() >= static_cast<std::size_t>(warmup_) ? median_.median() : nan;
    if (!std::isfinite(early_) && median_.count() >= window_) early_ = median_.median();
    ctx.grad_early = early_;
    // Residuals against the running median (log ratios), so the trend does not widen the tail.
    ctx.grad_tail_ratio = nan;
    if (tail_.count() >= static_cast<std::size_t>(tail_warmup_)) {
      // The tail moves once per `stride` pushes: its exp and pow are taken then.
      if (tail_.upper() != cached_upper_) {
        cached_upper_ = tail_.upper();
        cached_ratio_ = std::exp(std::max(0.0, cached_upper_));
        cached_bar_ = std::pow(std::isfinite(cached_ratio_) ? cached_ratio_ : 1.0, tail_factor_);
      }
      ctx.grad_tail_ratio = cached_ratio_;
      ctx.grad_tail_bar = cached_bar_;
    } else {
      ctx.grad_tail_bar = unit_bar_;
    }
    if (finite(ctx.s->grad_norm)) push(ctx, *ctx.s->grad_norm);
    ctx.last_grad_spike_step = last_step_;
    ctx.last_grad_spike_value = last_value_;
    ctx.last_grad_spike_ratio = last_ratio_;
  }

 private:
  void push(step_context& ctx, double g) {
    const double log_g = g > 0 ? std::log(g) : g;  // one log per step serves all three uses
    // A spike stands out from the run's own tail too: heavy-tailed norms (near-zero loss, a few
    // hard examples) reach 10x their median routinely.
    // The ratio first: it is cheap and rarely holds, the z-score needs the MAD.
    if (std::isfinite(ctx.grad_median) &&
        g >= std::max(ratio_, ctx.grad_tail_bar) * ctx.grad_median && median_.z(g, log_g) >= z_) {
      ctx.grad_spike = true;
      last_step_ = ctx.s->step;
      last_value_ = g;
      last_ratio_ = g / ctx.grad_median;
    }
    // The median ignores isolated outliers; a lasting rise moves it after window/2 steps. On
    // the log scale grad_median is exp(working median), so log(g / grad_median) is log g minus
    // that median (equal to within rounding, without a second log).
    if (std::isfinite(ctx.grad_median) && ctx.grad_median > 0 && g > 0)
      tail_.push(median_.log_scale() ? log_g - median_.working_median()
                                     : std::log(g / ctx.grad_median));
    median_.push(g, log_g);
  }

  robust_baseline median_;
  lagged_tail tail_;
  double z_, ratio_, tail_factor_;
  std::size_t window_;
  double early_ = nan;
  // exp(upper) and its pow for the current tail upper (the tail changes every `stride` pushes).
  double cached_upper_ = nan, cached_ratio_ = nan, cached_bar_ = nan;
  double unit_bar_ = std::pow(1.0, tail_factor_);  // the bar while the tail is unknown
  int warmup_, tail_warmup_;
  std::int64_t last_step_ = std::numeric_limits<std::int64_t>::min();
  double last_value_ = nan, last_ratio_ = nan;
};

}  // namespace core::detail

namespace {
void validate(const detector_options& o) {
  auto need = [](bool ok, const char* what) {
    if (!ok) throw error(std::string("invalid detector options: ") + what);
  };
  need(o.non_finite.skip_confirm >= 0 && o.non_finite.skip_max_run >= 1,
       "non_finite.skip_confirm must be >= 0 and skip_max_run >= 1");
  need(o.loss_spike.window >= 8, "loss_spike.window must be >= 8");
  need(o.loss_spike.z_threshold > 0, "loss_spike.z_threshold must be > 0");
  need(o.loss_spike.tail_factor >= 0, "loss_spike.tail_factor must be >= 0");
  need(o.loss_spike.heavy_tail_z > 0, "loss_spike.heavy_tail_z must be > 0");
  need(o.exploding.window >= 8, "exploding.window must be >= 8");
  need(o.exploding.ratio > 1, "exploding.ratio must be > 1");
  need(o.exploding.rise_window >= 1, "exploding.rise_window must be >= 1");
  need(o.exploding.tail_window >= 1, "exploding.tail_window must be >= 1");
  need(o.loss_spike.recent_window >= 1, "loss_spike.recent_window must be >= 1");
  need(o.loss_spike.tail_window >= 1, "loss_spike.tail_window must be >= 1");
  need(o.loss_spike.sustained_steps >= 1 && o.loss_spike.sustained_hits >= 1 &&
           o.loss_spike.sustained_hits <= o.loss_spike.sustained_steps,
       "loss_spike.sustained_hits must be in [1, sustained_steps]");
  need(o.oscillation.window >= 8 && o.oscillation.stride >= 1 &&
           o.oscillation.stride <= o.oscillation.window,
       "oscillation.window must be >= 8 and 1 <= stride <= window");
  need(o.task_stalled.window >= 8, "task_stalled.window must be >= 8");
  need(o.chance_level.num_classes == 0 || o.chance_level.num_classes >= 2,
       "chance_level.num_classes must be 0 (off) or >= 2");
  for (double a : {o.divergence.ema_alpha, o.plateau.ema_alpha, o.chance_level.ema_alpha,
                   o.task_dominance.ema_alpha, o.task_stalled.ema_alpha})
    need(a > 0 && a <= 1, "every ema_alpha must be in (0, 1]");
  need(o.update_interval >= 1, "update_interval must be >= 1");
  need(o.max_update_interval >= o.update_interval,
       "max_update_interval must be >= update_interval");
  need(o.task_dominance.share_threshold > 0.5 && o.task_dominance.share_threshold <= 1,
       "task_dominance.share_threshold must be in (0.5, 1]");
}

// Merges the episodes that grew since their last publication into the router as they are now,
// without calling the listeners (they hear at the next publication). `published_only` skips
// those not yet published or held back.
void merge_pending(core::detail::finding_log& log, const sample_schema& schema,
                   finding_router& router, finding_router::source_id src, bool published_only) {
  struct target {
    finding_router* router;
    finding_router::source_id src;
  } to{&router, src};
  auto merge = [](void* ctx, const finding& f, core::detail::publication) {
    const auto* t = static_cast<const target*>(ctx);
    t->router->merge_quietly(t->src, f);
  };
  log.refresh_pending(schema, merge, &to, published_only);
}

// What the router asks of an analyzer before it places a new episode of any source. Points at
// what stays put when the analyzer moves.
finding_router::refresh_fn refresh_of(core::detail::finding_log* log, const sample_schema* schema,
                                      finding_router* router, finding_router::source_id src) {
  return [=] { merge_pending(*log, *schema, *router, src, true); };
}
}  // namespace

analyzer::analyzer(sample_schema schema, detector_options options)
    : analyzer(std::move(schema), options, nullptr) {}

analyzer::analyzer(sample_schema schema, detector_options options, finding_router& router)
    : analyzer(std::move(schema), options, &router) {}

analyzer::analyzer(sample_schema schema, detector_options options, finding_router* router)
    : schema_(std::make_unique<const sample_schema>(std::move(schema))),
      options_(options),
      log_(std::make_unique<core::detail::finding_log>()) {
  validate(options_);
  router_ = router;
  if (!router_) {  // the delegating constructor: a router of its own
    own_router_ = std::make_unique<finding_router>();
    router_ = own_router_.get();
  }
  listener_handle_ = router_->add_listener(nullptr);
  grad_ = std::make_unique<core::detail::grad_baseline>(options_);
  level_ = std::make_unique<core::detail::level_filter>();
  if (!schema_->tasks.empty())
    weights_ = std::make_unique<core::detail::task_weights>(schema_->tasks.size());
  scale_ = std::make_unique<core::detail::clipped_scale>();
  detectors_ = core::detail::make_detectors(options_, *schema_);
  for (const auto& d : detectors_)
    if (!d->flags_only()) unflagged_.push_back(d.get());
  source_ = router_->add_source("detectors");
  // Last, once nothing can throw.
  router_->set_refresh(source_, refresh_of(log_.get(), schema_.get(), router_, source_));
}

analyzer::~analyzer() {
  // A shared router outlives this analyzer: its refresh must not point at the freed log.
  // (Moved from: log_ is null, the refresh belongs to the analyzer it moved to.)
  if (log_ && !own_router_) router_->set_refresh(source_, {});
}
analyzer::analyzer(analyzer&&) noexcept = default;
analyzer& analyzer::operator=(analyzer&& other) noexcept {
  // Destroyed first, so that a shared router drops the refresh of this one's log.
  if (this != &other) {
    std::destroy_at(this);
    std::construct_at(this, std::move(other));
  }
  return *this;
}

void analyzer::on_finding(listener l) { router_->set_listener(listener_handle_, std::move(l)); }
const std::vector<finding>& analyzer::findings() const {
  // Episodes that grew since their last publication are merged on demand (the router and the
  // log are reached through pointers: the incidents are what this const call shows).
  merge_pending(*log_, *schema_, *router_, source_, false);
  return router_->incidents();
}
const std::vector<finding>& analyzer::episodes() const {
  log_->describe_pending(*schema_);
  return log_->all();
}
std::int64_t analyzer::steps() const noexcept { return steps_; }
std::int64_t analyzer::out_of_order() const noexcept { return out_of_order_; }
const sample_schema& analyzer::schema() const noexcept { return *schema_; }
const detector_options& analyzer::options() const noexcept { return options_; }

void analyzer::observe(const sample& s) {
  core::detail::step_context ctx;
  if (prepare(s, ctx)) run_rules(ctx);
}

namespace {
void prefetch_lines(const void* p, std::size_t bytes) noexcept {
  const char* c = static_cast<const char*>(p);
  for (std::size_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
  __builtin_prefetch(c + bytes - 1);
}
}  // namespace

void analyzer::observe_stream(sample_prefetcher::source_fn source,
                              const std::function<void(const sample&)>& each) {
  struct prepared {
    core::detail::step_context ctx;
    bool accepted = false;
  };
  constexpr std::size_t batch = sample_prefetcher::default_batch,
                        depth = sample_prefetcher::default_depth;
  // One per place in the prefetcher's ring, filled by its thread with the sample (and so
  // declared before it: destroyed after the thread stopped).
  std::vector<prepared> ring(batch * depth);
  // The loss's working scale is taken on the reader's thread, and moves to the rules' thread
  // when the reading is seen to be the slower half: which thread has slack depends on the file
  // (on a 4-column CSV the rules waited for 30% of the batches, with a wall-time column for
  // 97%, and moving the scale slowed the one and sped up the other). The scale's
  // state changes hands once, at the first row where the reader sees the flag: its earlier
  // rows and its pushes reach the rules' thread through the prefetcher's handover, and it
  // never touches the scale again. Every row's scale is the same either way: one sequence of
  // pushes in row order.
  std::atomic<bool> scale_on_rules{false};
  bool reader_takes_scale = true;  // the reader thread's own copy of the decision
  sample_prefetcher rows(std::move(source), batch, depth, [&](const sample& s, std::size_t at) {
    prepared& p = ring[at];
    // The defaults, written in place: default-initialized (every member has its initializer),
    // not value-initialized as construct_at does, which zeroes the whole struct first (a
    // `rep stos`, slow to start, was most of this call).
    ::new (static_cast<void*>(&p.ctx)) core::detail::step_context;
    p.accepted = prepare(s, p.ctx);
    if (reader_takes_scale && scale_on_rules.load(std::memory_order_relaxed))
      reader_takes_scale = false;
    if (p.accepted && reader_takes_scale) take_working_scale(p.ctx);
  });
  // Waits for at least 18 of the batches after the 8th up to the 33rd (the first ones are
  // waited for whatever the file) say the reading sets the pace. Decided once.
  constexpr std::size_t from = 8, to = 32, need = 18;
  std::size_t waits_from = 0;
  bool decided = false;
  while (const sample* s = rows.next()) {
    if (!decided) {
      if (rows.batches() <= from) {
        waits_from = rows.waits();
      } else if (rows.batches() > to) {
        decided = true;
        if (rows.waits() - waits_from >= need)
          scale_on_rules.store(true, std::memory_order_relaxed);
      }
    }
    // The reader's thread wrote the sample and its prepared context: their cache lines come
    // from the other core. Asked for a few rows ahead, they arrive while this row's rules run.
    constexpr std::size_t lead = 4;
    if (const sample* later = rows.ahead(lead)) {
      prefetch_lines(later, sizeof(sample));
      prefetch_lines(&ring[rows.place() + lead], sizeof(prepared));
    }
    if (each) each(*s);
    prepared& p = ring[rows.place()];
    if (p.accepted) run_rules(p.ctx);
  }
}

bool analyzer::prepare(const sample& s, core::detail::step_context& ctx) noexcept {
  if (steps_ > 0 && s.step <= last_step_) {
    ++out_of_order_;
    return false;
  }
  if (steps_++ == 0) first_step_ = s.step;
  last_step_ = s.step;

  ctx.s = &s;
  ctx.schema = schema_.get();
  if (core::detail::finite(s.lr)) last_lr_ = *s.lr;
  if (core::detail::finite(s.lr_min) && core::detail::finite(s.lr_max)) {
    last_lr_min_ = *s.lr_min;
    last_lr_max_ = *s.lr_max;
  }
  ctx.lr = last_lr_;
  ctx.lr_min = last_lr_min_;
  ctx.lr_max = last_lr_max_;
  ctx.optimizer = options_.optimizer;
  ctx.total_loss = s.loss ? *s.loss : core::detail::nan;
  if (!s.loss && !s.task_losses.empty()) {
    double sum = 0;
    bool any = false;
    for (std::size_t i = 0; i < s.task_losses.size(); ++i) {
      if (!s.task_losses[i]) continue;
      const double w = i < s.task_weights.size() ? s.task_weights[i] : 1.0;
      sum += w * *s.task_losses[i];
      any = true;
    }
    if (any) ctx.total_loss = sum;
  }
  if (ctx.total_loss > 0) ctx.log_loss = std::log(ctx.total_loss);
  for (const auto f : s.param_flags) ctx.param_flags_any |= f;
  if (!s.param_grad_norms.empty()) {
    const auto sum =
        core::detail::summarize_norms(s.param_grad_norms.data(), s.param_grad_norms.size());
    ctx.top_param_norm = sum.max_norm;
    ctx.min_param_norm = sum.min_norm;
    ctx.first_non_finite_norm = sum.first_non_finite;
  }
  grad_->update(ctx);
  return true;
}

void analyzer::take_working_scale(core::detail::step_context& ctx) noexcept {
  if (std::isfinite(ctx.total_loss)) {
    double y = 0;
    ctx.work_reset = scale_->push(ctx.total_loss, ctx.log_loss, y);
    ctx.work_loss = y;
  }
  ctx.work_log = scale_->log_scale();
  ctx.work_taken = true;
}

void analyzer::run_rules(core::detail::step_context& ctx) {
  const sample& s = *ctx.s;
  // The level filter here rather than in prepare(): in observe_stream() the reader's thread
  // also parses the rows, and this evens the two threads' work.
  ctx.level_loss = level_->update(ctx.total_loss);
  ctx.loss_range = level_->range();
  if (!ctx.work_taken) take_working_scale(ctx);
  if (weights_) {
    weights_->update(s);
    ctx.weights = weights_.get();
  }
  if (s.param_flags.empty()) {
    for (core::detail::detector* d : unflagged_) d->observe(ctx, *log_);
  } else {
    for (auto& d : detectors_) d->observe(ctx, *log_);
  }
  log_->flush(s.step, options_.update_interval, options_.max_update_interval, *schema_,
              &analyzer::notify, this);
}

void analyzer::notify(void* self, const finding& f, core::detail::publication p) {
  using publication = core::detail::publication;
  auto* a = static_cast<analyzer*>(self);
  a->router_->publish(a->source_, f, p == publication::opened);
}

void analyzer::flush() { log_->flush_all(*schema_, &analyzer::notify, this); }

}  // namespace losslens
