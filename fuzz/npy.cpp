// read_npy over arbitrary bytes: a tensor or one ssm::Error.
#include "core/npy.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::fuzz::expect_error_or_success([&] { ssm::read_npy(ssm::fuzz::as_file(data, size)); });
  return 0;
}
