// ModelConfig::from_json over arbitrary JSON: every architecture reader (the seeds hold one config per
// model_type), then the summaries that walk the layer plan.
#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ssm::Json json = ssm::Json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;  // not JSON: read_json_file's error, not the readers'
  ssm::fuzz::expect_error_or_success([&] {
    const ssm::ModelConfig config = ssm::ModelConfig::from_json(json, "config.json");
    config.describe();
    config.layer_pattern();
  });
  return 0;
}
