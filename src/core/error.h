// ssm::Error: the one exception type for bad input and failed I/O. The CLI prints its message and
// exits non-zero; messages name the file, tensor, key or flag at fault.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ssm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace ssm

// Throws ssm::Error with a formatted message when `cond` is false.
#define SSM_CHECK(cond, ...)         \
  do {                               \
    if (!(cond)) ::ssm::fail(__VA_ARGS__); \
  } while (0)
