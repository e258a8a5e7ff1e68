// ssm::Tokenizer: text <-> token ids. Two implementations:
//   - BpeTokenizer (bpe_tokenizer.h): byte-level BPE from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX,
//     Mamba, Llama-3-style Split+ByteLevel), loaded by load_tokenizer();
//   - ByteTokenizer (byte_tokenizer.h): 256 byte ids plus specials, for models without a tokenizer.json,
//     made by make_byte_tokenizer().
// Text is bytes: encode() accepts any bytes, including invalid UTF-8, and decode(encode(x)) == x (but for the
// spaces that an added token with lstrip/rstrip swallows, as in Hugging Face's, and NFC's changes). decode()
// returns bytes too, which may end inside a UTF-8 character when the ids stop mid-character (use
// Utf8Stream, utf8_stream.h, to print text as tokens arrive).
// encode()/decode() are const and thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ssm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Added and special tokens found in the text become their ids (matched before any other splitting).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Like encode(), but special tokens in the text are plain text (tiktoken's encode_ordinary); added
  // tokens that are not special still apply.
  virtual std::vector<int32_t> encode_ordinary(std::string_view text) const = 0;

  // The bytes of one token; throws ssm::Error for an id outside [0, vocab_size()) or an unused id.
  virtual std::string_view token_bytes(int32_t id) const = 0;
  // One past the largest id (ids in the model vocabulary and added tokens).
  virtual int32_t vocab_size() const = 0;
  // The id of a token given as its text (an added/special token's content such as "<|endoftext|>", or
  // the bytes of a vocabulary token); nullopt if there is none.
  virtual std::optional<int32_t> token_id(std::string_view token) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // "bpe" or "byte".
  virtual std::string kind() const = 0;

  // The concatenated bytes of the tokens; throws ssm::Error naming a bad id.
  virtual std::string decode(std::span<const int32_t> ids) const {
    std::string out;
    for (int32_t id : ids) out.append(token_bytes(id));
    return out;
  }

  // Beginning/end-of-sequence ids when known (tokenizer_config.json, or the tokenizer's own
  // conventions); the model loader may override them from config.json / generation_config.json.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  void set_bos_id(std::optional<int32_t> id) { bos_id_ = checked(id, "bos"); }
  void set_eos_id(std::optional<int32_t> id) { eos_id_ = checked(id, "eos"); }

 protected:
  std::optional<int32_t> checked(std::optional<int32_t> id, const char* what) const {
    if (id) SSM_CHECK(*id >= 0 && *id < vocab_size(), "{} token id {} is outside the vocabulary (size {})", what, *id,
                      vocab_size());
    return id;
  }
  std::optional<int32_t> bos_id_, eos_id_;
};

// `path` is a tokenizer.json or a folder holding one (a model folder). A folder's tokenizer_config.json,
// if present, supplies bos_token/eos_token. The literal path "byte" (when no such file exists) gives
// make_byte_tokenizer(). Throws ssm::Error naming the file for a missing file, bad JSON or an
// unsupported tokenizer (the message names the unsupported type).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);
// What load_tokenizer does with a folder's tokenizer_config.json: bos_token/eos_token (strings or
// {"content": ...}) set the tokenizer's bos and eos ids; without the file or the keys, <|endoftext|> is
// both when the vocabulary has it as a special token (GPT-2's and GPT-NeoX's).
void set_special_ids(Tokenizer& tokenizer, const std::string& config_path);

// Byte tokenizer: ids 0..255 are the bytes, ids 256.. are `specials` in order (matched in text by
// encode(), leftmost-longest). bos/eos are the named specials when given (empty: none).
// Defaults: one special "<|endoftext|>" (id 256), which is both bos and eos.
std::unique_ptr<Tokenizer> make_byte_tokenizer(const std::vector<std::string>& specials = {"<|endoftext|>"},
                                               const std::string& bos_token = "<|endoftext|>",
                                               const std::string& eos_token = "<|endoftext|>");

}  // namespace ssm
