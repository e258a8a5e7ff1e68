// read_token_file (`--data`: the .tok format and .npy ids) over arbitrary bytes.
#include "fuzz_util.h"
#include "train/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::fuzz::expect_error_or_success([&] {
    const ssm::TokenFile file = ssm::read_token_file(ssm::fuzz::as_file(data, size));
    for (int32_t id : file.ids)
      if (id < 0 || (file.vocab_size > 0 && id >= file.vocab_size)) std::abort();  // must have been refused
  });
  return 0;
}
