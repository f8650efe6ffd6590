#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <random>
#include <sstream>

#include "error_of.hpp"
#include "losslens/csv_reader.hpp"
#include "losslens/error.hpp"

using namespace losslens;

namespace {
std::vector<sample> read_all(const std::string& text, sample_schema* schema = nullptr) {
  std::istringstream in(text);
  csv_reader r(in, "t.csv");
  if (schema) *schema = r.schema();
  std::vector<sample> out;
  sample s;
  while (r.next(s)) out.push_back(s);
  return out;
}
std::string error_of(const std::string& text) {
  return losslens::testing::error_of([&] { read_all(text); });
}
}  // namespace

TEST_CASE("csv: columns map to sample fields, empty is missing, nan/inf are values") {
  sample_schema schema;
  const auto rows = read_all(
      "step,loss,loss/cls,loss/box,grad_norm,grad_norm/fc1.weight,lr,accuracy,wall_time\n"
      "1,2.5,2.0,0.5,1.5,1.2,0.1,0.25,10.5\n"
      "2,nan,,inf,-inf,NaN,,0.5,\n"
      "3, 1e-3 ,\"2\",+INF,Infinity,-0.0,1E-4,,\r\n"
      "\n",
      &schema);
  REQUIRE(schema.tasks == std::vector<std::string>{"cls", "box"});
  REQUIRE(schema.params == std::vector<std::string>{"fc1.weight"});
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].step == 1);
  CHECK(*rows[0].loss == 2.5);
  CHECK(*rows[0].task_losses[0] == 2.0);
  CHECK(*rows[0].task_losses[1] == 0.5);
  CHECK(*rows[0].grad_norm == 1.5);
  CHECK(*rows[0].param_grad_norms[0] == 1.2);
  CHECK(*rows[0].lr == 0.1);
  CHECK(*rows[0].accuracy == 0.25);
  CHECK(rows[0].wall_time == 10.5);
  CHECK(std::isnan(*rows[1].loss));
  CHECK(!rows[1].task_losses[0].has_value());
  CHECK(*rows[1].task_losses[1] == INFINITY);
  CHECK(*rows[1].grad_norm == -INFINITY);
  CHECK(std::isnan(*rows[1].param_grad_norms[0]));
  CHECK(!rows[1].lr.has_value());
  CHECK(*rows[2].loss == 1e-3);
  CHECK(*rows[2].task_losses[0] == 2.0);
  CHECK(*rows[2].task_losses[1] == INFINITY);
  CHECK(*rows[2].grad_norm == INFINITY);
  CHECK(*rows[2].lr == 1e-4);
  CHECK(!rows[2].accuracy.has_value());
}

TEST_CASE("csv: out-of-range numbers saturate like strtod") {
  const auto rows = read_all("step,loss,grad_norm\n1,1e999,1e-999\n");
  CHECK(*rows[0].loss == INFINITY);
  CHECK(*rows[0].grad_norm == 0.0);
}

TEST_CASE("csv: every decimal reads as the double from_chars gives, sign and point anywhere") {
  std::mt19937_64 rng(9);
  std::string text = "step,loss\n";
  std::vector<std::string> cells = {"0",
                                    "0.0",
                                    "-0",
                                    "5.",
                                    ".5",
                                    "-.25",
                                    "1e-3",
                                    "0.1",
                                    "2.3025850929940457",
                                    "123456789012345",
                                    "1234567890123456",
                                    "0.0000000000000000000001",
                                    "0.00000000000000000000001",
                                    "9007199254740993",
                                    "-7.5e2"};
  for (int i = 0; i < 3000; ++i) {
    std::string c = i % 3 == 0 ? "-" : "";
    const int digits = 1 + int(rng() % 18), point = int(rng() % std::uint64_t(digits + 1));
    for (int d = 0; d < digits; ++d) {
      if (d == point) c += '.';
      c += char('0' + rng() % 10);
    }
    cells.push_back(c);
  }
  for (std::size_t i = 0; i < cells.size(); ++i)
    text += std::to_string(i + 1) + "," + cells[i] + "\n";
  const auto rows = read_all(text);
  REQUIRE(rows.size() == cells.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    std::string_view body = cells[i];
    const bool neg = body.front() == '-';
    if (neg) body.remove_prefix(1);
    double v = 0;
    auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
    REQUIRE((ec == std::errc{} && p == body.data() + body.size()));
    if (neg) v = -v;
    INFO(cells[i]);
    CHECK(std::memcmp(&*rows[i].loss, &v, sizeof v) == 0);
  }
}

TEST_CASE("csv: exponents, signs and long mantissas read as strtod reads them, on any line end") {
  // The reader takes numbers with from_chars (strtod on overflow); the C library's strtod is the
  // independent reference, bit for bit, with quoted, spaced and CRLF cells around them.
  std::mt19937_64 rng(21);
  std::vector<std::string> cells = {"9007199254740992",  // 2^53: the last exact mantissa
                                    "9007199254740993",
                                    "9007199254740992e1",
                                    "1e22",
                                    "1e23",
                                    "1e-22",
                                    "1e-23",
                                    "123456789e-30",
                                    "4.9e-324",
                                    "1.7976931348623157e308",
                                    "+.5e+1",
                                    "-0e0",
                                    "1234567890123456789",
                                    "12345678901234567890",
                                    "0.30000000000000004",
                                    "3E-000"};
  for (int i = 0; i < 4000; ++i) {
    std::string c = i % 4 == 0 ? "-" : i % 4 == 1 ? "+" : "";
    const int digits = 1 + int(rng() % 21), point = int(rng() % std::uint64_t(digits + 2));
    for (int d = 0; d < digits; ++d) {
      if (d == point) c += '.';
      c += char('0' + rng() % 10);
    }
    if (rng() % 2) {
      c += rng() % 2 ? 'e' : 'E';
      const int sign = int(rng() % 3);
      if (sign) c += sign == 1 ? '-' : '+';
      c += std::to_string(rng() % 31);
    }
    cells.push_back(c);
  }
  std::string text = "step,loss,grad_norm\n";
  for (std::size_t i = 0; i < cells.size(); ++i)
    // Every third line ends in CRLF, every fifth has a cell quoted or spaced.
    text += std::to_string(i + 1) + "," + (i % 5 == 0 ? "\"" + cells[i] + "\"" : cells[i]) + "," +
            (i % 5 == 1 ? " " + cells[i] : cells[i]) + (i % 3 == 0 ? "\r\n" : "\n");
  const auto rows = read_all(text);
  REQUIRE(rows.size() == cells.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const double v = std::strtod(cells[i].c_str(), nullptr);
    INFO(cells[i]);
    CHECK(std::memcmp(&*rows[i].loss, &v, sizeof v) == 0);
    CHECK(std::memcmp(&*rows[i].grad_norm, &v, sizeof v) == 0);
  }
}

TEST_CASE("csv: rows mixing non-finite, empty and quoted cells, and whole error messages") {
  // Each row holds a cell other than a plain decimal in a different place: nothing of one row
  // may leak into the next. The errors are checked whole here (the malformed-input case above
  // checks their beginnings).
  const auto rows = read_all(
      "step,loss,grad_norm,note\n"
      "1,0.5,2,a\n"
      "2,0.25,inf,b\n"      // inf: a word, not digits
      "3,0.125,,\"c d\"\n"  // a quoted note with a space
      "4,,1.5,e\r\n"
      "5,1e-3,NaN,\n");
  REQUIRE(rows.size() == 5);
  CHECK(*rows[0].grad_norm == 2);
  CHECK(*rows[1].loss == 0.25);
  CHECK(*rows[1].grad_norm == INFINITY);
  CHECK(!rows[2].grad_norm.has_value());
  CHECK(*rows[2].loss == 0.125);
  CHECK(!rows[3].loss.has_value());
  CHECK(*rows[3].grad_norm == 1.5);
  CHECK(std::isnan(*rows[4].grad_norm));
  CHECK(error_of("step,loss\n1,0.5\n2,0.5x\n") == "t.csv:3: column 'loss': '0.5x' is not a number");
  CHECK(error_of("step,loss\n1,0.5,7\n") ==
        "t.csv:2: row has 3 cells but the header has 2 columns");
  CHECK(error_of("step,loss\n1\n") == "t.csv:2: row has 1 cell but the header has 2 columns");
  CHECK(error_of("step,loss\n1.5,1\n") == "t.csv:2: step '1.5' is not a whole number");
  CHECK(error_of("step,loss\n1,1\x01\n") == "t.csv:2: binary data in a row");
}

TEST_CASE("csv: unknown columns are ignored with a warning, BOM and blank lines tolerated") {
  std::istringstream in("\xEF\xBB\xBF\n\nstep,epoch,loss\n1,0,2.0\n");
  csv_reader r(in, "t.csv");
  REQUIRE(r.warnings().size() == 1);
  CHECK(r.warnings()[0].find("'epoch'") != std::string::npos);
  sample s;
  REQUIRE(r.next(s));
  CHECK(*s.loss == 2.0);
  CHECK_FALSE(r.next(s));
}

TEST_CASE("csv: Keras' CSVLogger (epoch, no step) and PyTorch Lightning's metrics.csv") {
  // Keras: the epoch is the step, said in a note; the validation columns are not used.
  std::istringstream in(
      "epoch,accuracy,loss,val_accuracy,val_loss\n0,0.41,1.62,0.52,1.31\n1,0.58,1.15,0.6,1.1\n");
  csv_reader r(in, "k.csv");
  REQUIRE(r.warnings().size() == 2);
  CHECK(r.warnings()[0] ==
        "k.csv:1: no step column: the epoch is the step (one row per epoch; the rules look at "
        "16-200 steps at a time, so a short log says little)");
  CHECK(r.warnings()[1].find("'val_accuracy', 'val_loss'") != std::string::npos);
  sample s;
  REQUIRE(r.next(s));
  CHECK((s.step == 0 && *s.loss == 1.62 && *s.accuracy == 0.41));
  REQUIRE(r.next(s));
  CHECK((s.step == 1 && *s.loss == 1.15 && *s.accuracy == 0.58));
  CHECK_FALSE(r.next(s));
  // Lightning: each epoch's validation row, at its last training step, holds nothing used and
  // adds nothing; `_step` columns are the steps' values, `_epoch` ones the epochs' means
  // (unused).
  const auto rows = read_all(
      "epoch,step,train_loss_step,train_loss_epoch,val_loss\n0,49,0.9,,\n0,99,0.8,,\n"
      "0,99,,0.85,0.84\n1,149,0.7,,\n1,199,0.6,,\n1,199,,0.65,0.7\n");
  REQUIRE(rows.size() == 4);
  const std::int64_t steps[] = {49, 99, 149, 199};
  const double losses[] = {0.9, 0.8, 0.7, 0.6};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(rows[i].step == steps[i]);
    CHECK(*rows[i].loss == losses[i]);
  }
  // A step column wins over epoch.
  CHECK(read_all("epoch,step,loss\n0,5,1\n").at(0).step == 5);
}

TEST_CASE("csv: rows that repeat a step add their values to it (Lightning's LR monitor)") {
  // What Lightning's CSVLogger writes with LearningRateMonitor and log_every_n_steps=2: the
  // LR row (logged at the batch's start) and the training row (at its end) share a step; the
  // last step of each epoch also gets the validation row and the epoch means.
  std::istringstream in(
      "epoch,lr-Adam,step,train_loss_epoch,train_loss_step,val_loss\n"
      ",0.001,1,,,\n0,,1,,2.31,\n"
      ",0.0009,3,,,\n0,,3,,2.05,\n0,,3,,,1.98\n1,,3,2.2,,\n"
      ",0.0008,5,,,\n1,,5,,1.71,\n");
  csv_reader r(in, "metrics.csv");
  sample s;
  const std::int64_t steps[] = {1, 3, 5};
  const double losses[] = {2.31, 2.05, 1.71}, lrs[] = {0.001, 0.0009, 0.0008};
  const std::int64_t last_lines[] = {3, 7, 9};
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(r.next(s));
    CHECK(s.step == steps[i]);
    CHECK(s.loss == losses[i]);
    CHECK(s.lr == lrs[i]);
    CHECK(r.line() == last_lines[i]);
  }
  CHECK_FALSE(r.next(s));

  // The same value twice, NaN included, is no conflict; a wall time comes from the first row
  // that has one.
  const auto same = read_all(
      "step,loss,lr,grad_norm,wall_time\n1,nan,,,\n1,nan,0.1,,\n1,,0.1,3,12.5\n2,1,,,13\n");
  REQUIRE(same.size() == 2);
  CHECK((std::isnan(*same[0].loss) && *same[0].lr == 0.1 && *same[0].grad_norm == 3.0));
  CHECK(same[0].wall_time == 12.5);
  CHECK((same[1].step == 2 && *same[1].loss == 1.0 && same[1].wall_time == 13.0));

  // A malformed row read ahead: its error comes with the next call, the step before it is
  // not lost.
  std::istringstream cut("step,loss\n1,0.5\n2,abc\n");
  csv_reader rc(cut, "c.csv");
  REQUIRE(rc.next(s));
  CHECK((s.step == 1 && *s.loss == 0.5));
  CHECK_THROWS_WITH(rc.next(s), "c.csv:3: column 'loss': 'abc' is not a number");
}

TEST_CASE("csv: one LR per param group: the first is the LR, the range holds them all") {
  // LearningRateMonitor with three param groups: their LRs on the row logged at the batch's
  // start, the loss on the training row after it.
  const auto rows = read_all(
      "lr-AdamW/pg1,lr-AdamW/pg2,lr-AdamW/pg3,step,train_loss_step\n"
      "1e-05,0.001,,1,\n,,,1,2.3\n"
      "2e-05,0.002,0.5,3,\n,,,3,2.1\n"
      ",,,5,1.9\n");
  REQUIRE(rows.size() == 3);
  CHECK((rows[0].lr == 1e-05 && rows[0].lr_min == 1e-05 && rows[0].lr_max == 0.001 &&
         rows[0].loss == 2.3));
  CHECK((rows[1].lr == 2e-05 && rows[1].lr_min == 2e-05 && rows[1].lr_max == 0.5));
  CHECK((!rows[2].lr && !rows[2].lr_min && !rows[2].lr_max && rows[2].loss == 1.9));
  // A plain lr column is the LR; the groups' range holds it.
  const auto with_lr = read_all("step,loss,lr/head,lr\n0,1,0.1,0.01\n1,1,,0.02\n");
  REQUIRE(with_lr.size() == 2);
  CHECK((with_lr[0].lr == 0.01 && with_lr[0].lr_min == 0.01 && with_lr[0].lr_max == 0.1));
  CHECK((with_lr[1].lr == 0.02 && !with_lr[1].lr_min && !with_lr[1].lr_max));
}

TEST_CASE("csv: a resumed run appended to its log, and a step logged twice") {
  // Steps 0-5, then a run resumed from the checkpoint of step 3 (other values from there on),
  // then one resumed from step 7: the first rows read for a step are kept, the later
  // attempts' rows skipped until they pass the last step read, and the notes say where.
  std::istringstream in(
      "step,loss,lr\n0,2.3,0.1\n1,2.2,0.1\n2,2.1,0.1\n3,2.0,0.1\n4,1.9,0.1\n5,1.8,0.1\n"
      "3,2.05,0.05\n4,1.95,0.05\n5,1.85,0.05\n6,1.7,0.05\n7,1.6,0.05\n8,1.5,0.05\n"
      "7,1.65,0.02\n8,1.55,0.02\n9,1.4,0.02\n");
  csv_reader r(in, "resumed.csv");
  sample s;
  std::vector<std::int64_t> steps;
  std::vector<double> losses, lrs;
  std::vector<std::int64_t> lines;
  while (r.next(s)) {
    steps.push_back(s.step);
    losses.push_back(*s.loss);
    lrs.push_back(*s.lr);
    lines.push_back(r.line());
  }
  CHECK(steps == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(losses == std::vector<double>{2.3, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4});
  CHECK(lrs == std::vector<double>{0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.02});
  CHECK(lines == std::vector<std::int64_t>{2, 3, 4, 5, 6, 7, 11, 12, 13, 16});
  REQUIRE(r.reading_notes().size() == 1);
  CHECK(r.reading_notes()[0] ==
        "resumed.csv:8: the steps go back from 5 to 3 (a resumed run appended to the log?): "
        "rows at steps already read are skipped, the first ones read for a step are kept (2 "
        "times, 5 rows skipped in all)");
  CHECK(r.warnings().empty());

  // Another value at the step just read (a resumed run that logs its first step again, or
  // micro-batches logged at their optimizer step): the first value is kept, the other columns
  // of that row still add theirs, equal values are no conflict.
  std::istringstream twice(
      "step,loss,lr,grad_norm\n1,0.5,,\n2,0.25,0.1,\n2,0.2500001,0.1,3\n2,0.3,,\n3,0.2,,\n");
  csv_reader rt(twice, "twice.csv");
  REQUIRE(rt.next(s));
  REQUIRE(rt.next(s));
  CHECK((s.step == 2 && *s.loss == 0.25 && *s.lr == 0.1 && *s.grad_norm == 3.0));
  CHECK(rt.line() == 5);
  CHECK(rt.reading_notes().empty());  // complete at the end
  REQUIRE(rt.next(s));
  CHECK((s.step == 3 && *s.loss == 0.2));
  CHECK_FALSE(rt.next(s));
  REQUIRE(rt.reading_notes().size() == 1);
  CHECK(rt.reading_notes()[0] ==
        "twice.csv:4: step 2 has another value of 'loss' (0.2500001 after 0.25): the first value "
        "read for a step is kept (a run that logged a step again, or one logging each "
        "micro-batch at its optimizer step?) (2 values in all)");

  // One restart, said without a count of times; a Keras log resumed at the epoch it stopped
  // in logs that epoch again.
  std::istringstream once("step,loss\n1,1\n3,1\n2,1\n4,1\n");
  csv_reader ro(once, "once.csv");
  while (ro.next(s)) {
  }
  REQUIRE(ro.reading_notes().size() == 1);
  CHECK(ro.reading_notes()[0] ==
        "once.csv:4: the steps go back from 3 to 2 (a resumed run appended to the log?): rows at "
        "steps already read are skipped, the first ones read for a step are kept (1 row "
        "skipped)");
  const auto keras = read_all("epoch,loss\n0,1.5\n1,1.2\n1,1.25\n2,1.1\n");
  REQUIRE(keras.size() == 3);
  CHECK((*keras[1].loss == 1.2 && *keras[2].loss == 1.1));
}

TEST_CASE("csv: malformed input names the file, the line and the reason") {
  CHECK(error_of("") == "t.csv:1: empty file: expected a header row such as step,loss,grad_norm");
  CHECK(error_of("\n\n") ==
        "t.csv:2: empty file: expected a header row such as step,loss,grad_norm");
  CHECK_THAT(error_of("loss,grad_norm\n1,2\n"), Catch::StartsWith("t.csv:1: no 'step' column"));
  CHECK_THAT(error_of("step,loss\n1,2\n2,3,4\n"),
             Catch::StartsWith("t.csv:3: row has 3 cells but the header has 2 columns"));
  CHECK_THAT(error_of("step,loss\n1,2\n2\n"),
             Catch::StartsWith("t.csv:3: row has 1 cell but the header has 2 columns"));
  CHECK_THAT(error_of("step,loss\n1,abc\n"),
             Catch::StartsWith("t.csv:2: column 'loss': 'abc' is not a number"));
  CHECK_THAT(error_of("step,loss\n1,1.5x\n"), Catch::Contains("'1.5x' is not a number"));
  CHECK_THAT(error_of("step,loss\n1.5,1\n"),
             Catch::StartsWith("t.csv:2: step '1.5' is not a whole number"));
  CHECK_THAT(error_of("step,loss\n,1\n"), Catch::StartsWith("t.csv:2: the step cell is empty"));
  CHECK_THAT(error_of("step,loss,loss\n"), Catch::Contains("column 'loss' appears twice"));
  CHECK_THAT(error_of("step,,loss\n"), Catch::Contains("column 2 has an empty name"));
  CHECK_THAT(error_of("step,\"loss\n"), Catch::Contains("unterminated quote"));
  CHECK_THAT(error_of(std::string("step,loss\n1,\0\x01\x02\n", 15)),
             Catch::StartsWith("t.csv:2: binary data in a row"));
  CHECK_THAT(error_of(std::string("\x7f"
                                  "ELF\x02\x01\x01\0\0\0",
                                  10)),
             Catch::Contains("binary data where a CSV header was expected"));
  CHECK_THAT(error_of("step,loss\n" + std::string(2 << 20, '1')),
             Catch::Contains("line longer than 1 MiB"));
  // A control byte anywhere in a row of 1 to 40 bytes is binary data; a tab, a CR or a byte
  // from 0x80 up (UTF-8) is not.
  for (std::size_t len = 1; len <= 40; ++len)
    for (std::size_t at = 0; at < len; ++at) {
      std::string row(len, '1');
      for (const char c : {'\x01', '\x1f', '\0'}) {
        row[at] = c;
        REQUIRE_THAT(error_of("step,loss\n1," + row + "\n"),
                     Catch::StartsWith("t.csv:2: binary data in a row"));
      }
      for (const char c : {'\t', '\r', '\x80', '\xff', ' '}) {
        row[at] = c;
        REQUIRE_THAT(error_of("step,loss\n1," + row + "\n"), !Catch::Contains("binary data"));
      }
    }
}

TEST_CASE("csv: rows across read chunks, long lines and the last line without a newline") {
  // The reader takes the file in chunks of 256 KiB: rows that straddle a chunk's end must read
  // as any other, and errors must still name their line.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 10);
  std::string text = "step,loss,grad_norm\n";
  std::vector<double> loss;
  for (int i = 1; i <= 40000; ++i) {  // ~1 MB: several chunk ends, each inside some row
    loss.push_back(u(rng));
    char row[96];
    std::snprintf(row, sizeof row, "%d,%.17g,%s\n", i, loss.back(), i % 3 ? "1.5" : "");
    text += row;
  }
  text += "40001,0.25,";  // no newline at the end
  const auto rows = read_all(text);
  REQUIRE(rows.size() == 40001);
  for (std::size_t i = 0; i < loss.size(); ++i) {
    INFO("row " << i);
    REQUIRE(rows[i].step == std::int64_t(i + 1));
    REQUIRE(*rows[i].loss == loss[i]);  // %.17g round-trips exactly
    REQUIRE(rows[i].grad_norm.has_value() == ((i + 1) % 3 != 0));
  }
  CHECK(*rows.back().loss == 0.25);
  // A line just under the limit that spans chunks is read; one over it is refused with its
  // line number.
  const std::string wide = "1," + std::string((1 << 20) - 3, '0') + "1";  // 1 MiB exactly
  CHECK(read_all("step,loss\n" + wide + "\n2,3\n").size() == 2);
  CHECK(error_of("step,loss\n1,2\n2," + std::string(1 << 20, '0') + "\n") ==
        "t.csv:3: line longer than 1 MiB: not a CSV of training numbers");
  CHECK_THAT(error_of(text + "\n40002,x,\n"),
             Catch::StartsWith("t.csv:40003: column 'loss': 'x' is not a number"));
}

TEST_CASE("csv: a log still being written: a last row cut at any byte is left out or read") {
  // A trainer's CSV read while it runs ends wherever its last write stopped. The last line,
  // without a line end, is read when it is a whole row and otherwise left out with a note; a
  // short row that does end in a line end is still an error.
  std::string head = "step,loss,grad_norm,lr\n";
  for (int i = 0; i < 10; ++i) head += std::to_string(i) + ",2.5,1.5,0.01\n";
  const std::string last = "10,0.383261,1.9241e-05,0.01";
  for (std::size_t k = 1; k <= last.size(); ++k) {
    const std::string cut = last.substr(0, k);
    INFO("last line '" << cut << "'");
    std::istringstream in(head + cut);
    csv_reader r(in, "t.csv");
    std::vector<sample> rows;
    sample s;
    REQUIRE_NOTHROW([&] {
      while (r.next(s)) rows.push_back(s);
    }());
    // Three commas make four cells, and each prefix of the last one ("", "0", "0.", "0.0")
    // reads as a number or as missing.
    const bool whole = std::count(cut.begin(), cut.end(), ',') == 3;
    REQUIRE(rows.size() == (whole ? 11u : 10u));
    if (whole) {
      CHECK((rows.back().step == 10 && *rows.back().loss == 0.383261 &&
             *rows.back().grad_norm == 1.9241e-05));
      CHECK(r.reading_notes().empty());
      continue;
    }
    CHECK(rows.back().step == 9);
    REQUIRE(r.reading_notes().size() == 1);
    CHECK_THAT(r.reading_notes()[0],
               Catch::StartsWith("t.csv:12: the last line, without a line end, is not a whole "
                                 "row (") &&
                   Catch::EndsWith("): left out (a log still being written?)"));
  }
  // Which reason each kind of cut gives.
  auto note_of = [](const std::string& text) {
    std::istringstream in(text);
    csv_reader r(in, "t.csv");
    sample s;
    while (r.next(s)) {
    }
    return r.reading_notes().empty() ? std::string("none") : r.reading_notes()[0];
  };
  CHECK(note_of(head + "10,0.3") ==
        "t.csv:12: the last line, without a line end, is not a whole row (2 cells but the header "
        "has 4 columns): left out (a log still being written?)");
  CHECK_THAT(note_of(head + "10,0.3,1e-,0.01"),
             Catch::Contains("(column 'grad_norm': '1e-' is not a number)"));
  CHECK_THAT(note_of("\"Step\",\"r - loss\"\n\"1\",\"0.5\"\n\"2\",\"0.4"),
             Catch::Contains("t.csv:3: the last line, without a line end, is not a whole row (an "
                             "unterminated quote)"));
  CHECK(note_of(head + "10,0.3,1.2,0.01") == "none");
  // With a line end the same rows are errors, as before.
  CHECK_THAT(error_of(head + "10,0.3\n"),
             Catch::StartsWith("t.csv:12: row has 2 cells but the header has 4 columns"));
  CHECK_THAT(error_of(head + "10,0.3,1e-,0.01\n"),
             Catch::StartsWith("t.csv:12: column 'grad_norm': '1e-' is not a number"));
  // More cells than the header is not a row cut short.
  CHECK_THAT(error_of(head + "10,0.3,1.2,0.01,7"),
             Catch::StartsWith("t.csv:12: row has 5 cells but the header has 4 columns"));
}

TEST_CASE("csv: cells at every offset of a 16-byte block, padded, quoted or with a bad byte") {
  // The usual row is split 16 bytes at a time; every row here places its commas, blanks, a
  // quote or a control byte at another offset of those blocks (rows of 5 to about 80 bytes).
  // The reference is what was written: %.17g reads back as the same double.
  std::mt19937_64 rng(77);
  std::uniform_real_distribution<double> u(-5, 5);
  const char* pads[] = {"", " ", "\t", "  ", " \t "};
  std::string text = "step,loss,grad_norm,lr\n";
  std::vector<std::array<double, 3>> want;
  for (int i = 1; i <= 3000; ++i) {
    std::array<double, 3> v{};
    std::string row = std::string(pads[rng() % 5]) + std::to_string(i);
    for (double& x : v) {
      x = rng() % 4 == 0 ? double(rng() % 10) : u(rng) * std::pow(10.0, double(rng() % 7) - 3);
      char cell[40];
      std::snprintf(cell, sizeof cell, rng() % 2 ? "%.17g" : "%.3g", x);
      x = std::strtod(cell, nullptr);  // what the short form means
      const char* pad = pads[rng() % 5];
      row += std::string(",") + pad + (rng() % 11 == 0 ? "\"" + std::string(cell) + "\"" : cell) +
             pads[rng() % 5];
    }
    text += row + (rng() % 3 == 0 ? "\r\n" : "\n");
    want.push_back(v);
  }
  const auto rows = read_all(text);
  REQUIRE(rows.size() == want.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("row " << i + 1);
    REQUIRE(rows[i].step == std::int64_t(i + 1));
    REQUIRE(*rows[i].loss == want[i][0]);
    REQUIRE(*rows[i].grad_norm == want[i][1]);
    REQUIRE(*rows[i].lr == want[i][2]);
  }
  // A control byte anywhere in a row of 7 to 60 bytes, or a quote that opens any of its cells
  // and never closes: the same error as before, wherever it falls in the blocks.
  for (std::size_t len = 7; len <= 60; ++len) {
    std::string row = "1," + std::string(len - 6, '5') + ",2,3";
    for (std::size_t at = 0; at < row.size(); ++at) {
      INFO("length " << row.size() << ", byte " << at);
      std::string bad = row;
      bad[at] = '\x02';
      CHECK(error_of("step,loss,grad_norm,lr\n" + bad + "\n") == "t.csv:2: binary data in a row");
      if (at > 0 && row[at - 1] != ',') continue;
      std::string quoted = row;  // a quote that opens a cell and never closes
      quoted.insert(at, 1, '"');
      CHECK(error_of("step,loss,grad_norm,lr\n" + quoted + "\n") == "t.csv:2: unterminated quote");
    }
  }
}

TEST_CASE("csv: a missing file gives a clear error") {
  try {
    csv_reader r("/nonexistent/dir/run.csv");
    FAIL("no error");
  } catch (const losslens::error& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("/nonexistent/dir/run.csv: cannot open"));
  }
}

TEST_CASE("csv: random garbage never crashes, only throws losslens::error") {
  std::mt19937 rng(123);
  int errors = 0, parsed = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string text = "step,loss,grad_norm/a\n";
    const int n = int(rng() % 200);
    for (int k = 0; k < n; ++k) {
      const char alphabet[] = "0123456789.,-+eEnaif\n\" \r\txyz\0\xff";
      text.push_back(alphabet[rng() % (sizeof alphabet - 1)]);
    }
    try {
      read_all(text);
      ++parsed;
    } catch (const losslens::error&) {
      ++errors;
    }
  }
  CHECK(errors + parsed == 2000);
  CHECK(errors > 0);
}

TEST_CASE("csv: header names in any case and quoted, common tag spellings are mapped") {
  std::istringstream in(
      "\"Step\",\"Train/Loss\",\"LEARNING_RATE\",\"train/loss_cls\",\"epoch\"\r\n"
      "\"0\",\"2.5\",\"0.1\",\"1.5\",\"0\"\r\n");
  csv_reader r(in, "t.csv");
  CHECK(r.schema().tasks == std::vector<std::string>{"cls"});
  CHECK(r.mapping().describe() ==
        "Train/Loss -> loss, LEARNING_RATE -> lr, train/loss_cls -> loss/cls");
  REQUIRE(r.warnings().size() == 1);
  CHECK_THAT(r.warnings()[0], Catch::StartsWith("t.csv:1: 1 column not used: 'epoch' ("));
  sample s;
  REQUIRE(r.next(s));
  CHECK(*s.loss == 2.5);
  CHECK(*s.lr == 0.1);
  CHECK(*s.task_losses[0] == 1.5);
  CHECK_FALSE(r.next(s));
}

TEST_CASE("csv: TensorBoard's export (Wall time,Step,Value): the tag comes from the file name") {
  CHECK(tensorboard_csv_tag("dir/run-sgd01-tag-train_loss.csv") == "train_loss");
  CHECK(tensorboard_csv_tag("dir/grad_norm.CSV") == "grad_norm");
  CHECK(tensorboard_csv_tag("tb_export_train_loss.csv") == "tb_export_train_loss");
  const std::string text =
      "Wall time,Step,Value\r\n1733070000.0,0,2.3142499923706055\r\n1733070000.05,1,nan\r\n";
  std::istringstream in(text);
  csv_reader r(in, "run-a-tag-train_loss.csv");
  CHECK(r.tensorboard_layout());
  CHECK(r.mapping().describe() == "train_loss -> loss");
  CHECK(r.warnings().empty());
  sample s;
  REQUIRE(r.next(s));
  CHECK(s.step == 0);
  CHECK(s.wall_time == 1733070000.0);
  CHECK(*s.loss == 2.3142499923706055);
  REQUIRE(r.next(s));
  CHECK(s.wall_time == 1733070000.05);
  CHECK(std::isnan(*s.loss));
  CHECK_FALSE(r.next(s));
  // A name that says nothing: mapped by the caller (value_tag and a rule), else unused.
  std::istringstream in2(text);
  csv_options o;
  o.value_tag = "export";
  o.mapping.rules = {{"export", {series_role::grad_norm, ""}}};
  csv_reader r2(in2, "x.csv", o);
  REQUIRE(r2.next(s));
  CHECK(*s.grad_norm == 2.3142499923706055);
  std::istringstream in3(text);
  csv_reader r3(in3, "x.csv");
  CHECK_FALSE(r3.mapping().diagnosable());
}

TEST_CASE("csv: W&B export with several runs, __MIN/__MAX ignored, rows of other runs skipped") {
  const std::string text =
      "\"Step\",\"a - train/loss\",\"a - train/loss__MIN\",\"a - train/loss__MAX\","
      "\"b - train/loss\",\"b - train/loss__MIN\",\"b - train/loss__MAX\"\n"
      "\"0\",\"2\",\"2\",\"2\",\"3\",\"3\",\"3\"\n"
      "\"1\",\"1e-7\",\"1e-7\",\"1e-7\",\"Infinity\",\"Infinity\",\"Infinity\"\n"
      "\"2\",\"\",\"\",\"\",\"NaN\",\"NaN\",\"NaN\"\n";
  std::istringstream in(text);
  csv_reader a(in, "w.csv");
  CHECK(a.runs() == std::vector<std::string>{"a", "b"});
  CHECK(a.run() == "a");
  CHECK(a.mapping().describe() == "train/loss -> loss");
  REQUIRE(a.warnings().size() == 1);
  CHECK(a.warnings()[0] ==
        "w.csv:1: 2 W&B __MIN/__MAX columns ignored (bucket bounds of the value column)");
  sample s;
  REQUIRE(a.next(s));
  CHECK(*s.loss == 2);
  REQUIRE(a.next(s));
  CHECK(*s.loss == 1e-7);
  CHECK_FALSE(a.next(s));  // step 2 has no value for run a
  std::istringstream in2(text);
  csv_options o;
  o.run = "b";
  csv_reader b(in2, "w.csv", o);
  std::vector<double> losses;
  while (b.next(s)) losses.push_back(*s.loss);
  REQUIRE(losses.size() == 3);
  CHECK(losses[1] == INFINITY);
  CHECK(std::isnan(losses[2]));
  std::istringstream in3(text);
  o.run = "c";
  CHECK_THROWS_WITH(csv_reader(in3, "w.csv", o),
                    "w.csv:1: no run 'c' in the header (W&B columns '<run> - <key>'); runs: a, b");
}
