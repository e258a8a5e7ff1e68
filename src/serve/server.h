// ssm serve: an OpenAI-compatible HTTP server (cpp-httplib) in front of the scheduler.
//   POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with "stream")
//   GET /v1/models, GET /health, GET /metrics (Prometheus text), POST /tokenize, POST /detokenize
// Every error is OpenAI's error object with a 4xx/5xx status; with an API key set, every endpoint
// but /health wants "Authorization: Bearer KEY".
#pragma once
#include <memory>
#include <string>

#include "model/language_model.h"
#include "serve/request.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port
  std::string api_key;  // empty: no authentication
  std::string model_name = "model";
  RequestLimits limits;                               // vocab is the model's
  std::shared_ptr<const ChatTemplate> chat_template;  // null: chat prompts use the plain role format
  SchedulerOptions scheduler;
  size_t max_body_bytes = 8 << 20;
};

class Server {
 public:
  Server(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options);
  ~Server();
  // Binds the listening socket (ssm::Error when it cannot); returns the port.
  int bind();
  // Serves until stop(), on the socket bind() opened.
  void run();
  // Ends what is queued or running, then stops listening; run() returns.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ssm::serve
