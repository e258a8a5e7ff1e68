#include "tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <utility>
#include <vector>

#include "tokenizer/utf8_stream.h"

namespace ssm {
namespace {

struct CccRange {
  uint32_t first, last;
  uint8_t ccc;
};

#include "tokenizer/unicode_nfc_data.inc"

// Hangul syllables compose and decompose algorithmically (Unicode 15.0, section 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// Bytes of invalid UTF-8 travel through the algorithm as these values: ccc 0, no decomposition, no
// composition, so they block composition and reordering like any other starter.
constexpr uint32_t kByteMarker = 0x110000;

bool is_unsafe(uint32_t cp) {
  if (cp < 0x300) return false;
  const auto* end = std::end(kUnsafe);
  const auto* it = std::upper_bound(std::begin(kUnsafe), end, cp,
                                    [](uint32_t value, const uint32_t(&range)[2]) { return value < range[0]; });
  return it != std::begin(kUnsafe) && cp <= (*(it - 1))[1];
}

uint8_t ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto* it = std::upper_bound(std::begin(kCcc), std::end(kCcc), cp,
                                    [](uint32_t value, const CccRange& range) { return value < range.first; });
  if (it == std::begin(kCcc)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const uint32_t* find_decomposition(uint32_t cp) {
  if (cp < 0xC0) return nullptr;
  const auto* it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), cp,
                                    [](const uint32_t(&entry)[3], uint32_t value) { return entry[0] < value; });
  return it != std::end(kDecomp) && (*it)[0] == cp ? *it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const uint32_t* entry = find_decomposition(cp);
  if (!entry) {
    out.push_back(cp);
    return;
  }
  decompose(entry[1], out);
  if (entry[2] >> 1) decompose(entry[2] >> 1, out);
}

struct ComposeTable {
  std::vector<std::pair<uint64_t, uint32_t>> pairs;  // (first << 21 | second) -> composite, sorted
  ComposeTable() {
    for (const auto& entry : kDecomp)
      if (entry[2] & 1) pairs.emplace_back((uint64_t(entry[1]) << 21) | (entry[2] >> 1), entry[0]);
    std::sort(pairs.begin(), pairs.end());
  }
};

// The primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  static const ComposeTable table;
  const uint64_t key = (uint64_t(a) << 21) | b;
  const auto it = std::lower_bound(table.pairs.begin(), table.pairs.end(), std::make_pair(key, uint32_t(0)));
  return it != table.pairs.end() && it->first == key ? it->second : 0;
}

// Full NFC of one segment: decode, decompose, order canonically, compose, encode.
void normalize_segment(std::string_view text, std::string& out) {
  std::vector<uint32_t> cps;
  cps.reserve(text.size() + 8);
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = utf8_next(text.data() + i, text.size() - i);
    if (c.valid) {
      decompose(c.cp, cps);
    } else {
      for (size_t k = 0; k < c.len; ++k) cps.push_back(kByteMarker + uint8_t(text[i + k]));
    }
    i += c.len;
  }
  // Canonical ordering: a stable sort by combining class of each run of non-starters.
  std::vector<uint8_t> classes(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) classes[i] = cps[i] >= kByteMarker ? 0 : ccc_of(cps[i]);
  for (size_t i = 1; i < cps.size(); ++i) {
    if (classes[i] == 0) continue;
    for (size_t j = i; j > 0 && classes[j - 1] > classes[j]; --j) {
      std::swap(classes[j - 1], classes[j]);
      std::swap(cps[j - 1], cps[j]);
    }
  }
  // Canonical composition (the algorithm of UAX #15's sample code).
  if (!cps.empty()) {
    size_t starter = 0, write = 1;
    int last_class = classes[0] == 0 ? 0 : 256;  // a leading non-starter never composes
    for (size_t read = 1; read < cps.size(); ++read) {
      const uint32_t c = cps[read];
      const int c_class = classes[read];
      const uint32_t composite = cps[starter] < kByteMarker && c < kByteMarker ? compose(cps[starter], c) : 0;
      if (composite && (last_class < c_class || last_class == 0)) {
        cps[starter] = composite;
        continue;
      }
      if (c_class == 0) starter = write;
      last_class = c_class;
      cps[write++] = c;
    }
    cps.resize(write);
  }
  for (uint32_t c : cps) {
    if (c >= kByteMarker) out.push_back(char(c - kByteMarker));
    else utf8_append(out, c);
  }
}

}  // namespace

bool nfc_normalize_if_needed(std::string_view text, std::string* out) {
  const size_t n = text.size();
  size_t i = 0, last_safe = 0, copied = 0;
  bool changed = false;
  while (i < n) {
    const uint8_t b = uint8_t(text[i]);
    if (b < 0x80) {  // ASCII: always safe
      last_safe = i++;
      continue;
    }
    const Utf8Char c = utf8_next(text.data() + i, n - i);
    if (!c.valid || !is_unsafe(c.cp)) {  // invalid bytes block like starters
      last_safe = i;
      i += c.len;
      continue;
    }
    // An unsafe character: normalise from the last safe character (it may compose with what follows)
    // up to the next safe one; nothing outside can interact with the inside.
    size_t end = i + c.len;
    while (end < n) {
      if (uint8_t(text[end]) < 0x80) break;
      const Utf8Char next = utf8_next(text.data() + end, n - end);
      if (!next.valid || !is_unsafe(next.cp)) break;
      end += next.len;
    }
    const size_t start = std::min(last_safe, i);
    if (!changed) {
      out->clear();
      out->reserve(n + 16);
      changed = true;
    }
    out->append(text.substr(copied, start - copied));
    normalize_segment(text.substr(start, end - start), *out);
    copied = end;
    i = last_safe = end;
  }
  if (changed) out->append(text.substr(copied));
  return changed;
}

std::string nfc_normalize(std::string_view text) {
  std::string out;
  if (!nfc_normalize_if_needed(text, &out)) out.assign(text);
  return out;
}

}  // namespace ssm
