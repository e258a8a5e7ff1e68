// load_tokenizer on a folder: the seed tokenizer.json beside an arbitrary tokenizer_config.json
// (bos_token / eos_token as strings or objects).
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string folder = [] {
    std::filesystem::copy_file(ssm::fuzz::source_file("fuzz/tokenizer.json"),
                               ssm::fuzz::scratch_folder() / "tokenizer.json");
    return ssm::fuzz::scratch_folder().string();
  }();
  ssm::fuzz::write_file(ssm::fuzz::scratch_folder() / "tokenizer_config.json", data, size);
  ssm::fuzz::expect_error_or_success([&] {
    const auto tokenizer = ssm::load_tokenizer(folder);
    if (tokenizer->bos_id()) tokenizer->token_bytes(*tokenizer->bos_id());
    if (tokenizer->eos_id()) tokenizer->token_bytes(*tokenizer->eos_id());
  });
  return 0;
}
