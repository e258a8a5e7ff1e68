// The server's counters and gauges, written by the handlers and the scheduler, read as Prometheus
// text by GET /metrics.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

namespace ssm::serve {

struct Metrics {
  std::atomic<int64_t> requests = 0, errors = 0;  // HTTP requests; those answered with a status >= 400
  std::atomic<int64_t> timeouts = 0;              // generation requests ended by their deadline
  std::atomic<int64_t> prompt_tokens = 0, completion_tokens = 0;
  std::atomic<int64_t> prefill_tokens = 0;  // prompt tokens run through the model (cache hits left out)
  std::atomic<int64_t> prefill_batches = 0,
                       prefill_batch_rows = 0;  // prefill forwards, and their rows (rows / batches: batch size)
  std::atomic<int64_t> prefill_batches_replayed = 0;  // those replayed from a recorded CUDA graph
  std::atomic<int64_t> decode_steps = 0,
                       decode_tokens = 0;  // decode steps, and their rows (tokens / steps: batch size)
  std::atomic<int64_t> decode_steps_replayed = 0;  // those replayed from a recorded CUDA graph
  std::atomic<double> prefill_seconds = 0, decode_seconds = 0;
  std::atomic<int64_t> cache_hits = 0, cache_hit_tokens = 0, cache_bytes = 0, cache_entries = 0;
  std::atomic<int64_t> queue_length = 0, slots_in_use = 0, slots = 0;

  std::string prometheus() const;
};

}  // namespace ssm::serve
