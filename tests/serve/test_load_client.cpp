// The load bench's client (ssm bench --suite serve): it counts every token of a stream as its chunks
// arrive, reads the server's timings, and tells a failed request from a complete one.
#include <gtest/gtest.h>

#include "serve/load_client.h"
#include "server_fixture.h"

namespace ssm::serve {
namespace {

TEST_F(ServerTest, TheLoadClientCountsEveryTokenAndEveryFailure) {
  ServerOptions o = options();
  o.api_key.clear();  // the load client sends none
  o.limits.context = 1 << 20;
  o.request_timeout_seconds = 1;
  server_ = std::make_unique<RunningServer>(*model_, *tokenizer_, o);
  for (int tokens : {1, 2, 17}) {
    json request = greedy("Count", tokens);
    request["ignore_eos"] = true;
    const StreamTiming t = stream_completion("127.0.0.1", server_->port(), request);
    EXPECT_TRUE(t.ok) << t.error;
    ASSERT_EQ(t.token_times.size(), size_t(tokens));
    EXPECT_TRUE(std::is_sorted(t.token_times.begin(), t.token_times.end()));
    EXPECT_GT(t.token_times.front(), 0);
    // The server's split of the first token's time: within what the client saw.
    EXPECT_GE(t.server_queued, 0);
    EXPECT_GT(t.server_prompt, 0);
    EXPECT_LT(t.server_queued + t.server_prompt, t.token_times.front());
  }
  // An error inside the stream (the deadline), and one before it (a bad request).
  json endless = greedy("Too long", 1 << 19);
  endless["ignore_eos"] = true;
  const StreamTiming late = stream_completion("127.0.0.1", server_->port(), endless);
  EXPECT_FALSE(late.ok);
  EXPECT_NE(late.error.find("time limit"), std::string::npos) << late.error;
  EXPECT_FALSE(late.token_times.empty());
  const StreamTiming refused = stream_completion("127.0.0.1", server_->port(), greedy("Bad", -1));
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.error.rfind("HTTP 400", 0), 0u) << refused.error;
  EXPECT_TRUE(refused.token_times.empty());
}

}  // namespace
}  // namespace ssm::serve
