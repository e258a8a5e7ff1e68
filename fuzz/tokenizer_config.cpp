// set_special_ids, as load_tokenizer applies a folder's tokenizer_config.json: the seed tokenizer.json
// (loaded once) with an arbitrary tokenizer_config.json (bos_token / eos_token as strings or objects).
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<ssm::Tokenizer> tokenizer =
      ssm::load_tokenizer(ssm::fuzz::source_file("fuzz/tokenizer.json"));
  const std::string config = ssm::fuzz::as_file(data, size);
  ssm::fuzz::expect_error_or_success([&] {
    ssm::set_special_ids(*tokenizer, config);
    if (tokenizer->bos_id()) tokenizer->token_bytes(*tokenizer->bos_id());
    if (tokenizer->eos_id()) tokenizer->token_bytes(*tokenizer->eos_id());
  });
  return 0;
}
