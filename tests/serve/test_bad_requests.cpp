// Malformed and hostile requests: each gets one OpenAI-style error with the right status, naming
// the field at fault, and the server keeps serving.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_fixture.h"

namespace ssm::serve {
namespace {

json with(json request, const std::string& field, json value) {
  request[field] = std::move(value);
  return request;
}

json chat(json messages) { return {{"messages", std::move(messages)}, {"max_tokens", 2}}; }

TEST_F(ServerTest, BrokenJson) {
  expect_error(post("/v1/completions", R"({"prompt": "Hi", "max_tokens": )"), 400, "");
  expect_error(post("/v1/chat/completions", ""), 400, "");
}

TEST_F(ServerTest, BodyThatIsNotAnObject) { expect_error(post("/v1/completions", "[1, 2]"), 400, ""); }

TEST_F(ServerTest, WrongTypes) {
  const json base = greedy("Hi", 2);
  expect_error(post("/v1/completions", with(base, "max_tokens", "8").dump()), 400, "max_tokens");
  expect_error(post("/v1/completions", with(base, "max_tokens", 8.5).dump()), 400, "max_tokens");
  expect_error(post("/v1/completions", with(base, "temperature", "hot").dump()), 400, "temperature");
  expect_error(post("/v1/completions", with(base, "stream", "yes").dump()), 400, "stream");
  expect_error(post("/v1/completions", with(base, "stop", 5).dump()), 400, "stop");
  expect_error(post("/v1/completions", with(base, "prompt", 5).dump()), 400, "prompt");
  expect_error(post("/v1/completions", with(base, "seed", true).dump()), 400, "seed");
  expect_error(post("/v1/chat/completions", chat("Hi").dump()), 400, "messages");
  expect_error(post("/v1/chat/completions", chat({"Hi"}).dump()), 400, "messages[0]");
  expect_error(post("/v1/completions", with(base, "stream_options", 1).dump()), 400, "stream_options");
  expect_error(post("/v1/chat/completions", chat({{{"role", 5}, {"content", "Hi"}}}).dump()), 400, "messages[0].role");
  expect_error(post("/v1/chat/completions", chat({{{"role", "user"}, {"content", 5}}}).dump()), 400,
               "messages[0].content");
  expect_error(post("/v1/chat/completions", chat({{{"role", "wizard"}, {"content", "Hi"}}}).dump()), 400,
               "messages[0].role");
}

TEST_F(ServerTest, UnknownFields) {
  expect_error(post("/v1/completions", with(greedy("Hi", 2), "temprature", 0).dump()), 400, "temprature");
  expect_error(post("/v1/chat/completions", chat({{{"role", "user"}, {"content", "Hi"}, {"mood", "x"}}}).dump()), 400,
               "messages[0].mood");
  expect_error(post("/tokenize", R"({"content": "x", "extra": 1})"), 400, "extra");
}

TEST_F(ServerTest, ValuesOutOfRange) {
  const json base = greedy("Hi", 2);
  expect_error(post("/v1/completions", with(base, "temperature", 3).dump()), 400, "temperature");
  expect_error(post("/v1/completions", with(base, "top_p", 0).dump()), 400, "top_p");
  expect_error(post("/v1/completions", with(base, "top_k", -1).dump()), 400, "top_k");
  expect_error(post("/v1/completions", with(base, "max_tokens", 0).dump()), 400, "max_tokens");
  expect_error(post("/v1/completions", R"({"prompt": "Hi", "max_tokens": 1e400})"), 400, "");  // not a JSON double
  expect_error(post("/v1/completions", R"({"prompt": "Hi", "max_tokens": 99999999999999999999})"), 400, "max_tokens");
  expect_error(post("/v1/completions", with(base, "stop", {"a", "b", "c", "d", "e"}).dump()), 400, "stop");
}

TEST_F(ServerTest, MaxTokensBeyondTheContext) {
  expect_error(post("/v1/completions", greedy("Hi", 600).dump()), 400, "max_tokens", "context_length_exceeded");
  expect_error(post("/v1/completions", greedy(std::string(600, 'x'), 2).dump()), 400, "prompt",
               "context_length_exceeded");
}

TEST_F(ServerTest, EmptyPrompts) {
  expect_error(post("/v1/completions", greedy("", 2).dump()), 400, "prompt");
  expect_error(post("/v1/completions", with(greedy("", 2), "prompt", json::array()).dump()), 400, "prompt");
  expect_error(post("/v1/completions", R"({"max_tokens": 2})"), 400, "prompt");
  expect_error(post("/v1/chat/completions", chat(json::array()).dump()), 400, "messages");
}

TEST_F(ServerTest, InvalidUtf8) {
  expect_error(post("/v1/completions", "{\"prompt\": \"caf\xC3\", \"max_tokens\": 2}"), 400, "");
  expect_error(post("/tokenize", "{\"content\": \"\xFF\"}"), 400, "");
}

TEST_F(ServerTest, TokenIdsOutsideTheVocabulary) {
  expect_error(post("/v1/completions", with(greedy("", 2), "prompt", {1, 512}).dump()), 400, "prompt");
  expect_error(post("/v1/completions", with(greedy("", 2), "prompt", {-1}).dump()), 400, "prompt");
  expect_error(post("/v1/completions", with(greedy("", 2), "prompt", {json::parse("18446744073709551615")}).dump()),
               400, "prompt");
  expect_error(post("/detokenize", R"({"tokens": [72, 99999]})"), 400, "tokens");
}

TEST_F(ServerTest, MissingOrWrongApiKey) {
  const std::string body = greedy("Hi", 2).dump();
  expect_error(server_->client().Post("/v1/completions", body, "application/json"), 401, "", "invalid_api_key");
  expect_error(server_->client("wrong").Post("/v1/completions", body, "application/json"), 401, "", "invalid_api_key");
  expect_error(server_->client(kKey + "x").Get("/v1/models"), 401, "", "invalid_api_key");
}

TEST_F(ServerTest, ChoicesAndLogprobsOutOfRange) {
  const json base = greedy("Hi", 2);
  expect_error(post("/v1/completions", with(base, "n", 0).dump()), 400, "n");
  expect_error(post("/v1/completions", with(base, "n", 129).dump()), 400, "n");
  expect_error(post("/v1/completions", with(base, "logprobs", 21).dump()), 400, "logprobs");
  expect_error(post("/v1/completions", with(base, "logprobs", true).dump()), 400, "logprobs");
  expect_error(post("/v1/completions", with(base, "top_logprobs", 2).dump()), 400, "top_logprobs");  // chat's
  const json hi = chat({{{"role", "user"}, {"content", "Hi"}}});
  expect_error(post("/v1/chat/completions", with(hi, "logprobs", 3).dump()), 400, "logprobs");
  expect_error(post("/v1/chat/completions", with(hi, "top_logprobs", 2).dump()), 400, "top_logprobs");
  expect_error(post("/v1/chat/completions", with(with(hi, "logprobs", true), "top_logprobs", 21).dump()), 400,
               "top_logprobs");
  // A request's choices all wait in the queue (8 places here): 9 do not fit.
  expect_error(post("/v1/completions", with(base, "n", 9).dump()), 429, "", "queue_full");
}

TEST_F(ServerTest, WhatIsNotSupportedYet) {
  expect_error(post("/v1/completions", with(greedy("Hi", 2), "prompt", {"a", "b"}).dump()), 400, "prompt");
  expect_error(post("/v1/completions", with(greedy("Hi", 2), "stream_options", {{"include_usage", true}}).dump()), 400,
               "stream_options");
}

TEST_F(ServerTest, UnknownEndpointAndHugeBody) {
  expect_error(server_->client(kKey).Get("/v1/engines"), 404, "", "not_found");
  expect_error(post("/v1/completions", greedy(std::string(100000, 'x'), 2).dump()), 413, "");
}

TEST_F(ServerTest, AFullQueueAnswers429) {
  ServerOptions o = options();
  o.scheduler.queue_limit = 0;  // every request finds the queue full
  const RunningServer busy(*model_, *tokenizer_, o);
  expect_error(busy.client(kKey).Post("/v1/completions", greedy("Hi", 2).dump(), "application/json"), 429, "",
               "queue_full");
}

TEST_F(ServerTest, ASlowClientHoldsUpNoOne) {
  // A client that sends its headers and one byte of a 100-byte body, then nothing.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(uint16_t(server_->port()));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string start = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
  ASSERT_EQ(write(fd, start.data(), start.size()), ssize_t(start.size()));
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(post_ok("/v1/completions", greedy("meanwhile", 2))["usage"]["completion_tokens"], 2);
  close(fd);
}

}  // namespace
}  // namespace ssm::serve
