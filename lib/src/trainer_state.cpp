#include "losslens/trainer_state.hpp"

#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "losslens/error.hpp"
#include "losslens/tag_series.hpp"

namespace losslens {
namespace {

using json = nlohmann::json;

/// Python's json module writes a non-finite float as the bare words NaN, Infinity and
/// -Infinity, which JSON does not allow: outside strings they become strings that start with
/// a NUL (escaped, so no string of the file can be mistaken for one), read back by number_of.
std::string quote_non_finite(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 64);
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size())
        out += text[++i];
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    bool replaced = false;
    for (std::string_view word : {"NaN", "Infinity", "-Infinity"})
      if (text.compare(i, word.size(), word) == 0) {
        out += "\"\\u0000";
        out += word;
        out += '"';
        i += word.size() - 1;
        replaced = true;
        break;
      }
    if (!replaced) out += c;
  }
  return out;
}

/// A logged number: a JSON number, or one of the words quote_non_finite turned into strings.
bool number_of(const json& v, double& out) {
  if (v.is_number()) {
    out = v.get<double>();
    return true;
  }
  if (!v.is_string()) return false;
  const auto& s = v.get_ref<const std::string&>();
  if (s.empty() || s[0] != '\0') return false;
  const std::string_view word = std::string_view(s).substr(1);
  if (word == "NaN")
    out = std::numeric_limits<double>::quiet_NaN();
  else if (word == "Infinity")
    out = std::numeric_limits<double>::infinity();
  else if (word == "-Infinity")
    out = -std::numeric_limits<double>::infinity();
  else
    return false;
  return true;
}

}  // namespace

std::vector<std::string> trainer_state_log::key_names() const { return tag_names(keys); }

bool is_json_name(std::string_view file_name) {
  return file_name.size() > 5 && file_name.substr(file_name.size() - 5) == ".json";
}

trainer_state_log read_trainer_state(std::istream& in, const std::string& name) {
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  json doc;
  const std::string quoted = quote_non_finite(text);
  try {
    doc = json::parse(quoted);
  } catch (const json::parse_error& e) {
    // The Trainer rewrites the file at each checkpoint: read meanwhile, it ends early.
    // Where the parser stopped, to the end: nothing, or the start of a NaN or an Infinity.
    const std::string_view rest =
        std::string_view(quoted).substr(std::min(quoted.size(), e.byte > 0 ? e.byte - 1 : 0));
    const bool ends_early =
        !quoted.empty() && (e.byte >= quoted.size() || std::string_view("NaN").starts_with(rest) ||
                            std::string_view("Infinity").starts_with(rest));
    throw error(name + ": not JSON (" + e.what() + ")" +
                (ends_early ? "; it ends early: a checkpoint still being saved? read it again "
                              "once the Trainer has written it"
                            : ""));
  } catch (const json::exception& e) {
    throw error(name + ": not JSON (" + e.what() + ")");
  }
  if (!doc.is_object() || !doc.contains("log_history") || !doc["log_history"].is_array())
    throw error(name + ": no 'log_history' list: not a Hugging Face Trainer's trainer_state.json");
  trainer_state_log log;
  log.name = name;
  if (auto g = doc.find("global_step"); g != doc.end() && g->is_number_integer())
    log.global_step = g->get<std::int64_t>();
  tag_series_builder keys;
  std::size_t summaries = 0;
  const json& history = doc["log_history"];
  for (std::size_t i = 0; i < history.size(); ++i) {
    const json& entry = history[i];
    const std::string where = name + ": log_history[" + std::to_string(i) + "]: ";
    if (!entry.is_object()) throw error(where + "not an object");
    ++log.entries;
    // The entry written when training ends: run totals (train_loss is the mean over the run).
    if (entry.contains("train_runtime") || entry.contains("total_flos")) {
      ++summaries;
      continue;
    }
    const auto step = entry.find("step");
    if (step == entry.end() || !step->is_number_integer())
      throw error(where + "no whole 'step' (every entry the Trainer logs has one)");
    for (const auto& [key, value] : entry.items()) {
      double v = 0;
      // `epoch` is on every entry, training and evaluation alike: the position, not a series.
      if (key == "step" || key == "epoch" || !number_of(value, v)) continue;
      keys.series(key).points.push_back({step->get<std::int64_t>(), 0.0, v});
    }
  }
  log.keys = keys.take();
  // The Trainer logs the mean of the losses since its last entry, and the grad norm of the
  // entry's own step.
  if (auto every = doc.find("logging_steps");
      every != doc.end() && every->is_number_integer() && every->get<std::int64_t>() > 1)
    log.notes.push_back("logging_steps " + std::to_string(every->get<std::int64_t>()) +
                        ": each entry's loss is the mean over the steps since the one before "
                        "(a one-batch spike shows that many times smaller), its grad_norm that "
                        "of its own step");
  if (summaries > 0)
    log.notes.push_back(
        "the entry written when training ended (train_loss, the mean over the run, "
        "train_runtime...) is not a step: left out");
  one_point_per_step(log.keys, log.notes);
  return log;
}

trainer_state_log read_trainer_state(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path + ": cannot open");
  return read_trainer_state(in, path);
}

}  // namespace losslens
