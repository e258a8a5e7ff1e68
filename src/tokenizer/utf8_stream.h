// UTF-8 helpers: strict decoding of one character (no overlongs, surrogates or values past U+10FFFF), and
// Utf8Stream, which turns token bytes arriving one token at a time into printable text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ssm {

struct Utf8Char {
  uint32_t cp = 0;     // the code point when valid
  uint8_t len = 0;     // bytes consumed: the character's length, the invalid maximal subpart (>= 1), or
                       // all of the truncated bytes
  bool valid = false;  // a whole, valid character
  bool truncated = false;  // the bytes end inside what is so far a valid character (more may follow)
};

// Decodes the character at the start of [p, p + n); n >= 1.
Utf8Char utf8_next(const char* p, size_t n);
void utf8_append(std::string& out, uint32_t cp);
bool utf8_valid(std::string_view text);

// Feed token bytes as they arrive; get back only complete, valid UTF-8 characters. Bytes that cannot be
// part of a valid character come back as U+FFFD, one per maximal invalid subpart (as Python's
// errors="replace" and WHATWG decoders do); the start of a character split across tokens waits for the
// rest. flush() at the end returns what is left (an unfinished character becomes U+FFFD).
class Utf8Stream {
 public:
  std::string feed(std::string_view bytes);
  std::string flush();
  bool has_pending() const { return !pending_.empty(); }

 private:
  std::string pending_;  // at most 3 bytes: a character begun but not finished
};

}  // namespace ssm
