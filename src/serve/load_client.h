// One streamed completion as a load-test client sees it: when each token arrived, and where the server
// says its time went. The request asks for logprobs (0: no alternatives) so that every chunk says how
// many tokens it carries, and for usage, whose event carries the server's "timings".
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace httplib {
class Client;
}

namespace ssm::serve {

struct StreamTiming {
  bool ok = false;
  std::string error;                // what went wrong when not ok
  std::vector<double> token_times;  // seconds from sending the request to each token's chunk
  // The server's "timings" (seconds): from reading the request to the scheduler taking it up (its
  // parse included), and from there to the first token chosen.
  double server_queued = 0, server_prompt = 0;
};

// One client of the server, whose connection stays open from one request to the next, as the OpenAI
// SDKs keep theirs (a new one is opened when the server has closed it).
class LoadClient {
 public:
  LoadClient(const std::string& host, int port);
  ~LoadClient();
  LoadClient(const LoadClient&) = delete;
  LoadClient& operator=(const LoadClient&) = delete;

  // POSTs `body` (a /v1/completions request; "stream", "stream_options" and "logprobs" are set here).
  StreamTiming stream_completion(nlohmann::json body);

 private:
  std::unique_ptr<httplib::Client> client_;
};

}  // namespace ssm::serve
