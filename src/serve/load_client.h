// One streamed completion as a load-test client sees it: when each token arrived. The request asks
// for logprobs (0: no alternatives) so that every chunk says how many tokens it carries.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ssm::serve {

struct StreamTiming {
  bool ok = false;
  std::string error;                // what went wrong when not ok
  std::vector<double> token_times;  // seconds from sending the request to each token's chunk
};

// POSTs `body` (a /v1/completions request; "stream" and "logprobs" are set here) to host:port.
StreamTiming stream_completion(const std::string& host, int port, nlohmann::json body);

}  // namespace ssm::serve
