#include "tokenizer/utf8_stream.h"

namespace ssm {

Utf8Char utf8_next(const char* p, size_t n) {
  Utf8Char out;
  const uint8_t b0 = uint8_t(p[0]);
  if (b0 < 0x80) {
    out.cp = b0;
    out.len = 1;
    out.valid = true;
    return out;
  }
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  uint32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    out.len = 1;  // a continuation byte or a byte that never appears in UTF-8
    return out;
  }
  for (int i = 1; i < need; ++i) {
    if (size_t(i) >= n) {
      out.len = uint8_t(i);
      out.truncated = true;
      return out;
    }
    const uint8_t b = uint8_t(p[i]);
    const uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      out.len = uint8_t(i);
      return out;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  out.cp = cp;
  out.len = uint8_t(need);
  out.valid = true;
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool utf8_valid(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (uint8_t(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const Utf8Char c = utf8_next(text.data() + i, text.size() - i);
    if (!c.valid) return false;
    i += c.len;
  }
  return true;
}

namespace {
constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
}

std::string Utf8Stream::feed(std::string_view bytes) {
  std::string input;
  std::string_view text = bytes;
  if (!pending_.empty()) {
    input = pending_ + std::string(bytes);
    pending_.clear();
    text = input;
  }
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const uint8_t b = uint8_t(text[i]);
    if (b < 0x80) {
      out.push_back(char(b));
      ++i;
      continue;
    }
    const Utf8Char c = utf8_next(text.data() + i, text.size() - i);
    if (c.valid) {
      out.append(text.substr(i, c.len));
    } else if (c.truncated) {
      pending_.assign(text.substr(i));
      break;
    } else {
      out.append(kReplacement);
    }
    i += c.len;
  }
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  if (!pending_.empty()) out = kReplacement;  // a character that never finished: one maximal subpart
  pending_.clear();
  return out;
}

}  // namespace ssm
