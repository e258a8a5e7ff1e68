#include "tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <filesystem>
#include <queue>

#include "core/json.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8_stream.h"

namespace ssm {
namespace {

// Far above any released tokenizer (about 256k ids); bounds the per-id tables, which one stray huge id
// would otherwise size in gigabytes.
constexpr int64_t kMaxVocab = 1 << 24;

// A token's id as the file gives it: an integer in [0, kMaxVocab). Checked before get<int64_t>(), which
// is undefined for a float such as 1e77.
int32_t file_token_id(const Json& id, const std::string& source, const std::string& token) {
  SSM_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < kMaxVocab,
            "'{}': token '{}' has a bad id {} (ids are integers from 0 to {})", source, token, json_excerpt(id),
            kMaxVocab - 1);
  return int32_t(id.get<int64_t>());
}
// GPT-2's pre-tokenizer pattern: Hugging Face's ByteLevel default.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's reversible map from bytes to printable characters (bytes_to_unicode in openai/gpt-2).
struct ByteMap {
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[324];  // every mapped code point is below 324
  ByteMap() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t(-1));
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_cp[b] = printable ? uint32_t(b) : uint32_t(256 + n++);
      cp_to_byte[byte_to_cp[b]] = int16_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// A vocabulary token's text (byte-level characters) back to bytes. As Hugging Face's ByteLevel decoder:
// a token with any character outside the map decodes to its own UTF-8 bytes.
std::string byte_level_decode(const std::string& token) {
  const ByteMap& map = byte_map();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const Utf8Char c = utf8_next(token.data() + i, token.size() - i);
    if (!c.valid || c.cp >= 324 || map.cp_to_byte[c.cp] < 0) return token;
    out.push_back(char(map.cp_to_byte[c.cp]));
    i += c.len;
  }
  return out;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  for (char c : bytes) utf8_append(out, byte_map().byte_to_cp[uint8_t(c)]);
  return out;
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = 0x6A09E667F3BCC909ull ^ (uint64_t(n) * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * kMul;
  }
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h | 1;  // 0 marks an empty cache slot
}

std::string json_type_name(const Json& node) {
  if (node.is_null()) return "null";
  if (node.is_object() && node.contains("type") && node["type"].is_string()) return node["type"].get<std::string>();
  return json_excerpt(node);
}

std::atomic<uint64_t> next_serial{1};

// Per-thread PCRE2 state: match data and a JIT stack large enough for very long runs of one class.
struct PcreThread {
  pcre2_match_data* match_data;
  pcre2_match_context* context;
  pcre2_jit_stack* stack;
  PcreThread() {
    match_data = pcre2_match_data_create(32, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, nullptr);
    if (!match_data || !context || !stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~PcreThread() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match_data);
  }
};
PcreThread& pcre_thread() {
  thread_local PcreThread state;
  return state;
}

}  // namespace

struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }

  // Calls on_piece for every match and every non-empty gap between matches, in order ("Isolated").
  template <class F>
  void split(std::string_view text, F&& on_piece) const {
    PcreThread& state = pcre_thread();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0, last = 0;
    while (pos < text.size()) {
      const int rc = jit ? pcre2_jit_match(code, subject, text.size(), pos, 0, state.match_data, state.context)
                         : pcre2_match(code, subject, text.size(), pos, 0, state.match_data, state.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof message);
        fail("pre-tokenizer regex failed at byte {}: {}", pos, reinterpret_cast<const char*>(message));
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
      const size_t start = ovector[0], end = ovector[1];
      if (end <= start) {  // an empty match splits nothing: step over one character
        pos = start + (start < text.size() ? utf8_next(text.data() + start, text.size() - start).len : 1);
        continue;
      }
      if (start > last) on_piece(text.substr(last, start - last));
      on_piece(text.substr(start, end - start));
      last = pos = end;
    }
    if (last < text.size()) on_piece(text.substr(last));
  }
};

// (left id, right id) -> (rank, merged id), open addressing.
struct BpeTokenizer::MergeTable {
  struct Slot {
    uint64_t key = ~0ull;
    int32_t rank = 0, merged = 0;
  };
  std::vector<Slot> slots;
  uint64_t mask = 0;
  explicit MergeTable(size_t count) {
    size_t capacity = 16;
    while (capacity < count * 2 + 2) capacity *= 2;
    slots.resize(capacity);
    mask = capacity - 1;
  }
  static uint64_t key_of(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  static uint64_t slot_of(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 20; }
  // Keeps the first (lowest) rank of a pair listed twice.
  void insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
    const uint64_t key = key_of(a, b);
    for (uint64_t i = slot_of(key) & mask;; i = (i + 1) & mask) {
      if (slots[i].key == key) return;
      if (slots[i].key == ~0ull) {
        slots[i] = Slot{key, rank, merged};
        return;
      }
    }
  }
  const Slot* find(int32_t a, int32_t b) const {
    const uint64_t key = key_of(a, b);
    for (uint64_t i = slot_of(key) & mask;; i = (i + 1) & mask) {
      if (slots[i].key == key) return &slots[i];
      if (slots[i].key == ~0ull) return nullptr;
    }
  }
};

// Per-thread cache of merged pieces (piece bytes -> ids) for the tokenizer that used it last. A slot holds
// keys of up to 16 bytes and single-token results inline, so most hits touch one cache line.
struct BpeTokenizer::Cache {
  struct Slot {
    uint64_t hash = 0;  // 0: empty
    uint64_t key[2];    // the key, zero-padded, when key_size <= 16; else key[0] is its offset in `keys`
    uint16_t key_size;
    uint16_t ids_size;
    int32_t ids;  // the id itself when ids_size == 1; else the offset in `ids`
  };
  static constexpr size_t kMaxPieceBytes = 128, kMaxEntries = size_t(1) << 20;
  uint64_t owner = 0;
  std::vector<Slot> slots;
  size_t used = 0;
  std::string keys;
  std::vector<int32_t> ids;

  struct Key {
    std::string_view bytes;
    uint64_t hash;
    uint64_t padded[2] = {0, 0};
    explicit Key(std::string_view piece) : bytes(piece), hash(hash_bytes(piece.data(), piece.size())) {
      if (piece.size() <= 16) std::memcpy(padded, piece.data(), piece.size());
    }
  };

  void reset(uint64_t new_owner) {
    owner = new_owner;
    slots.assign(size_t(1) << 12, Slot{});
    used = 0;
    keys.clear();
    ids.clear();
  }
  bool matches(const Slot& slot, const Key& key) const {
    if (slot.hash != key.hash || slot.key_size != key.bytes.size()) return false;
    if (key.bytes.size() <= 16) return slot.key[0] == key.padded[0] && slot.key[1] == key.padded[1];
    return std::memcmp(keys.data() + slot.key[0], key.bytes.data(), key.bytes.size()) == 0;
  }
  // Appends the cached ids of `key` to out; false when absent.
  bool lookup(const Key& key, std::vector<int32_t>& out) const {
    const size_t mask = slots.size() - 1;
    for (size_t i = key.hash & mask;; i = (i + 1) & mask) {
      const Slot& slot = slots[i];
      if (slot.hash == 0) return false;
      if (!matches(slot, key)) continue;
      if (slot.ids_size == 1) out.push_back(slot.ids);
      else out.insert(out.end(), ids.begin() + slot.ids, ids.begin() + slot.ids + slot.ids_size);
      return true;
    }
  }
  void insert(const Key& key, const int32_t* values, size_t count) {
    if (used >= kMaxEntries || keys.size() > (size_t(1) << 30) || ids.size() > (size_t(1) << 30)) reset(owner);
    if ((used + 1) * 2 > slots.size()) grow();
    Slot slot;
    slot.hash = key.hash;
    slot.key_size = uint16_t(key.bytes.size());
    slot.ids_size = uint16_t(count);
    if (key.bytes.size() <= 16) {
      slot.key[0] = key.padded[0];
      slot.key[1] = key.padded[1];
    } else {
      slot.key[0] = keys.size();
      slot.key[1] = 0;
      keys.append(key.bytes);
    }
    if (count == 1) {
      slot.ids = values[0];
    } else {
      slot.ids = int32_t(ids.size());
      ids.insert(ids.end(), values, values + count);
    }
    place(slot);
    ++used;
  }
  void place(const Slot& slot) {
    const size_t mask = slots.size() - 1;
    size_t i = slot.hash & mask;
    while (slots[i].hash != 0) i = (i + 1) & mask;
    slots[i] = slot;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots);
    slots.assign(old.size() * 2, Slot{});
    for (const Slot& slot : old)
      if (slot.hash != 0) place(slot);
  }
};

BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer::BpeTokenizer(const Json& json, const std::string& source) : serial_(next_serial++) {
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  try {
    SSM_CHECK(json.is_object() && json.contains("model") && json["model"].is_object(),
              "'{}' is not a tokenizer.json (no \"model\" object)", source);
    const Json& model = json["model"];
    std::string model_type = model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>()
                             : model.contains("merges")                            ? "BPE"
                                                                                   : "unknown";
    SSM_CHECK(model_type == "BPE", "'{}': unsupported tokenizer model type '{}' (ssm.cpp supports byte-level BPE)",
              source, model_type);
    for (const char* option : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(option) && model[option].is_string() && !model[option].get<std::string>().empty())
        fail("'{}': unsupported BPE option {}='{}' (ssm.cpp supports byte-level BPE)", source, option,
             model[option].get<std::string>());
    }
    ignore_merges_ = model.value("ignore_merges", false);

    // Normalizer.
    const Json normalizer = json.value("normalizer", Json());
    auto accept_normalizer = [&](const Json& node) {
      const std::string type = json_type_name(node);
      SSM_CHECK(type == "NFC", "'{}': unsupported normalizer type '{}' (ssm.cpp supports none or NFC)", source, type);
      nfc_ = true;
    };
    if (!normalizer.is_null()) {
      if (json_type_name(normalizer) == "Sequence") {
        for (const Json& node : normalizer.at("normalizers")) accept_normalizer(node);
      } else {
        accept_normalizer(normalizer);
      }
    }

    // Pre-tokenizer: Split regexes, then ByteLevel.
    const Json pre = json.value("pre_tokenizer", Json());
    std::vector<Json> steps;
    if (json_type_name(pre) == "Sequence") {
      for (const Json& node : pre.at("pretokenizers")) steps.push_back(node);
    } else {
      steps.push_back(pre);
    }
    bool byte_level = false;
    for (const Json& step : steps) {
      const std::string type = json_type_name(step);
      SSM_CHECK(!byte_level, "'{}': unsupported pre-tokenizer: '{}' after ByteLevel (ssm.cpp supports Split "
                "regexes followed by ByteLevel)", source, type);
      if (type == "ByteLevel") {
        byte_level = true;
        add_prefix_space_ = step.value("add_prefix_space", false);
        if (step.value("use_regex", true)) patterns_.push_back(kGpt2Pattern);
      } else if (type == "Split") {
        const Json& pattern = step.at("pattern");
        const std::string behavior = step.value("behavior", "Isolated");
        SSM_CHECK(behavior == "Isolated", "'{}': unsupported Split pre-tokenizer behavior '{}' (ssm.cpp supports "
                  "Isolated)", source, behavior);
        SSM_CHECK(!step.value("invert", false), "'{}': unsupported Split pre-tokenizer with invert=true", source);
        if (pattern.contains("Regex")) {
          patterns_.push_back(pattern["Regex"].get<std::string>());
        } else if (pattern.contains("String")) {
          std::string quoted = "\\Q" + pattern["String"].get<std::string>() + "\\E";
          patterns_.push_back(quoted);
        } else {
          fail("'{}': Split pre-tokenizer without a Regex or String pattern: {}", source, json_excerpt(pattern));
        }
      } else {
        fail("'{}': unsupported pre-tokenizer type '{}' (ssm.cpp supports ByteLevel, optionally after Split)",
             source, type);
      }
    }
    SSM_CHECK(byte_level, "'{}': unsupported pre-tokenizer type '{}' (ssm.cpp supports byte-level BPE: a ByteLevel "
              "pre-tokenizer)", source, json_type_name(pre));

    // Decoder.
    const Json decoder = json.value("decoder", Json());
    auto check_decoder = [&](const Json& node) {
      const std::string type = json_type_name(node);
      SSM_CHECK(type == "ByteLevel", "'{}': unsupported decoder type '{}' (ssm.cpp supports ByteLevel)", source, type);
    };
    if (!decoder.is_null()) {
      if (json_type_name(decoder) == "Sequence") {
        for (const Json& node : decoder.at("decoders")) check_decoder(node);
      } else {
        check_decoder(decoder);
      }
    }

    // Vocabulary.
    const Json& vocab = model.at("vocab");
    SSM_CHECK(vocab.is_object(), "'{}': model.vocab is not an object", source);
    std::unordered_map<std::string, int32_t> id_of_text;
    id_of_text.reserve(vocab.size() * 2);
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id = file_token_id(it.value(), source, it.key());
      id_of_text.emplace(it.key(), id);
      max_id = std::max<int64_t>(max_id, id);
    }
    std::vector<AddedToken> added;
    if (json.contains("added_tokens") && json["added_tokens"].is_array()) {
      for (const Json& node : json["added_tokens"]) {
        AddedToken token;
        token.content = node.at("content").get<std::string>();
        token.id = file_token_id(node.at("id"), source, token.content);
        token.special = node.value("special", false);
        token.single_word = node.value("single_word", false);
        token.lstrip = node.value("lstrip", false);
        token.rstrip = node.value("rstrip", false);
        token.normalized = node.value("normalized", !token.special);
        max_id = std::max<int64_t>(max_id, token.id);
        added.push_back(token);
      }
    }
    SSM_CHECK(max_id >= 0, "'{}': the vocabulary is empty", source);
    token_bytes_.assign(size_t(max_id + 1), std::string());
    has_token_.assign(size_t(max_id + 1), 0);
    special_.assign(size_t(max_id + 1), 0);
    for (const auto& [text, id] : id_of_text) {
      std::string bytes = byte_level_decode(text);
      id_of_bytes_.emplace(bytes, id);
      token_bytes_[size_t(id)] = std::move(bytes);
      has_token_[size_t(id)] = 1;
    }
    const ByteMap& map = byte_map();
    for (int b = 0; b < 256; ++b) {
      std::string text;
      utf8_append(text, map.byte_to_cp[b]);
      const auto it = id_of_text.find(text);
      if (it != id_of_text.end()) byte_id_[b] = it->second;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const auto it = id_of_text.find(model["unk_token"].get<std::string>());
      if (it != id_of_text.end()) unk_id_ = it->second;
    }

    // Merges, by rank.
    const Json merges = model.value("merges", Json::array());
    SSM_CHECK(merges.is_array(), "'{}': model.merges is not an array", source);
    merges_ = std::make_unique<MergeTable>(merges.size());
    int32_t rank = 0;
    for (const Json& merge : merges) {
      std::string left, right;
      if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        SSM_CHECK(space != std::string::npos && text.find(' ', space + 1) == std::string::npos,
                  "'{}': merge {} ('{}') is not two tokens separated by one space", source, rank, text);
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else {
        SSM_CHECK(merge.is_array() && merge.size() == 2, "'{}': merge {} is neither \"a b\" nor [a, b]: {}", source,
                  rank, json_excerpt(merge));
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      }
      const auto a = id_of_text.find(left), b = id_of_text.find(right), ab = id_of_text.find(left + right);
      SSM_CHECK(a != id_of_text.end() && b != id_of_text.end(), "'{}': merge {} ('{}' '{}') uses a token that is not "
                "in the vocabulary", source, rank, left, right);
      SSM_CHECK(ab != id_of_text.end(), "'{}': merge {} ('{}' '{}') makes '{}', which is not in the vocabulary",
                source, rank, left, right, left + right);
      merges_->insert(a->second, b->second, rank, ab->second);
      ++rank;
    }
    num_merges_ = size_t(rank);

    // Added tokens: their content is their text; split into raw/normalised and with/without specials.
    std::vector<AddedToken> raw_all, raw_plain, norm_all, norm_plain;
    for (const AddedToken& token : added) {
      token_bytes_[size_t(token.id)] = token.content;
      has_token_[size_t(token.id)] = 1;
      special_[size_t(token.id)] = token.special;
      id_of_added_.emplace(token.content, token.id);
      const bool normalized = token.normalized && nfc_;  // without a normaliser both passes see the same text
      (normalized ? norm_all : raw_all).push_back(token);
      if (!token.special) (normalized ? norm_plain : raw_plain).push_back(token);
    }
    raw_all_ = AddedTokenMatcher(raw_all);
    raw_plain_ = AddedTokenMatcher(raw_plain);
    norm_all_ = AddedTokenMatcher(norm_all);
    norm_plain_ = AddedTokenMatcher(norm_plain);
  } catch (const Json::exception& e) {
    fail("'{}': malformed tokenizer.json: {}", source, e.what());
  }

  // Regexes.
  for (const std::string& pattern : patterns_) {
    auto regex = std::make_unique<Regex>();
    int error = 0;
    PCRE2_SIZE offset = 0;
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!regex->code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      fail("'{}': cannot compile the pre-tokenizer regex '{}': {} at offset {}", source, pattern,
           reinterpret_cast<const char*>(message), size_t(offset));
    }
    regex->jit = pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE) == 0;
    regexes_.push_back(std::move(regex));
  }
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::string& path) {
  const Json json = read_json_file(path);
  return std::make_unique<BpeTokenizer>(json, path);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_impl(text, true, out);
  return out;
}

std::vector<int32_t> BpeTokenizer::encode_ordinary(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_impl(text, false, out);
  return out;
}

void BpeTokenizer::encode_impl(std::string_view text, bool with_special, std::vector<int32_t>& out) const {
  const AddedTokenMatcher& raw = with_special ? raw_all_ : raw_plain_;
  raw.split(
      text, [&](std::string_view piece) { encode_normalized(piece, with_special, out); },
      [&](int32_t id) { out.push_back(id); });
}

void BpeTokenizer::encode_normalized(std::string_view text, bool with_special, std::vector<int32_t>& out) const {
  thread_local Cache cache;
  if (cache.owner != serial_) cache.reset(serial_);
  std::string normalized;
  if (nfc_ && nfc_normalize_if_needed(text, &normalized)) text = normalized;
  const AddedTokenMatcher& matcher = with_special ? norm_all_ : norm_plain_;
  matcher.split(
      text,
      [&](std::string_view piece) {
        if (add_prefix_space_ && piece[0] != ' ') {
          std::string prefixed(1, ' ');
          prefixed.append(piece);
          pre_tokenize(prefixed, 0, out, cache);
        } else {
          pre_tokenize(piece, 0, out, cache);
        }
      },
      [&](int32_t id) { out.push_back(id); });
}

void BpeTokenizer::pre_tokenize(std::string_view text, size_t regex_index, std::vector<int32_t>& out,
                                Cache& cache) const {
  if (regex_index == regexes_.size()) {
    bpe(text, out, cache);
    return;
  }
  regexes_[regex_index]->split(text, [&](std::string_view piece) { pre_tokenize(piece, regex_index + 1, out, cache); });
}

void BpeTokenizer::bpe(std::string_view piece, std::vector<int32_t>& out, Cache& cache) const {
  if (piece.size() == 1) {
    const int32_t id = byte_id_[uint8_t(piece[0])];
    if (id >= 0) out.push_back(id);
    else if (unk_id_ >= 0) out.push_back(unk_id_);
    return;
  }
  if (piece.size() > Cache::kMaxPieceBytes) {
    if (!ignore_merges_ || !whole_word(piece, out)) merge_word(piece, out);
    return;
  }
  const Cache::Key key(piece);
  if (cache.lookup(key, out)) return;
  const size_t before = out.size();
  if (!ignore_merges_ || !whole_word(piece, out)) merge_word(piece, out);
  cache.insert(key, out.data() + before, out.size() - before);
}

// ignore_merges: a piece that is a vocabulary token as a whole is that token.
bool BpeTokenizer::whole_word(std::string_view piece, std::vector<int32_t>& out) const {
  const auto it = id_of_bytes_.find(piece);
  if (it == id_of_bytes_.end()) return false;
  out.push_back(it->second);
  return true;
}

void BpeTokenizer::merge_word(std::string_view piece, std::vector<int32_t>& out) const {
  constexpr size_t kLinearMax = 256;
  int32_t ids_small[kLinearMax], ranks_small[kLinearMax], merged_small[kLinearMax];
  size_t n = 0;
  if (piece.size() > kLinearMax) {
    std::vector<int32_t> ids;
    ids.reserve(piece.size());
    for (char c : piece) {
      const int32_t id = byte_id_[uint8_t(c)];
      if (id >= 0) ids.push_back(id);
      else if (unk_id_ >= 0) ids.push_back(unk_id_);
    }
    merge_long_word(ids);
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  int32_t* ids = ids_small;
  for (char c : piece) {
    const int32_t id = byte_id_[uint8_t(c)];
    if (id >= 0) ids[n++] = id;
    else if (unk_id_ >= 0) ids[n++] = unk_id_;
  }
  // The lowest-ranked adjacent pair merges first (leftmost on ties), until no pair has a merge.
  int32_t* ranks = ranks_small;
  int32_t* merged = merged_small;
  auto lookup = [&](size_t i) {
    const MergeTable::Slot* slot = merges_->find(ids[i], ids[i + 1]);
    ranks[i] = slot ? slot->rank : INT32_MAX;
    merged[i] = slot ? slot->merged : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) lookup(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == INT32_MAX) break;
    ids[best] = merged[best];
    // Drop symbol best+1 and pair best+1's entries; pairs best-1 and best change.
    std::memmove(ids + best + 1, ids + best + 2, (n - best - 2) * sizeof(int32_t));
    if (best + 2 < n) {
      std::memmove(ranks + best + 1, ranks + best + 2, (n - best - 3) * sizeof(int32_t));
      std::memmove(merged + best + 1, merged + best + 2, (n - best - 3) * sizeof(int32_t));
    }
    --n;
    if (best + 1 < n) lookup(best);
    if (best > 0) lookup(best - 1);
  }
  out.insert(out.end(), ids, ids + n);
}

// The same merge order for long pieces, in O(n log n): a heap of candidate pairs ordered by (rank, position),
// over a linked list of symbols; stale candidates are skipped when popped.
void BpeTokenizer::merge_long_word(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  std::vector<int32_t> prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = int32_t(i) - 1;
    next[i] = i + 1 < n ? int32_t(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || next[size_t(pos)] < 0) return;
    const int32_t right = next[size_t(pos)];
    const MergeTable::Slot* slot = merges_->find(ids[size_t(pos)], ids[size_t(right)]);
    if (slot) heap.push(Candidate{slot->rank, pos, ids[size_t(pos)], ids[size_t(right)], slot->merged});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const size_t pos = size_t(c.pos);
    if (!alive[pos] || next[pos] < 0) continue;
    const size_t right = size_t(next[pos]);
    if (ids[pos] != c.left || ids[right] != c.right) continue;
    ids[pos] = c.merged;
    alive[right] = 0;
    next[pos] = next[right];
    if (next[right] >= 0) prev[size_t(next[right])] = int32_t(pos);
    push(prev[pos]);
    push(int32_t(pos));
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[size_t(i)]) ids[w++] = ids[size_t(i)];
  ids.resize(w);
}

std::string_view BpeTokenizer::token_bytes(int32_t id) const {
  SSM_CHECK(id >= 0 && id < vocab_size(), "token id {} is outside the vocabulary (size {})", id, vocab_size());
  SSM_CHECK(has_token_[size_t(id)], "token id {} is not used by the tokenizer", id);
  return token_bytes_[size_t(id)];
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view token) const {
  if (const auto it = id_of_added_.find(token); it != id_of_added_.end()) return it->second;
  if (const auto it = id_of_bytes_.find(token); it != id_of_bytes_.end()) return it->second;
  // Also accept the byte-level spelling of a vocabulary token ("Ġthe").
  for (const auto& [text, id] : id_of_bytes_)
    if (byte_level_encode(text) == token) return id;
  return std::nullopt;
}

void set_special_ids(Tokenizer& tokenizer, const std::string& config_path) {
  std::error_code error;
  if (std::filesystem::exists(config_path, error)) {
    const Json config = read_json_file(config_path);
    auto lookup = [&](const char* key) -> std::optional<int32_t> {
      if (!config.is_object() || !config.contains(key)) return std::nullopt;
      const Json& value = config[key];
      std::string content;
      if (value.is_string()) content = value.get<std::string>();
      else if (value.is_object() && value.contains("content") && value["content"].is_string())
        content = value["content"].get<std::string>();
      else return std::nullopt;
      return tokenizer.token_id(content);
    };
    const auto bos = lookup("bos_token"), eos = lookup("eos_token");
    if (bos || eos) {
      tokenizer.set_bos_id(bos);
      tokenizer.set_eos_id(eos);
      return;
    }
  }
  const auto end = tokenizer.token_id("<|endoftext|>");
  const bool special_end = end && tokenizer.is_special(*end);
  tokenizer.set_bos_id(special_end ? end : std::nullopt);
  tokenizer.set_eos_id(special_end ? end : std::nullopt);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::exists(path, error)) {
    if (path == "byte" || path == "bytes") return make_byte_tokenizer();
    fail("tokenizer '{}' does not exist (give a tokenizer.json, a folder holding one, or 'byte')", path);
  }
  fs::path file = path;
  if (fs::is_directory(file, error)) {
    file /= "tokenizer.json";
    SSM_CHECK(fs::exists(file, error), "'{}' holds no tokenizer.json (a model without one can use the byte "
              "tokenizer: --tokenizer byte)", path);
  }
  auto tokenizer = BpeTokenizer::from_file(file.string());
  set_special_ids(*tokenizer, (file.parent_path() / "tokenizer_config.json").string());
  return tokenizer;
}

}  // namespace ssm
