// ssm bench --suite serve: the server under load, with server and clients in this process (the model
// on the CPU or the GPU, wherever it was placed).
// At each level N, N clients stream completions back to back for a while (each a fresh random
// prompt, so no cache hits, and a fixed length past EOS), against a server with N slots; the table
// gives tokens/s, the time to first token and the time between tokens (p50 and p99), requests and
// errors (every request ends in one or the other), and resident memory before, halfway and after
// (with the prefix cache's share, which fills towards its budget). Then the
// shared-prefix probe: the time to first token of a prompt whose long prefix is cached against that
// of the same prefix the first time.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/language_model.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

struct LoadBenchOptions {
  std::vector<int64_t> clients = {1, 8, 64, 256};
  double seconds = 10;           // per level: clients start requests until then
  int64_t prompt_tokens = 32;    // random ids, new for each request
  int64_t max_tokens = 32;       // generated per request (EOS ignored)
  int64_t prefix_tokens = 2048;  // the shared-prefix probe's prefix (0: no probe)
  int64_t prefix_pairs = 15;     // prefixes probed, each a miss then a hit
  int threads = 0;               // the model's CPU threads (0: all cores)
  int64_t prefill_batch_tokens = SchedulerOptions{}.prefill_batch_tokens;  // the server's (--prefill-batch-tokens)
  uint64_t seed = 1;
};

struct LoadLevel {
  int64_t clients = 0, requests = 0, errors = 0, tokens = 0;
  std::map<std::string, int64_t> error_kinds;                   // what the failed requests said, and how often
  double seconds = 0;                                           // from the first request to the last one's end
  double ttft_p50 = 0, ttft_p99 = 0, itl_p50 = 0, itl_p99 = 0;  // seconds
  // Resident bytes before the clients start, halfway through and at the end; the prefix cache's then.
  int64_t resident_start = 0, resident_mid = 0, resident_end = 0, cache_end = 0;
  // The server's loop over the level (its /metrics): decode steps and their rows, and the time in
  // steps and in prefill forwards (wall time of the scheduler's thread, preemptions included).
  int64_t decode_steps = 0, decode_rows = 0;
  double decode_seconds = 0, prefill_seconds = 0;
  double cpu_seconds = 0;  // the process's (server and clients), user and system, over the level
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0; }
};

struct PrefixProbe {
  int64_t prefix_tokens = 0, pairs = 0;
  double miss_ttft = 0, hit_ttft = 0;  // medians, seconds
  double hit_ttft_p90 = 0;
  // Medians over the hits of the server's split (seconds): waiting for the scheduler (the body's parse
  // included) and the prefill to the first token chosen; the rest of the hit's time is HTTP both ways.
  double hit_queued = 0, hit_prompt = 0;
};

struct LoadBenchResult {
  std::vector<LoadLevel> levels;
  std::optional<PrefixProbe> prefix;
};

// Prompts are random ids below min(vocabulary, tokenizer's ids). Resident memory is the process's
// host memory (on the GPU the prefix cache's states are in GPU memory, its logits on the host).
LoadBenchResult run_load_bench(const LanguageModel& model, const Tokenizer& tokenizer, const LoadBenchOptions& options);
// Markdown: the levels' table, then the probe's line.
std::string load_bench_table(const LoadBenchResult& result);

}  // namespace ssm::serve
