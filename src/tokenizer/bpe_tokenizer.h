// BpeTokenizer: byte-level BPE from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX / Pythia / Mamba,
// and Llama-3-style Sequence[Split(Regex), ByteLevel]).
//
// Pipeline of encode(), as Hugging Face tokenizers does it:
//   1. added tokens with normalized=false (usually the special ones) are found in the raw text;
//   2. the rest is normalised (NFC where the file asks; `normalizer: null` does nothing);
//   3. added tokens with normalized=true are found in the normalised text;
//   4. the rest is split into pre-tokens: each Split regex of the pre-tokenizer in turn, then the
//      ByteLevel regex (the GPT-2 pattern unless use_regex is false); matches and the gaps between them
//      are both pieces ("Isolated"); regexes run through PCRE2 with JIT and Unicode properties;
//   5. each piece is merged by BPE (the lowest-ranked merge first, leftmost on ties), through a cache.
//
// Supported: model "BPE" (merges as "a b" strings or [a, b] arrays, ignore_merges, unk_token),
// normalizer null / NFC / Sequence of those, pre-tokenizer ByteLevel or Sequence of Split (Regex or String,
// behavior Isolated) and ByteLevel, decoder null / ByteLevel. Anything else is refused with an ssm::Error
// naming the file and the unsupported type or option. BPE dropout (a training-time option) is ignored.
//
// Invalid UTF-8 in the input (which a Hugging Face or tiktoken tokenizer cannot be given at all: their
// input is a string): the regexes run with PCRE2_MATCH_INVALID_UTF, where invalid bytes never match, so
// each run of invalid bytes between matches becomes a piece of its own and is merged byte-level like
// any other piece. decode(encode(bytes)) == bytes always holds.
//
// Decoding: a vocabulary token decodes through the ByteLevel byte<->character map; an added token decodes
// to its content as written (Hugging Face's ByteLevel decoder would send characters such as 'é' in an
// added token through the byte map; the content is what encode() matched, so this keeps round trips).
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/json.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/tokenizer.h"

namespace ssm {

class BpeTokenizer final : public Tokenizer {
 public:
  // `source` names the file in error messages.
  BpeTokenizer(const Json& json, const std::string& source);
  ~BpeTokenizer() override;
  static std::unique_ptr<BpeTokenizer> from_file(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_ordinary(std::string_view text) const override;
  std::string_view token_bytes(int32_t id) const override;
  int32_t vocab_size() const override { return int32_t(token_bytes_.size()); }
  std::optional<int32_t> token_id(std::string_view token) const override;
  bool is_special(int32_t id) const override { return id >= 0 && id < vocab_size() && special_[size_t(id)]; }
  std::string kind() const override { return "bpe"; }

  // How many merges the model has, and the regexes in use (for diagnostics and tests).
  size_t num_merges() const { return num_merges_; }
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Regex;
  struct MergeTable;
  struct Cache;

  void encode_impl(std::string_view text, bool with_special, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view text, bool with_special, std::vector<int32_t>& out) const;
  void pre_tokenize(std::string_view text, size_t regex_index, std::vector<int32_t>& out, Cache& cache) const;
  void bpe(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const;
  bool whole_word(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_word(std::string_view piece, std::vector<int32_t>& out) const;
  void merge_long_word(std::vector<int32_t>& ids) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  uint64_t serial_;  // distinguishes this tokenizer's entries in the thread-local caches
  std::vector<std::string> token_bytes_;
  std::vector<uint8_t> has_token_, special_;
  StringMap id_of_bytes_;  // model vocabulary, by token bytes
  StringMap id_of_added_;  // added tokens, by content
  int32_t byte_id_[256];                                  // the token of each single byte (-1: none)
  int32_t unk_id_ = -1;
  bool ignore_merges_ = false;
  bool nfc_ = false;
  bool add_prefix_space_ = false;
  size_t num_merges_ = 0;
  std::unique_ptr<MergeTable> merges_;
  std::vector<std::string> patterns_;
  std::vector<std::unique_ptr<Regex>> regexes_;
  AddedTokenMatcher raw_all_, raw_plain_, norm_all_, norm_plain_;  // *_plain_: without special tokens
};

}  // namespace ssm
