// The load bench's client (ssm bench --suite serve): it counts every token of a stream as its chunks
// arrive, reads the server's timings, and tells a failed request from a complete one, on one connection
// kept from request to request (reopened when the server has closed it).
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
  LoadClient client("127.0.0.1", server_->port());
  for (int tokens : {1, 2, 17, 1, 2, 3, 4}) {  // more than httplib's default of 5 a connection (the server allows more)
    json request = greedy("Count", tokens);
    request["ignore_eos"] = true;
    const StreamTiming t = client.stream_completion(request);
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
  const StreamTiming late = client.stream_completion(endless);
  EXPECT_FALSE(late.ok);
  EXPECT_NE(late.error.find("time limit"), std::string::npos) << late.error;
  EXPECT_FALSE(late.token_times.empty());
  const StreamTiming refused = client.stream_completion(greedy("Bad", -1));
  EXPECT_FALSE(refused.ok);
  EXPECT_EQ(refused.error.rfind("HTTP 400", 0), 0u) << refused.error;
  EXPECT_TRUE(refused.token_times.empty());
}

}  // namespace
}  // namespace ssm::serve
