#include "serve/load_client.h"

#include <httplib.h>

#include <chrono>

namespace ssm::serve {

StreamTiming stream_completion(const std::string& host, int port, nlohmann::json body) {
  using Clock = std::chrono::steady_clock;
  body["stream"] = true;
  body["logprobs"] = 0;
  httplib::Client client(host, port);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  StreamTiming timing;
  bool done = false;
  std::string buffer;
  const Clock::time_point start = Clock::now();
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const double now = std::chrono::duration<double>(Clock::now() - start).count();
    buffer.append(data, size);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      const std::string event = buffer.substr(0, end);
      if (event == "data: [DONE]") {
        done = true;
        continue;
      }
      const auto json = nlohmann::json::parse(event.substr(event.rfind("data: ", 0) == 0 ? 6 : 0), nullptr, false);
      if (json.is_discarded() || json.contains("error")) {
        timing.error = json.is_discarded() ? "an event that is not JSON" : json["error"].value("message", "error");
        continue;
      }
      for (const auto& choice : json.value("choices", nlohmann::json::array()))
        if (choice.contains("logprobs") && choice["logprobs"].is_object())
          timing.token_times.insert(timing.token_times.end(), choice["logprobs"]["tokens"].size(), now);
    }
    return true;
  };
  const httplib::Result res = client.send(req);
  if (!res)
    timing.error = "connection: " + httplib::to_string(res.error());
  else if (res->status != 200)
    timing.error = "HTTP " + std::to_string(res->status) + ": " + res->body;
  else if (timing.error.empty() && !done)
    timing.error = "the stream ended before [DONE]";
  timing.ok = timing.error.empty();
  return timing;
}

}  // namespace ssm::serve
