#include "losslens/csv_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "detail/text.hpp"
#include "losslens/error.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace losslens {
namespace {

constexpr std::size_t max_line = 1 << 20;    // a longer line is not a CSV of numbers
constexpr std::size_t chunk_size = 1 << 18;  // bytes per read

inline std::string_view trim(std::string_view s) {
  // The usual cell has nothing to trim: both ends are printable (spaces, tabs and CR are not).
  if (!s.empty() && static_cast<unsigned char>(s.front()) > ' ' &&
      static_cast<unsigned char>(s.back()) > ' ')
    return s;
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
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
    std::string_view cell = trim(line.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (!cell.empty() && cell.front() == '"') {
      if (cell.size() < 2 || cell.back() != '"') return false;
      cell = trim(cell.substr(1, cell.size() - 2));
    }
    out.push_back(cell);
    if (comma == std::string_view::npos) return true;
    start = comma + 1;
  }
}

bool is_binary(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 && u != '\t' && u != '\r';
}

/// split() for the usual row: no quote and no byte that has_binary() rejects. The commas are
/// found 16 bytes at a time (a memchr call per cell and a separate pass for binary bytes were
/// a sixth of the reading). Returns false, with `out` in any state, when the line holds a
/// quote or such a byte: split() and has_binary() then decide as before.
bool split_plain(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  const char* const p = line.data();
  const std::size_t n = line.size();
  std::size_t start = 0, i = 0;
  auto cell_to = [&](std::size_t comma) __attribute__((always_inline)) {
    out.push_back(trim(std::string_view(p + start, comma - start)));
    start = comma + 1;
  };
#if defined(__SSE2__)
  const __m128i comma = _mm_set1_epi8(','), quote = _mm_set1_epi8('"'),
                below_space = _mm_set1_epi8(0x1f), tab = _mm_set1_epi8('\t'),
                cr = _mm_set1_epi8('\r');
  // Bit k of the result: byte k is a quote or a control byte other than tab and CR; of
  // `commas`: byte k is a comma.
  auto scan = [&](const char* q, unsigned& commas) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    const __m128i control = _mm_cmpeq_epi8(_mm_max_epu8(x, below_space), below_space);
    const __m128i allowed = _mm_or_si128(_mm_cmpeq_epi8(x, tab), _mm_cmpeq_epi8(x, cr));
    const __m128i bad = _mm_or_si128(_mm_andnot_si128(allowed, control), _mm_cmpeq_epi8(x, quote));
    commas = unsigned(_mm_movemask_epi8(_mm_cmpeq_epi8(x, comma)));
    return unsigned(_mm_movemask_epi8(bad));
  };
  for (; i + 16 <= n; i += 16) {
    unsigned commas = 0;
    if (scan(p + i, commas) != 0) return false;
    for (; commas != 0; commas &= commas - 1) cell_to(i + unsigned(__builtin_ctz(commas)));
  }
  if (i < n && n >= 16) {
    // The last bytes as the block that ends the line, without the bits of the bytes already
    // scanned.
    const unsigned keep = ~((1u << (i - (n - 16))) - 1);
    unsigned commas = 0;
    if ((scan(p + n - 16, commas) & keep) != 0) return false;
    for (commas &= keep; commas != 0; commas &= commas - 1)
      cell_to(n - 16 + unsigned(__builtin_ctz(commas)));
    i = n;
  }
#endif
  for (; i < n; ++i) {
    if (p[i] == ',')
      cell_to(i);
    else if (p[i] == '"' || is_binary(p[i]))
      return false;
  }
  out.push_back(trim(std::string_view(p + start, n - start)));
  return true;
}

/// The shortest text that reads back as v (a message quoting two values that differ must
/// show the difference).
std::string exact_text(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

using core::detail::iequals;
using core::detail::lower;
using core::detail::parse_double;

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

bool has_binary(std::string_view s) {
  // Eight bytes at a time: a word with no byte below 0x20 (most of them) is passed at once;
  // one that has one (a tab, the CR of a CRLF line, or binary data) is looked at byte by byte.
  constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  const char* p = s.data();
  const char* const end = p + s.size();
  // High bit of a byte set when that byte is below 0x20 (exact for bytes below 0x80, whose
  // high bit ~w keeps; bytes from 0x80 up are never flagged).
  auto suspect = [](const char* q) {
    std::uint64_t w;
    std::memcpy(&w, q, 8);
    return ((w - 0x20 * ones) & ~w & highs) != 0;
  };
  if (end - p < 8) return std::any_of(p, end, is_binary);
  for (; end - p >= 8; p += 8)
    if (suspect(p) && std::any_of(p, p + 8, is_binary)) return true;
  // The last bytes as one word ending at the end (it overlaps bytes already passed).
  return p != end && suspect(end - 8) && std::any_of(end - 8, end, is_binary);
}

}  // namespace

std::string tensorboard_csv_tag(std::string_view path) {
  if (auto slash = path.find_last_of('/'); slash != std::string_view::npos)
    path.remove_prefix(slash + 1);
  if (path.size() > 4 && iequals(path.substr(path.size() - 4), ".csv")) path.remove_suffix(4);
  if (auto tag = path.rfind("-tag-"); tag != std::string_view::npos && tag + 5 < path.size())
    path.remove_prefix(tag + 5);
  return std::string(path);
}

csv_reader::csv_reader(const std::string& path, csv_options options)
    : name_(path), options_(std::move(options)) {
  file_ = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file_)
    throw error(path + ": cannot open: " + std::strerror(errno) +
                " (give the path of a CSV with a header row: step,loss,...)");
  in_ = file_.get();
  read_header();
}

csv_reader::csv_reader(std::istream& in, std::string name, csv_options options)
    : in_(&in), name_(std::move(name)), options_(std::move(options)) {
  read_header();
}

csv_reader::~csv_reader() = default;

void csv_reader::fail(const std::string& reason) const { throw error(where() + reason); }

bool csv_reader::fill() {
  // Large reads straight into one buffer (a byte at a time through the stream was most of the
  // reading cost); memory stays one chunk plus at most one line.
  if (chunk_.empty()) chunk_.resize(chunk_size);
  const std::streamsize n = in_->rdbuf()->sgetn(chunk_.data(), std::streamsize(chunk_.size()));
  pos_ = 0;
  end_ = n > 0 ? std::size_t(n) : 0;
  if (options_.on_read) options_.on_read(chunk_.data(), end_);
  return end_ > 0;
}

bool csv_reader::read_line(std::string_view& out) {
  bool carried = false;  // the line began in an earlier chunk: its start is in buf_
  for (;;) {
    if (pos_ == end_ && !fill()) {
      if (!carried) return false;
      ++line_;
      unterminated_ = true;  // the file's last line, without a line end
      out = buf_;
      return true;
    }
    const char* start = chunk_.data() + pos_;
    const std::size_t avail = end_ - pos_;
    const auto* nl = static_cast<const char*>(std::memchr(start, '\n', avail));
    const std::size_t len = nl ? std::size_t(nl - start) : avail;
    if ((carried ? buf_.size() : 0) + len > max_line) {
      ++line_;
      fail("line longer than 1 MiB: not a CSV of training numbers");
    }
    if (nl) {
      pos_ += len + 1;
      ++line_;
      if (!carried) {
        out = std::string_view(start, len);  // valid until the next fill()
        return true;
      }
      buf_.append(start, len);
      out = buf_;
      return true;
    }
    if (!carried) buf_.clear();
    carried = true;
    buf_.append(start, len);
    pos_ = end_;
  }
}

void csv_reader::read_header() {
  std::string header;
  // Skip leading blank lines; the first non-blank line is the header.
  for (;;) {
    std::string_view line;
    if (!read_line(line)) {
      line_ = std::max<std::int64_t>(line_, 1);
      fail("empty file: expected a header row such as step,loss,grad_norm");
    }
    header.assign(line);
    // A byte-order mark starts the file, even when blank lines follow it.
    if (line_ == 1 && header.size() >= 3 && header.compare(0, 3, "\xEF\xBB\xBF") == 0)
      header.erase(0, 3);
    if (!trim(header).empty()) break;
  }
  if (has_binary(header)) fail("binary data where a CSV header was expected");
  if (!split(header, cells_)) fail("unterminated quote in the header");
  std::set<std::string, std::less<>> seen;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < cells_.size(); ++i) {
    std::string name(cells_[i]);
    if (name.empty()) fail("column " + std::to_string(i + 1) + " has an empty name");
    if (!seen.insert(name).second) fail("column '" + name + "' appears twice");
    names.push_back(std::move(name));
  }
  auto is_any = [](std::string_view name, std::initializer_list<std::string_view> words) {
    return std::any_of(words.begin(), words.end(), [&](auto w) { return iequals(name, w); });
  };
  tensorboard_ =
      names.size() == 3 &&
      std::all_of(names.begin(), names.end(),
                  [&](const std::string& n) {
                    return is_any(n, {"wall time", "step", "value"});
                  }) &&
      std::set<std::string>{lower(names[0]), lower(names[1]), lower(names[2])}.size() == 3;
  // W&B: "<run> - <key>" columns; the run read is the one asked for, else the first.
  constexpr std::string_view run_sep = " - ";
  for (const auto& n : names)
    if (auto sep = n.find(run_sep); sep != std::string::npos && sep > 0) {
      const std::string run = n.substr(0, sep);
      if (std::find(runs_.begin(), runs_.end(), run) == runs_.end()) runs_.push_back(run);
    }
  if (!options_.run.empty()) {
    if (std::find(runs_.begin(), runs_.end(), options_.run) == runs_.end())
      fail("no run '" + options_.run + "' in the header (W&B columns '<run> - <key>'); runs: " +
           (runs_.empty() ? std::string("none") : join(runs_)));
    run_ = options_.run;
  } else if (!runs_.empty()) {
    run_ = runs_.front();
  }

  std::vector<std::string> tags;
  std::vector<std::size_t> tag_columns;
  std::size_t bounds = 0;
  bool has_step = false, has_wall = false;
  // Without a step column, Keras' CSVLogger layout (epoch,loss,val_loss,...): one row per
  // epoch, the epoch its step.
  auto is_step = [&](std::string_view n) { return is_any(n, {"step", "_step", "global_step"}); };
  const bool by_epoch = std::none_of(names.begin(), names.end(), is_step);
  bool epoch_step = false;
  columns_.clear();
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    columns_.push_back({column_kind::ignored, name});
    if (!has_step && (is_step(name) || (by_epoch && iequals(name, "epoch")))) {
      columns_[i].kind = column_kind::step;
      step_column_ = i;
      has_step = true;
      epoch_step = !is_step(name);
      continue;
    }
    if (!has_wall && is_any(name, {"wall_time", "wall time", "_timestamp"})) {
      columns_[i].kind = column_kind::wall_time;
      has_wall = true;
      continue;
    }
    std::string key = name;
    if (tensorboard_ && iequals(name, "value")) {
      key = options_.value_tag.empty() ? tensorboard_csv_tag(name_) : options_.value_tag;
    } else if (auto sep = name.find(run_sep); sep != std::string::npos && sep > 0) {
      if (name.compare(0, sep, run_) != 0) continue;  // another run's column
      key = name.substr(sep + run_sep.size());
      const std::string low = lower(key);
      if (low.size() > 5 && (low.ends_with("__min") || low.ends_with("__max"))) {
        ++bounds;
        continue;
      }
    }
    tags.push_back(std::move(key));
    tag_columns.push_back(i);
  }
  if (!has_step)
    fail(
        "no 'step' column (the header must name one: step, _step, global_step, TensorBoard's "
        "Step or, one row per epoch, epoch; e.g. step,loss,grad_norm)");
  try {
    mapping_ = map_tags(tags, options_.mapping);
  } catch (const error& e) {
    fail(e.what());
  }
  schema_ = mapping_.schema;
  for (std::size_t j = 0; j < tags.size(); ++j) {
    if (!mapping_.targets[j]) continue;
    column& c = columns_[tag_columns[j]];
    const series_target& t = *mapping_.targets[j];
    c.kind = column_kind::value;
    c.role = t.role;
    c.index = schema_index(schema_, t);
  }
  const std::string at = where();
  if (epoch_step)
    warnings_.push_back(at +
                        "no step column: the epoch is the step (one row per epoch; the rules "
                        "look at 16-200 steps at a time, so a short log says little)");
  if (auto unused = mapping_.unused_summary("column"); !unused.empty())
    warnings_.push_back(at + unused +
                        " (known: loss, loss/<task>, grad_norm, grad_norm/<name>, lr, accuracy, "
                        "wall_time and their common TensorBoard/W&B spellings; map a column "
                        "with --loss, --grad-norm, --lr or --task NAME=COLUMN)");
  for (const auto& n : mapping_.notes) warnings_.push_back(at + n);
  if (bounds > 0)
    warnings_.push_back(at + std::to_string(bounds) +
                        " W&B __MIN/__MAX columns ignored (bucket bounds of the value column)");
  skip_empty_rows_ = tensorboard_ || !runs_.empty();
  row_line_ = line_;
}

bool csv_reader::read_cells() {
  for (;;) {
    std::string_view line;
    if (!read_line(line)) return false;
    if (trim(line).empty()) continue;  // blank lines (e.g. a trailing one) are skipped
    if (!split_plain(line, cells_)) {
      if (has_binary(line)) fail("binary data in a row");
      if (!split(line, cells_)) {
        if (unterminated_) return cut_short("an unterminated quote");
        fail("unterminated quote");
      }
    }
    if (cells_.size() != columns_.size()) {
      const std::string counts =
          std::to_string(cells_.size()) + (cells_.size() == 1 ? " cell" : " cells") +
          " but the header has " + std::to_string(columns_.size()) + " columns";
      if (unterminated_ && cells_.size() < columns_.size()) return cut_short(counts);
      fail("row has " + counts);
    }
    // The step is read here, without failing, so that a row read ahead can be compared with
    // the step before it; parse_row says what is wrong with it.
    const std::string_view cell = cells_[step_column_];
    row_step_cell_ = step_cell::empty;
    if (!cell.empty()) {
      auto [p, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), row_step_);
      row_step_cell_ =
          ec == std::errc{} && p == cell.data() + cell.size() ? step_cell::whole : step_cell::bad;
    }
    if (unterminated_) {
      // A log still being written ends in the middle of a row: a cell it cannot read is that
      // (parse_row writes only the sample it is given, so trying it changes nothing else).
      sample probe;
      try {
        parse_row(probe);
      } catch (const error& e) {
        const std::string_view what = e.what();
        return cut_short(what.substr(std::min(what.size(), where().size())));
      }
    }
    return true;
  }
}

std::string csv_reader::where() const { return name_ + ":" + std::to_string(line_) + ": "; }

bool csv_reader::cut_short(std::string_view reason) {
  cut_short_ = where() + "the last line, without a line end, is not a whole row (" +
               std::string(reason) + "): left out (a log still being written?)";
  return false;
}

bool csv_reader::next(sample& s) {
  if (ahead_error_) std::rethrow_exception(std::exchange(ahead_error_, nullptr));
  for (;;) {
    if (!have_ahead_ && !read_cells()) {
      add_reading_notes();
      return false;
    }
    have_ahead_ = false;
    if (!parse_row(s)) continue;
    if (!have_prev_step_ || s.step > prev_step_) break;
    // The steps went back: a run resumed from a checkpoint and appended to the same log. The
    // steps read before were analysed already (the reader streams), so the first rows of a
    // step are kept and the later attempt's rows are skipped until it passes them.
    if (!going_back_) {
      going_back_ = true;
      if (restarts_++ == 0) {
        first_restart_line_ = line_;
        first_restart_from_ = prev_step_;
        first_restart_to_ = s.step;
      }
    }
    ++rows_skipped_;
  }
  going_back_ = false;
  have_prev_step_ = true;
  prev_step_ = s.step;
  row_line_ = line_;
  // The rows right after it at the same step add their values: PyTorch Lightning's CSVLogger
  // writes what LearningRateMonitor logs at the start of a batch, the batch's training
  // metrics and the validation metrics on rows of their own at one step. An error in the row
  // read ahead waits for the next call, so this step is not lost to it.
  try {
    while (read_cells()) {
      if (row_step_cell_ != step_cell::whole || row_step_ != s.step) {
        have_ahead_ = true;
        break;
      }
      if (!parse_row(extra_)) continue;
      merge_row(s);
      row_line_ = line_;
    }
  } catch (const error&) {
    ahead_error_ = std::current_exception();
  }
  include_lr_in_range(s);
  return true;
}

void csv_reader::merge_row(sample& s) {
  for (const column& c : columns_) {
    if (c.kind != column_kind::value) continue;
    const auto* from = value_slot(extra_, c.role, c.index);
    if (from == nullptr || !*from) continue;
    auto* to = value_slot(s, c.role, c.index);
    if (!*to) {
      *to = *from;
      continue;
    }
    if (**to == **from || (std::isnan(**to) && std::isnan(**from))) continue;
    // Another value for a step already read (a run that logged a step again, or one that logs
    // each micro-batch at its optimizer step): the first one read is kept, as for steps that
    // go back.
    if (values_skipped_++ == 0) {
      first_skipped_line_ = line_;
      first_skipped_ = "step " + std::to_string(s.step) + " has another value of '" + c.name +
                       "' (" + exact_text(**from) + " after " + exact_text(**to) + ")";
    }
  }
  if (s.wall_time == 0) s.wall_time = extra_.wall_time;
  // The param groups' LRs are logged together, on one row (LearningRateMonitor).
  if (!s.lr_min && !s.lr_max) {
    s.lr_min = extra_.lr_min;
    s.lr_max = extra_.lr_max;
  }
}

void csv_reader::add_reading_notes() {
  const auto at = [&](std::int64_t line) { return name_ + ":" + std::to_string(line) + ": "; };
  if (restarts_ > 0) {
    std::string n = at(first_restart_line_) + "the steps go back from " +
                    std::to_string(first_restart_from_) + " to " +
                    std::to_string(first_restart_to_) +
                    " (a resumed run appended to the log?): rows at steps already read are "
                    "skipped, the first ones read for a step are kept";
    const std::string rows =
        std::to_string(rows_skipped_) + (rows_skipped_ == 1 ? " row" : " rows") + " skipped";
    n += restarts_ == 1 ? " (" + rows + ")"
                        : " (" + std::to_string(restarts_) + " times, " + rows + " in all)";
    reading_notes_.push_back(std::move(n));
  }
  if (values_skipped_ > 0)
    reading_notes_.push_back(
        at(first_skipped_line_) + first_skipped_ +
        ": the first value read for a step is kept (a run that logged a step again, or one "
        "logging each micro-batch at its optimizer step?)" +
        (values_skipped_ > 1 ? " (" + std::to_string(values_skipped_) + " values in all)"
                             : std::string()));
  if (!cut_short_.empty()) reading_notes_.push_back(std::exchange(cut_short_, {}));
  restarts_ = rows_skipped_ = values_skipped_ = 0;
}

bool csv_reader::parse_row(sample& s) {
  if (row_step_cell_ == step_cell::bad)
    fail("step '" + std::string(cells_[step_column_]) + "' is not a whole number");
  s.step = row_step_;
  s.wall_time = 0;
  s.loss.reset();
  s.grad_norm.reset();
  s.lr.reset();
  s.lr_min.reset();
  s.lr_max.reset();
  s.accuracy.reset();
  s.first_non_finite_param = -1;
  s.task_losses.assign(schema_.tasks.size(), std::nullopt);
  s.param_grad_norms.assign(schema_.params.size(), std::nullopt);
  s.task_weights.clear();
  s.task_grad_norms.clear();

  bool have_value = false;
  for (std::size_t i = 0; i < cells_.size(); ++i) {
    const column& c = columns_[i];
    const std::string_view cell = cells_[i];
    if (c.kind > column_kind::wall_time || cell.empty()) continue;  // step, ignored
    double v = 0;
    if (!parse_double(cell, v))
      fail("column '" + c.name + "': '" + std::string(cell.substr(0, 40)) + "' is not a number");
    if (c.kind == column_kind::wall_time) {
      s.wall_time = v;
      continue;
    }
    have_value = true;
    put_value(s, c.role, c.index, v);
  }
  if (skip_empty_rows_ && !have_value) return false;  // another run's step (W&B)
  if (row_step_cell_ == step_cell::empty) fail("the step cell is empty");
  return true;
}

}  // namespace losslens
