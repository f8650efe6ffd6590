#include <catch2/catch.hpp>

#include <cmath>

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
  CHECK(worst_severity({}) == -1);
  CHECK(worst_severity({sample_finding()}) == 2);
}
