// Shared by the fuzz targets: the input as a file (the parsers read paths), and the rule that a parser
// either succeeds or throws ssm::Error. Any other exception escapes, and libFuzzer reports it as a crash.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace ssm::fuzz {

// A file of the source tree (relative path): under $SSM_FUZZ_SOURCE_DIR when set (the targets packed by
// scripts/fuzz-pack.sh, run elsewhere), else in the tree they were built from.
inline std::string source_file(const std::string& relative) {
  const char* root = std::getenv("SSM_FUZZ_SOURCE_DIR");
  return std::string(root && *root ? root : SSM_SOURCE_DIR) + "/" + relative;
}

// The bytes as a file that the parsers open by path: one memfd per process, rewritten for each input.
inline std::string as_file(const uint8_t* data, size_t size) {
  static const int fd = ::memfd_create("ssm-fuzz-input", 0);
  if (fd < 0 || ::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != ssize_t(size)) std::abort();
  return "/proc/self/fd/" + std::to_string(fd);
}

// `parse()` succeeds or throws one of `Expected` (bad input, reported as such); any other exception
// escapes to libFuzzer, which reports it as a crash.
template <class... Expected, class F>
void expect_errors_or_success(F&& parse) {
  if constexpr (sizeof...(Expected) == 0) {
    parse();
  } else {
    [&]<class First, class... Rest>() {
      try {
        expect_errors_or_success<Rest...>(parse);
      } catch (const First&) {
      }
    }.template operator()<Expected...>();
  }
}

template <class F>
void expect_error_or_success(F&& parse) {
  expect_errors_or_success<ssm::Error>(parse);
}

}  // namespace ssm::fuzz
