#pragma once
// The message of the losslens::error a call throws, for tests that compare error texts.

#include <string>
#include <utility>

#include "losslens/error.hpp"

namespace losslens::testing {

/// Calls fn() and returns what() of the losslens::error it throws, or "no error" when it
/// returns. Other exceptions pass through (a test then fails on them as they are).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const losslens::error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace losslens::testing
