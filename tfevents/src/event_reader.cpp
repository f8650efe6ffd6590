#include "losslens/tfevents/event_reader.hpp"

#include <array>
#include <cstring>

#include <google/protobuf/arena.h>

#include "event.pb.h"
#include "losslens/error.hpp"

namespace losslens::tfevents {
namespace {

constexpr int dt_float = 1;
constexpr int dt_double = 2;

/// The number of elements of a shape; -1 for an unknown rank or a negative dimension.
std::int64_t elements(const pb::TensorShapeProto& shape) {
  if (shape.unknown_rank()) return -1;
  std::int64_t n = 1;
  for (const auto& d : shape.dim()) {
    if (d.size() < 0) return -1;
    if (d.size() != 0 && n > INT64_MAX / d.size()) return -1;
    n *= d.size();
  }
  return n;
}

}  // namespace

// Each record is parsed into a fresh Event on an arena, reset every `reset_every` records:
// parsing into one reused heap message freed and allocated its Summary and values at every
// record (the summary is a oneof member, deleted by Clear), which cost more than the parse, and
// resetting the arena at every record cost half as much again. The first block is ours, so
// records of the usual size allocate nothing.
struct event_reader::parsed {
  static constexpr std::uint64_t reset_every = 64;
  parsed() : arena(options(block)) {}
  static google::protobuf::ArenaOptions options(std::array<char, 65536>& b) {
    google::protobuf::ArenaOptions o;
    o.initial_block = b.data();
    o.initial_block_size = b.size();
    return o;
  }
  alignas(16) std::array<char, 65536> block{};
  google::protobuf::Arena arena;
  pb::Event* event = nullptr;  // on the arena; nullptr before the first record
};

event_reader::event_reader(const std::string& path)
    : records_(path), parsed_(std::make_unique<parsed>()) {}

event_reader::event_reader(const std::string& path, std::uint64_t start, std::uint64_t end)
    : records_(path, start, end), parsed_(std::make_unique<parsed>()) {}

event_reader::event_reader(std::istream& in, std::string name)
    : records_(in, std::move(name)), parsed_(std::make_unique<parsed>()) {}

event_reader::~event_reader() = default;

void event_reader::fail(const std::string& reason) const {
  throw error(records_.name() + ": offset " + std::to_string(records_.record_offset()) + ": " +
              reason);
}

bool event_reader::next_record() {
  if (!records_.next(buffer_)) return false;
  ++stats_.records;
  parsed_->event = nullptr;  // Reset frees it: no dangling event if what follows throws
  if (stats_.records % parsed::reset_every == 0) parsed_->arena.Reset();
  parsed_->event = google::protobuf::Arena::CreateMessage<pb::Event>(&parsed_->arena);
  if (!parsed_->event->ParseFromString(buffer_))
    fail("the record (" + std::to_string(buffer_.size()) +
         " bytes, CRC correct) is not a tensorflow.Event: protobuf parse failed");
  const pb::Event& event = *parsed_->event;
  if (event.has_file_version() && stats_.file_version.empty())
    stats_.file_version = event.file_version();
  value_index_ = 0;
  return true;
}

bool event_reader::next(scalar_value& v) {
  for (;;) {
    const pb::Event* event = parsed_->event;
    if (!event || !event->has_summary() || value_index_ >= event->summary().value_size()) {
      if (!next_record()) return false;
      continue;
    }
    const pb::Summary::Value& sv = event->summary().value(value_index_++);
    // A tag's plugin is named on its first value only (TensorBoard's writers); remember it.
    auto known = plugins_.find(sv.tag());
    if (known == plugins_.end()) known = plugins_.emplace(sv.tag(), tag_plugin{}).first;
    tag_plugin& plugin = known->second;
    if (sv.has_metadata() && sv.metadata().has_plugin_data()) {
      plugin.named = true;
      plugin.scalars = sv.metadata().plugin_data().plugin_name() == "scalars" ||
                       sv.metadata().plugin_data().plugin_name().empty();
    }
    if (!plugin.scalars) {
      ++stats_.skipped;
      continue;
    }
    double value = 0;
    if (sv.value_case() == pb::Summary::Value::kSimpleValue) {
      value = sv.simple_value();
    } else if (sv.value_case() == pb::Summary::Value::kTensor) {
      const pb::TensorProto& t = sv.tensor();
      const std::size_t width = t.dtype() == dt_float ? 4 : t.dtype() == dt_double ? 8 : 0;
      if (width == 0 || elements(t.tensor_shape()) != 1) {
        ++stats_.skipped;  // not a float/double scalar: text, images, histograms...
        continue;
      }
      const std::string& content = t.tensor_content();
      if (!content.empty()) {
        if (content.size() != width)
          fail("tag '" + sv.tag() + "': a scalar " + (width == 4 ? "float" : "double") +
               " tensor with " + std::to_string(content.size()) + " content bytes (expected " +
               std::to_string(width) + ")");
        if (width == 4) {
          float f;
          std::memcpy(&f, content.data(), 4);  // little-endian, as TensorFlow writes it
          value = f;
        } else {
          std::memcpy(&value, content.data(), 8);
        }
      } else if (width == 4 && t.float_val_size() == 1) {
        value = t.float_val(0);
      } else if (width == 8 && t.double_val_size() == 1) {
        value = t.double_val(0);
      } else {
        fail("tag '" + sv.tag() + "': a scalar tensor without its value (no tensor_content, " +
             std::to_string(width == 4 ? t.float_val_size() : t.double_val_size()) + " " +
             (width == 4 ? "float_val" : "double_val") + " entries)");
      }
    } else {
      ++stats_.skipped;  // an image, a histogram, audio...
      continue;
    }
    if (!plugin.named) ++plugin.unnamed_values;
    v.tag = sv.tag();
    v.step = event->step();
    v.wall_time = event->wall_time();
    v.value = value;
    ++stats_.scalars;
    return true;
  }
}

}  // namespace losslens::tfevents
