#include "losslens/tfevents/event_writer.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "detail/crc32c.hpp"
#include "event.pb.h"
#include "losslens/error.hpp"

namespace losslens::tfevents {

std::string frame_record(std::string_view data) {
  std::string out(12 + data.size() + 4, '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  detail::store_le(p, data.size(), 8);
  detail::store_le(p + 8, detail::masked_crc32c(p, 8), 4);
  std::memcpy(p + 12, data.data(), data.size());
  detail::store_le(p + 12 + data.size(), detail::masked_crc32c(data.data(), data.size()), 4);
  return out;
}

std::string scalar_event(std::string_view tag, std::int64_t step, double wall_time, float value) {
  pb::Event e;
  e.set_wall_time(wall_time);
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(std::string(tag));
  v->set_simple_value(value);
  return e.SerializeAsString();
}

std::string file_version_event(double wall_time) {
  pb::Event e;
  e.set_wall_time(wall_time);
  e.set_file_version("brain.Event:2");
  return e.SerializeAsString();
}

event_writer::event_writer(const std::string& path, double wall_time) : path_(path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec))
    throw error(path + ": already exists: choose another directory or remove the file");
  // "x": fail rather than truncate a file that appeared in between.
  FILE* probe = std::fopen(path.c_str(), "wbx");
  if (!probe)
    throw error(path + ": cannot create: " + std::strerror(errno) +
                " (does the directory exist and is it writable?)");
  std::fclose(probe);
  out_.open(path, std::ios::binary | std::ios::trunc);
  if (!out_) throw error(path + ": cannot open for writing: " + std::strerror(errno));
  write(file_version_event(wall_time));
}

event_writer::~event_writer() {
  if (out_.is_open()) out_.close();
}

void event_writer::write(const std::string& payload) {
  const std::string framed = frame_record(payload);
  out_.write(framed.data(), std::streamsize(framed.size()));
  ++records_;
}

void event_writer::write_scalar(std::string_view tag, std::int64_t step, double wall_time,
                                float value) {
  write(scalar_event(tag, step, wall_time, value));
}

void event_writer::close() {
  if (!out_.is_open()) return;
  out_.flush();
  const bool ok = bool(out_);
  out_.close();
  if (!ok || !out_)
    throw error(path_ + ": write failed (disk full?): the event file is incomplete");
}

}  // namespace losslens::tfevents
