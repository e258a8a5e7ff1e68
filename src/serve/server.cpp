#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "serve/api_error.h"
#include "serve/responses.h"
#include "serve/slots.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve {

using nlohmann::json;

namespace {

// Counts a request in flight for as long as the last copy lives (a stream's provider holds one).
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& count) : count_(&count, [](std::atomic<int>* c) { --*c; }) { ++count; }

 private:
  std::shared_ptr<std::atomic<int>> count_;
};

void send_error(httplib::Response& res, const ApiError& error) {
  res.status = error.status;
  res.set_content(dump(error.body()), "application/json");
}

void send_json(httplib::Response& res, const json& body) { res.set_content(dump(body), "application/json"); }

// A failed job's error: a timeout (504) or the server's own failure (500, 503 when it is stopping).
ApiError job_error(const Job::Update& update) {
  return ApiError(update.error_status, update.error, {}, update.error_status == 504 ? "timeout" : "", "server_error");
}

bool authorized(const httplib::Request& req, const std::string& key) {
  const std::string given = req.get_header_value("Authorization");
  const std::string expected = "Bearer " + key;
  // Compares every byte whatever the first difference: the time taken says nothing about the key.
  unsigned char diff = given.size() != expected.size();
  for (size_t i = 0; i < std::min(given.size(), expected.size()); ++i) diff |= given[i] ^ expected[i];
  return diff == 0;
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions options);
  // What exists once the model is loaded.
  struct Served {
    Served(const LanguageModel& model, const Tokenizer& tokenizer, std::shared_ptr<const ChatTemplate> chat_template,
           const ServerOptions& options, Metrics& metrics)
        : model(model),
          tokenizer(tokenizer),
          chat_template(std::move(chat_template)),
          limits(options.limits),
          scheduler(model, tokenizer, options.scheduler, metrics) {
      limits.vocab = model.config().vocab_size;
    }
    const LanguageModel& model;
    const Tokenizer& tokenizer;
    const std::shared_ptr<const ChatTemplate> chat_template;
    RequestLimits limits;
    Scheduler scheduler;
  };
  // The loaded model's parts; a 503 while it loads.
  Served& served() const;
  void routes();
  // Runs a handler, turning what it throws into OpenAI's error object.
  httplib::Server::Handler guarded(std::function<void(const httplib::Request&, httplib::Response&)> handler);
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void stream(httplib::Response& res, std::shared_ptr<Job> job, ResponseContext context, InFlight counted);

  ServerOptions options;
  Metrics metrics;
  httplib::Server http;
  std::unique_ptr<Served> served_storage;
  std::atomic<Served*> served_ready = nullptr;  // set once ready() has built served_storage
  std::atomic<int64_t> next_id = 0;
  socket_t listen_socket = INVALID_SOCKET;
  // Generation requests not yet answered: stop() lets them end (httplib cuts a stream short once stopped).
  std::atomic<int> in_flight = 0;
  // httplib's stop() acts only while its loop runs: stop() must know whether run() has begun or ended.
  std::mutex run_mutex;
  bool run_called = false, stopped = false;
  std::atomic<bool> run_returned = false;
  const int64_t started =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
};

Server::Impl::Impl(ServerOptions opts) : options(std::move(opts)) {
  // Each streamed or waiting request holds a thread: room for every slot and the whole queue.
  const size_t threads = size_t(options.scheduler.slots + options.scheduler.queue_limit + 4);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(options.max_body_bytes);
  // A stream is small writes (the headers, then an event per token): each goes out at once, not held
  // by Nagle's algorithm until the client acknowledges the one before (accepted sockets inherit it).
  http.set_tcp_nodelay(true);
  // Clients keep their connection for the next request (the OpenAI SDKs do): httplib's default of 5
  // requests a connection would make every fifth one connect again.
  http.set_keep_alive_max_count(1000);
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_socket = sock;  // the listening socket: bind() raises its backlog
  });
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    ++metrics.requests;
    if (options.api_key.empty() || req.path == "/health" || authorized(req, options.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res,
               ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", {}, "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Statuses httplib sets itself (404, 413, ...) get an error object too.
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                : res.status == 413
                                    ? fmt::format("the request body is larger than {} bytes", options.max_body_bytes)
                                    : fmt::format("HTTP error {}", res.status);
    send_error(res, ApiError(res.status, message, {}, res.status == 404 ? "not_found" : ""));
  });
  http.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    if (res.status >= 400) ++metrics.errors;
  });
  routes();
}

Server::Impl::Served& Server::Impl::served() const {
  Served* s = served_ready.load();
  if (!s) throw ApiError(503, "the model is still loading; retry shortly", {}, "model_loading", "server_error");
  return *s;
}

httplib::Server::Handler Server::Impl::guarded(
    std::function<void(const httplib::Request&, httplib::Response&)> handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    try {
      handler(req, res);
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const ssm::Error& e) {  // bad input the layers below found (an unused token id, ...)
      send_error(res, ApiError(400, e.what()));
    } catch (const std::exception& e) {
      send_error(res, ApiError(500, e.what(), {}, {}, "server_error"));
    }
  };
}

void Server::Impl::routes() {
  http.Get("/health", [this](const auto&, auto& res) {
    const bool loaded = served_ready.load() != nullptr;
    res.status = loaded ? 200 : 503;
    send_json(res, {{"status", loaded ? "ok" : "loading"}});
  });
  http.Get("/v1/models", guarded([this](const auto&, auto& res) {
             const json model_entry = {
                 {"id", options.model_name}, {"object", "model"}, {"created", started}, {"owned_by", "ssm.cpp"}};
             send_json(res, {{"object", "list"}, {"data", json::array({model_entry})}});
           }));
  http.Get("/metrics", guarded([this](const auto&, auto& res) {
             res.set_content(metrics.prometheus(), "text/plain; version=0.0.4");
           }));
  http.Post("/tokenize", guarded([this](const auto& req, auto& res) {
              send_json(res, {{"tokens", parse_tokenize(parse_body(req.body), served().tokenizer)}});
            }));
  http.Post("/detokenize", guarded([this](const auto& req, auto& res) {
              const Tokenizer& tokenizer = served().tokenizer;
              Utf8Stream utf8;  // ids may end inside a character: what cannot be text becomes U+FFFD
              std::string text = utf8.feed(tokenizer.decode(parse_detokenize(parse_body(req.body), tokenizer)));
              text += utf8.flush();
              send_json(res, {{"content", text}});
            }));
  http.Post(R"(/slots/(\d+))", guarded([this](const auto& req, auto& res) {
              Served& s = served();
              int64_t slot = -1;  // an id too long for int64 is no slot
              const std::string id = req.matches[1].str();
              std::from_chars(id.data(), id.data() + id.size(), slot);
              const SlotFolder folder{options.slot_save_path, options.model_name, options.scheduler.slots};
              send_json(res, slot_action(s.scheduler, s.model, folder, slot, req.get_param_value("action"),
                                         parse_body(req.body)));
            }));
  http.Post("/v1/completions", guarded([this](const auto& req, auto& res) { generate(req, res, false); }));
  http.Post("/v1/chat/completions", guarded([this](const auto& req, auto& res) { generate(req, res, true); }));
}

void Server::Impl::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const InFlight counted(in_flight);
  const auto arrived = Job::Clock::now();
  Served& s = served();
  const json body = parse_body(req.body);
  GenerationRequest request = chat ? parse_chat(body, s.tokenizer, s.limits, s.chat_template.get())
                                   : parse_completion(body, s.tokenizer, s.limits);
  const bool streamed = request.stream;
  const int64_t prompt_tokens = int64_t(request.prompt.size());
  const bool logprobs = request.logprobs;
  const auto deadline = options.request_timeout_seconds > 0
                            ? arrived + std::chrono::duration_cast<Job::Clock::duration>(
                                            std::chrono::duration<double>(options.request_timeout_seconds))
                            : Job::Clock::time_point::max();
  auto job = std::make_shared<Job>(std::move(request), deadline, arrived);
  const auto submitted = s.scheduler.submit(job);
  if (submitted == Scheduler::Submitted::queue_full)
    throw ApiError(429, "the server is busy: too many requests are waiting; retry later", {}, "queue_full",
                   "rate_limit_error");
  if (submitted == Scheduler::Submitted::stopped)
    throw ApiError(503, "the server is shutting down", {}, {}, "server_error");
  const ResponseContext context{
      .chat = chat,
      .id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++),
      .model = options.model_name,
      .created =
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
      .tokenizer = &s.tokenizer,
      .logprobs = logprobs};
  if (streamed) return stream(res, job, context, counted);
  const Job::Update done = job->wait();
  if (!done.error.empty()) throw job_error(done);
  res.set_content(completion(context, done, prompt_tokens), "application/json");
}

void Server::Impl::stream(httplib::Response& res, std::shared_ptr<Job> job, ResponseContext context, InFlight counted) {
  res.set_header("Cache-Control", "no-cache");
  const int64_t prompt_tokens = int64_t(job->request().prompt.size());
  const bool include_usage = job->request().include_usage;
  std::vector<ChoiceStream> sent(size_t(job->choices()));
  // What one update holds and sends (in one write); their memory kept from update to update.
  Job::Update update;
  std::string events;
  auto provider = [job, context, prompt_tokens, include_usage, counted, sent, update, events](
                      size_t, httplib::DataSink& sink) mutable {
    job->take(update, std::chrono::milliseconds(500));
    events.clear();
    for (size_t i = 0; i < update.choices.size() && update.error.empty(); ++i)
      append_chunks(events, context, int64_t(i), update.choices[i], sent[i]);
    if (update.finished) {
      // An error after the stream began can only be told inside it, as OpenAI's API does.
      if (!update.error.empty())
        events += "data: " + dump(job_error(update).body()) + "\n\n";
      else if (include_usage)
        append_usage_chunk(events, context, prompt_tokens, update);
      events += "data: [DONE]\n\n";
    }
    const bool ok = events.empty() || sink.write(events.data(), events.size());
    if (ok && update.finished) sink.done();
    if (!ok) job->cancel();  // the client went away: its sequences leave the batch at the next step
    return ok;
  };
  res.set_chunked_content_provider("text/event-stream", std::move(provider), [job](bool success) {
    if (!success) job->cancel();
  });
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::Server(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options,
               std::shared_ptr<const ChatTemplate> chat_template)
    : Server(std::move(options)) {
  ready(model, tokenizer, std::move(chat_template));
}

void Server::ready(const LanguageModel& model, const Tokenizer& tokenizer,
                   std::shared_ptr<const ChatTemplate> chat_template) {
  const std::lock_guard lock(impl_->run_mutex);
  SSM_CHECK(!impl_->served_storage, "Server::ready: the server has its model already");
  if (impl_->stopped) return;
  impl_->served_storage =
      std::make_unique<Impl::Served>(model, tokenizer, std::move(chat_template), impl_->options, impl_->metrics);
  impl_->served_ready = impl_->served_storage.get();
}

Server::~Server() { stop(); }

int Server::bind() {
  const auto& o = impl_->options;
  const int port =
      o.port == 0 ? impl_->http.bind_to_any_port(o.host) : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  SSM_CHECK(port > 0, "cannot listen on {}:{}", o.host, o.port);
  // httplib listens with a backlog of 5: clients connecting at once beyond it wait for their SYN's
  // retransmission, a second or more each. Listening again sets the backlog the kernel allows.
  SSM_CHECK(::listen(impl_->listen_socket, SOMAXCONN) == 0, "cannot listen on {}:{} with a backlog of {}", o.host,
            port, SOMAXCONN);
  return port;
}

void Server::run() {
  {
    const std::lock_guard lock(impl_->run_mutex);
    if (impl_->stopped) return;
    impl_->run_called = true;
  }
  impl_->http.listen_after_bind();
  impl_->run_returned = true;
}

void Server::stop() {
  {
    const std::lock_guard lock(impl_->run_mutex);
    impl_->stopped = true;  // a ready() after this starts nothing
  }
  if (impl_->served_storage) impl_->served_storage->scheduler.stop();  // every job ends, with an error if it ran
  // Let the handlers send those ends, within reason: a client that reads nothing must not hold stop() up.
  for (int i = 0; i < 2000 && impl_->in_flight > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  bool run_called;
  {
    const std::lock_guard lock(impl_->run_mutex);
    run_called = impl_->run_called;
  }
  // A run() that has begun may not have reached httplib's loop yet, which a stop() before it would miss.
  while (run_called && !impl_->http.is_running() && !impl_->run_returned)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->http.stop();
}

}  // namespace ssm::serve
