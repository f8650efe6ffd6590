#include "losslens/finding_router.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "detail/detector.hpp"  // step_diff
#include "losslens/report.hpp"  // format_relations_text

namespace losslens {
namespace {

using core::detail::step_diff;

constexpr double nan = std::numeric_limits<double>::quiet_NaN();

/// Which kinds can plausibly cause which: an incident names the earliest active incident of a
/// kind listed for it. Input red flags (wrong inputs to a loss) can cause every loss and
/// gradient pathology.
struct cause_rule {
  std::string_view effect;
  std::initializer_list<std::string_view> causes;
};
constexpr std::string_view input_flags[] = {
    "probabilities_as_logits", "unnormalized_targets", "non_finite_input", "target_out_of_range",
    "one_hot_targets",         "sum_reduction",        "call_order"};
const cause_rule cause_rules[] = {
    {"non_finite",
     {"task_dominance", "exploding_gradients", "loss_spike", "divergence", "oscillation",
      "missing_zero_grad", "initial_loss"}},
    {"divergence",
     {"task_dominance", "exploding_gradients", "loss_spike", "missing_zero_grad", "oscillation",
      "initial_loss"}},
    {"exploding_gradients", {"task_dominance", "missing_zero_grad", "initial_loss"}},
    {"loss_spike", {"exploding_gradients", "missing_zero_grad", "initial_loss"}},
    {"oscillation", {"exploding_gradients", "task_dominance", "missing_zero_grad"}},
    {"vanishing_gradients",
     {"exploding_gradients", "non_finite", "divergence", "loss_spike", "missing_zero_grad",
      "initial_loss"}},
    {"dead_parameters", {"exploding_gradients", "non_finite", "divergence"}},
    {"chance_level",
     {"vanishing_gradients", "dead_parameters", "exploding_gradients", "non_finite", "divergence",
      "parameters_not_updated", "constant_predictions", "initial_loss"}},
    {"plateau",
     {"vanishing_gradients", "dead_parameters", "chance_level", "parameters_not_updated"}},
    {"task_stalled", {"task_dominance"}},
    {"rank_divergence", {"non_finite"}},
    // A model that predicts one class: dead ReLUs after a blow-up, a start far off, nothing
    // updating, or the majority class of imbalanced data.
    {"constant_predictions",
     {"exploding_gradients", "non_finite", "divergence", "vanishing_gradients", "dead_parameters",
      "parameters_not_updated", "initial_loss", "class_imbalance"}},
    {"misleading_accuracy", {"class_imbalance"}},
    {"clipping_saturated", {"initial_loss", "exploding_gradients"}},
};

/// Kinds that describe one state of the model through different instruments. A collapse to
/// a constant output (dead ReLUs after a blow-up, a saturated output layer) shows as near-zero
/// gradients in most layers, parameters that stopped moving, one predicted class and a loss
/// at ln(k), all from about the same step: one incident, not four. A task whose loss sits at
/// chance while the others train is also flat against the falling total (task_stalled): one
/// incident of that task, when both are about its own loss series.
struct symptom_group {
  std::string_view name;
  std::initializer_list<std::string_view> kinds;
  bool same_series = false;  ///< only findings about one series are signs of one state
};
const symptom_group symptom_groups[] = {
    {"collapse",
     {"vanishing_gradients", "dead_parameters", "constant_predictions", "chance_level"}},
    {"stalled task", {"chance_level", "task_stalled"}, true},
};

bool in_group(const symptom_group& g, std::string_view kind) {
  return std::find(g.kinds.begin(), g.kinds.end(), kind) != g.kinds.end();
}

bool in_any_group(std::string_view kind) {
  return std::any_of(std::begin(symptom_groups), std::end(symptom_groups),
                     [&](const symptom_group& g) { return in_group(g, kind); });
}

/// The first group in which a and b are signs of one state (another kind each), or null.
const symptom_group* shared_group(const finding& a, const finding& b) {
  if (a.kind == b.kind) return nullptr;
  for (const auto& g : symptom_groups)
    if (in_group(g, a.kind) && in_group(g, b.kind) && (!g.same_series || a.series == b.series))
      return &g;
  return nullptr;
}

bool can_cause(std::string_view cause, std::string_view effect) {
  if (cause == effect) return false;
  const bool is_loss_effect = effect != "straggler" && effect != "desync";
  if (is_loss_effect &&
      std::find(std::begin(input_flags), std::end(input_flags), cause) != std::end(input_flags))
    return true;
  for (const auto& r : cause_rules)
    if (r.effect == effect)
      return std::find(r.causes.begin(), r.causes.end(), cause) != r.causes.end();
  return false;
}

/// "kind at step N (first clause of its message)". A clause longer than 120 bytes loses its
/// last parenthetical, else its words from the 116th byte on ("..." says so); parentheses
/// left open are closed, a UTF-8 character is never split.
std::string cause_text(const finding& c) {
  constexpr std::size_t max = 120, keep = max - 4;
  std::string what = c.message.substr(0, c.message.find("; "));
  if (what.size() > max) {
    std::size_t cut = what.rfind(" (", keep);
    if (cut == std::string::npos || cut < keep / 4) cut = what.rfind(' ', keep);
    if (cut == std::string::npos || cut < keep / 4) {
      cut = keep;
      while (cut > 0 && (static_cast<unsigned char>(what[cut]) & 0xC0) == 0x80) --cut;
    }
    what.resize(cut);
    what += " ...";
    const auto open = std::count(what.begin(), what.end(), '(');
    const auto closed = std::count(what.begin(), what.end(), ')');
    if (open > closed) what.append(std::size_t(open - closed), ')');
  }
  std::string out = c.kind + " at step " + std::to_string(c.first_step);
  if (!what.empty()) out += " (" + what + ")";
  return out;
}

void default_sink(severity, std::string_view line) noexcept {
  std::fprintf(stderr, "losslens: %.*s\n", static_cast<int>(line.size()), line.data());
}

std::string incident_key(const finding& f) { return f.kind + '\n' + f.series; }

}  // namespace

double episode_peak(const finding& f) noexcept {
  for (const char* name : {"peak", "ratio", "z", "share", "amplitude_ratio", "non_finite_steps",
                           "clipped_fraction", "steps", "parameters"}) {
    const double v = f.evidence_value(name);
    if (std::isfinite(v)) return v;
  }
  return nan;
}

finding_router::finding_router(router_options options) : options_(options) {}

finding_router::source_id finding_router::add_source(std::string_view name, refresh_fn refresh) {
  sources_.emplace_back(name);
  refresh_.push_back(std::move(refresh));
  return static_cast<source_id>(sources_.size() - 1);
}

void finding_router::set_refresh(source_id src, refresh_fn refresh) {
  if (src < refresh_.size()) refresh_[src] = std::move(refresh);
}

void finding_router::refresh_sources() noexcept {
  if (refreshing_) return;  // a refresh merges known episodes only; never nest
  refreshing_ = true;
  for (std::size_t s = 0; s < refresh_.size(); ++s) {
    if (!refresh_[s]) continue;
    try {
      refresh_[s]();
    } catch (const std::exception& e) {
      log(severity::warning,
          "refreshing the episodes of source '" + sources_[s] + "' failed: " + e.what());
    } catch (...) {
      log(severity::warning, "refreshing the episodes of source '" + sources_[s] + "' failed");
    }
  }
  refreshing_ = false;
}

std::size_t finding_router::merge(source_id src, const finding& ep, bool* opened) {
  *opened = false;
  const auto eid = std::make_pair(src, ep.id);
  auto known = episodes_.find(eid);
  // A new episode is placed against the others (its cause, the incident it is a sign of) by
  // their spans: the updates sources held back come in first. (Map iterators stay valid.)
  if (known == episodes_.end()) refresh_sources();
  const double peak = episode_peak(ep);
  const episode_span span{ep.first_step, ep.last_step, ep.level, peak};
  if (known == episodes_.end()) {
    const std::string key = incident_key(ep);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) {
      // A new incident.
      finding inc = ep;
      inc.id = incidents_.size() + 1;
      inc.episodes = 1;
      inc.spans = {span};
      inc.cause_id = 0;
      inc.cause.clear();
      inc.symptom_of_id = 0;
      inc.symptom_of.clear();
      // A sign of an incident does not also name it as its cause: the same state of the
      // model, said once (the cause is then another incident, if any).
      find_symptom_host(inc);
      find_cause(inc);
      incidents_.push_back(std::move(inc));
      state_.push_back({0, peak, ep.message, false});
      by_key_.emplace(key, incidents_.size() - 1);
      episodes_.emplace(eid, episode_ref{incidents_.size() - 1, 0});
      *opened = true;
      compose(incidents_.size() - 1);
      return incidents_.size() - 1;
    }
    // Another episode of a known incident.
    const std::size_t i = it->second;
    finding& inc = incidents_[i];
    const std::int64_t ordinal = inc.episodes++;
    episodes_.emplace(eid, episode_ref{i, ordinal});
    if (inc.spans.size() >= finding::max_spans)
      inc.spans.erase(inc.spans.begin() + finding::max_spans / 2);  // keep first and latest
    inc.spans.push_back(span);
    known = episodes_.find(eid);
  }
  const auto [i, ordinal] = known->second;
  finding& inc = incidents_[i];
  incident_state& st = state_[i];
  // Keep this episode's span current while it grows.
  if (ordinal < std::int64_t(finding::max_spans / 2) && std::size_t(ordinal) < inc.spans.size())
    inc.spans[std::size_t(ordinal)] = span;
  else if (ordinal == inc.episodes - 1 && !inc.spans.empty())
    inc.spans.back() = span;
  inc.first_step = std::min(inc.first_step, ep.first_step);
  inc.last_step = std::max(inc.last_step, ep.last_step);
  // The worst episode supplies the evidence: higher severity first, then the larger peak.
  const bool same = ordinal == st.worst_ordinal;
  const bool worse =
      ep.level > inc.level || (ep.level == inc.level && std::isfinite(peak) &&
                               (!std::isfinite(st.worst_peak) || peak > st.worst_peak));
  if (same || worse) {
    const auto keep_first = inc.first_step, keep_last = inc.last_step;
    // The worst episode may settle lower (a spike that recovered): the incident follows it.
    inc.level = same ? ep.level : std::max(inc.level, ep.level);
    inc.rule = ep.rule;
    inc.evidence = ep.evidence;
    st.base_message = ep.message;
    inc.advice = ep.advice;
    inc.first_step = keep_first;
    inc.last_step = keep_last;
    st.worst_ordinal = ordinal;
    if (std::isfinite(peak) || same) st.worst_peak = peak;
  }
  compose(i);
  return i;
}

bool finding_router::could_cause(const finding& c, const finding& e) const {
  // Onsets are estimates (a smoothed rise is dated a little early or late), hence the slack;
  // the cause must still have been active shortly before the effect began.
  // Signs of one state (an incident and those listed under it) do not cause each other.
  const bool same_state = c.id == e.symptom_of_id || c.symptom_of_id == e.id ||
                          (c.symptom_of_id != 0 && c.symptom_of_id == e.symptom_of_id);
  return c.id != e.id && c.cause_id != e.id && !same_state && can_cause(c.kind, e.kind) &&
         step_diff(c.first_step, e.first_step) <= options_.onset_slack &&
         step_diff(e.first_step, c.last_step) <= options_.cause_window;
}

void finding_router::find_cause(finding& inc) const {
  const finding* best = nullptr;
  for (const auto& c : incidents_)
    if (could_cause(c, inc) && (!best || c.first_step < best->first_step)) best = &c;
  if (!best) return;
  inc.cause_id = best->id;
  inc.cause = cause_text(*best);
}

void finding_router::find_symptom_host(finding& inc) const {
  if (!in_any_group(inc.kind)) return;
  // The first incident of the group whose latest episode is going on at this onset (or ended
  // at most cause_window steps before it, or begins at most symptom_window steps after it:
  // onsets of smoothed rules are estimates) and that is at least as severe: a sign that is
  // worse than the incident would be hidden under it.
  for (const auto& h : incidents_) {
    const symptom_group* g = shared_group(inc, h);
    if (h.symptom_of_id != 0 || !g || inc.level > h.level) continue;
    const std::int64_t from = h.spans.empty() ? h.first_step : h.spans.back().first_step;
    const std::int64_t to = h.spans.empty() ? h.last_step : h.spans.back().last_step;
    if (step_diff(from, inc.first_step) > options_.symptom_window ||
        step_diff(inc.first_step, to) > options_.cause_window)
      continue;
    inc.symptom_of_id = h.id;
    inc.symptom_of = "the " + std::string(g->name) + " at step " + std::to_string(h.first_step) +
                     ": " + cause_text(h);
    return;
  }
}

void finding_router::cite_as_cause(std::size_t index) {
  // A cause can be published after its effects (a spike waits to see whether the loss
  // recovers): effects that began after it and have no earlier cause now cite it.
  const finding& c = incidents_[index];
  for (std::size_t j = 0; j < incidents_.size(); ++j) {
    finding& e = incidents_[j];
    if (j == index || !could_cause(c, e)) continue;
    const finding* old = incident(e.cause_id);
    if (old && old->first_step <= c.first_step) continue;
    e.cause_id = c.id;
    e.cause = cause_text(c);
    compose(j);
    if (state_[j].announced) notify(j, false);
  }
}

void finding_router::compose(std::size_t index) {
  finding& inc = incidents_[index];
  // What a reader sees is the incident: its episodes and its cause are part of the message.
  // The episode count and the cause are fields of their own (to_line() and the reports show
  // them), so the message stays the worst episode's.
  inc.message = state_[index].base_message;
}

void finding_router::notify(std::size_t index, bool is_new) {
  const finding& inc = incidents_[index];
  for (auto& l : listeners_) {
    if (!l) continue;
    try {
      l(inc, is_new);
    } catch (const std::exception& e) {
      log(severity::warning, std::string("an on_finding callback threw: ") + e.what());
    } catch (...) {
      log(severity::warning, "an on_finding callback threw");
    }
  }
}

void finding_router::publish(source_id src, const finding& episode, bool is_new) {
  (void)is_new;  // the router knows which episodes it has seen
  bool opened = false;
  const std::size_t i = merge(src, episode, &opened);
  // An incident first merged quietly (a read of the state) is still new to the listeners.
  const bool first = !state_[i].announced;
  state_[i].announced = true;
  notify(i, first);
  if (first) cite_as_cause(i);
}

void finding_router::merge_quietly(source_id src, const finding& episode) {
  bool opened = false;
  (void)merge(src, episode, &opened);
}

std::size_t finding_router::add_listener(listener l) {
  listeners_.push_back(std::move(l));
  return listeners_.size() - 1;
}

void finding_router::set_listener(std::size_t handle, listener l) {
  if (handle < listeners_.size()) listeners_[handle] = std::move(l);
}

void finding_router::set_log_sink(log_sink sink) { sink_ = std::move(sink); }

void finding_router::log(severity level, std::string_view line) const noexcept {
  try {
    if (sink_)
      sink_(level, line);
    else
      default_sink(level, line);
  } catch (...) {
    default_sink(level, line);
  }
}

const finding* finding_router::incident(std::uint64_t id) const noexcept {
  return id >= 1 && id <= incidents_.size() ? &incidents_[id - 1] : nullptr;
}

std::string to_line(const finding& f) {
  std::string out = std::string(to_string(f.level)) + " " + f.kind + " at step " +
                    std::to_string(f.first_step) + " (" + f.series + "): " + f.message;
  if (f.episodes > 1)
    out += "; " + std::to_string(f.episodes) + " episodes between steps " +
           std::to_string(f.first_step) + " and " + std::to_string(f.last_step);
  out += format_relations_text(f, "; ", "");
  if (!f.advice.empty()) out += "; fix: " + f.advice;
  return out;
}

}  // namespace losslens
