// A server on an ephemeral port in this process, over the tiny Mamba-2 fixture and byte tokens, and
// an httplib client for it.
#pragma once
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve/server.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

inline std::string fixture_dir(const std::string& name) { return std::string(SSM_TEST_DATA_DIR) + "/hf/" + name; }

class RunningServer {
 public:
  RunningServer(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options)
      : server_(model, tokenizer, [&] {
          options.port = 0;
          return options;
        }()),
        port_(server_.bind()),
        thread_([this] { server_.run(); }) {}
  ~RunningServer() {
    server_.stop();
    thread_.join();
  }
  // A client that sends `key` as its bearer token (none when empty).
  httplib::Client client(const std::string& key = "") const {
    httplib::Client client("127.0.0.1", port_);
    if (!key.empty()) client.set_bearer_token_auth(key);
    client.set_read_timeout(30, 0);
    return client;
  }
  int port() const { return port_; }

 private:
  Server server_;
  int port_;
  std::thread thread_;
};

}  // namespace ssm::serve
