#pragma once
/// \file error.hpp
/// The exception type thrown by losslens setup APIs.

#include <stdexcept>
#include <string>

namespace losslens {

/// Thrown by setup APIs (parsing, opening, configuring) with a message that says what went
/// wrong and what to do about it. Never thrown into a training loop.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace losslens
