#include "rank_sync.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <thread>

#include "losslens/error.hpp"

namespace losslens::hooks::detail {

namespace {
constexpr double nan = std::numeric_limits<double>::quiet_NaN();
enum summary_flag : int { loss_bad = 1, grad_bad = 2, has_grad = 4 };
constexpr const char* series_names[] = {"loss", "grad_norm", "step_time"};
}  // namespace

std::int64_t rank_sync::now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void rank_sync::validate(const c10::intrusive_ptr<c10d::ProcessGroup>& pg,
                         const distributed_options& o) {
  if (!pg)
    throw error(
        "attach: the process group is null; create it (e.g. ProcessGroupGloo) "
        "before attaching");
  if (o.sync_every < 1) throw error("attach: distributed_options::sync_every must be >= 1");
  if (o.drain_timeout.count() < 1)
    throw error("attach: distributed_options::drain_timeout must be positive");
}

rank_sync::rank_sync(c10::intrusive_ptr<c10d::ProcessGroup> pg, distributed_options o)
    : pg_(std::move(pg)), o_(std::move(o)) {
  validate(pg_, o_);
  rank_ = pg_->getRank();
  world_ = pg_->getSize();
  if (rank_ == 0) {
    rules_ = std::make_unique<rank_analyzer>(world_, o_.rules);  // validates the rule options
    summaries_.resize(std::size_t(world_));
    for (auto& b : buffers_) make_buffer(b);
  }
  prev_end_ns_ = now_ns();
}

rank_sync::~rank_sync() = default;

void rank_sync::make_buffer(receive_buffer& b) const {
  b.gathered = at::empty({world_, width}, at::TensorOptions().dtype(at::kDouble).device(o_.device));
  b.outputs.assign(1, b.gathered.unbind(0));  // the gather writes into these row views
}

void rank_sync::report_once(const char* what, const std::exception& e) noexcept {
  if (reported_.exchange(true) || !log_) return;
  try {
    log_(severity::warning, "rank " + std::to_string(rank_) + ": " + what + ": " + e.what() +
                                "; training goes on (further errors are not printed)");
  } catch (...) {
  }
}

void rank_sync::on_step(std::int64_t step, double loss, std::optional<double> grad_norm) noexcept {
  // Own work of this step: from the previous step() to the last gradient hook (the end of
  // backward), which leaves out the wait in the gradient all-reduce that follows.
  const std::int64_t now = now_ns();
  const std::int64_t grad = last_grad_ns_.load(std::memory_order_relaxed);
  const std::int64_t end = grad > prev_end_ns_ ? grad : now;
  time_sum_ += double(end - prev_end_ns_) * 1e-9;
  ++time_count_;
  prev_end_ns_ = now;
  const bool loss_bad_now = !std::isfinite(loss);
  const bool grad_bad_now = grad_norm && !std::isfinite(*grad_norm);
  if ((loss_bad_now || grad_bad_now) && bad_step_ < 0) bad_step_ = step;
  loss_bad_ = loss_bad_ || loss_bad_now;
  grad_bad_ = grad_bad_ || grad_bad_now;
  if ((step + 1) % o_.sync_every != 0 || failed_) return;

  const int flags =
      (loss_bad_ ? loss_bad : 0) | (grad_bad_ ? grad_bad : 0) | (grad_norm ? has_grad : 0);
  const double values[width] = {double(step),
                                loss,
                                grad_norm ? *grad_norm : nan,
                                time_sum_ / double(time_count_),
                                double(flags),
                                double(bad_step_)};
  time_sum_ = 0;
  time_count_ = 0;
  loss_bad_ = grad_bad_ = false;
  bad_step_ = -1;
  pending p;
  try {
    p.step = step;
    auto host = at::empty({width}, at::kDouble);
    std::copy(values, values + width, host.data_ptr<double>());
    p.input.push_back(o_.device.is_cpu() ? host : host.to(o_.device, /*non_blocking=*/true));
    if (rank_ == 0) {
      for (auto& b : buffers_)
        if (!b.busy.exchange(true, std::memory_order_acquire)) {
          p.buffer = &b;
          break;
        }
      if (!p.buffer) {  // more than buffers_.size() gathers in flight: a fresh one
        p.spare = std::make_unique<receive_buffer>();
        make_buffer(*p.spare);
        p.buffer = p.spare.get();
      }
    }
    c10d::GatherOptions opts;
    opts.rootRank = 0;
    p.work = pg_->gather(p.buffer ? p.buffer->outputs : p.no_outputs, p.input, opts);
    std::lock_guard lock(mutex_);
    in_flight_.push_back(std::move(p));
  } catch (const std::exception& e) {
    if (p.buffer) p.buffer->busy.store(false, std::memory_order_release);
    failed_ = true;
    report_once("cannot gather the per-rank summaries", e);
  }
}

std::vector<series_key> rank_sync::series() const {
  std::vector<series_key> out;
  if (rank_ != 0) return out;
  for (int r = 0; r < world_; ++r)
    for (const char* name : series_names) out.push_back(rank_series(std::size_t(r), name));
  return out;
}

void rank_sync::bind(point_fn point, record_fn record, log_fn log) {
  point_ = std::move(point);
  record_ = std::move(record);
  log_ = std::move(log);
  if (rules_)
    rules_->on_finding([this](const finding& f, bool is_new) {
      if (record_) record_(f, is_new);
    });
}

bool rank_sync::poll() noexcept {
  {
    std::lock_guard lock(mutex_);
    if (in_flight_.empty()) return false;
    for (auto& p : in_flight_) taken_.push_back(std::move(p));
    in_flight_.clear();
  }
  // Consume in step order; stop at the first gather still running.
  std::size_t done = 0;
  try {
    while (done < taken_.size() && taken_[done].work->isCompleted()) consume(taken_[done++]);
  } catch (const std::exception& e) {
    report_once("a gather of the per-rank summaries failed", e);  // done counts it
  }
  taken_.erase(taken_.begin(), taken_.begin() + std::ptrdiff_t(done));
  // Put back what is still running, ahead of anything issued meanwhile.
  if (!taken_.empty()) {
    std::lock_guard lock(mutex_);
    for (auto& p : in_flight_) taken_.push_back(std::move(p));
    in_flight_.swap(taken_);
    taken_.clear();
  }
  return done > 0;
}

void rank_sync::consume(pending& p) {
  // The gather is over: its buffer may be reused once the rows are read (or it failed).
  struct release {
    receive_buffer* b;
    ~release() {
      if (b) b->busy.store(false, std::memory_order_release);
    }
  } done{p.buffer};
  if (!p.work->isSuccess()) std::rethrow_exception(p.work->exception());
  if (!p.buffer) return;
  const double wall =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // A copy (host) so that the buffer can be reused at once.
  const at::Tensor& g = p.buffer->gathered;
  const at::Tensor all = o_.device.is_cpu() ? g.clone() : g.to(at::kCPU);
  for (int r = 0; r < world_; ++r) {
    const double* v = all.data_ptr<double>() + std::ptrdiff_t(r) * width;
    const int flags = int(v[4]);
    rank_summary& s = summaries_[std::size_t(r)];
    s.loss = v[1];
    s.grad_norm = v[2];
    s.step_time = v[3];
    s.loss_non_finite = flags & loss_bad;
    s.grad_non_finite = flags & grad_bad;
    s.has_grad = flags & has_grad;
    s.non_finite_step = std::int64_t(v[5]);
    if (point_) {  // series() order: loss, grad_norm, step_time per rank
      const std::size_t h = std::size_t(r) * 3;
      point_(h, p.step, wall, s.loss);
      if (s.has_grad) point_(h + 1, p.step, wall, s.grad_norm);
      point_(h + 2, p.step, wall, s.step_time);
    }
  }
  rules_->observe(p.step, summaries_);
}

void rank_sync::finish() noexcept {
  const auto deadline = std::chrono::steady_clock::now() + o_.drain_timeout;
  for (;;) {
    bool empty;
    {
      std::lock_guard lock(mutex_);
      empty = in_flight_.empty();
      if (!empty && !in_flight_.front().work->isCompleted() &&
          std::chrono::steady_clock::now() >= deadline) {
        if (log_)
          log_(severity::warning,
               "rank " + std::to_string(rank_) + ": " + std::to_string(in_flight_.size()) +
                   " gather(s) of per-rank summaries did not complete within drain_timeout at "
                   "detach (did every rank run the same number of steps?)");
        break;
      }
    }
    if (empty) break;
    if (!poll()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (rules_) {
    try {
      rules_->flush();
    } catch (const std::exception& e) {
      report_once("the rank rules failed", e);
    }
  }
}

std::unique_ptr<rank_sync> make_rank_sync(const c10::intrusive_ptr<c10d::ProcessGroup>& pg,
                                          distributed_options o, attach_options& options) {
  rank_sync::validate(pg, o);
  if (pg->getSize() == 1) return nullptr;
  auto sync = std::make_unique<rank_sync>(pg, std::move(o));
  if (sync->rank() != 0) options.db.clear();  // only rank 0 records
  return sync;
}

}  // namespace losslens::hooks::detail
