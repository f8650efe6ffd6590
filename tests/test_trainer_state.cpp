// A Hugging Face Trainer's trainer_state.json, written here as transformers writes it
// (TrainerState.save_to_json: Python's json.dumps with indent=2 and sort_keys=True, so a NaN
// loss is the bare word NaN), read back value by value.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

#include "error_of.hpp"
#include "losslens/error.hpp"
#include "losslens/tag_mapping.hpp"
#include "losslens/trainer_state.hpp"

using losslens::read_trainer_state;
using losslens::trainer_state_log;

namespace {

const char* const state_json = R"({
  "best_metric": null,
  "best_model_checkpoint": "out/NaN-Infinity \"quoted\" checkpoint-20",
  "epoch": 2.0,
  "eval_steps": 20,
  "global_step": 40,
  "is_hyper_param_search": false,
  "log_history": [
    {
      "epoch": 0.25,
      "grad_norm": 3.6125,
      "learning_rate": 5e-05,
      "loss": 2.3026,
      "step": 10
    },
    {
      "epoch": 0.5,
      "grad_norm": Infinity,
      "learning_rate": 4.5e-05,
      "loss": NaN,
      "step": 20
    },
    {
      "epoch": 0.5,
      "eval_loss": 2.1,
      "eval_runtime": 1.25,
      "eval_samples_per_second": -Infinity,
      "step": 20
    },
    {
      "epoch": 1.0,
      "grad_norm": 1.5,
      "learning_rate": 4e-05,
      "loss": 1.75,
      "note": "NaN",
      "step": 30
    },
    {
      "epoch": 2.0,
      "step": 40,
      "total_flos": 123456789.0,
      "train_loss": 2.0,
      "train_runtime": 12.5,
      "train_samples_per_second": 80.0
    }
  ],
  "logging_steps": 10,
  "max_steps": 40
}
)";

const losslens::tag_series& key(const trainer_state_log& log, const std::string& name) {
  for (const auto& k : log.keys)
    if (k.tag == name) return k;
  FAIL("no key " << name);
  throw std::logic_error("unreachable");
}

std::string error_of(const std::string& text) {
  std::istringstream in(text);
  return losslens::testing::error_of([&] { read_trainer_state(in, "t.json"); });
}

}  // namespace

TEST_CASE("trainer_state.json: the log history as series, NaN and Infinity included") {
  std::istringstream in(state_json);
  const trainer_state_log log = read_trainer_state(in, "checkpoint-40/trainer_state.json");
  CHECK(log.entries == 5);
  CHECK(log.global_step == 40);
  // Keys in order of first appearance (sorted within an entry, as Python wrote them); no
  // step, no epoch, nothing of the summary entry, no string ("note": "NaN" is text).
  CHECK(log.key_names() == std::vector<std::string>{"grad_norm", "learning_rate", "loss",
                                                    "eval_loss", "eval_runtime",
                                                    "eval_samples_per_second"});
  const auto& loss = key(log, "loss").points;
  REQUIRE(loss.size() == 3);
  CHECK((loss[0].step == 10 && loss[0].value == 2.3026));
  CHECK((loss[1].step == 20 && std::isnan(loss[1].value)));
  CHECK((loss[2].step == 30 && loss[2].value == 1.75));
  const auto& grad = key(log, "grad_norm").points;
  REQUIRE(grad.size() == 3);
  CHECK(grad[1].value == INFINITY);
  CHECK(key(log, "eval_samples_per_second").points.at(0).value == -INFINITY);
  CHECK(key(log, "learning_rate").points.at(2).value == 4e-05);
  REQUIRE(log.notes.size() == 2);
  CHECK(log.notes[0] ==
        "logging_steps 10: each entry's loss is the mean over the steps since the one before (a "
        "one-batch spike shows that many times smaller), its grad_norm that of its own step");
  CHECK(log.notes[1] ==
        "the entry written when training ended (train_loss, the mean over the run, "
        "train_runtime...) is not a step: left out");

  // The keys map as the Trainer's names: loss, grad_norm, learning_rate; eval_* are held-out.
  const auto mapping = losslens::map_tags(log.key_names());
  CHECK(mapping.describe() == "grad_norm -> grad_norm, learning_rate -> lr, loss -> loss");
  CHECK(mapping.unused_summary("key") ==
        "3 keys not used: 'eval_loss', 'eval_runtime', 'eval_samples_per_second'");
}

TEST_CASE("trainer_state.json: a step logged twice keeps the value written last") {
  std::istringstream in(R"({"log_history": [{"loss": 2.0, "step": 5}, {"loss": 1.0, "step": 6},
                                            {"loss": 1.5, "step": 5}]})");
  const auto log = read_trainer_state(in, "t.json");
  const auto& loss = log.keys.at(0).points;
  REQUIRE(loss.size() == 2);
  CHECK((loss[0].step == 5 && loss[0].value == 1.5));
  CHECK((loss[1].step == 6 && loss[1].value == 1.0));
  CHECK(log.global_step == -1);
  REQUIRE(log.notes.size() == 1);
  CHECK(log.notes[0].find("tag 'loss': 1 repeated steps") == 0);
}

TEST_CASE("trainer_state.json: what is not one says why") {
  CHECK_THAT(error_of("{\"log_history\": [1, 2"), Catch::StartsWith("t.json: not JSON ("));
  // Cut anywhere, a real file says it ends early (the Trainer rewrites it at each checkpoint);
  // a file broken in its middle does not.
  const std::string whole =
      "{\"global_step\": 2, \"log_history\": [{\"loss\": 2.3, \"step\": 1}, {\"loss\": NaN, "
      "\"step\": 2}]}";
  for (std::size_t k = 1; k < whole.size(); ++k) {
    INFO(whole.substr(0, k));
    REQUIRE_THAT(error_of(whole.substr(0, k)),
                 Catch::EndsWith("; it ends early: a checkpoint still being saved? read it again "
                                 "once the Trainer has written it"));
  }
  CHECK_THAT(error_of("{\"log_history\": [1 2]}"), !Catch::Contains("ends early"));
  CHECK(error_of("{\"global_step\": 3}") ==
        "t.json: no 'log_history' list: not a Hugging Face Trainer's trainer_state.json");
  CHECK(error_of("[]") ==
        "t.json: no 'log_history' list: not a Hugging Face Trainer's trainer_state.json");
  CHECK(error_of("{\"log_history\": [{\"loss\": 1, \"step\": 1}, {\"loss\": 2}]}") ==
        "t.json: log_history[1]: no whole 'step' (every entry the Trainer logs has one)");
  CHECK(error_of("{\"log_history\": [{\"loss\": 1, \"step\": 1.5}]}") ==
        "t.json: log_history[0]: no whole 'step' (every entry the Trainer logs has one)");
  CHECK(error_of("{\"log_history\": [7]}") == "t.json: log_history[0]: not an object");
  CHECK(error_of("{\"log_history\": []}") == "no error");
}
