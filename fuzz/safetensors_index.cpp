// read_safetensors_index over arbitrary bytes: a map of plain shard names or one ssm::Error.
#include "core/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::fuzz::expect_error_or_success([&] {
    for (const auto& [name, shard] : ssm::read_safetensors_index(ssm::fuzz::as_file(data, size)))
      if (shard.empty() || shard.find('/') != std::string::npos) std::abort();  // must have been refused
  });
  return 0;
}
