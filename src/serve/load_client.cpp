#include "serve/load_client.h"

#include <httplib.h>

#include <chrono>
#include <string_view>

namespace ssm::serve {

namespace {

using nlohmann::json;

// Reads one event's JSON without building it (a load client reads thousands a second, beside the
// server): the tokens its choices' log-probabilities list, the error it carries, or the timings of the
// usage event.
class EventReader final : public nlohmann::json_sax<json> {
 public:
  int64_t tokens = 0;
  bool error = false;
  std::string error_message;
  double queued_ms = -1, prompt_ms = -1;  // timings.queued_ms, timings.prompt_ms when the event has them

  // Before each event (the reader's buffers stay).
  void reset() {
    tokens = 0;
    queued_ms = prompt_ms = -1;
    error = false;
    error_message = "error";
    keys_.clear();
    key_.clear();
  }

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t number) override { return timing(double(number)); }
  bool number_unsigned(number_unsigned_t number) override { return timing(double(number)); }
  bool number_float(number_float_t number, const string_t&) override { return timing(double(number)); }
  bool string(string_t& text) override {
    // choices[i].logprobs.tokens[j]; error.message
    if (depth() == 5 && at(2, "choices") && at(4, "logprobs") && at(5, "tokens")) ++tokens;
    if (depth() == 2 && at(2, "error") && key_ == "message") error_message = text;
    return value();
  }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override { return open(); }
  bool key(string_t& name) override {
    key_ = name;
    if (depth() == 1 && name == "error") error = true;
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  size_t depth() const { return keys_.size(); }
  // Whether the open container at depth `level` (1: the event itself) is the value of key `name`.
  bool at(size_t level, std::string_view name) const { return keys_[level - 1] == name; }
  bool value() { return true; }
  bool timing(double number) {
    if (depth() == 2 && at(2, "timings")) {
      if (key_ == "queued_ms") queued_ms = number;
      if (key_ == "prompt_ms") prompt_ms = number;
    }
    return value();
  }
  bool open() {
    keys_.push_back(key_);  // the key this container is the value of (in an array: the array's)
    key_.clear();
    return true;
  }
  bool close() {
    key_ = keys_.back();
    keys_.pop_back();
    return true;
  }
  std::vector<std::string> keys_;  // per open container, the key it sits under
  std::string key_;                // the key of the value read next
};

}  // namespace

LoadClient::LoadClient(const std::string& host, int port) : client_(std::make_unique<httplib::Client>(host, port)) {
  client_->set_keep_alive(true);
  client_->set_read_timeout(600, 0);
  client_->set_tcp_nodelay(true);  // httplib writes the headers and the body apart: the body must not wait for an ack
}

LoadClient::~LoadClient() = default;

StreamTiming LoadClient::stream_completion(nlohmann::json body) {
  using Clock = std::chrono::steady_clock;
  body["stream"] = true;
  body["logprobs"] = 0;
  body["stream_options"] = {{"include_usage", true}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  StreamTiming timing;
  bool done = false;
  std::string buffer;
  EventReader reader;
  const Clock::time_point start = Clock::now();
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const double now = std::chrono::duration<double>(Clock::now() - start).count();
    buffer.append(data, size);
    size_t begin = 0;
    for (size_t end; (end = buffer.find("\n\n", begin)) != std::string::npos; begin = end + 2) {
      std::string_view event(buffer.data() + begin, end - begin);
      if (event == "data: [DONE]") {
        done = true;
        continue;
      }
      if (event.starts_with("data: ")) event.remove_prefix(6);
      reader.reset();
      if (!json::sax_parse(event.begin(), event.end(), &reader)) {
        timing.error = "an event that is not JSON";
      } else if (reader.error) {
        timing.error = reader.error_message;
      } else {
        timing.token_times.insert(timing.token_times.end(), size_t(reader.tokens), now);
        if (reader.queued_ms >= 0) timing.server_queued = reader.queued_ms / 1e3;
        if (reader.prompt_ms >= 0) timing.server_prompt = reader.prompt_ms / 1e3;
      }
    }
    buffer.erase(0, begin);
    return true;
  };
  const httplib::Result res = client_->send(req);
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
