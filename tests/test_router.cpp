// finding_router: episodes merged into incidents, one id space, causes, listeners, log sink.

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "losslens/analyzer.hpp"
#include "losslens/finding_router.hpp"
#include "losslens/report.hpp"

using namespace losslens;

namespace {

finding episode(std::uint64_t id, std::string kind, std::string series, std::int64_t first,
                std::int64_t last, severity level = severity::warning, double ratio = NAN) {
  finding f;
  f.id = id;
  f.kind = std::move(kind);
  f.series = std::move(series);
  f.first_step = first;
  f.last_step = last;
  f.level = level;
  f.rule.name = "test_rule";
  if (std::isfinite(ratio)) f.evidence = {{"ratio", ratio}};
  f.message = "episode " + std::to_string(id);
  f.advice = "advice " + std::to_string(id);
  return f;
}

}  // namespace

TEST_CASE("router: episodes of one kind on one series are one incident with the worst evidence") {
  finding_router r;
  const auto src = r.add_source("detectors");
  std::vector<std::pair<std::uint64_t, bool>> heard;
  r.add_listener([&](const finding& f, bool is_new) { heard.emplace_back(f.id, is_new); });
  r.publish(src, episode(1, "loss_spike", "loss", 100, 102, severity::warning, 5.0), true);
  r.publish(src, episode(2, "loss_spike", "loss", 500, 500, severity::warning, 12.0), true);
  r.publish(src, episode(3, "loss_spike", "loss", 900, 905, severity::warning, 7.0), true);
  r.publish(src, episode(4, "exploding_gradients", "grad_norm", 499, 501), true);
  REQUIRE(r.incidents().size() == 2);
  const finding& inc = r.incidents()[0];
  CHECK(inc.id == 1);
  CHECK(inc.kind == "loss_spike");
  CHECK(inc.episodes == 3);
  CHECK(inc.first_step == 100);
  CHECK(inc.last_step == 905);
  CHECK(inc.evidence_value("ratio") == 12.0);  // episode 2 is the worst
  CHECK(inc.message == "episode 2");
  REQUIRE(inc.spans.size() == 3);
  CHECK(inc.spans[1].first_step == 500);
  CHECK(inc.spans[1].peak == 12.0);
  CHECK(inc.spans[2].last_step == 905);
  CHECK(r.incidents()[1].id == 2);
  // New once per incident; every further episode is an update.
  const std::vector<std::pair<std::uint64_t, bool>> want = {
      {1, true}, {1, false}, {1, false}, {2, true}};
  CHECK(heard == want);
  // The line stderr shows says how many episodes and where.
  CHECK(to_line(inc) ==
        "warning loss_spike at step 100 (loss): episode 2; 3 episodes between "
        "steps 100 and 905; fix: advice 2");
}

TEST_CASE("to_line: the relations as clauses of the one line, the listing's words") {
  finding f;
  f.level = severity::error;
  f.kind = "exploding_gradients";
  f.series = "grad_norm";
  f.first_step = f.last_step = 40;
  f.message = "grad norm 900";
  f.advice = "clip";
  f.cause = "loss_spike at step 38";
  f.symptom_of = "the divergence at step 30: divergence";
  CHECK(to_line(f) ==
        "error exploding_gradients at step 40 (grad_norm): grad norm 900; preceded by: "
        "loss_spike at step 38; another sign of the divergence at step 30: divergence; fix: clip");
  CHECK(format_relations_text(f, "  ") ==
        "  preceded by: loss_spike at step 38\n"
        "  another sign of the divergence at step 30: divergence\n");
}

TEST_CASE("router: a growing episode updates its span, higher severity takes over the evidence") {
  finding_router r;
  const auto src = r.add_source("detectors");
  r.publish(src, episode(1, "exploding_gradients", "grad_norm", 10, 12, severity::warning, 50),
            true);
  r.publish(src, episode(2, "exploding_gradients", "grad_norm", 40, 41, severity::error, 20), true);
  auto grown = episode(1, "exploding_gradients", "grad_norm", 10, 30, severity::warning, 80);
  r.publish(src, grown, false);  // episode 1 grew: its span follows, the error stays worst
  const finding& inc = r.incidents()[0];
  CHECK(inc.episodes == 2);
  CHECK(inc.level == severity::error);
  CHECK(inc.evidence_value("ratio") == 20);
  CHECK(inc.spans[0].last_step == 30);
  CHECK(inc.spans[0].peak == 80);
}

TEST_CASE("router: spans keep the first and the latest episodes, episodes counts all") {
  finding_router r;
  const auto src = r.add_source("detectors");
  const int n = 100;
  for (int k = 0; k < n; ++k)
    r.publish(src, episode(std::uint64_t(k + 1), "loss_spike", "loss", 10 * k, 10 * k + 1), true);
  const finding& inc = r.incidents()[0];
  CHECK(inc.episodes == n);
  REQUIRE(inc.spans.size() == finding::max_spans);
  CHECK(inc.spans[0].first_step == 0);
  CHECK(inc.spans[finding::max_spans / 2 - 1].first_step == 10 * (finding::max_spans / 2 - 1));
  CHECK(inc.spans[finding::max_spans / 2].first_step == 10 * (n - finding::max_spans / 2));
  CHECK(inc.spans.back().first_step == 10 * (n - 1));
}

TEST_CASE("router: sources keep their own episode ids, incident ids are one sequence") {
  finding_router r;
  const auto a = r.add_source("detectors");
  const auto b = r.add_source("red_flags");
  r.publish(a, episode(1, "loss_spike", "loss", 5, 5), true);
  r.publish(b, episode(1, "probabilities_as_logits", "loss/cls", 0, 0), true);  // same own id
  r.publish(a, episode(2, "plateau", "loss", 900, 1000, severity::info), true);
  REQUIRE(r.incidents().size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(r.incidents()[i].id == i + 1);
  CHECK(r.incidents()[1].kind == "probabilities_as_logits");
  CHECK(r.incident(2)->kind == "probabilities_as_logits");
  CHECK(r.incident(4) == nullptr);
  CHECK(r.incident(0) == nullptr);
}

TEST_CASE("router: an incident names the earlier incident that can cause it") {
  finding_router r;
  const auto src = r.add_source("detectors");
  auto dom = episode(1, "task_dominance", "loss/recon", 0, 6);
  dom.message = "recon makes up 99.98% of the weighted total loss; the task losses are 6e3x apart";
  r.publish(src, dom, true);
  r.publish(src, episode(2, "non_finite", "loss", 6, 6, severity::error), true);
  r.publish(src, episode(3, "plateau", "loss", 9000, 9600, severity::info), true);  // unrelated
  const finding& nf = r.incidents()[1];
  CHECK(nf.cause_id == 1);
  CHECK(nf.cause == "task_dominance at step 0 (recon makes up 99.98% of the weighted total loss)");
  CHECK(to_line(nf).find("preceded by: task_dominance at step 0") != std::string::npos);
  CHECK(r.incidents()[2].cause_id == 0);  // plateau is not caused by a dominance long gone
  CHECK(r.incidents()[0].cause_id == 0);
}

TEST_CASE("router: a long cause is shortened at a word, its parentheses closed") {
  finding_router r;
  const auto src = r.add_source("detectors");
  auto exp = episode(1, "exploding_gradients", "grad_norm", 5, 8, severity::error);
  exp.message =
      "grad norm 3.08e+17 at step 8 is 2.31e+14x its running median 1.34e+03 (largest at onset: "
      "fc3.weight, 70% of the squared norm); fix it";
  r.publish(src, exp, true);
  r.publish(src, episode(2, "loss_spike", "loss", 9, 9), true);
  // The parenthetical that does not fit goes whole.
  CHECK(r.incidents()[1].cause ==
        "exploding_gradients at step 5 (grad norm 3.08e+17 at step 8 is 2.31e+14x its running "
        "median 1.34e+03 ...)");
  // No parenthetical: cut at the last space that fits; one without spaces keeps whole UTF-8
  // characters.
  finding_router words;
  const auto s2 = words.add_source("detectors");
  auto wide = episode(1, "exploding_gradients", "grad_norm", 5, 8);
  wide.message = std::string(60, 'a') + " " + std::string(40, 'b') + " " + std::string(40, 'c');
  words.publish(s2, wide, true);
  words.publish(s2, episode(2, "loss_spike", "loss", 9, 9), true);
  CHECK(words.incidents()[1].cause == "exploding_gradients at step 5 (" + std::string(60, 'a') +
                                          " " + std::string(40, 'b') + " ...)");
  finding_router bytes;
  const auto s3 = bytes.add_source("detectors");
  auto utf = episode(1, "exploding_gradients", "grad_norm", 5, 8);
  utf.message.clear();
  for (int i = 0; i < 60; ++i) utf.message += "\xe2\x82\xac";  // 60 x U+20AC, 180 bytes
  bytes.publish(s3, utf, true);
  bytes.publish(s3, episode(2, "loss_spike", "loss", 9, 9), true);
  std::string kept;
  for (int i = 0; i < 38; ++i) kept += "\xe2\x82\xac";  // 114 bytes: not 116, mid-character
  CHECK(bytes.incidents()[1].cause == "exploding_gradients at step 5 (" + kept + " ...)");
}

TEST_CASE("router: causes at the ends of the int64 step range do not overflow the windows") {
  finding_router r;
  const auto src = r.add_source("detectors");
  r.publish(src, episode(1, "exploding_gradients", "grad_norm", INT64_MAX, INT64_MAX), true);
  r.publish(src, episode(2, "loss_spike", "loss", INT64_MAX, INT64_MAX), true);
  r.publish(src, episode(3, "exploding_gradients", "grad_norm/a", INT64_MIN, INT64_MIN), true);
  r.publish(src, episode(4, "loss_spike", "loss/b", INT64_MIN, INT64_MIN), true);
  const auto& inc = r.incidents();
  REQUIRE(inc.size() == 4);
  CHECK(inc[1].cause_id == 1);
  CHECK(inc[3].cause_id == 3);
}

TEST_CASE("router: a cause published after its effect is cited retroactively") {
  finding_router r;
  const auto src = r.add_source("detectors");
  std::vector<std::pair<std::uint64_t, bool>> heard;
  r.add_listener([&](const finding& f, bool is_new) {
    if (f.kind == "divergence") heard.emplace_back(f.cause_id, is_new);
  });
  r.publish(src, episode(1, "divergence", "loss", 5020, 5100, severity::error), true);
  // The spike at 5000 was held back to see whether the loss recovers; it arrives later.
  r.publish(src, episode(2, "loss_spike", "loss", 5000, 5000), true);
  REQUIRE(heard.size() == 2);
  CHECK(heard[0] == std::make_pair(std::uint64_t{0}, true));
  CHECK(heard[1] == std::make_pair(std::uint64_t{2}, false));
  CHECK(r.incidents()[0].cause.rfind("loss_spike at step 5000", 0) == 0);
  // No cycle: the spike does not cite the divergence back.
  CHECK(r.incidents()[1].cause_id == 0);
}

TEST_CASE("router: other signs of one collapse are listed under the first incident") {
  finding_router r;
  const auto src = r.add_source("detectors");
  auto van = episode(1, "vanishing_gradients", "grad_norm/fc1.bias", 32403, 32500);
  van.message = "5 of 6 parameters get less than 1e-05x the gradient of the largest";
  r.publish(src, episode(9, "divergence", "loss", 9171, 40000, severity::error), true);
  r.publish(src, van, true);
  r.publish(src, episode(2, "constant_predictions", "loss", 32450, 32450), true);
  r.publish(src, episode(3, "chance_level", "loss", 32415, 33000), true);
  // Another collapse-group kind long after, and an unrelated kind at the same step: their own.
  r.publish(src, episode(4, "dead_parameters", "grad_norm/fc2.weight", 90000, 90100), true);
  r.publish(src, episode(5, "loss_spike", "loss", 32420, 32420), true);
  REQUIRE(r.incidents().size() == 6);
  const auto& inc = r.incidents();
  CHECK(inc[1].symptom_of_id == 0);
  CHECK(inc[2].symptom_of_id == inc[1].id);
  CHECK(inc[3].symptom_of_id == inc[1].id);
  CHECK(inc[2].symptom_of ==
        "the collapse at step 32403: vanishing_gradients at step 32403 (5 of 6 parameters get "
        "less than 1e-05x the gradient of the largest)");
  CHECK(to_line(inc[3]).find("; another sign of the collapse at step 32403") != std::string::npos);
  CHECK(inc[4].symptom_of_id == 0);  // long after that episode ended: a collapse of its own
  CHECK(inc[5].symptom_of_id == 0);
  // They keep their own kind, evidence and cause (the divergence before them).
  CHECK(inc[3].kind == "chance_level");
  CHECK(inc[3].cause_id == inc[0].id);
  // Later episodes of a sign stay with it (one key per kind and series).
  r.publish(src, episode(6, "chance_level", "loss", 60000, 61000), true);
  REQUIRE(r.incidents().size() == 6);
  CHECK(inc[3].episodes == 2);
  CHECK(inc[3].symptom_of_id == inc[1].id);
}

TEST_CASE("router: a sign of an incident does not also name it as its cause") {
  finding_router r;
  const auto src = r.add_source("detectors");
  r.publish(src, episode(1, "vanishing_gradients", "grad_norm/fc1.weight", 9, 60), true);
  r.publish(src, episode(2, "chance_level", "loss", 12, 80), true);  // vanishing can cause it
  const auto& inc = r.incidents();
  REQUIRE(inc.size() == 2);
  CHECK(inc[1].symptom_of_id == inc[0].id);
  CHECK(inc[1].cause_id == 0);
  CHECK(inc[1].cause.empty());
  const std::string line = to_line(inc[1]);
  CHECK(line.find("preceded by") == std::string::npos);
  CHECK(line.find("; another sign of the collapse at step 9: vanishing_gradients at step 9") !=
        std::string::npos);
  // Nor another sign of the same incident (constant_predictions can cause chance_level).
  r.publish(src, episode(3, "constant_predictions", "loss", 11, 90), true);
  r.publish(src, episode(4, "chance_level", "loss/cls", 40, 90), true);
  REQUIRE(inc.size() == 4);
  CHECK(inc[2].symptom_of_id == inc[0].id);
  CHECK(inc[3].symptom_of_id == inc[0].id);
  CHECK(inc[3].cause_id == 0);
  // An earlier incident that can cause both stays the cause, also when cited after the fact.
  finding_router late;
  const auto s2 = late.add_source("detectors");
  late.publish(s2, episode(1, "vanishing_gradients", "grad_norm/fc1.weight", 9, 60), true);
  late.publish(s2, episode(2, "constant_predictions", "loss", 10, 70), true);
  late.publish(s2, episode(3, "exploding_gradients", "grad_norm", 5, 6), true);
  const auto& li = late.incidents();
  REQUIRE(li.size() == 3);
  CHECK(li[1].symptom_of_id == li[0].id);
  CHECK(li[1].cause_id == li[2].id);
  CHECK(li[0].cause_id == li[2].id);
}

TEST_CASE("router: a sign joins an incident of its group during its episode, if not worse") {
  router_options o;
  o.symptom_window = 100;
  finding_router r(o);
  const auto src = r.add_source("detectors");
  r.publish(src, episode(1, "chance_level", "loss", 1000, 5000), true);
  // Onsets are estimates: a sign dated a little before the incident's episode still joins.
  r.publish(src, episode(2, "constant_predictions", "loss", 960, 960), true);
  // Long after the onset, while the episode lasts (a smoothed rule reports late): joins.
  r.publish(src, episode(3, "vanishing_gradients", "grad_norm/a", 4000, 4100), true);
  // Too long before the episode: its own.
  r.publish(src, episode(4, "dead_parameters", "grad_norm/b", 850, 900), true);
  // After the episode ended (more than cause_window = 200 steps): its own.
  r.publish(src, episode(5, "vanishing_gradients", "grad_norm/c", 5300, 5400), true);
  // More severe than the incident: not hidden under it.
  r.publish(src, episode(6, "dead_parameters", "grad_norm/d", 2000, 2100, severity::error), true);
  // Steps at the ends of the int64 range do not overflow the gaps.
  r.publish(src, episode(7, "constant_predictions", "loss/x", INT64_MIN, INT64_MIN), true);
  r.publish(src, episode(8, "chance_level", "loss/y", INT64_MAX, INT64_MAX), true);
  const auto& inc = r.incidents();
  REQUIRE(inc.size() == 8);
  CHECK(inc[1].symptom_of_id == 1);
  CHECK(inc[2].symptom_of_id == 1);
  CHECK(inc[3].symptom_of_id == 0);
  CHECK(inc[4].symptom_of_id == 0);
  CHECK(inc[5].symptom_of_id == 0);
  CHECK(inc[6].symptom_of_id == 0);
  CHECK(inc[7].symptom_of_id == 0);
  // The incident's latest episode counts: a second episode of chance_level, much later.
  r.publish(src, episode(9, "chance_level", "loss", 90000, 91000), true);
  r.publish(src, episode(10, "vanishing_gradients", "grad_norm/e", 90500, 90600), true);
  REQUIRE(inc.size() == 9);
  CHECK(inc[8].symptom_of_id == 1);
}

TEST_CASE("router: a throwing listener is reported through the log sink, others still hear") {
  finding_router r;
  const auto src = r.add_source("detectors");
  std::vector<std::string> lines;
  r.set_log_sink([&](severity, std::string_view line) { lines.emplace_back(line); });
  int second = 0;
  r.add_listener([](const finding&, bool) { throw std::runtime_error("boom"); });
  r.add_listener([&](const finding&, bool) { ++second; });
  r.publish(src, episode(1, "loss_spike", "loss", 1, 1), true);
  CHECK(second == 1);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == "an on_finding callback threw: boom");
}

TEST_CASE("router: an incident first read quietly is still new to the listeners") {
  finding_router r;
  const auto src = r.add_source("detectors");
  std::vector<bool> news;
  r.add_listener([&](const finding&, bool is_new) { news.push_back(is_new); });
  r.merge_quietly(src, episode(1, "loss_spike", "loss", 1, 1));
  REQUIRE(r.incidents().size() == 1);
  CHECK(news.empty());
  r.publish(src, episode(1, "loss_spike", "loss", 1, 3), false);
  CHECK(news == std::vector<bool>{true});
}

TEST_CASE("analyzer: two analyzers sharing a router number their incidents in one sequence") {
  finding_router r;
  analyzer a(sample_schema{}, detector_options{}, r);
  analyzer b(sample_schema{}, detector_options{}, r);
  for (int i = 0; i < 10; ++i) {
    sample s;
    s.step = i;
    s.loss = i == 3 ? NAN : 1.0;
    a.observe(s);
    s.loss = i == 7 ? NAN : 1.0;
    b.observe(s);
  }
  // The same kind on the same series from two sources is one incident of the run.
  REQUIRE(r.incidents().size() == 1);
  CHECK(r.incidents()[0].episodes == 2);
  CHECK(r.incidents()[0].first_step == 3);
  CHECK(r.incidents()[0].last_step == 7);
  CHECK(&a.findings() == &r.incidents());
}

TEST_CASE("router: another source's new episode is weighed against the detectors as they are now") {
  // The detectors re-publish an old episode only every few hundred steps; a rank_divergence
  // (from the multi-rank rules) that opens 1 step after the loss's last NaN must still name the
  // NaN episode as its cause, which the router can only see with the episode's current end.
  finding_router r;
  analyzer a(sample_schema{}, detector_options{}, r);
  const auto ranks = r.add_source("ranks");
  std::int64_t published_end = -1, step = 0;
  a.on_finding([&](const finding& f, bool) {
    if (f.kind == "non_finite") published_end = f.last_step;
  });
  // NaN from step 20 on, until the last publication is more than cause_window (200) old.
  for (;; ++step) {
    sample s;
    s.step = step;
    s.loss = step >= 20 ? NAN : 1.0;
    a.observe(s);
    if (published_end > 0 && step - published_end > 210) break;
  }
  REQUIRE(published_end < step - 200);
  std::int64_t nan_end_when_placed = -1;
  a.on_finding([&](const finding& f, bool is_new) {
    if (f.kind == "rank_divergence" && is_new)
      for (const auto& inc : r.incidents())
        if (inc.kind == "non_finite") nan_end_when_placed = inc.last_step;
  });
  r.publish(ranks, episode(1, "rank_divergence", "loss", step + 1, step + 1), true);
  CHECK(nan_end_when_placed == step);  // not published_end
  REQUIRE(r.incidents().size() == 2);
  CHECK(r.incidents()[1].cause_id == r.incidents()[0].id);
  CHECK(r.incidents()[1].cause.find("non_finite at step 20") == 0);

  // A source that goes away before the router leaves no refresh behind (ASan would see the
  // freed log); one that moves takes its refresh along.
  {
    analyzer gone(sample_schema{}, detector_options{}, r);
    analyzer moved(sample_schema{}, detector_options{}, r);
    gone = std::move(moved);
    sample s;
    s.step = 0;
    s.loss = NAN;
    gone.observe(s);
  }
  r.publish(ranks, episode(2, "straggler", "loss", step + 2, step + 2), true);
  REQUIRE(r.incidents().size() == 3);
  CHECK(r.incidents()[0].episodes == 2);  // gone's NaN joined the loss's non_finite
}

TEST_CASE(
    "router: no rank kind is a cause or a symptom host, so the ranks source needs no refresh") {
  // The multi-rank rules publish through the pipeline with no refresh: the router never needs
  // a rank episode's current span to place another episode. A rank kind that becomes a cause
  // or a symptom host needs one (see finding_router::refresh_fn), and this test says so.
  const std::string_view effects[] = {"non_finite",
                                      "divergence",
                                      "exploding_gradients",
                                      "loss_spike",
                                      "oscillation",
                                      "vanishing_gradients",
                                      "dead_parameters",
                                      "chance_level",
                                      "plateau",
                                      "task_stalled",
                                      "constant_predictions",
                                      "misleading_accuracy",
                                      "clipping_saturated",
                                      "task_dominance",
                                      "missing_zero_grad",
                                      "parameters_not_updated",
                                      "initial_loss",
                                      "rank_divergence",
                                      "straggler",
                                      "desync"};
  for (const std::string_view rank_kind : {"rank_divergence", "straggler", "desync"})
    for (const std::string_view effect : effects) {
      finding_router r;
      const auto ranks = r.add_source("ranks");
      const auto det = r.add_source("detectors");
      r.publish(ranks, episode(1, std::string(rank_kind), "rank/1/loss", 100, 100, severity::error),
                true);
      r.publish(det, episode(1, std::string(effect), "loss", 101, 101), true);
      REQUIRE(r.incidents().size() == 2);
      INFO(rank_kind << " then " << effect);
      CHECK(r.incidents()[1].cause_id == 0);
      CHECK(r.incidents()[1].symptom_of_id == 0);
    }
  // The same placement does name a detector's cause (the setup can find one).
  finding_router r;
  const auto det = r.add_source("detectors");
  r.publish(det, episode(1, "exploding_gradients", "grad_norm", 100, 100, severity::error), true);
  r.publish(det, episode(2, "divergence", "loss", 101, 101), true);
  REQUIRE(r.incidents().size() == 2);
  CHECK(r.incidents()[1].cause_id == r.incidents()[0].id);
}

TEST_CASE("router: a refresh that throws is reported, the episode still placed") {
  finding_router r;
  std::vector<std::string> logged;
  r.set_log_sink([&](severity, std::string_view line) { logged.emplace_back(line); });
  const auto src = r.add_source("flaky", [] { throw std::runtime_error("disk gone"); });
  r.publish(src, episode(1, "loss_spike", "loss", 1, 1), true);
  r.publish(src, episode(1, "loss_spike", "loss", 1, 2), false);  // known: no refresh
  REQUIRE(r.incidents().size() == 1);
  CHECK(r.incidents()[0].last_step == 2);
  CHECK(logged ==
        std::vector<std::string>{"refreshing the episodes of source 'flaky' failed: disk gone"});
}

TEST_CASE("router: a task at chance and flat against the falling total is one incident") {
  finding_router r;
  const auto src = r.add_source("detectors");
  auto chance = episode(1, "chance_level", "loss/cls", 9, 799);
  chance.message = "smoothed loss 2.304 has stayed between 3.0% below and 10% above ln(10)";
  r.publish(src, chance, true);
  r.publish(src, episode(2, "task_stalled", "loss/cls", 49, 649), true);
  // Another task's stall, and a stall beside the total's chance level: not the same loss.
  r.publish(src, episode(3, "task_stalled", "loss/recon", 60, 650), true);
  finding_router total;
  const auto s2 = total.add_source("detectors");
  total.publish(s2, episode(1, "chance_level", "loss", 9, 799), true);
  total.publish(s2, episode(2, "task_stalled", "loss/cls", 49, 649), true);
  const auto& inc = r.incidents();
  REQUIRE(inc.size() == 3);
  CHECK(inc[0].symptom_of_id == 0);
  CHECK(inc[1].symptom_of_id == inc[0].id);
  CHECK(inc[1].symptom_of ==
        "the stalled task at step 9: chance_level at step 9 (smoothed loss 2.304 has stayed "
        "between 3.0% below and 10% above ln(10))");
  CHECK(inc[2].symptom_of_id == 0);
  REQUIRE(total.incidents().size() == 2);
  CHECK(total.incidents()[1].symptom_of_id == 0);
}
