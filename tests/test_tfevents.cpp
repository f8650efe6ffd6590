// TensorBoard event files: the reader against files written by another tool (the fixtures, and
// records encoded by hand below from the format description), the writer against the fixtures'
// bytes, truncated and corrupt files.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <boost/crc.hpp>
#include <nlohmann/json.hpp>

#include "detail/crc32c.hpp"
#include "detail/record_split.hpp"
#include "error_of.hpp"
#include "files.hpp"
#include "fixtures.hpp"
#include "losslens/error.hpp"
#include "losslens/tfevents/event_reader.hpp"
#include "losslens/tfevents/event_writer.hpp"
#include "losslens/tfevents/record_reader.hpp"
#include "losslens/tfevents/scalar_run.hpp"

namespace fs = std::filesystem;
using namespace losslens;
using namespace losslens::tfevents;

namespace {

const fs::path fixtures = losslens::testing::tensorboard_fixtures();
using losslens::testing::have_tensorboard_fixtures;

std::string read_bytes(const fs::path& p) { return losslens::testing::read_file(p); }

nlohmann::json expected() { return nlohmann::json::parse(read_bytes(fixtures / "expected.json")); }

std::vector<scalar_value> read_all(const std::string& bytes, std::string* truncated = nullptr,
                                   event_stats* stats = nullptr) {
  std::istringstream in(bytes);
  event_reader r(in, "f");
  std::vector<scalar_value> out;
  scalar_value v;
  while (r.next(v)) out.push_back(v);
  if (truncated) *truncated = r.truncated();
  if (stats) *stats = r.stats();
  return out;
}

std::string error_of(const std::string& bytes) {
  return losslens::testing::error_of([&] { read_all(bytes); });
}

// Protobuf wire format, written from the encoding description (not with generated code).
std::string varint(std::uint64_t v) {
  std::string out;
  do {
    unsigned char b = v & 0x7f;
    v >>= 7;
    if (v) b |= 0x80;
    out.push_back(char(b));
  } while (v);
  return out;
}
std::string field_varint(int field, std::uint64_t v) {
  return varint(std::uint64_t(field) << 3) + varint(v);
}
std::string field_bytes(int field, const std::string& b) {
  return varint(std::uint64_t(field) << 3 | 2) + varint(b.size()) + b;
}
template <class T>
std::string field_fixed(int field, T v) {
  std::string out = varint(std::uint64_t(field) << 3 | (sizeof(T) == 8 ? 1 : 5));
  char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));  // little-endian host
  return out + std::string(raw, sizeof(T));
}
// Event{wall_time, step, summary{value{...}}}
std::string event_with(double wall, std::int64_t step, const std::string& value) {
  return field_fixed(1, wall) + field_varint(2, std::uint64_t(step)) +
         field_bytes(5, field_bytes(1, value));
}
// Summary.Value.tensor: TensorProto{dtype, tensor_shape, values (fields 4, 5 or 6)}.
std::string tensor(int dtype, const std::string& shape, const std::string& values) {
  return field_bytes(8, field_varint(1, std::uint64_t(dtype)) + shape + values);
}
std::string plugin(const std::string& name) {
  return field_bytes(9, field_bytes(1, field_bytes(1, name)));
}

}  // namespace

TEST_CASE("tfevents: CRC-32C as Boost.CRC computes it, at every length and alignment",
          "[tfevents]") {
  // The check value of the CRC catalogue (CRC-32/ISCSI of "123456789").
  CHECK(detail::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(detail::crc32c(nullptr, 0) == 0u);
  std::vector<unsigned char> bytes(300 + 8);
  std::uint32_t x = 12345;
  for (auto& b : bytes) b = static_cast<unsigned char>((x = x * 1103515245u + 12345u) >> 23);
  int mismatches = 0;
  for (std::size_t offset = 0; offset < 8; ++offset)
    for (std::size_t n = 0; n <= 300; ++n) {
      boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> reference;
      reference.process_bytes(bytes.data() + offset, n);
      mismatches += detail::crc32c(bytes.data() + offset, n) != reference.checksum();
    }
  CHECK(mismatches == 0);
}

TEST_CASE("tfevents: the fixtures read back as expected.json says", "[tfevents]") {
  if (!have_tensorboard_fixtures()) return;
  const auto exp = expected();
  for (const auto& [run, e] : exp.items()) {
    INFO(run);
    std::string truncated;
    event_stats stats;
    const auto values =
        read_all(read_bytes(fixtures / e["event_file"].get<std::string>()), &truncated, &stats);
    CHECK(truncated.empty());
    CHECK(stats.records == e["records"].get<std::uint64_t>());
    CHECK(stats.file_version.empty() == !e["file_version_event"].get<bool>());
    CHECK(stats.scalars == values.size());
    CHECK(stats.skipped == 0);
    std::map<std::string, std::vector<scalar_value>> by_tag;
    for (const auto& v : values) by_tag[v.tag].push_back(v);
    CHECK(by_tag.size() == e["tags"].size());
    for (const auto& [tag, t] : e["tags"].items()) {
      INFO(tag);
      const auto& pts = by_tag[tag];
      REQUIRE(pts.size() == t["points"].get<std::size_t>());
      CHECK(pts.front().step == t["first"][0].get<std::int64_t>());
      CHECK(pts.front().value == t["first"][1].get<double>());  // float32 widened: exact
      CHECK(pts.back().step == t["last"][0].get<std::int64_t>());
      CHECK(pts.back().value == t["last"][1].get<double>());
      // The largest and smallest finite values, earliest on ties.
      const scalar_value* mx = &pts[0];
      const scalar_value* mn = &pts[0];
      for (const auto& p : pts) {
        if (p.value > mx->value) mx = &p;
        if (p.value < mn->value) mn = &p;
      }
      CHECK(mx->step == t["max_finite"][0].get<std::int64_t>());
      CHECK(mx->value == t["max_finite"][1].get<double>());
      CHECK(mn->step == t["min_finite"][0].get<std::int64_t>());
      CHECK(mn->value == t["min_finite"][1].get<double>());
      for (std::size_t i = 0; i < pts.size(); ++i) REQUIRE(pts[i].step == std::int64_t(i));
    }
    CHECK(values.front().wall_time == e["wall_time"]["first"].get<double>());
    CHECK(values.back().wall_time == Approx(e["wall_time"]["last"].get<double>()).margin(1e-6));
  }
}

TEST_CASE("tfevents: our records are byte for byte those of the fixtures' writer", "[tfevents]") {
  if (!have_tensorboard_fixtures()) return;
  const auto exp = expected();
  for (const auto& [run, e] : exp.items()) {
    INFO(run);
    const std::string bytes = read_bytes(fixtures / e["event_file"].get<std::string>());
    std::istringstream in(bytes);
    event_reader reader(in, run);
    std::string rebuilt;
    scalar_value v;
    while (reader.next(v))
      rebuilt += frame_record(scalar_event(v.tag, v.step, v.wall_time, float(v.value)));
    REQUIRE(rebuilt.size() == bytes.size());
    CHECK(rebuilt == bytes);  // framing, masked CRC32Cs, field order, step 0 omitted
  }
}

TEST_CASE("tfevents: writer round trip, bit-exact float32 with NaN and Inf", "[tfevents]") {
  const auto dir = fs::temp_directory_path() / ("losslens_tfevents_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto path = (dir / "events.out.tfevents.1.test").string();
  fs::remove(path);
  const std::vector<float> values = {0.0f,
                                     -0.0f,
                                     1e-45f,
                                     3.4028235e38f,
                                     std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     0.01f};
  {
    event_writer w(path, 1700000000.5);
    for (std::size_t i = 0; i < values.size(); ++i)
      w.write_scalar(i % 2 ? "train/loss" : "lr", std::int64_t(i) * 1000, 1700000000.5 + double(i),
                     values[i]);
    w.close();
    CHECK(w.records() == values.size() + 1);
    CHECK_THROWS_WITH(event_writer(path, 0), Catch::Contains("already exists"));
  }
  event_stats stats;
  const auto got = read_all(read_bytes(path), nullptr, &stats);
  CHECK(stats.file_version == "brain.Event:2");
  CHECK(stats.records == values.size() + 1);
  REQUIRE(got.size() == values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    INFO(i);
    const float f = float(got[i].value);
    CHECK(std::memcmp(&f, &values[i], 4) == 0);
    CHECK(got[i].step == std::int64_t(i) * 1000);
    CHECK(got[i].wall_time == 1700000000.5 + double(i));
    CHECK(got[i].tag == (i % 2 ? "train/loss" : "lr"));
  }
  fs::remove_all(dir);
}

TEST_CASE("tfevents: a long file, records across read buffers, one larger than them",
          "[tfevents]") {
  // The reader takes the file in 64 KiB pieces and parses events on an arena it resets every
  // 64 records: thousands of records of several tags, one of them a 100 kB tag, read back
  // value by value (from a file and from a stream).
  const auto dir =
      fs::temp_directory_path() / ("losslens_tfevents_long_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto path = (dir / "events.out.tfevents.2.test").string();
  fs::remove(path);
  const std::string long_tag(100000, 'x');
  struct point {
    std::string tag;
    std::int64_t step;
    float value;
  };
  std::vector<point> written;
  {
    event_writer w(path, 1700000000.0);
    for (std::int64_t step = 0; step < 3000; ++step)
      for (const char* tag : {"train/loss", "grad_norm", "lr"}) {
        const float v = float(step) * 0.25f + float(std::strlen(tag));
        w.write_scalar(tag, step, 1700000000.0 + double(step), v);
        written.push_back({tag, step, v});
        if (step == 1500 && std::strcmp(tag, "lr") == 0) {
          w.write_scalar(long_tag, step, 1700000000.0, -1.5f);
          written.push_back({long_tag, step, -1.5f});
        }
      }
    w.close();
  }
  std::vector<scalar_value> from_file;
  {
    event_reader r(path);
    scalar_value v;
    while (r.next(v)) from_file.push_back(v);
    CHECK(r.truncated().empty());
    CHECK(r.stats().records == written.size() + 1);
  }
  const auto from_stream = read_all(read_bytes(path));
  const std::vector<scalar_value>* both[] = {&from_file, &from_stream};
  for (const auto* got : both) {
    REQUIRE(got->size() == written.size());
    int wrong = 0;
    for (std::size_t i = 0; i < written.size(); ++i)
      wrong += (*got)[i].tag != written[i].tag || (*got)[i].step != written[i].step ||
               (*got)[i].value != double(written[i].value);
    CHECK(wrong == 0);
  }
  fs::remove_all(dir);
}

TEST_CASE("tfevents: scalar tensors (TF2, float_val, double) and skipped non-scalars",
          "[tfevents]") {
  float f = 2.5f;
  double d = -1.25;
  const std::string scalar_shape = field_bytes(2, "");  // TensorShapeProto{} (rank 0)
  std::string content_f(4, '\0');
  std::memcpy(content_f.data(), &f, 4);
  const std::string file =
      frame_record(field_fixed(1, 10.0) + field_bytes(3, "brain.Event:2")) +
      // TF2: a float tensor in tensor_content, tag named as scalars on its first value
      frame_record(event_with(11.0, 0,
                              field_bytes(1, "loss") + plugin("scalars") +
                                  tensor(1, scalar_shape, field_bytes(4, content_f)))) +
      // float_val (packed), no metadata on a later value of the tag
      frame_record(event_with(
          12.0, 1, field_bytes(1, "loss") + tensor(1, scalar_shape, field_bytes(5, content_f)))) +
      // a double in double_val (unpacked), shape [1]
      frame_record(event_with(
          13.0, 2,
          field_bytes(1, "grad_norm") +
              tensor(2, field_bytes(2, field_bytes(2, field_varint(1, 1))), field_fixed(6, d)))) +
      // a histogram plugin's tag, and a tensor of 3 floats: skipped
      frame_record(event_with(14.0, 3,
                              field_bytes(1, "w") + plugin("histograms") +
                                  tensor(1, scalar_shape, field_bytes(4, content_f)))) +
      frame_record(event_with(
          15.0, 3,
          field_bytes(1, "v") + tensor(1, field_bytes(2, field_bytes(2, field_varint(1, 3))),
                                       field_bytes(4, content_f + content_f + content_f)))) +
      // simple_value
      frame_record(event_with(16.0, 4, field_bytes(1, "lr") + field_fixed(2, 0.5f)));
  event_stats stats;
  const auto got = read_all(file, nullptr, &stats);
  CHECK(stats.file_version == "brain.Event:2");
  CHECK(stats.records == 7);
  CHECK(stats.skipped == 2);
  REQUIRE(got.size() == 4);
  CHECK(
      (got[0].tag == "loss" && got[0].step == 0 && got[0].value == 2.5 && got[0].wall_time == 11));
  CHECK((got[1].tag == "loss" && got[1].step == 1 && got[1].value == 2.5));
  CHECK((got[2].tag == "grad_norm" && got[2].step == 2 && got[2].value == -1.25));
  CHECK((got[3].tag == "lr" && got[3].step == 4 && got[3].value == 0.5));

  // A tag that is not UTF-8 (proto3 would refuse it as a string) is read as its bytes.
  const auto latin1 =
      read_all(frame_record(event_with(1.0, 7, field_bytes(1, "p\xe9rte") + field_fixed(2, 1.5f))));
  REQUIRE(latin1.size() == 1);
  CHECK(latin1[0].tag == "p\xe9rte");
  CHECK(latin1[0].value == 1.5);

  // A scalar float tensor with 3 content bytes is malformed: the record's offset is named.
  const std::string first = frame_record(field_fixed(1, 10.0));
  const std::string bad =
      first +
      frame_record(event_with(
          11.0, 0, field_bytes(1, "loss") + tensor(1, scalar_shape, field_bytes(4, "abc"))));
  CHECK(error_of(bad) ==
        "f: offset " + std::to_string(first.size()) +
            ": tag 'loss': a scalar float tensor with 3 content bytes (expected 4)");
}

TEST_CASE("tfevents: a cut-short last record is a note, a corrupt one an error with its offset",
          "[tfevents]") {
  std::string file;
  std::vector<std::size_t> starts;
  for (int i = 0; i < 5; ++i) {
    starts.push_back(file.size());
    file += frame_record(scalar_event("loss", i, 100.0 + i, float(i)));
  }
  const std::size_t last = starts.back();
  // Cut inside the header, the data and the data CRC of the last record.
  for (std::size_t cut : {last + 5, last + 12, last + 20, file.size() - 2}) {
    INFO(cut);
    std::string note;
    const auto got = read_all(file.substr(0, cut), &note);
    CHECK(got.size() == 4);
    CHECK_THAT(note, Catch::StartsWith("f: offset " + std::to_string(last) +
                                       ": the last record is cut short ("));
    CHECK_THAT(note, Catch::EndsWith("read the 4 complete records before it (a run still being "
                                     "written?)"));
  }
  // A flipped bit in record 2's data, then in its length.
  std::string corrupt = file;
  corrupt[starts[2] + 14] ^= 0x10;
  CHECK_THAT(error_of(corrupt), Catch::StartsWith("f: offset " + std::to_string(starts[2]) +
                                                  ": corrupt record: the CRC of its"));
  corrupt = file;
  corrupt[starts[2] + 1] ^= 0x01;
  CHECK_THAT(error_of(corrupt), Catch::StartsWith("f: offset " + std::to_string(starts[2]) +
                                                  ": corrupt record header: the length's CRC"));
  // Valid framing around bytes that are not an Event; a text file.
  CHECK_THAT(error_of(file + frame_record("\xff\xff\xff")),
             Catch::Contains(": the record (3 bytes, CRC correct) is not a tensorflow.Event"));
  CHECK_THAT(error_of("step,loss\n1,2\n3,4\n"),
             Catch::StartsWith("f: offset 0: corrupt record header"));
  // An empty file: no scalars, no error.
  CHECK(read_all("").empty());
}

TEST_CASE("tfevents: runs of a logdir, repeated steps keep the value written last", "[tfevents]") {
  const auto dir = fs::temp_directory_path() / ("losslens_logdir_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "a");
  fs::create_directories(dir / "b" / "c");
  fs::create_directories(dir / "empty");
  auto write = [](const fs::path& p, const std::vector<std::pair<std::int64_t, float>>& pts) {
    std::ofstream out(p, std::ios::binary);
    for (auto [s, v] : pts) out << frame_record(scalar_event("loss", s, double(s), v));
  };
  // Run a: two files (a restart): steps 0..2, then 2..3 again; run b/c: one file.
  write(dir / "a" / "events.out.tfevents.1.x", {{0, 1}, {1, 2}, {2, 3}});
  write(dir / "a" / "events.out.tfevents.2.x", {{2, 30}, {3, 40}});
  write(dir / "b" / "c" / "events.out.tfevents.1.y", {{5, 1}});
  std::ofstream(dir / "empty" / "notes.txt") << "x";
  const auto runs = find_runs(dir.string());
  REQUIRE(runs.size() == 2);
  CHECK(runs[0].name == "a");
  CHECK(runs[0].files.size() == 2);
  CHECK(runs[1].name == "b/c");
  CHECK(find_runs((dir / "a" / "events.out.tfevents.1.x").string())[0].name == "a");
  CHECK(find_runs((dir / "empty").string()).empty());
  CHECK_THROWS_WITH(find_runs((dir / "missing").string()), Catch::Contains("no such file"));

  const auto run = read_scalar_run(runs[0]);
  REQUIRE(run.tags.size() == 1);
  const auto& p = run.tags[0].points;
  REQUIRE(p.size() == 4);
  CHECK(p[2].step == 2);
  CHECK(p[2].value == 30);
  CHECK(p[3].value == 40);
  REQUIRE(run.notes.size() == 1);
  CHECK(run.notes[0] ==
        "tag 'loss': 1 repeated steps (a restarted run?): kept the value written "
        "last; points sorted by step");
  // As samples: one per step.
  sample_merger m;
  add_streams(m, run, map_tags(run.tag_names()));
  sample s;
  std::vector<double> losses;
  while (m.next(s)) losses.push_back(*s.loss);
  CHECK(losses == std::vector<double>{1, 2, 30, 40});
  fs::remove_all(dir);
}

TEST_CASE("tfevents: a file read in parts on several threads gives what one piece gives",
          "[tfevents]") {
  const auto dir = fs::temp_directory_path() / ("losslens_parts_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // Four tags (acc from step 3000 on), a restart that logs steps 2000-2199 again, a tag named
  // as a histogram whose later values are plain scalars (one piece skips them all), and in the
  // middle of the file one large record whose bytes are framed
  // records: the search for the cut of two parts starts inside it and finds a false start.
  std::vector<std::string> records;
  records.push_back(frame_record(
      event_with(1.0, 0, field_bytes(1, "h") + plugin("histograms") + field_fixed(2, 1.0f))));
  for (int step = 0; step < 6000; ++step) {
    const int s = step < 4000 ? step : step - 2000;  // steps 2000.. again after 3999
    records.push_back(frame_record(scalar_event("loss", s, 10.0 + step, float(1.0 / (1 + step)))));
    records.push_back(frame_record(scalar_event("lr", s, 10.0 + step, 0.001f)));
    if (step % 3 == 0)
      records.push_back(frame_record(scalar_event("grad_norm", s, 10.0 + step, float(step))));
    if (step >= 3000) records.push_back(frame_record(scalar_event("acc", s, 10.0 + step, 0.5f)));
    if (step % 100 == 0 && step < 500)  // in the first part however many there are
      records.push_back(
          frame_record(event_with(2.0, s, field_bytes(1, "h") + field_fixed(2, 2.0f))));
  }
  std::string fakes;
  for (int i = 0; i < 3000; ++i) fakes += frame_record(scalar_event("fake", i, 1.0, 9.0f));
  const std::string image = frame_record(
      event_with(3.0, 1, field_bytes(1, "img") + field_bytes(4, field_bytes(4, fakes))));
  std::size_t body = 0;
  for (const auto& r : records) body += r.size();
  std::string file = frame_record(file_version_event(1.0));
  const std::size_t first = file.size();
  std::vector<std::size_t> starts;
  std::size_t image_at = 0;
  for (const auto& r : records) {
    // The whole file's middle is (first + body + image) / 2: inside the image when it starts a
    // quarter of its size before (first + body) / 2.
    if (image_at == 0 && file.size() + image.size() / 4 >= (first + body) / 2) {
      image_at = file.size();
      starts.push_back(file.size());
      file += image;
    }
    starts.push_back(file.size());
    file += r;
  }
  REQUIRE(image_at < file.size() / 2);
  REQUIRE(file.size() / 2 < image_at + image.size());
  const auto path = (dir / "events.out.tfevents.1.parts").string();
  auto write = [&](const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  auto read = [&](unsigned threads) {
    read_options o;
    o.threads = threads;
    o.part_bytes = 1;
    return read_scalar_run({"r", {path}}, o);
  };
  auto same = [](const scalar_run& a, const scalar_run& b) {
    CHECK(a.records == b.records);
    CHECK(a.scalars == b.scalars);
    CHECK(a.skipped == b.skipped);
    CHECK(a.notes == b.notes);
    REQUIRE(a.tag_names() == b.tag_names());
    for (std::size_t t = 0; t < a.tags.size(); ++t) {
      const auto& p = a.tags[t].points;
      const auto& q = b.tags[t].points;
      REQUIRE(p.size() == q.size());
      for (std::size_t i = 0; i < p.size(); ++i)
        if (p[i].step != q[i].step || p[i].wall_time != q[i].wall_time ||
            std::memcmp(&p[i].value, &q[i].value, sizeof(double)) != 0)
          FAIL("tag " << a.tags[t].tag << " point " << i << " differs");
    }
  };

  write(file);
  const scalar_run one = read(1);
  CHECK(one.files_in_parts == 0);
  CHECK(one.tag_names() == std::vector<std::string>{"loss", "lr", "grad_norm", "acc"});
  CHECK(one.scalars == 6000 + 6000 + 2000 + 3000);
  CHECK(one.skipped == 1 + 5 + 1);  // h's 6 values, the image
  CHECK(one.tags[0].points.size() == 4000);
  REQUIRE(one.notes.size() == 4);  // loss, lr, grad_norm, acc: steps repeated
  // 2-7 threads: read in parts unless the search for a cut starts inside the image, where it
  // finds a false record start; the part before then ends elsewhere, and the file is read
  // again in one piece. The same run either way.
  for (unsigned threads = 2; threads <= 7; ++threads) {
    INFO(threads << " threads");
    bool in_image = false;
    for (unsigned i = 1; i < threads; ++i) {
      const std::size_t near = file.size() / threads * i;
      in_image = in_image || (near > image_at && near < image_at + image.size());
    }
    const scalar_run parts = read(threads);
    same(parts, one);
    CHECK(parts.files_in_parts == (in_image ? 0 : 1));
  }
  // The search for a cut: a real record start, and inside the image a false one.
  const std::size_t some = starts[starts.size() / 3];
  CHECK(detail::record_starts_after(path, file.size(), {some - 3}) ==
        std::vector<std::uint64_t>{some});
  const auto inside = detail::record_starts_after(path, file.size(), {file.size() / 2});
  REQUIRE(inside.size() == 1);
  CHECK(inside[0] > image_at);
  CHECK(inside[0] < image_at + image.size());

  // A value of h in the last part, its plugin named in the first: read again in one piece.
  write(file + frame_record(event_with(4.0, 7000, field_bytes(1, "h") + field_fixed(2, 3.0f))));
  const scalar_run late_h = read(3);
  CHECK(late_h.files_in_parts == 0);
  CHECK(late_h.skipped == one.skipped + 1);
  same(late_h, read(1));

  // Cut short, then corrupt in the first and in the last part: the same note and errors.
  write(file.substr(0, file.size() - 3));
  const scalar_run cut = read(1);
  REQUIRE(cut.notes.size() == 5);
  CHECK_THAT(cut.notes[0], Catch::Contains("the last record is cut short"));
  for (unsigned threads = 2; threads <= 4; ++threads) same(read(threads), cut);
  for (const std::size_t at : {starts[100], starts[starts.size() - 100]}) {
    std::string bad = file;
    bad[at + 14] ^= 0x10;
    write(bad);
    const std::string want = losslens::testing::error_of([&] { read(1); });
    CHECK_THAT(want, Catch::Contains("offset " + std::to_string(at) + ": corrupt record"));
    for (unsigned threads = 2; threads <= 4; ++threads)
      CHECK(losslens::testing::error_of([&] { read(threads); }) == want);
  }
  fs::remove_all(dir);
}
