// Holds back generated text that might be the start of a stop string, so streaming never prints
// part of one; once a stop string appears, everything from it on is dropped.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ssm {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // Adds text (whole UTF-8 characters); returns what is safe to print now.
  std::string push(std::string_view text);
  // At the end of generation without a stop: the text still held back.
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace ssm
