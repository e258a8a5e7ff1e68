#include "serve/metrics.h"

#include <fmt/format.h>

namespace ssm::serve {

std::string Metrics::prometheus() const {
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, const auto& value) {
    out += fmt::format("# HELP ssm_{0} {1}\n# TYPE ssm_{0} {2}\nssm_{0} {3}\n", name, help, type, value.load());
  };
  metric("requests_total", "counter", "HTTP requests received", requests);
  metric("request_errors_total", "counter", "HTTP requests answered with an error status", errors);
  metric("timeouts_total", "counter", "Generation requests ended by the --timeout deadline", timeouts);
  metric("prompt_tokens_total", "counter", "Prompt tokens of the requests run", prompt_tokens);
  metric("completion_tokens_total", "counter", "Tokens generated", completion_tokens);
  metric("prefill_tokens_total", "counter", "Prompt tokens run through the model (cache hits left out)",
         prefill_tokens);
  metric("prefill_batches_total", "counter", "Forwards that prefilled prompt chunks, one or more prompts' each",
         prefill_batches);
  metric("prefill_batch_rows_total", "counter", "Prompt chunks those forwards ran (rows / batches: the batch size)",
         prefill_batch_rows);
  metric("prefill_batches_replayed_total", "counter", "Prefill forwards replayed from a recorded CUDA graph (GPU)",
         prefill_batches_replayed);
  metric("prefill_seconds_total", "counter", "Time spent prefilling", prefill_seconds);
  metric("decode_steps_total", "counter", "Decode steps, each one token for every active sequence", decode_steps);
  metric("decode_steps_replayed_total", "counter", "Decode steps replayed from a recorded CUDA graph (GPU)",
         decode_steps_replayed);
  metric("decode_tokens_total", "counter", "Tokens run through decode steps", decode_tokens);
  metric("decode_seconds_total", "counter", "Time spent in decode steps", decode_seconds);
  metric("prefix_cache_hits_total", "counter", "Prompts that started from a cached state", cache_hits);
  metric("prefix_cache_hit_tokens_total", "counter", "Prompt tokens covered by cached states", cache_hit_tokens);
  metric("prefix_cache_bytes", "gauge", "Bytes held by the prefix cache", cache_bytes);
  metric("prefix_cache_entries", "gauge", "States held by the prefix cache", cache_entries);
  metric("queue_length", "gauge", "Requests waiting for a slot", queue_length);
  metric("slots_in_use", "gauge", "Sequences decoding", slots_in_use);
  metric("slots", "gauge", "Sequences that can decode together", slots);
  return out;
}

}  // namespace ssm::serve
