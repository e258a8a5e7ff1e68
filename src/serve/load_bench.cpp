#include "serve/load_bench.h"

#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/random.h"
#include "core/resource_usage.h"
#include "serve/load_client.h"
#include "serve/server.h"

namespace ssm::serve {

namespace {

using Clock = std::chrono::steady_clock;

// A server on an ephemeral loopback port, serving until destroyed.
class LocalServer {
 public:
  LocalServer(const LanguageModel& model, const Tokenizer& tokenizer, ServerOptions options)
      : server_(model, tokenizer, std::move(options)), port_(server_.bind()), thread_([this] { server_.run(); }) {}
  ~LocalServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  // A value of GET /metrics ("ssm_<name> <value>").
  double metric(const std::string& name) const {
    httplib::Client client("127.0.0.1", port_);
    const auto res = client.Get("/metrics");
    SSM_CHECK(res && res->status == 200, "bench serve: GET /metrics failed");
    const std::string key = "\nssm_" + name + " ";
    const size_t at = res->body.find(key);
    SSM_CHECK(at != std::string::npos, "bench serve: no {} in /metrics", name);
    return std::stod(res->body.substr(at + key.size()));
  }

 private:
  Server server_;
  int port_;
  std::thread thread_;
};

ServerOptions server_options(const LoadBenchOptions& options, int64_t slots) {
  ServerOptions o;
  o.port = 0;
  o.limits.context = options.prefix_tokens + options.prompt_tokens + options.max_tokens + 64;
  o.scheduler.slots = slots;
  o.scheduler.queue_limit = slots;
  o.scheduler.threads = options.threads;
  o.scheduler.prefill_batch_tokens = options.prefill_batch_tokens;
  o.request_timeout_seconds = 0;
  return o;
}

nlohmann::json random_ids(Rng& rng, int64_t length, int64_t vocab) {
  nlohmann::json ids = nlohmann::json::array();
  for (int64_t i = 0; i < length; ++i) ids.push_back(int64_t(rng.below(uint64_t(vocab))));
  return ids;
}

nlohmann::json request(nlohmann::json prompt, int64_t max_tokens) {
  return {{"prompt", std::move(prompt)}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

// The value below which a fraction p of `values` lie (nearest rank).
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  const size_t at = std::min(values.size() - 1, size_t(p * double(values.size())));
  std::nth_element(values.begin(), values.begin() + long(at), values.end());
  return values[at];
}

LoadLevel run_level(const LanguageModel& model, const Tokenizer& tokenizer, int64_t vocab, int64_t clients,
                    const LoadBenchOptions& options) {
  const LocalServer server(model, tokenizer, server_options(options, clients));
  LoadLevel level;
  level.clients = clients;
  level.resident_start = resident_bytes();
  const double cpu_start = cpu_seconds();
  std::mutex mutex;
  std::vector<double> ttft, itl;
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop_starting =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.seconds));
  std::vector<std::thread> threads;
  for (int64_t c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      Rng rng(options.seed * 7919 + uint64_t(c));
      LoadClient client("127.0.0.1", server.port());
      while (Clock::now() < stop_starting) {
        const StreamTiming t =
            client.stream_completion(request(random_ids(rng, options.prompt_tokens, vocab), options.max_tokens));
        const bool complete = t.ok && int64_t(t.token_times.size()) == options.max_tokens;
        const std::lock_guard lock(mutex);
        ++level.requests;
        level.tokens += int64_t(t.token_times.size());
        if (!complete) {
          ++level.errors;
          ++level.error_kinds[t.ok ? "a short stream" : t.error.substr(0, 100)];
          continue;
        }
        ttft.push_back(t.token_times.front());
        for (size_t i = 1; i < t.token_times.size(); ++i) itl.push_back(t.token_times[i] - t.token_times[i - 1]);
      }
    });
  std::this_thread::sleep_until(start + (stop_starting - start) / 2);
  level.resident_mid = resident_bytes();
  for (auto& thread : threads) thread.join();
  level.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  level.cpu_seconds = cpu_seconds() - cpu_start;
  level.resident_end = resident_bytes();
  level.cache_end = int64_t(server.metric("prefix_cache_bytes"));
  level.decode_steps = int64_t(server.metric("decode_steps_total"));
  level.decode_rows = int64_t(server.metric("decode_tokens_total"));
  level.decode_seconds = server.metric("decode_seconds_total");
  level.prefill_seconds = server.metric("prefill_seconds_total");
  level.ttft_p50 = percentile(ttft, 0.5);
  level.ttft_p99 = percentile(ttft, 0.99);
  level.itl_p50 = percentile(itl, 0.5);
  level.itl_p99 = percentile(itl, 0.99);
  return level;
}

// Each pair: a prompt of a new prefix and a short suffix (a miss: the whole prompt prefills), then the
// same prefix with another suffix (a hit: the prefix's snapshot at its last chunk end, the suffix alone).
PrefixProbe probe_prefix(const LanguageModel& model, const Tokenizer& tokenizer, int64_t vocab,
                         const LoadBenchOptions& options) {
  const LocalServer server(model, tokenizer, server_options(options, 1));
  Rng rng(options.seed + 17);
  LoadClient client("127.0.0.1", server.port());
  std::vector<double> misses, hits, hits_queued, hits_prompt;
  for (int64_t pair = 0; pair < options.prefix_pairs; ++pair) {
    const nlohmann::json prefix = random_ids(rng, options.prefix_tokens, vocab);
    for (std::vector<double>* times : {&misses, &hits}) {
      nlohmann::json prompt = prefix;
      for (const auto& id : random_ids(rng, 16, vocab)) prompt.push_back(id);
      const StreamTiming t = client.stream_completion(request(std::move(prompt), 1));
      SSM_CHECK(t.ok && !t.token_times.empty(), "the shared-prefix probe's request failed: {}", t.error);
      times->push_back(t.token_times.front());
      if (times == &hits) {
        hits_queued.push_back(t.server_queued);
        hits_prompt.push_back(t.server_prompt);
      }
    }
  }
  return {options.prefix_tokens,     options.prefix_pairs,          percentile(misses, 0.5),
          percentile(hits, 0.5),     percentile(hits, 0.9),         percentile(hits_queued, 0.5),
          percentile(hits_prompt, 0.5)};
}

}  // namespace

LoadBenchResult run_load_bench(const LanguageModel& model, const Tokenizer& tokenizer,
                               const LoadBenchOptions& options) {
  SSM_CHECK(options.seconds > 0 && options.prompt_tokens > 0 && options.max_tokens > 0 && options.prefix_tokens >= 0,
            "bench serve: the duration, prompt and completion lengths must be positive");
  const int64_t vocab = std::min<int64_t>(model.config().vocab_size, tokenizer.vocab_size());
  LoadBenchResult result;
  for (int64_t clients : options.clients) {
    SSM_CHECK(clients > 0, "bench serve: client counts must be positive, got {}", clients);
    result.levels.push_back(run_level(model, tokenizer, vocab, clients, options));
  }
  if (options.prefix_tokens > 0) result.prefix = probe_prefix(model, tokenizer, vocab, options);
  return result;
}

std::string load_bench_table(const LoadBenchResult& result) {
  const auto mib = [](int64_t bytes) { return double(bytes) / 1048576.0; };
  std::string out =
      "| clients | requests | errors | tokens/s | TTFT p50 / p99 ms | inter-token p50 / p99 ms | resident MiB start / "
      "mid / end (prefix cache) |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n";
  std::string errors, loops;
  for (const LoadLevel& l : result.levels) {
    out += fmt::format(
        "| {} | {} | {} | {:.0f} | {:.1f} / {:.1f} | {:.2f} / {:.2f} | {:.0f} / {:.0f} / {:.0f} ({:.0f}) |\n",
        l.clients, l.requests, l.errors, l.tokens_per_second(), 1e3 * l.ttft_p50, 1e3 * l.ttft_p99, 1e3 * l.itl_p50,
        1e3 * l.itl_p99, mib(l.resident_start), mib(l.resident_mid), mib(l.resident_end), mib(l.cache_end));
    if (l.decode_steps > 0)
      loops += fmt::format(
          "server's loop at {} clients: {} decode steps of {:.1f} rows on average, {:.3f} ms each ({:.1f} s); "
          "prefill forwards {:.1f} s; process CPU {:.1f} s, {:.0f} us a token\n",
          l.clients, l.decode_steps, double(l.decode_rows) / double(l.decode_steps),
          1e3 * l.decode_seconds / double(l.decode_steps), l.decode_seconds, l.prefill_seconds, l.cpu_seconds,
          l.tokens > 0 ? 1e6 * l.cpu_seconds / double(l.tokens) : 0.0);
    for (const auto& [kind, count] : l.error_kinds)
      errors += fmt::format("errors at {} clients: {} x {}\n", l.clients, count, kind);
  }
  out += errors + loops;
  if (result.prefix)
    out +=
        fmt::format("\nshared {}-token prefix: time to first token {:.1f} ms on a miss, {:.1f} ms on a hit ({:.3f}x; "
                    "medians of {} pairs, hit p90 {:.1f} ms); the hit's median in the server: {:.2f} ms to the "
                    "scheduler (parse included), {:.2f} ms to its first token chosen\n",
                    result.prefix->prefix_tokens, 1e3 * result.prefix->miss_ttft, 1e3 * result.prefix->hit_ttft,
                    result.prefix->hit_ttft / result.prefix->miss_ttft, result.prefix->pairs,
                    1e3 * result.prefix->hit_ttft_p90, 1e3 * result.prefix->hit_queued,
                    1e3 * result.prefix->hit_prompt);
  return out;
}

}  // namespace ssm::serve
