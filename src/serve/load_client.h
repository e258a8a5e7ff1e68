// One streamed completion as a load-test client sees it: when each token arrived, and where the server
// says its time went. The request asks for logprobs (0: no alternatives) so that every chunk says how
// many tokens it carries, and for usage, whose event carries the server's "timings".
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
  // The server's "timings" (seconds): from reading the request to the scheduler taking it up (its
  // parse included), and from there to the first token chosen.
  double server_queued = 0, server_prompt = 0;
};

// POSTs `body` (a /v1/completions request; "stream", "stream_options" and "logprobs" are set here) to
// host:port.
StreamTiming stream_completion(const std::string& host, int port, nlohmann::json body);

}  // namespace ssm::serve
