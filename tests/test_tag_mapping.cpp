// Tag mapping (TensorBoard tags, CSV columns, W&B keys -> series) and the sample merger.

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "losslens/error.hpp"
#include "losslens/sample_merger.hpp"
#include "losslens/tag_mapping.hpp"
#include "losslens/tag_series.hpp"

using namespace losslens;

namespace {
std::string series_of(std::string_view tag) {
  const auto t = guess_series(tag);
  return t ? t->series_name() : "-";
}
}  // namespace

TEST_CASE("tags: the common spellings of loss, grad norm, lr and accuracy, any case") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"loss", "loss"},
      {"train/loss", "loss"},
      {"Loss/train", "loss"},
      {"LOSS", "loss"},
      {"train_loss", "loss"},
      {"training_loss", "loss"},
      {"total_loss", "loss"},
      {"epoch_loss", "loss"},  // Keras
      {"grad_norm", "grad_norm"},
      {"train/grad_norm", "grad_norm"},
      {"gradients/global_norm", "grad_norm"},
      {"Gradients/Global_Norm", "grad_norm"},
      {"global_grad_norm", "grad_norm"},
      {"lr", "lr"},
      {"LR", "lr"},
      {"learning_rate", "lr"},
      {"train/learning_rate", "lr"},  // Hugging Face Trainer
      {"lr-Adam", "lr"},              // Lightning's LearningRateMonitor
      {"lr-SGD/pg1", "lr/pg1"},       // ... with several param groups, one tag each
      {"lr-AdamW/backbone", "lr/backbone"},
      {"lr/pg2", "lr/pg2"},
      {"lr-Adam-momentum", "-"},  // ... with log_momentum, log_weight_decay
      {"lr-SGD/pg2-momentum", "-"},
      {"lr-AdamW-weight_decay", "-"},
      // Lightning's on_step / on_epoch pair: the step's value, not the epoch's mean.
      {"train_loss_step", "loss"},
      {"loss_step", "loss"},
      {"train_loss_cls_step", "loss/cls"},
      {"train_loss_epoch", "-"},
      {"val_loss_step", "-"},
      {"train_acc_step", "accuracy"},
      {"accuracy", "accuracy"},
      {"train/acc", "accuracy"},
      {"epoch_accuracy", "accuracy"},
      // Task losses keep the task's case.
      {"train/loss_cls", "loss/cls"},
      {"train/loss_recon", "loss/recon"},
      {"loss/Box", "loss/Box"},
      {"loss_box_reg", "loss/box_reg"},  // detectron2
      {"cls_loss", "loss/cls"},
      {"grad_norm/fc1.weight", "grad_norm/fc1.weight"},
      {"grad_norm/val_proj.weight", "grad_norm/val_proj.weight"},  // a parameter, not a val curve
      // Held-out curves, statistics of the loss, the AMP loss scale, other names: not used.
      {"val/loss", "-"},
      {"val_loss", "-"},
      {"Loss/test", "-"},
      {"loss/val", "-"},
      {"eval/loss", "-"},
      {"validation/epoch_loss", "-"},
      {"loss_scale", "-"},
      {"train/loss_avg", "-"},
      {"running_loss", "-"},
      {"tb_export_train_loss", "-"},  // a file name, not a task "tb_export_train"
      {"epoch", "-"},
      {"train/throughput", "-"},
      {"", "-"},
  };
  for (const auto& [tag, want] : cases) {
    INFO(tag);
    CHECK(series_of(tag) == want);
  }
}

TEST_CASE("tags: explicit rules win, one tag per series, notes for the ones left out") {
  // Automatic: the exact spelling beats another spelling of the same series, then the first.
  auto m = map_tags({"train/loss", "loss", "Loss/train", "lr", "val/loss"});
  REQUIRE(m.targets.size() == 5);
  CHECK(!m.targets[0]);
  CHECK(m.targets[1]->series_name() == "loss");
  CHECK(!m.targets[2]);
  CHECK(m.targets[3]->series_name() == "lr");
  CHECK(!m.targets[4]);
  REQUIRE(m.notes.size() == 2);
  CHECK(m.notes[0] == "tag 'train/loss' not used: 'loss' is the loss (choose with --loss TAG)");
  CHECK(m.describe() == "loss -> loss, lr -> lr");
  CHECK(m.identity());
  CHECK(m.unused_summary("tag") == "3 tags not used: 'train/loss', 'Loss/train', 'val/loss'");

  // An explicit rule (case-insensitive) takes the series from every automatic candidate.
  tag_map_options o;
  o.rules.push_back({"VAL/LOSS", {series_role::loss, ""}});
  o.rules.push_back({"train/throughput", {series_role::task_loss, "speed"}});
  m = map_tags({"train/loss", "val/loss", "train/throughput"}, o);
  CHECK(!m.targets[0]);
  CHECK(m.targets[1]->series_name() == "loss");
  CHECK(m.targets[2]->series_name() == "loss/speed");
  CHECK(m.schema.tasks == std::vector<std::string>{"speed"});
  CHECK(m.describe() == "val/loss -> loss, train/throughput -> loss/speed");
  CHECK_FALSE(m.identity());

  // Only lr and accuracy: nothing to diagnose.
  CHECK_FALSE(map_tags({"lr", "accuracy", "epoch"}).diagnosable());
  CHECK(map_tags({"gradients/global_norm"}).diagnosable());

  // An explicit tag that is not there names the tags seen.
  o.rules = {{"nope", {series_role::grad_norm, ""}}};
  CHECK_THROWS_WITH(map_tags({"a", "b"}, o),
                    "no tag 'nope' (given for grad_norm) in this run; tags seen: a, b");

  // Many unused tags: one line, eight named.
  std::vector<std::string> many;
  for (int i = 0; i < 10000; ++i) many.push_back("metric" + std::to_string(i));
  many.push_back("loss");
  const auto summary = map_tags(many).unused_summary("column");
  CHECK(summary.rfind("10000 columns not used: 'metric0', ", 0) == 0);
  CHECK(summary.find("'metric7', ... (10000 in all)") != std::string::npos);
  CHECK(summary.size() < 200);
}

TEST_CASE("tags: one LR per param group, the first is the LR; the optimizer they name") {
  // Lightning's LearningRateMonitor with two param groups (and log_momentum).
  auto m = map_tags({"lr-AdamW/pg1", "lr-AdamW/pg2", "lr-AdamW/pg1-momentum", "train_loss_step"});
  CHECK(m.describe() == "lr-AdamW/pg1 -> lr, lr-AdamW/pg2 -> lr/pg2, train_loss_step -> loss");
  CHECK(m.notes.empty());
  CHECK(m.optimizer() == optimizer_kind::adamw);
  // A plain LR tag stays the LR; the groups are all ranges.
  m = map_tags({"loss", "lr/pg1", "lr", "lr/pg2"});
  CHECK(m.describe() == "loss -> loss, lr/pg1 -> lr/pg1, lr -> lr, lr/pg2 -> lr/pg2");
  CHECK(m.identity());
  CHECK(m.optimizer() == optimizer_kind::unknown);  // no tag names one
  CHECK_FALSE(map_tags({"lr/pg1", "lr-Adam/pg2"}).diagnosable());
  // The optimizer: any case, a second one of the same class (lr-Adam-1); none when they
  // differ or losslens has no range for it.
  CHECK(map_tags({"loss", "train/lr-sgd"}).optimizer() == optimizer_kind::sgd);
  CHECK(map_tags({"loss", "lr-Adam", "lr-Adam-1"}).optimizer() == optimizer_kind::adam);
  CHECK(map_tags({"loss", "lr-Adam", "lr-SGD/pg1", "lr-SGD/pg2"}).optimizer() ==
        optimizer_kind::unknown);
  CHECK(map_tags({"loss", "lr-Lion"}).optimizer() == optimizer_kind::unknown);
  CHECK(parse_optimizer_kind("rmsprop") == optimizer_kind::rmsprop);
  CHECK_FALSE(parse_optimizer_kind("unknown"));
  CHECK_FALSE(parse_optimizer_kind("Adam2"));
  CHECK(series_key::parse("lr/pg2") == series_key{series_kind::lr_group, "pg2"});
  CHECK(parse_series_kind("lr_group") == series_kind::lr_group);
}

TEST_CASE("sample merger: a param group's LR widens the range, which holds the first's") {
  // Event files or an MLflow run with LearningRateMonitor's tags: a stream per tag.
  // Points are {step, wall_time, value}.
  std::vector<tag_series> tags = {{"lr-SGD/pg1", {{0, 1.0, 0.1}, {1, 2.0, 0.1}}},
                                  {"lr-SGD/pg2", {{0, 1.0, 0.5}, {1, 2.0, NAN}}},
                                  {"lr-SGD/pg3", {{0, 1.0, 0.01}}},
                                  {"loss", {{0, 1.0, 2.0}, {1, 2.0, 1.5}, {2, 3.0, 1.0}}}};
  const auto m = map_tags(tag_names(tags));
  sample_merger merger;
  add_streams(merger, tags, m);
  sample s;
  REQUIRE(merger.next(s));
  CHECK((s.step == 0 && s.lr == 0.1 && s.lr_min == 0.01 && s.lr_max == 0.5));
  REQUIRE(merger.next(s));
  // The other group's NaN is left out: no other group's LR, no range.
  CHECK((s.step == 1 && s.lr == 0.1 && !s.lr_min && !s.lr_max));
  REQUIRE(merger.next(s));
  CHECK((s.step == 2 && !s.lr && !s.lr_min && !s.lr_max));
  CHECK_FALSE(merger.next(s));
}

TEST_CASE("sample merger: one sample per step of any stream, each stream's numbers") {
  // Stream A: the loss at steps 0, 2, 4; stream B: task "cls" at 0..3, wall time 0.5 s earlier.
  sample_merger m;
  int a = 0, b = 0;
  m.add({}, [&](sample& s) {
    if (a > 4) return false;
    s = sample{};
    s.step = a;
    s.wall_time = 100 + a;
    s.loss = 10.0 * a;
    a += 2;
    return true;
  });
  m.add({{"cls"}, {}}, [&](sample& s) {
    if (b > 3) return false;
    s = sample{};
    s.step = b;
    s.wall_time = 99.5 + b;
    s.task_losses = {double(b)};
    ++b;
    return true;
  });
  CHECK(m.schema().tasks == std::vector<std::string>{"cls"});
  std::vector<sample> out;
  sample s;
  while (m.next(s)) out.push_back(s);
  REQUIRE(out.size() == 5);
  const std::int64_t steps[] = {0, 1, 2, 3, 4};
  for (std::size_t i = 0; i < out.size(); ++i) {
    INFO(i);
    CHECK(out[i].step == steps[i]);
    CHECK(out[i].loss.has_value() == (i % 2 == 0));
    if (out[i].loss) CHECK(*out[i].loss == 10.0 * double(i));
    REQUIRE(out[i].task_losses.size() == 1);
    CHECK(out[i].task_losses[0].has_value() == (i < 4));
    // The earliest wall time of the streams that have the step.
    CHECK(out[i].wall_time == (i < 4 ? 99.5 + double(i) : 104.0));
  }
}

TEST_CASE("reset_sample: every number missing, the slots asked for, the vectors' memory kept") {
  sample s;
  s.step = 7;
  s.wall_time = 3.5;
  s.loss = s.grad_norm = s.lr = s.lr_min = s.lr_max = s.accuracy = s.balanced_accuracy =
      s.clip_norm = s.max_norm = 1.0;
  s.task_losses = {1.0, 2.0, 3.0};
  s.task_weights = {0.5};
  s.task_grad_norms = {4.0};
  s.param_grad_norms = {5.0, 6.0};
  s.class_recall = {0.9};
  s.param_flags = {stale_grad};
  s.first_non_finite_param = 1;
  s.eval_mode = true;
  const void* tasks_memory = s.task_losses.data();
  reset_sample(s, 2, 1);
  const sample fresh;
  CHECK((s.step == fresh.step && s.wall_time == fresh.wall_time));
  for (const auto* v : {&s.loss, &s.grad_norm, &s.lr, &s.lr_min, &s.lr_max, &s.accuracy,
                        &s.balanced_accuracy, &s.clip_norm, &s.max_norm})
    CHECK_FALSE(v->has_value());
  CHECK(s.task_losses == std::vector<std::optional<double>>(2));
  CHECK(s.param_grad_norms == std::vector<std::optional<double>>(1));
  CHECK((s.task_weights.empty() && s.task_grad_norms.empty() && s.class_recall.empty() &&
         s.param_flags.empty()));
  CHECK((s.first_non_finite_param == -1 && !s.eval_mode));
  // Two slots fit in the three the vector held: no new allocation.
  CHECK(static_cast<const void*>(s.task_losses.data()) == tasks_memory);
}
