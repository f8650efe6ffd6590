#include "replay.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Dict.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "losslens/error.hpp"

namespace losslens::hooks::detail {

namespace {
guard_options suspicion() {
  // Looser than the detectors, so that every step loss_spike or exploding_gradients may call a
  // spike is kept: loss at 2x its running median (loss_spike's min_ratio), same z and window.
  guard_options g;
  g.loss_ratio = 2.0;
  g.grad_ratio = 10.0;
  g.z_threshold = 6.0;
  g.window = 64;
  g.warmup = 20;
  return g;
}
}  // namespace

replay_sink::replay_sink(replay_options options) : o_(std::move(options)), guard_(suspicion()) {
  if (o_.max_files == 0) files_given_up_.store(true, std::memory_order_relaxed);
  if (o_.max_files < 0 || o_.depth < 1 || o_.max_bytes < 1 || o_.max_suspects < 0 ||
      o_.hold_steps < 0)
    throw error(
        "attach: replay options need max_files >= 0, depth >= 1, max_bytes >= 1, "
        "max_suspects >= 0 and hold_steps >= 0");
  capacity_ = std::size_t(o_.depth);
  ring_ = std::make_unique<batch[]>(capacity_);
}

replay_sink::~replay_sink() = default;

void replay_sink::capture(const at::Tensor& inputs, const at::Tensor& targets) noexcept {
  // Reference counts only: the batch is neither copied nor moved off its device.
  pending_inputs_ = inputs;
  pending_targets_ = targets;
}

void replay_sink::offer(std::int64_t step, double loss, double grad_norm, bool has_norm) noexcept {
  if (!pending_inputs_.defined() || step <= last_step_) {
    // No batch, or a step that was not taken (after detach): nothing to hand over.
    pending_inputs_.reset();
    pending_targets_.reset();
    return;
  }
  last_step_ = step;
  // Only the first step of a suspicious stretch: a finding names its episode's onset, and the
  // steps after a NaN are all NaN (holding them would push the onset's batch out).
  const bool flagged = guard_.check(loss, grad_norm, has_norm) != step_decision::proceed;
  const bool suspicious = flagged && !last_flagged_;
  last_flagged_ = flagged;
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  const bool full = tail - head_.load(std::memory_order_acquire) >= capacity_;
  if (!suspicious || full || files_given_up_.load(std::memory_order_relaxed)) {
    if (suspicious && full) dropped_.fetch_add(1, std::memory_order_relaxed);
    pending_inputs_.reset();
    pending_targets_.reset();
    return;
  }
  batch& b = ring_[tail % capacity_];
  b.step = step;
  b.inputs = std::move(pending_inputs_);
  b.targets = std::move(pending_targets_);
  pending_inputs_.reset();
  pending_targets_.reset();
  tail_.store(tail + 1, std::memory_order_release);
}

void replay_sink::take_until(std::int64_t step) noexcept {
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  while (head != tail_.load(std::memory_order_acquire)) {
    batch& b = ring_[head % capacity_];
    if (b.step > step) break;
    try {
      suspects_.push_back(std::move(b));
    } catch (...) {
    }
    b = batch{};
    head_.store(++head, std::memory_order_release);
    while (suspects_.size() > std::size_t(std::max(o_.max_suspects, 1))) suspects_.pop_front();
  }
}

const replay_sink::batch* replay_sink::find(std::int64_t step) const noexcept {
  for (const auto& b : suspects_)
    if (b.step == step) return &b;
  return nullptr;
}

void replay_sink::on_start(const run_start& run, sink_context& ctx) {
  ctx_ = &ctx;
  dir_ = !o_.dir.empty() ? o_.dir : (run.db.empty() ? std::string() : run.db + ".replay");
}

void replay_sink::on_event(const run_event& e) {
  if (e.kind == event_kind::run_created) run_id_ = std::int64_t(e.number("run_id"));
}

void replay_sink::on_sample(const sample& s) {
  take_until(s.step);
  // A loss_spike is published up to ~512 steps late: hold a suspicious batch that long.
  while (!suspects_.empty() && suspects_.front().step < s.step - o_.hold_steps)
    suspects_.pop_front();
}

void replay_sink::on_finding(const finding& f, bool) {
  if (f.kind != "non_finite" && f.kind != "loss_spike") return;
  auto& handled = handled_[f.id];
  if (f.episodes <= handled) return;  // an update of an episode already looked at
  handled = f.episodes;
  // The newest episode's onset: the step whose batch caused it.
  const std::int64_t step = f.spans.empty() ? f.first_step : f.spans.back().first_step;
  take_until(step);
  save(f, step);
}

void replay_sink::save(const finding& f, std::int64_t step) noexcept {
  // One file per batch: a second finding on the same step (the loss and the gradients of one
  // NaN batch) names the file already written.
  if (const auto it = saved_.find(step); it != saved_.end()) {
    ctx_->post(events::replay_saved(f.id, f.kind, step, it->second.path, it->second.rows,
                                    it->second.bytes, it->second.seed));
    return;
  }
  if (files_ >= o_.max_files) return;
  const batch* b = find(step);
  if (b && files_ + 1 >= o_.max_files) files_given_up_.store(true, std::memory_order_relaxed);
  if (!b) return;  // not captured, dropped, or no longer held
  if (dir_.empty()) {
    if (!said_no_dir_) {
      said_no_dir_ = true;
      ctx_->log(severity::warning, "the batch behind " + f.kind + " at step " +
                                       std::to_string(step) +
                                       " is not saved: replay files go next to the run database "
                                       "(attach_options::db) or into replay.dir; set one");
    }
    return;
  }
  try {
    // On the host, whole unless over max_bytes (then its leading rows).
    at::Tensor in = b->inputs.detach().to(at::kCPU).contiguous();
    at::Tensor tg =
        b->targets.defined() ? b->targets.detach().to(at::kCPU).contiguous() : at::Tensor();
    const std::int64_t bytes = std::int64_t(in.nbytes() + (tg.defined() ? tg.nbytes() : 0));
    const std::int64_t rows = in.dim() > 0 ? in.size(0) : 1;
    std::int64_t keep = rows;
    if (bytes > o_.max_bytes && in.dim() > 0 && rows > 1) {
      keep = std::max<std::int64_t>(1, rows * o_.max_bytes / bytes);
      in = in.slice(0, 0, keep).contiguous();
      if (tg.defined() && tg.dim() > 0 && tg.size(0) == rows)
        tg = tg.slice(0, 0, keep).contiguous();
    }
    std::uint64_t seed = 0;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      seed = gen.current_seed();
    }
    // A dict of str -> any (Python: torch.load(path) gives a dict).
    c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
    d.insert(std::string("inputs"), in);
    if (tg.defined()) d.insert(std::string("targets"), tg);
    d.insert(std::string("step"), step);
    d.insert(std::string("seed"), static_cast<std::int64_t>(seed));
    d.insert(std::string("finding_id"), static_cast<std::int64_t>(f.id));
    d.insert(std::string("kind"), f.kind);
    d.insert(std::string("series"), f.series);
    d.insert(std::string("run_id"), run_id_);
    d.insert(std::string("rows"), keep);
    d.insert(std::string("batch_rows"), rows);
    const std::vector<char> data = torch::jit::pickle_save(c10::IValue(d));

    namespace fs = std::filesystem;
    fs::create_directories(dir_);
    const std::string path =
        (fs::path(dir_) / ("run" + std::to_string(run_id_) + "-step" + std::to_string(step) + "-" +
                           f.kind + "-finding" + std::to_string(f.id) + ".pt"))
            .string();
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(data.data(), std::streamsize(data.size()));
      out.flush();
      if (!out) throw error("cannot write " + path);
    }
    ++files_;
    saved_[step] = {path, keep, std::int64_t(data.size()), seed};
    ctx_->post(
        events::replay_saved(f.id, f.kind, step, path, keep, std::int64_t(data.size()), seed));
    ctx_->log(severity::info, "saved the batch of step " + std::to_string(step) + " (" + f.kind +
                                  ", finding " + std::to_string(f.id) + ") to " + path);
  } catch (const std::exception& e) {
    if (!said_failure_) {
      said_failure_ = true;
      ctx_->log(severity::warning,
                std::string("cannot save the batch behind a finding: ") + e.what());
    }
  }
}

void replay_sink::on_finish(std::uint64_t, std::int64_t) {
  // Let the tensors go now rather than when the monitor is destroyed.
  suspects_.clear();
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  while (head != tail_.load(std::memory_order_acquire)) {
    ring_[head % capacity_] = batch{};
    head_.store(++head, std::memory_order_release);
  }
}

}  // namespace losslens::hooks::detail
