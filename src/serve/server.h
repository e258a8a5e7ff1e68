// ssm serve: an OpenAI-compatible HTTP server (cpp-httplib) in front of the scheduler.
//   POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with "stream")
//   GET /v1/models, GET /health (503 while the model loads), GET /metrics (Prometheus text),
//   POST /tokenize, POST /detokenize, POST /slots/{id}?action=save|restore (slots.h)
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
  RequestLimits limits;  // vocab is the model's
  SchedulerOptions scheduler;
  size_t max_body_bytes = 8 << 20;
  // A generation request that has not finished this long after it arrived ends with an error: 504
  // when nothing was sent yet, else an error event in its stream (0: no limit).
  double request_timeout_seconds = 600;
  std::string slot_save_path;  // the folder of POST /slots/{id}?action=save|restore (empty: off)
};

class Server {
 public:
  // A server without its model yet: it can listen while the model loads, answering /health with 503
  // {"status": "loading"} and the model's endpoints with 503, until ready().
  explicit Server(ServerOptions options);
  // A server with its model, ready at once.
  Server(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options,
         std::shared_ptr<const ChatTemplate> chat_template = nullptr);
  ~Server();
  // Starts serving the model with its tokenizer (both must outlive the server) and chat template
  // (null: the plain role format). Once only.
  void ready(const LanguageModel& model, const Tokenizer& tokenizer,
             std::shared_ptr<const ChatTemplate> chat_template = nullptr);
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
