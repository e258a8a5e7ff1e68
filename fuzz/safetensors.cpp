// SafetensorsFile::open over arbitrary bytes: a validated file or one ssm::Error. When it opens, every
// tensor is read end to end, so a header that lets a tensor reach past the mapping is an ASan report.
#include <numeric>

#include "core/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::fuzz::expect_error_or_success([&] {
    const auto file = ssm::SafetensorsFile::open(ssm::fuzz::as_file(data, size));
    for (const std::string& name : file.names()) {
      const ssm::Tensor& tensor = file.get(name);
      const auto* bytes = static_cast<const uint8_t*>(tensor.raw());
      volatile uint8_t sum = std::accumulate(bytes, bytes + tensor.nbytes(), uint8_t(0));
      (void)sum;
    }
  });
  return 0;
}
