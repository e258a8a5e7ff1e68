#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <span>

#include "core/error.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "infer/sampler.h"
#include "infer/stop_strings.h"
#include "tokenizer/utf8_stream.h"

namespace ssm::serve {

struct Scheduler::Sequence {
  std::shared_ptr<Job> job;
  int64_t choice = 0;
  int64_t slot = 0;
  Sampler sampler;
  std::vector<int32_t> history;  // prompt + generated, for the repetition penalty
  Utf8Stream utf8;
  StopStringFilter stops;
  int32_t next = 0;  // the token the next step feeds
  int64_t generated = 0;
};

namespace {
// How long the idle loop polls for new work before it sleeps (see loop()).
constexpr auto kIdlePoll = std::chrono::microseconds(1000);

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

Scheduler::Scheduler(const LanguageModel& model, const Tokenizer& tokenizer, const SchedulerOptions& options,
                     Metrics& metrics)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      metrics_(metrics),
      sample_vocab_(std::min<int64_t>(tokenizer.vocab_size(), model.config().vocab_size)),
      cache_(options.cache_bytes > 0 ? std::make_unique<PrefixCache>(options.cache_bytes) : nullptr),
      prefill_(model, cache_.get(), options.cache_chunk),
      batch_(model),
      graphs_(model),
      ws_(model.device()),
      host_(Workspace::staging_for(model.device())) {
  SSM_CHECK(options.slots >= 1 && options.queue_limit >= 0, "--slots must be >= 1 and the queue limit >= 0");
  metrics_.slots = options.slots;
  slots_.resize(size_t(options.slots));
  if (model.device() != Device::CPU) {
    // A full batch's state up front keeps the rows where recorded steps find them (and a GPU without
    // room for it is an error now, not at the busiest moment); the step's ids and the greedy rows'
    // picks have one place each. The wait hands them over to the scheduler thread's stream.
    batch_.reserve(options.slots);
    step_ids_ = Tensor::zeros({options.slots}, DType::I32, model.device());
    picked_ = Tensor::empty({options.slots}, DType::I32, model.device());
    synchronize(model.device());
  }
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

Scheduler::Submitted Scheduler::submit(std::shared_ptr<Job> job) {
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) return Submitted::stopped;
    if (int64_t(queue_.size()) + job->choices() > options_.queue_limit) return Submitted::queue_full;
    for (int64_t choice = 0; choice < job->choices(); ++choice) queue_.push_back({job, choice});
    metrics_.queue_length = int64_t(queue_.size());
    ++posts_;
  }
  wake_.notify_one();
  return Submitted::queued;
}

void Scheduler::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& pending : queue_) pending.job->fail("the server is shutting down");
    queue_.clear();
    ++posts_;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  for (Task& task : tasks_) task.done.set_exception(std::make_exception_ptr(Error("the server is shutting down")));
  tasks_.clear();
}

void Scheduler::run_on_thread(std::function<void()> work) {
  std::future<void> done;
  {
    const std::lock_guard lock(mutex_);
    SSM_CHECK(!stopping_, "the server is shutting down");
    tasks_.push_back({std::move(work), {}});
    done = tasks_.back().done.get_future();
    ++posts_;
  }
  wake_.notify_one();
  done.get();
}

void Scheduler::loop() {
  set_num_threads(options_.threads);  // OpenMP's thread count is per thread: set it on the one that computes
  uint64_t seen_posts = 0;  // posts_ when the queue was last found empty, under the lock
  while (true) {
    std::vector<Pending> arrivals;
    std::deque<Task> tasks;
    // Idle: poll for a while before sleeping. A client's next request often comes right after its last
    // answer (its parse alone takes ~0.1 ms), and waking a sleeping thread costs tens of µs or more (a
    // prefix-cache hit takes ~1.3 ms on the GPU). seen_posts is only set when the queue and the tasks
    // were found empty, so a change means new work, and none posted since can be missed.
    if (active_.empty() && prefilling_.empty()) {
      const auto until = std::chrono::steady_clock::now() + kIdlePoll;
      while (posts_.load(std::memory_order_relaxed) == seen_posts && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();  // a thread with work to do (a handler parsing the next request) goes first
    }
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !queue_.empty() || !tasks_.empty() || !active_.empty() || !prefilling_.empty();
      });
      if (stopping_) break;
      tasks.swap(tasks_);
      arrivals = admit();
      if (queue_.empty()) seen_posts = posts_.load(std::memory_order_relaxed);
    }
    for (Task& task : tasks) {
      try {
        task.work();
        task.done.set_value();
      } catch (...) {
        task.done.set_exception(std::current_exception());
      }
    }
    expire();
    if (!arrivals.empty() || !prefilling_.empty()) prefill(arrivals);
    if (!active_.empty()) step();
    metrics_.slots_in_use = int64_t(active_.size() + prefilling_.size());
  }
  for (const Prefilling& p : prefilling_) p.pending.job->fail("the server is shutting down");
  for (auto& sequence : active_) sequence->job->fail("the server is shutting down");
  {
    // Those that went back to the queue (waiting for a snapshot) after stop() failed the others there.
    const std::lock_guard lock(mutex_);
    for (const Pending& pending : queue_) pending.job->fail("the server is shutting down");
    queue_.clear();
  }
  // Copies may still be queued from memory the constructor's thread allocated (and will free).
  synchronize(model_.device());
}

std::vector<Scheduler::Pending> Scheduler::admit() {
  int64_t free_slots = options_.slots - int64_t(active_.size() + prefilling_.size());
  int64_t budget = options_.prefill_batch_tokens;
  for (const Prefilling& p : prefilling_) budget -= prefill_.next_chunk(p.pending.job->request().prompt, p.progress);
  std::vector<Pending> arrivals;
  while (!queue_.empty() && free_slots > 0) {
    if (queue_.front().job->cancelled()) {  // the client went away while it waited: it takes nothing
      queue_.pop_front();
      continue;
    }
    // A first chunk is at most a chunk (a cache hit shortens it); a prompt's later chunks are no longer.
    const int64_t longest = std::min<int64_t>(options_.cache_chunk, queue_.front().job->request().prompt.size());
    const bool first = arrivals.empty() && prefilling_.empty();
    if (longest > budget && !first) break;
    budget -= longest;
    --free_slots;
    arrivals.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  metrics_.queue_length = int64_t(queue_.size());
  return arrivals;
}

void Scheduler::expire() {
  const Job::Clock::time_point now = Job::Clock::now();
  // Whether the job has expired now (failing it) or before (a job's later choices).
  const auto fail_expired = [&](Job& job) {
    if (!job.expired(now)) return false;
    if (!job.cancelled()) {
      ++metrics_.timeouts;
      job.fail("the request did not finish within the server's time limit (--timeout)", 504);
    }
    return true;
  };
  {
    const std::lock_guard lock(mutex_);
    std::erase_if(queue_, [&](const Pending& pending) { return fail_expired(*pending.job); });
    metrics_.queue_length = int64_t(queue_.size());
  }
  for (const Prefilling& p : prefilling_) fail_expired(*p.pending.job);
  for (const auto& sequence : active_) fail_expired(*sequence->job);  // they leave before the next step
}

void Scheduler::prefill(const std::vector<Pending>& arrivals) {
  std::vector<Pending> later;
  for (const Pending& pending : arrivals)
    if (!start_prefill(pending)) later.push_back(pending);
  if (!later.empty()) {
    const std::lock_guard lock(mutex_);
    queue_.insert(queue_.begin(), later.begin(), later.end());
    metrics_.queue_length = int64_t(queue_.size());
  }
  // Cancelled and failed prompts (the client went away, the deadline passed) leave before the forward.
  std::erase_if(prefilling_, [&](const Prefilling& p) {
    if (!p.pending.job->cancelled()) return false;
    slots_[size_t(p.slot)].busy = false;
    return true;
  });
  // Prompts the cache held whole have no chunk to run: they join from the snapshot's copy.
  std::erase_if(prefilling_, [&](Prefilling& p) {
    if (p.progress.cached_tokens < int64_t(p.pending.job->request().prompt.size())) return false;
    join(p, p.progress.state, 0);
    return true;
  });
  std::vector<CachedPrefill::Prefilling> batch;
  int64_t rows = 0, tokens = 0;
  for (Prefilling& p : prefilling_) {
    const std::vector<int32_t>& prompt = p.pending.job->request().prompt;
    batch.push_back({prompt, &p.progress});
    const int64_t chunk = prefill_.next_chunk(prompt, p.progress);
    rows += chunk > 0;
    tokens += chunk;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    // A prompt all in joins the batch from the forward's rows.
    metrics_.prefill_batches += prefill_.advance(
        batch, [&](size_t i, const ModelState& state, int64_t row) { join(prefilling_[i], state, row); });
    metrics_.prefill_seconds += seconds_since(start);
    metrics_.prefill_batches_replayed = prefill_.replayed();
  } catch (const std::exception& e) {
    // A failed forward leaves its rows' states unknown: all the prompts end but those that have joined.
    for (const Prefilling& p : prefilling_) {
      if (all_in(p)) continue;
      p.pending.job->fail(e.what());
      slots_[size_t(p.slot)].busy = false;
    }
    prefilling_.clear();
    return;
  }
  metrics_.prefill_batch_rows += rows;
  metrics_.prefill_tokens += tokens;
  if (cache_) {
    metrics_.cache_bytes = cache_->bytes();
    metrics_.cache_entries = cache_->entries();
  }
  std::erase_if(prefilling_, [&](const Prefilling& p) { return all_in(p); });
}

bool Scheduler::all_in(const Prefilling& p) {
  return p.progress.done == int64_t(p.pending.job->request().prompt.size());
}

bool Scheduler::start_prefill(const Pending& pending) {
  Job& job = *pending.job;
  if (job.cancelled()) return true;
  const std::vector<int32_t>& prompt = job.request().prompt;
  const int64_t length = int64_t(prompt.size());
  // A prompt prefilling whose chunk now ends at a snapshot this prompt could start from (a chunk end
  // past where the cache would take it, on the same tokens): running that chunk twice gains nothing.
  const auto snapshot_ahead = [&, cached = prefill_.cached_tokens(prompt)](const Prefilling& p) {
    const std::vector<int32_t>& other = p.pending.job->request().prompt;
    const int64_t end = p.progress.done + prefill_.next_chunk(other, p.progress);
    return end > cached && end <= length && (end % options_.cache_chunk == 0 || end == length) &&
           std::equal(prompt.begin(), prompt.begin() + end, other.begin());
  };
  if (cache_ && std::any_of(prefilling_.begin(), prefilling_.end(), snapshot_ahead)) return false;
  CachedPrefill::Result progress;
  try {
    progress = prefill_.start(prompt);
  } catch (const std::exception& e) {
    job.fail(e.what());
    return true;
  }
  const int64_t cached = progress.cached_tokens;
  if (pending.choice == 0) metrics_.prompt_tokens += length;
  if (cached > 0) {
    ++metrics_.cache_hits;
    metrics_.cache_hit_tokens += cached;
  }
  job.admit(pending.choice, cached);
  prefilling_.push_back({pending, take_slot(prompt), std::move(progress)});
  return true;
}

void Scheduler::join(Prefilling& prefilled, const ModelState& state, int64_t row) {
  const Pending& pending = prefilled.pending;
  const GenerationRequest& request = pending.job->request();
  try {
    SamplingOptions sampling = request.sampling;
    sampling.seed += uint64_t(pending.choice);  // each choice its own draws
    auto sequence =
        std::make_unique<Sequence>(Sequence{pending.job, pending.choice, prefilled.slot, Sampler(sampling),
                                            request.prompt, Utf8Stream(), StopStringFilter(request.stop)});
    raw_logits_.resize(std::max<size_t>(raw_logits_.size(), 1));
    if (accept(*sequence, choose(*sequence, prefilled.progress.logits.data(), raw_logits_[0]))) {
      batch_.append(state, row);
      active_.push_back(std::move(sequence));
      return;
    }
  } catch (const std::exception& e) {
    if (!pending.job->cancelled()) pending.job->fail(e.what());
  }
  slots_[size_t(prefilled.slot)].busy = false;
}

void Scheduler::step() {
  // Cancelled sequences (the client went away) leave before the step rather than after it.
  std::vector<bool> keep(active_.size());
  for (size_t i = 0; i < active_.size(); ++i) keep[i] = !active_[i]->job->cancelled();
  leave(keep);
  if (active_.empty()) return;
  const auto start = std::chrono::steady_clock::now();
  const int64_t rows = int64_t(active_.size());
  const WorkspaceScope scope(ws_), host_scope(host_);
  Tensor ids = host_.take({rows}, DType::I32);
  for (int64_t i = 0; i < rows; ++i) ids.data<int32_t>()[i] = active_[size_t(i)]->next;
  StepTokens tokens;
  try {
    if (model_.device() == Device::CPU) {
      tokens = read_step(model_.step(ids, batch_.state(), ws_));
    } else {
      // The first rows of step_ids_: at one address per batch size, as a recorded step reads them.
      Tensor device_ids = step_ids_.slice(0, 0, rows);
      device_ids.copy_from(ids);
      tokens = read_step(graphs_.step(device_ids, batch_.state(), ws_));
      metrics_.decode_steps_replayed = graphs_.replayed();
    }
  } catch (const std::exception& e) {  // a failed step leaves every state unknown: all sequences end
    for (auto& sequence : active_) sequence->job->fail(e.what());
    leave(std::vector<bool>(size_t(rows), false));
    return;
  }
  metrics_.decode_seconds += seconds_since(start);
  ++metrics_.decode_steps;
  metrics_.decode_tokens += rows;
  // Each row's token on the threads (an argmax or a sampler's sort over the vocabulary and, for the
  // log-probabilities, a softmax over it: about 45 µs a row of mamba2-130m, 3 ms a step of 64 rows
  // on one thread); what reaches the jobs stays on this thread.
  std::vector<Choice> choices(static_cast<size_t>(rows));
  std::vector<std::optional<std::string>> errors(static_cast<size_t>(rows));
  raw_logits_.resize(std::max(raw_logits_.size(), size_t(rows)));
#pragma omp parallel for schedule(dynamic) if (rows > 1)
  for (int64_t i = 0; i < rows; ++i) {
    try {
      choices[size_t(i)] = tokens.on_host[size_t(i)]
                               ? choose(*active_[size_t(i)], tokens.logits.data<float>() + i * tokens.logits.size(1),
                                        raw_logits_[size_t(i)])
                               : Choice{tokens.picked.data<int32_t>()[i], std::nullopt};
    } catch (const std::exception& e) {
      errors[size_t(i)] = e.what();
    }
  }
  keep.assign(size_t(rows), false);
  for (int64_t i = 0; i < rows; ++i) {
    Sequence& s = *active_[size_t(i)];
    try {
      if (errors[size_t(i)]) fail("{}", *errors[size_t(i)]);
      keep[size_t(i)] = accept(s, choices[size_t(i)]);
    } catch (const std::exception& e) {
      s.job->fail(e.what());
      keep[size_t(i)] = false;
    }
  }
  leave(keep);
}

bool Scheduler::greedy_on_device(const Sequence& s) const {
  const GenerationRequest& request = s.job->request();
  return model_.device() != Device::CPU && request.sampling.temperature == 0.0f &&
         request.sampling.repetition_penalty == 1.0f && !request.logprobs;
}

Scheduler::StepTokens Scheduler::read_step(const Tensor& logits) {
  const int64_t rows = logits.size(0);
  StepTokens out;
  out.on_host.resize(size_t(rows));
  bool any_greedy = false;
  for (int64_t i = 0; i < rows; ++i) {
    out.on_host[size_t(i)] = !greedy_on_device(*active_[size_t(i)]);
    any_greedy |= !out.on_host[size_t(i)];
  }
  if (logits.device() == Device::CPU) {
    out.logits = logits;
    return out;
  }
  // The greedy rows' ids: one argmax over the batch on the GPU, and [rows] ids to the host. That copy
  // waits for the step; the copies of the other rows' logits after it find the GPU idle.
  if (any_greedy) {
    Tensor device_picked = picked_.slice(0, 0, rows);
    ops::argmax(logits.slice(1, 0, sample_vocab_), device_picked);
    out.picked = host_.take({rows}, DType::I32);
    out.picked.copy_from(device_picked);
  }
  if (!std::count(out.on_host.begin(), out.on_host.end(), true)) return out;
  // The rows the sampler or the log-probabilities read, a copy per run of consecutive ones.
  out.logits = host_.take(logits.shape());
  for (int64_t first = 0; first < rows;) {
    if (!out.on_host[size_t(first)]) {
      ++first;
      continue;
    }
    int64_t end = first + 1;
    while (end < rows && out.on_host[size_t(end)]) ++end;
    out.logits.slice(0, first, end - first).copy_from(logits.slice(0, first, end - first));
    first = end;
  }
  return out;
}

Scheduler::Choice Scheduler::choose(Sequence& s, float* logits, std::vector<float>& raw) const {
  const GenerationRequest& request = s.job->request();
  const float* before = logits;
  if (request.logprobs && request.sampling.repetition_penalty != 1.0f) {  // the one change the sampler makes in place
    raw.assign(logits, logits + sample_vocab_);
    before = raw.data();
  }
  Choice choice{s.sampler.sample(logits, sample_vocab_, s.history), std::nullopt};
  if (request.logprobs) choice.logprob = token_logprob(before, sample_vocab_, choice.token, request.top_logprobs);
  return choice;
}

bool Scheduler::accept(Sequence& s, const Choice& choice) {
  const int32_t token = choice.token;
  const GenerationRequest& request = s.job->request();
  s.history.push_back(token);
  ++s.generated;
  ++metrics_.completion_tokens;
  s.next = token;
  const auto& eos = model_.config().eos_ids;
  const bool is_eos = !request.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
  std::string text;
  if (!is_eos && !tokenizer_.is_special(token)) text = s.stops.push(s.utf8.feed(tokenizer_.token_bytes(token)));
  const bool at_limit = s.generated >= request.max_tokens;
  const bool ends = is_eos || s.stops.stopped() || at_limit;
  if (ends && !s.stops.stopped()) {
    text += s.stops.push(s.utf8.flush());
    text += s.stops.finish();
  }
  // The EOS that ends a sequence is no part of the completion's text, nor of its log-probabilities.
  const TokenLogprob* logprob = choice.logprob && !is_eos ? &*choice.logprob : nullptr;
  s.job->append(s.choice, text, s.generated, logprob);
  if (ends) s.job->finish(s.choice, is_eos || s.stops.stopped() ? "stop" : "length");
  return !ends;
}

void Scheduler::leave(const std::vector<bool>& keep) {
  const std::vector<int64_t> from = batch_.remove(keep);
  for (size_t i = 0; i < active_.size(); ++i)
    if (!keep[i]) slots_[size_t(active_[i]->slot)].busy = false;
  std::vector<std::unique_ptr<Sequence>> kept;
  for (int64_t row : from) kept.push_back(std::move(active_[size_t(row)]));
  active_ = std::move(kept);
}

int64_t Scheduler::take_slot(const std::vector<int32_t>& prompt) {
  const auto free = std::find_if(slots_.begin(), slots_.end(), [](const Slot& slot) { return !slot.busy; });
  SSM_CHECK(free != slots_.end(), "Scheduler: no free slot");  // the loop starts no more than slots_ sequences
  free->busy = true;
  free->prompt = prompt;
  return free - slots_.begin();
}

SlotSnapshots Scheduler::slot_snapshots(int64_t slot) {
  SlotSnapshots out;
  run_on_thread([&] {
    SSM_CHECK(cache_, "the prefix cache is off (--cache-mib 0): slots have nothing to save");
    const std::vector<int32_t>& prompt = slots_[size_t(slot)].prompt;
    SSM_CHECK(!prompt.empty(), "slot {} has run no prompt yet", slot);
    const std::span<const int32_t> tokens(prompt);
    const int64_t length = int64_t(prompt.size());
    for (int64_t covered = std::min(options_.cache_chunk, length);;
         covered = std::min(covered + options_.cache_chunk, length)) {
      // The snapshot after exactly `covered` tokens, when the cache holds it.
      const PrefixCache::Hit hit = cache_->find(tokens.first(size_t(covered)), covered);
      if (hit.length == covered) {
        Snapshot copy{model_.new_state(1), hit.snapshot->logits};
        hit.snapshot->state.copy_sequence(0, copy.state, 0);
        out.snapshots.emplace_back(covered, std::move(copy));
      }
      if (covered == length) break;
    }
    SSM_CHECK(!out.snapshots.empty(), "the prefix cache holds nothing of slot {}'s prompt any more", slot);
    out.tokens = prompt;
    synchronize(model_.device());  // the copies are queued on this thread's stream; the caller reads them on its own
  });
  return out;
}

int64_t Scheduler::restore_slot(int64_t slot, SlotSnapshots snapshots) {
  int64_t kept = 0;
  run_on_thread([&] {
    SSM_CHECK(cache_, "the prefix cache is off (--cache-mib 0): a slot has nowhere to be restored");
    const std::span<const int32_t> tokens(snapshots.tokens);
    // On the GPU the states were made on the caller's stream: the cache keeps copies made on this
    // thread's, so that evicting one later frees it behind the copies queued from it here.
    for (auto& [covered, snapshot] : snapshots.snapshots) {
      Snapshot here{model_.new_state(1), std::move(snapshot.logits)};
      snapshot.state.copy_sequence(0, here.state, 0);
      cache_->insert(tokens.first(size_t(covered)), std::move(here));
    }
    synchronize(model_.device());  // before the caller frees the states it read
    for (const auto& [covered, snapshot] : snapshots.snapshots)
      kept += cache_->find(tokens.first(size_t(covered)), covered).length == covered;
    metrics_.cache_bytes = cache_->bytes();
    metrics_.cache_entries = cache_->entries();
    slots_[size_t(slot)].prompt = snapshots.tokens;
  });
  return kept;
}

}  // namespace ssm::serve
