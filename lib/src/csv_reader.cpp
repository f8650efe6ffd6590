#include "losslens/csv_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>

#include "losslens/error.hpp"

namespace losslens {
namespace {

constexpr std::size_t max_line = 1 << 20;  // a longer line is not a CSV of numbers

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// Splits on commas; a cell may be wrapped in double quotes (no embedded quotes or commas are
/// needed for numbers and series names, so quotes are only stripped). Returns false on an
/// unterminated quote.
bool split(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  std::size_t start = 0;
  for (;;) {
    std::size_t comma = line.find(',', start);
    std::string_view cell = trim(line.substr(start, comma == std::string_view::npos
                                                        ? std::string_view::npos
                                                        : comma - start));
    if (!cell.empty() && cell.front() == '"') {
      if (cell.size() < 2 || cell.back() != '"') return false;
      cell = trim(cell.substr(1, cell.size() - 2));
    }
    out.push_back(cell);
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

/// Parses a number: decimal or exponent notation, or nan/inf/-inf (any case, also "infinity").
bool parse_double(std::string_view s, double& v) {
  std::string_view body = s;
  bool neg = false;
  if (!body.empty() && (body.front() == '+' || body.front() == '-')) {
    neg = body.front() == '-';
    body.remove_prefix(1);
  }
  if (iequals(body, "nan")) {
    v = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (iequals(body, "inf") || iequals(body, "infinity")) {
    v = neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return true;
  }
  if (body.empty() || !(std::isdigit(static_cast<unsigned char>(body.front())) || body.front() == '.'))
    return false;
  auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (p != body.data() + body.size()) return false;
  if (ec == std::errc::result_out_of_range) {
    // from_chars leaves v unset on overflow/underflow; strtod gives +-HUGE_VAL (Inf) or 0.
    v = std::strtod(std::string(body).c_str(), nullptr);
  } else if (ec != std::errc{}) {
    return false;
  }
  if (neg) v = -v;
  return true;
}

bool has_binary(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == 0 || (u < 0x20 && u != '\t' && u != '\r');
  });
}

}  // namespace

csv_reader::csv_reader(const std::string& path) : name_(path) {
  file_ = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file_)
    throw error(path + ": cannot open: " + std::strerror(errno) +
                " (give the path of a CSV with a header row: step,loss,...)");
  in_ = file_.get();
  read_header();
}

csv_reader::csv_reader(std::istream& in, std::string name) : in_(&in), name_(std::move(name)) {
  read_header();
}

csv_reader::~csv_reader() = default;

void csv_reader::fail(const std::string& reason) const {
  throw error(name_ + ":" + std::to_string(line_) + ": " + reason);
}

bool csv_reader::read_line(std::string& out) {
  out.clear();
  std::streambuf* sb = in_->rdbuf();
  bool any = false;
  for (;;) {
    const int c = sb->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      if (any) ++line_;
      return any;
    }
    any = true;
    if (c == '\n') {
      ++line_;
      return true;
    }
    if (out.size() >= max_line) {
      ++line_;
      fail("line longer than 1 MiB: not a CSV of training numbers");
    }
    out.push_back(static_cast<char>(c));
  }
}

void csv_reader::read_header() {
  std::string header;
  // Skip leading blank lines; the first non-blank line is the header.
  for (;;) {
    if (!read_line(header)) {
      line_ = std::max<std::int64_t>(line_, 1);
      fail("empty file: expected a header row such as step,loss,grad_norm");
    }
    if (!trim(header).empty()) break;
  }
  if (header.size() >= 3 && header.compare(0, 3, "\xEF\xBB\xBF") == 0) header.erase(0, 3);  // BOM
  if (has_binary(header)) fail("binary data where a CSV header was expected");
  if (!split(header, cells_)) fail("unterminated quote in the header");
  std::set<std::string, std::less<>> seen;
  bool has_step = false;
  for (std::size_t i = 0; i < cells_.size(); ++i) {
    const std::string name(cells_[i]);
    if (name.empty()) fail("column " + std::to_string(i + 1) + " has an empty name");
    if (!seen.insert(name).second) fail("column '" + name + "' appears twice");
    column c{column_kind::ignored, 0, name};
    auto sub = [&](std::string_view prefix) -> std::string {
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return {};
      return name.substr(prefix.size());
    };
    if (name == "step") {
      c.kind = column_kind::step;
      has_step = true;
    } else if (name == "wall_time") {
      c.kind = column_kind::wall_time;
    } else if (name == "loss") {
      c.kind = column_kind::loss;
    } else if (name == "grad_norm") {
      c.kind = column_kind::grad_norm;
    } else if (name == "lr") {
      c.kind = column_kind::lr;
    } else if (name == "accuracy") {
      c.kind = column_kind::accuracy;
    } else if (auto t = sub("loss/"); !t.empty()) {
      c.kind = column_kind::task;
      c.index = schema_.tasks.size();
      schema_.tasks.push_back(t);
    } else if (auto p = sub("grad_norm/"); !p.empty()) {
      c.kind = column_kind::param;
      c.index = schema_.params.size();
      schema_.params.push_back(p);
    } else {
      warnings_.push_back(name_ + ":" + std::to_string(line_) + ": column '" + name +
                          "' is not one of step, loss, loss/<task>, grad_norm, "
                          "grad_norm/<name>, lr, accuracy, wall_time: ignored");
    }
    columns_.push_back(std::move(c));
  }
  if (!has_step)
    fail("no 'step' column (the header must name a step column, e.g. step,loss,grad_norm)");
}

bool csv_reader::next(sample& s) {
  for (;;) {
    if (!read_line(buf_)) return false;
    if (!trim(buf_).empty()) break;  // blank lines (e.g. a trailing one) are skipped
  }
  if (has_binary(buf_)) fail("binary data in a row");
  if (!split(buf_, cells_)) fail("unterminated quote");
  if (cells_.size() != columns_.size())
    fail("row has " + std::to_string(cells_.size()) + " cells but the header has " +
         std::to_string(columns_.size()) + " columns");

  s.step = 0;
  s.wall_time = 0;
  s.loss.reset();
  s.grad_norm.reset();
  s.lr.reset();
  s.accuracy.reset();
  s.first_non_finite_param = -1;
  s.task_losses.assign(schema_.tasks.size(), std::nullopt);
  s.param_grad_norms.assign(schema_.params.size(), std::nullopt);
  s.task_weights.clear();
  s.task_grad_norms.clear();

  bool have_step = false;
  for (std::size_t i = 0; i < cells_.size(); ++i) {
    const column& c = columns_[i];
    const std::string_view cell = cells_[i];
    if (c.kind == column_kind::ignored || cell.empty()) continue;
    if (c.kind == column_kind::step) {
      std::int64_t v = 0;
      auto [p, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), v);
      if (ec != std::errc{} || p != cell.data() + cell.size())
        fail("step '" + std::string(cell) + "' is not a whole number");
      s.step = v;
      have_step = true;
      continue;
    }
    double v = 0;
    if (!parse_double(cell, v))
      fail("column '" + c.name + "': '" + std::string(cell.substr(0, 40)) + "' is not a number");
    switch (c.kind) {
      case column_kind::wall_time: s.wall_time = v; break;
      case column_kind::loss: s.loss = v; break;
      case column_kind::task: s.task_losses[c.index] = v; break;
      case column_kind::grad_norm: s.grad_norm = v; break;
      case column_kind::param: s.param_grad_norms[c.index] = v; break;
      case column_kind::lr: s.lr = v; break;
      case column_kind::accuracy: s.accuracy = v; break;
      default: break;
    }
  }
  if (!have_step) fail("the step cell is empty");
  if (have_prev_step_ && s.step <= prev_step_)
    fail("step " + std::to_string(s.step) + " is not greater than the previous step " +
         std::to_string(prev_step_) + " (steps must increase)");
  have_prev_step_ = true;
  prev_step_ = s.step;
  return true;
}

}  // namespace losslens
