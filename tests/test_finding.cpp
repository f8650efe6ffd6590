#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "losslens/error.hpp"
#include "losslens/finding.hpp"
#include "losslens/report.hpp"

using namespace losslens;

namespace {
finding sample_finding() {
  finding f;
  f.id = 7;
  f.kind = "non_finite";
  f.level = severity::error;
  f.first_step = 811;
  f.last_step = 900;
  f.series = "grad_norm/fc1.weight";
  f.rule = {"non_finite_value", {{"merge_gap", 50}}};
  f.evidence = {{"value", NAN}, {"peak", INFINITY}, {"low", -INFINITY}, {"last", 3.25}};
  f.message = "gradient of fc1.weight is NaN";
  f.advice = "clip";
  return f;
}
}  // namespace

TEST_CASE("finding JSON keeps non-finite evidence as strings and round-trips") {
  const auto f = sample_finding();
  const auto j = to_json(f);
  CHECK(j["kind"] == "non_finite");
  CHECK(j["severity"] == "error");
  CHECK(j["first_step"] == 811);
  CHECK(j["evidence"]["value"] == "nan");
  CHECK(j["evidence"]["peak"] == "inf");
  CHECK(j["evidence"]["low"] == "-inf");
  CHECK(j["evidence"]["last"] == 3.25);
  CHECK(j["rule"]["name"] == "non_finite_value");
  CHECK(j["rule"]["params"]["merge_gap"] == 50);
  const auto text = j.dump();
  CHECK(text.find(":NaN") == std::string::npos);  // valid JSON, no bare NaN
  CHECK(text.find("\"value\":\"nan\"") != std::string::npos);

  const auto back = finding_from_json(nlohmann::json::parse(text));
  CHECK(back.id == 7);
  CHECK(back.level == severity::error);
  CHECK(back.last_step == 900);
  CHECK(std::isnan(back.evidence_value("value")));
  CHECK(back.evidence_value("peak") == INFINITY);
  CHECK(back.evidence_value("low") == -INFINITY);
  CHECK(back.evidence_value("last") == 3.25);
  CHECK(back.rule.params.at(0).second == 50);
}

TEST_CASE("a finding that is another sign of an incident round-trips and is listed under it") {
  auto host = sample_finding();
  host.id = 4;
  host.kind = "vanishing_gradients";
  host.level = severity::warning;
  host.first_step = 32403;
  host.last_step = 199999;
  auto sign = sample_finding();
  sign.id = 6;
  sign.kind = "chance_level";
  sign.level = severity::warning;
  sign.series = "loss";
  sign.first_step = 32415;
  sign.last_step = 199999;
  sign.message = "smoothed loss 2.294 has stayed within 3.0% of ln(10)";
  sign.symptom_of_id = 4;
  sign.symptom_of = "the collapse at step 32403: vanishing_gradients at step 32403";
  const auto back = finding_from_json(nlohmann::json::parse(to_json(sign).dump()));
  CHECK(back.symptom_of_id == 4);
  CHECK(back.symptom_of == sign.symptom_of);
  // Bodies written before signs existed read as incidents of their own.
  auto old = to_json(sign);
  old.erase("symptom_of_id");
  old.erase("symptom_of");
  CHECK(finding_from_json(old).symptom_of_id == 0);

  const auto text = format_findings_text({host, sign}, 200000);
  CHECK(text.rfind("1 finding in 200000 steps (and 1 listed as another sign of one of them)\n",
                   0) == 0);
  CHECK(text.find("WARNING  chance_level") == std::string::npos);  // no block of its own
  CHECK(text.find("  also: warning chance_level at steps 32415-199999 (loss): smoothed loss "
                  "2.294 has stayed within 3.0% of ln(10)\n") != std::string::npos);
  // Without its incident in the list (a --kind filter), it is a block naming the incident.
  const auto alone = format_findings_text({sign}, 200000);
  CHECK(alone.find("WARNING  chance_level  steps 32415-199999  loss") != std::string::npos);
  CHECK(alone.find("  another sign of the collapse at step 32403: vanishing_gradients") !=
        std::string::npos);
}

TEST_CASE("nesting findings: a sign goes under its incident of the same run only") {
  // Two runs whose finding ids overlap (ids are per run), listed out of order.
  const std::vector<finding_ref> refs = {
      {2, 6, 4},  // run 2's sign of its finding 4, listed before it
      {1, 4, 0},  // run 1's incident 4
      {2, 4, 0},  // run 2's incident 4
      {1, 6, 4},  // run 1's sign of its 4
      {1, 7, 9},  // names a finding not in the list: a block of its own
      {1, 8, 8},  // names itself (malformed): a block of its own
      {2, 5, 4},  // a second sign of run 2's 4
  };
  const auto n = nest_findings(refs);
  const auto none = finding_nesting::none;
  CHECK(n.host == std::vector<std::size_t>{2, none, none, 1, none, none, 2});
  CHECK(n.signs[1] == std::vector<std::size_t>{3});
  CHECK(n.signs[2] == std::vector<std::size_t>{0, 6});
  CHECK(n.signs[0].empty());
  CHECK(n.incidents == 4);
  CHECK(nest_findings({}).incidents == 0);
}

TEST_CASE("malformed finding JSON and severities are rejected with a message") {
  CHECK_THROWS_AS(finding_from_json(nlohmann::json::parse(R"({"kind":"x"})")), losslens::error);
  CHECK_THROWS_WITH(parse_severity("fatal"), Catch::Contains("info, warning or error"));
  CHECK_THROWS_AS(number_from_json(nlohmann::json("abc")), losslens::error);
}

TEST_CASE("text report lists each finding with its steps, evidence, rule and fix") {
  const auto text = format_findings_text({sample_finding()}, 1000);
  CHECK(text.find("1 finding in 1000 steps") != std::string::npos);
  CHECK(text.find("ERROR  non_finite  steps 811-900  grad_norm/fc1.weight") != std::string::npos);
  CHECK(text.find("value=nan") != std::string::npos);
  CHECK(text.find("peak=inf") != std::string::npos);
  CHECK(text.find("rule: non_finite_value merge_gap=50") != std::string::npos);
  CHECK(text.find("fix: clip") != std::string::npos);
  CHECK(format_findings_text({}, 12) == "no findings in 12 steps\n");
  // A log written every 10 steps: its rows are not its steps.
  CHECK(format_findings_text({}, report_extent{300, 10, 3000}) ==
        "no findings in 300 rows over steps 10-3000\n");
  CHECK(format_findings_text({}, report_extent{3, 5, 7}) == "no findings in 3 steps\n");
  CHECK(extent_text({1, 42, 42}) == "1 step");
  CHECK(extent_text({2, 0, 1}) == "2 steps");
  CHECK(extent_text({2, INT64_MIN, INT64_MAX}) ==
        "2 rows over steps -9223372036854775808-9223372036854775807");
  CHECK(worst_severity({}) == -1);
  CHECK(worst_severity({sample_finding()}) == 2);
}

namespace {
/// An incident of 12 episodes whose spans are all kept, following incident 3.
finding incident() {
  finding f;
  f.id = 9;
  f.kind = "loss_spike";
  f.level = severity::warning;
  f.first_step = 377;
  f.last_step = 15020;
  f.series = "loss";
  f.rule = {"loss_spike", {{"z_threshold", 6}}};
  f.evidence = {{"z", 9.4}};
  f.message = "loss 2.843 is 5.2x its running median";
  f.advice = "clip gradients";
  f.episodes = 12;
  for (int i = 0; i < 12; ++i)
    f.spans.push_back({377 + 1000 * i, 377 + 1000 * i + (i % 3) * 6,
                       i == 2 ? severity::error : severity::warning, 5.5 + i});
  f.spans.back().last_step = 15020;
  f.spans[4].peak = NAN;
  f.cause_id = 3;
  f.cause = "task_dominance at step 0 (recon is 99.98% of the loss)";
  return f;
}
}  // namespace

TEST_CASE("finding JSON carries episodes, spans and cause and round-trips") {
  const auto f = incident();
  const auto j = to_json(f);
  CHECK(j["episodes"] == 12);
  REQUIRE(j["spans"].size() == 12);
  CHECK(j["spans"][2] ==
        nlohmann::json(
            {{"first_step", 2377}, {"last_step", 2389}, {"severity", "error"}, {"peak", 7.5}}));
  CHECK(j["spans"][4]["peak"] == "nan");
  CHECK(j["spans"][11]["last_step"] == 15020);
  CHECK(j["cause_id"] == 3);
  CHECK(j["cause"] == "task_dominance at step 0 (recon is 99.98% of the loss)");

  const auto back = finding_from_json(nlohmann::json::parse(j.dump()));
  CHECK(back.episodes == 12);
  REQUIRE(back.spans.size() == 12);
  for (std::size_t i = 0; i < 12; ++i) {
    INFO(i);
    CHECK(back.spans[i].first_step == f.spans[i].first_step);
    CHECK(back.spans[i].last_step == f.spans[i].last_step);
    CHECK(back.spans[i].level == f.spans[i].level);
    if (i == 4)
      CHECK(std::isnan(back.spans[i].peak));
    else
      CHECK(back.spans[i].peak == f.spans[i].peak);
  }
  CHECK(back.cause_id == 3);
  CHECK(back.cause == f.cause);
  CHECK(to_json(back) == j);

  // A single-episode finding writes episodes 1, no spans, no cause.
  const auto one = to_json(sample_finding());
  CHECK(one["episodes"] == 1);
  CHECK(one["spans"] == nlohmann::json::array());
  CHECK(one["cause_id"] == 0);
  CHECK(one["cause"] == "");
}

TEST_CASE("finding JSON written before incidents reads as one episode without a cause") {
  // A body as schema version 1 stored it.
  const auto old = nlohmann::json::parse(R"({"advice":"clip","evidence":{"z":9.5,"loss":"nan"},
      "first_step":100,"id":7,"kind":"loss_spike","last_step":140,"message":"spike",
      "rule":{"name":"loss_spike","params":{"z_threshold":6}},"series":"loss",
      "severity":"warning"})");
  const auto f = finding_from_json(old);
  CHECK(f.id == 7);
  CHECK(f.first_step == 100);
  CHECK(f.last_step == 140);
  CHECK(f.evidence_value("z") == 9.5);
  CHECK(f.episodes == 1);
  CHECK(f.spans.empty());
  CHECK(f.cause_id == 0);
  CHECK(f.cause.empty());

  auto bad = old;
  bad["episodes"] = 0;
  CHECK_THROWS_WITH(finding_from_json(bad), Catch::Contains("at least 1"));
  bad = old;
  bad["spans"] = "none";
  CHECK_THROWS_WITH(finding_from_json(bad), Catch::Contains("spans"));
  bad = old;
  bad["spans"] = nlohmann::json::parse(R"([{"first_step": 1}])");  // no last_step
  CHECK_THROWS_AS(finding_from_json(bad), losslens::error);
}

TEST_CASE("text report shows an incident's episodes and cause, and lists spans with all") {
  const auto f = incident();
  const auto text = format_findings_text({f}, 20000);
  CHECK(text ==
        "1 finding in 20000 steps\n"
        "\n"
        "WARNING  loss_spike  steps 377-15020  loss  (12 episodes)\n"
        "  loss 2.843 is 5.2x its running median\n"
        "  preceded by: task_dominance at step 0 (recon is 99.98% of the loss)\n"
        "  evidence: z=9.4\n"
        "  rule: loss_spike z_threshold=6\n"
        "  fix: clip gradients\n");
  const auto all = format_findings_text({f}, 20000, true);
  CHECK(all.substr(0, text.size()) == text);  // the same block, then one line per episode
  CHECK(all.substr(text.size()) ==
        "  episode 1: steps 377 warning peak 5.5\n"
        "  episode 2: steps 1377-1383 warning peak 6.5\n"
        "  episode 3: steps 2377-2389 error peak 7.5\n"
        "  episode 4: steps 3377 warning peak 8.5\n"
        "  episode 5: steps 4377-4383 warning\n"
        "  episode 6: steps 5377-5389 warning peak 10.5\n"
        "  episode 7: steps 6377 warning peak 11.5\n"
        "  episode 8: steps 7377-7383 warning peak 12.5\n"
        "  episode 9: steps 8377-8389 warning peak 13.5\n"
        "  episode 10: steps 9377 warning peak 14.5\n"
        "  episode 11: steps 10377-10383 warning peak 15.5\n"
        "  episode 12: steps 11377-15020 warning peak 16.5\n");
  // One episode: no count, no episode lines without spans.
  CHECK(format_findings_text({sample_finding()}, 1000, true) ==
        format_findings_text({sample_finding()}, 1000));
  CHECK(format_findings_text({sample_finding()}, 1000).find("episode") == std::string::npos);
}

TEST_CASE("episode lines count the episodes whose spans were not kept") {
  finding f;
  f.kind = "loss_spike";
  f.episodes = 70;  // the first 32 and the latest 32 kept, episodes 33-38 not
  for (int i = 0; i < 64; ++i) {
    const std::int64_t start = i < 32 ? 100 * i : 100 * (i + 6);
    f.spans.push_back({start, start + 5, severity::warning, 2.0 * i});
  }
  const auto text = format_episodes_text(f, "    ");
  std::vector<std::string> lines;
  for (std::size_t at = 0, nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(text.substr(at, nl - at));
  REQUIRE(lines.size() == 65);
  CHECK(lines[0] == "    episode 1: steps 0-5 warning peak 0");
  CHECK(lines[31] == "    episode 32: steps 3100-3105 warning peak 62");
  CHECK(lines[32] == "    ... 6 episodes not kept (episodes 33-38)");
  CHECK(lines[33] == "    episode 39: steps 3800-3805 warning peak 64");
  CHECK(lines[64] == "    episode 70: steps 6900-6905 warning peak 126");

  f.episodes = 65;
  CHECK(format_episodes_text(f, "").find(
            "... 1 episode not kept (episode 33)\nepisode 34: steps") != std::string::npos);
  f.spans.resize(3);  // only the first ones kept
  CHECK(format_episodes_text(f, "") ==
        "episode 1: steps 0-5 warning peak 0\n"
        "episode 2: steps 100-105 warning peak 2\n"
        "episode 3: steps 200-205 warning peak 4\n"
        "... 62 later episodes not kept\n");
  f.spans.clear();
  CHECK(format_episodes_text(f, "") == "... 65 episodes not kept\n");
  f.episodes = 1;
  CHECK(format_episodes_text(f, "").empty());
}
