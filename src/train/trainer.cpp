#include "train/trainer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/threads.h"
#include "model/language_model.h"
#include "train/batch_prefetch.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/init.h"
#include "train/loss_plot.h"
#include "train/mixed_precision.h"
#include "train/model_backward.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace ssm {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string format_rate(double r) {
  if (r >= 1e6) return fmt::format("{:.2f}M", r / 1e6);
  if (r >= 1e3) return fmt::format("{:.1f}k", r / 1e3);
  return fmt::format("{:.0f}", r);
}

void check_options(const TrainOptions& o) {
  SSM_CHECK(!o.model_config.empty(), "--model-config is required");
  SSM_CHECK(!o.data.empty(), "--data is required");
  SSM_CHECK(!o.out_dir.empty(), "--out is required");
  SSM_CHECK(o.steps >= 1, "--steps must be positive, got {}", o.steps);
  SSM_CHECK(o.batch_size >= 1, "--batch-size must be positive, got {}", o.batch_size);
  SSM_CHECK(o.seq_len >= 1, "--seq-len must be positive, got {}", o.seq_len);
  SSM_CHECK(o.grad_accum >= 1, "--grad-accum must be positive, got {}", o.grad_accum);
  SSM_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be positive, got {}", o.lr);
  SSM_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "--val-fraction must be in [0, 1), got {}", o.val_fraction);
}

// The output folder, created and probed for writing. The probe is named like write_atomically's
// temporaries, so that one left by a kill is removed with them.
void prepare_out_dir(const std::string& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  SSM_CHECK(!error && fs::is_directory(dir), "cannot create output folder '{}': {}", dir,
            error ? error.message() : "not a folder");
  const fs::path probe = fs::path(dir) / fmt::format(".write-test.tmp-{}", ::getpid());
  {
    std::ofstream out(probe);
    SSM_CHECK(out.good(), "output folder '{}' is not writable: {}", dir, std::strerror(errno));
  }
  fs::remove(probe, error);
}

struct TokenizerChoice {
  std::unique_ptr<Tokenizer> tokenizer;
  std::string json;  // tokenizer.json text for checkpoints ("" = none)
  bool bytes = false;
};

TokenizerChoice choose_tokenizer(const TrainOptions& o, const ModelConfig& config) {
  TokenizerChoice t;
  std::string path = o.tokenizer;
  const fs::path beside = fs::path(o.model_config).parent_path() / "tokenizer.json";
  if (path.empty() && fs::exists(beside)) path = beside.string();
  if (!path.empty() && path != "byte" && path != "bytes") {
    t.tokenizer = load_tokenizer(path);
    const fs::path file = fs::is_directory(path) ? fs::path(path) / "tokenizer.json" : fs::path(path);
    t.json = read_text_file(file.string());
    SSM_CHECK(t.tokenizer->vocab_size() <= config.vocab_size,
              "tokenizer '{}' has {} tokens but the model's vocabulary is {}", path, t.tokenizer->vocab_size(),
              config.vocab_size);
    return t;
  }
  SSM_CHECK(config.vocab_size >= 256,
            "'{}': the model's vocabulary ({}) is smaller than 256 and there is no tokenizer: give --tokenizer",
            o.model_config, config.vocab_size);
  t.tokenizer = make_byte_tokenizer();
  t.json = byte_tokenizer_json(config.vocab_size);
  t.bytes = true;
  return t;
}

void check_ids(const TokenFile& f, int64_t vocab, const std::string& what) {
  for (size_t i = 0; i < f.ids.size(); ++i)
    SSM_CHECK(f.ids[i] < vocab, "{}: token id {} at position {} is outside the model's vocabulary ({})", what, f.ids[i],
              i, vocab);
}

// Keeps the metrics lines of steps ≤ `step` (a resumed run continues after them).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_text_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const Json j = parse_json(line);
      if (j.contains("step") && j["step"].get<int64_t>() <= step) kept += line + "\n";
    } catch (const Json::exception&) {
      // a torn last line from a crash: dropped
    }
  }
  write_text_file(path, kept);
}

LossCurve read_curve(const std::string& metrics) {
  LossCurve c;
  if (!fs::exists(metrics)) return c;
  std::istringstream in(read_text_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    try {
      const Json j = parse_json(line);
      const double step = j.at("step").get<double>();
      if (j.contains("loss")) c.train.emplace_back(step, j["loss"].get<double>());
      if (j.contains("val_loss")) c.val.emplace_back(step, j["val_loss"].get<double>());
    } catch (const Json::exception&) {
    }
  }
  return c;
}

class Progress {
 public:
  Progress(bool enabled, int64_t total) : enabled_(enabled), total_(total) {}
  void update(int64_t step, double loss, double rate, double eta) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (step != total_ && std::chrono::duration<double>(now - last_).count() < 0.1) return;
    last_ = now;
    const int width = 24;
    const int filled = int(double(width) * double(step) / double(total_));
    std::string bar(size_t(filled), '=');
    if (filled < width) bar += '>' + std::string(size_t(width - filled - 1), ' ');
    std::fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] %3d%% | loss %.4f | %s tok/s | ETA %s", (long long)step,
                 (long long)total_, bar.c_str(), int(100 * step / total_), loss, format_rate(rate).c_str(),
                 format_duration(eta).c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  // A line that stays (evaluation results), printed above the bar.
  void line(const std::string& text) {
    if (enabled_ && shown_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_ && shown_) std::fprintf(stderr, "\n");
  }
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  int64_t total_;
  bool shown_ = false;
  Clock::time_point last_{};
};

}  // namespace

TrainResult train(const TrainOptions& o) {
  check_options(o);
  const Device device = parse_device(o.device, "--device");
  require_device(device);
  SSM_CHECK(o.dtype == "auto" || o.dtype == "f32" || o.dtype == "bf16", "--dtype takes auto, f32 or bf16, got '{}'",
            o.dtype);
  SSM_CHECK(o.dtype != "bf16" || device != Device::CPU,
            "--dtype bf16 (mixed precision) trains on the GPU; the CPU trains in F32");
  const bool mixed = device != Device::CPU && o.dtype != "f32";
  set_num_threads(o.threads);
  SSM_CHECK(fs::is_regular_file(o.model_config), "model config '{}' does not exist", o.model_config);
  const ModelConfig config = ModelConfig::from_json(read_json_file(o.model_config), o.model_config);
  TokenizerChoice tok = choose_tokenizer(o, config);
  prepare_out_dir(o.out_dir);
  const FolderLock lock(o.out_dir, "an ssm train writes its checkpoints there");

  DataSplits data = load_training_data(o.data, *tok.tokenizer, o.val_fraction);
  check_ids(data.train, config.vocab_size, data.source);
  check_ids(data.val, config.vocab_size, data.source + " (validation)");
  if (tok.bytes && data.train.vocab_size > 257) {
    std::fprintf(stderr,
                 "warning: '%s' was tokenized with a %lld-token vocabulary; give --tokenizer so that the "
                 "checkpoints carry it\n",
                 data.source.c_str(), (long long)data.train.vocab_size);
    tok.json.clear();
  }
  const BatchSampler sampler(&data.train.ids, o.seq_len, o.seed, data.source);
  std::vector<EvalWindow> windows;
  if (data.val.ids.size() >= 2)
    windows = eval_windows(int64_t(data.val.ids.size()), o.seq_len, std::max<int64_t>(1, o.eval_tokens / o.seq_len));

  // Model: resumed or initialised.
  std::optional<std::string> resume_from;
  if (o.resume) resume_from = latest_checkpoint(o.out_dir);
  LanguageModel model = [&] {
    if (resume_from) {
      LoadOptions lo;
      lo.weights = WeightDType::F32;  // AdamW updates f32 weights in place
      lo.writable = true;
      LanguageModel m = LanguageModel::load(*resume_from, lo);
      SSM_CHECK(m.config().hf_config == config.hf_config,
                "checkpoint '{}' holds a model of another configuration than '{}'", *resume_from, o.model_config);
      return m;
    }
    LanguageModel m(config);
    init_parameters(m, o.seed);
    return m;
  }();
  // Initialised (or read) on the host, so that a run on the GPU starts from the CPU run's weights.
  if (device != Device::CPU) model.to_device(device, DType::F32);
  // Mixed precision (train/mixed_precision.h): the passes run a BF16 working copy; `model` stays the
  // F32 master that AdamW updates and checkpoints hold. --recompute makes the layers' BF16 matrices
  // per layer too, instead of keeping them.
  std::unique_ptr<LanguageModel> bf16_copy;
  if (mixed) bf16_copy = std::make_unique<LanguageModel>(bf16_working_copy(model, o.recompute));
  LanguageModel& working = mixed ? *bf16_copy : model;
  ModelGrads grads(working);
  AdamW optimizer(optimizer_params(model, working, grads), {o.beta1, o.beta2, 1e-8, o.weight_decay});

  const Json run_options = {{"batch_size", o.batch_size},
                            {"seq_len", o.seq_len},
                            {"grad_accum", o.grad_accum},
                            {"lr", o.lr},
                            {"min_lr", o.min_lr},
                            {"warmup", o.warmup},
                            {"decay_steps", o.decay_steps},
                            {"weight_decay", o.weight_decay},
                            {"beta1", o.beta1},
                            {"beta2", o.beta2},
                            {"grad_clip", o.grad_clip},
                            {"steps", o.steps},
                            {"seed", o.seed},
                            {"data", data.source},
                            {"threads", num_threads()},
                            {"device", o.device},
                            {"dtype", mixed ? "bf16" : "f32"}};
  TrainerState state;
  state.seed = o.seed;
  state.options = run_options;
  Progress progress(o.progress < 0 ? bool(::isatty(2)) : o.progress > 0, o.steps);
  if (resume_from) {
    state = read_trainer_state(*resume_from);
    load_optimizer_state(*resume_from, optimizer, state.step);
    for (const char* key : {"batch_size", "seq_len", "grad_accum", "lr", "warmup", "decay_steps", "seed", "threads",
                            "device", "dtype"})
      if (state.options.contains(key) && state.options[key] != run_options[key])
        std::fprintf(stderr, "warning: resuming with %s = %s, the checkpoint used %s (the curve will differ)\n", key,
                     json_excerpt(run_options[key]).c_str(), json_excerpt(state.options[key]).c_str());
    state.seed = o.seed;
    state.options = run_options;
    progress.line(fmt::format("resuming from {} (step {})", *resume_from, state.step));
  } else {
    if (o.resume) progress.line(fmt::format("no checkpoint in '{}': starting from step 0", o.out_dir));
    // A fresh run owns the folder: checkpoints of an earlier run would be resumed from by mistake.
    const int removed = remove_checkpoints(o.out_dir);
    if (removed > 0)
      progress.line(fmt::format("note: removed {} checkpoint(s) of an earlier run in '{}' (--resume continues a run)",
                                removed, o.out_dir));
  }
  if (!o.quiet)
    progress.line(fmt::format("model: {} ({:.2f}M parameters); data: {} train / {} validation tokens; {}",
                              config.describe(), double(model.parameter_count()) / 1e6, data.train.ids.size(),
                              data.val.ids.size(),
                              device == Device::CPU ? fmt::format("{} threads", num_threads()) : "on the GPU"));

  const std::string metrics_path = o.metrics.empty() ? (fs::path(o.out_dir) / "metrics.jsonl").string() : o.metrics;
  const fs::path metrics_folder = fs::absolute(metrics_path).parent_path();
  std::error_code error;
  fs::create_directories(metrics_folder, error);
  // What a killed run left half-written: a checkpoint folder, temporaries of the files in DIR and of the metrics.
  remove_unfinished_checkpoints(o.out_dir);
  remove_leftover_temporaries(o.out_dir);
  remove_leftover_temporaries(metrics_folder.string(), fs::path(metrics_path).filename().string());
  if (resume_from)
    truncate_metrics(metrics_path, state.step);
  else
    write_text_file(metrics_path, "");
  std::FILE* metrics = std::fopen(metrics_path.c_str(), "a");
  SSM_CHECK(metrics, "cannot open metrics file '{}': {}", metrics_path, std::strerror(errno));
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{metrics};

  LrSchedule schedule;
  schedule.peak_lr = o.lr;
  schedule.min_lr = o.min_lr >= 0 ? o.min_lr : o.lr / 10;
  schedule.warmup_steps = std::max<int64_t>(0, o.warmup);
  schedule.decay_end = o.decay_steps;
  const int64_t eval_every = std::max<int64_t>(1, o.eval_every);
  const int64_t ckpt_every = o.checkpoint_every > 0 ? o.checkpoint_every : eval_every;

  TrainingPass pass(working, {.recompute = o.recompute});
  // Batch `step` is sampled as the sampler's step - 1 (what a resumed run continues from).
  BatchPrefetcher batches(sampler, o.batch_size, o.seq_len, o.grad_accum, state.step, o.steps);

  const double bytes_per_token =
      data.val.text_bytes > 0 ? double(data.val.text_bytes) / double(data.val.ids.size()) : 0.0;
  auto evaluate = [&]() -> double {
    double total = 0;
    int64_t counted = 0;
    for (size_t w0 = 0; w0 < windows.size();) {
      // Windows of one length, up to batch_size of them.
      size_t w1 = w0;
      while (w1 < windows.size() && int64_t(w1 - w0) < o.batch_size && windows[w1].length == windows[w0].length) ++w1;
      const int64_t rows = int64_t(w1 - w0), len = windows[w0].length;
      Tensor vi = Tensor::empty({rows, len}, DType::I32), vt = Tensor::empty({rows, len}, DType::I32);
      for (int64_t r = 0; r < rows; ++r) {
        const int32_t* src = data.val.ids.data() + windows[w0 + size_t(r)].start;
        std::copy(src, src + len, vi.data<int32_t>() + r * len);
        std::copy(src + 1, src + 1 + len, vt.data<int32_t>() + r * len);
      }
      int64_t n = 0;
      total += pass.loss(vi, vt, &n) * double(n);
      counted += n;
      w0 = w1;
    }
    return counted ? total / double(counted) : NAN;
  };

  TrainResult result;
  double train_seconds = 0;
  int64_t timed_tokens = 0;
  const int64_t tokens_per_step = o.batch_size * o.seq_len * o.grad_accum;
  const float micro_scale = 1.0f / float(o.grad_accum);
  const std::vector<Tensor*> grad_tensors = grads.tensors();
  for (int64_t step = state.step + 1; step <= o.steps; ++step) {
    const auto t0 = Clock::now();
    grads.zero();
    double loss = 0;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      const BatchPrefetcher::Batch batch = batches.next(step - 1, micro);
      loss += pass.forward_backward(batch.ids, batch.targets, grads, micro_scale) / double(o.grad_accum);
    }
    SSM_CHECK(std::isfinite(loss), "the training loss became {} at step {} (try a lower --lr)", loss, step);
    const double norm = grad_norm(grad_tensors);
    const double lr = schedule.lr_at(step - 1);
    optimizer.step(lr, clip_factor(norm, o.grad_clip));
    state.step = step;
    state.tokens_seen += tokens_per_step;
    const double dt = seconds_since(t0);
    train_seconds += dt;
    timed_tokens += tokens_per_step;
    ++result.steps_done;
    result.final_loss = loss;

    Json line = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens", state.tokens_seen}};
    // Evaluation on multiples of --eval-every (a function of the step alone, so an extended run
    // evaluates where one long run does) and at the last step of the run.
    const bool eval_now = step % eval_every == 0 || step == o.steps;
    if (eval_now && !windows.empty()) {
      const double val = evaluate();
      line["val_loss"] = val;
      result.val_loss = val;
      if (bytes_per_token > 0) {
        result.val_bpb = val / std::log(2.0) / bytes_per_token;
        line["val_bpb"] = result.val_bpb;
      }
    }
    const std::string text = line.dump() + "\n";
    SSM_CHECK(std::fputs(text.c_str(), metrics) >= 0 && std::fflush(metrics) == 0, "cannot write '{}': {}",
              metrics_path, std::strerror(errno));
    const double rate = train_seconds > 0 ? double(timed_tokens) / train_seconds : 0;
    result.tokens_per_second = rate;
    if (eval_now && !o.quiet) {
      std::string msg = fmt::format("step {}/{}: loss {:.4f}", step, o.steps, loss);
      if (line.contains("val_loss")) msg += fmt::format(" | val loss {:.4f}", line["val_loss"].get<double>());
      if (line.contains("val_bpb")) msg += fmt::format(" | val bpb {:.4f}", line["val_bpb"].get<double>());
      msg += fmt::format(" | {} tok/s", format_rate(rate));
      progress.line(msg);
    }
    const double eta = double(o.steps - step) * train_seconds / double(result.steps_done);
    progress.update(step, loss, rate, eta);
    if (!progress.enabled() && !o.quiet && !eval_now && step % std::max<int64_t>(1, o.steps / 10) == 0)
      progress.line(fmt::format("step {}/{}: loss {:.4f} | {} tok/s | ETA {}", step, o.steps, loss, format_rate(rate),
                                format_duration(eta)));
    auto save = [&] {
      // The metrics lines up to this step reach the disk before the checkpoint that resumes after them.
      ::fsync(::fileno(metrics));
      result.checkpoint = save_checkpoint(o.out_dir, model, optimizer, state, tok.json, o.keep_checkpoints);
    };
    const bool scheduled = step % ckpt_every == 0 || step == o.steps;
    if (scheduled) save();
    // A stop request (SIGINT / SIGTERM in the CLI) ends the run after this step, with a checkpoint of it;
    // during the last step it lets the run finish.
    if (const int stop = o.stop_request ? o.stop_request->load() : 0; stop != 0 && step < o.steps) {
      if (!scheduled) save();
      result.step = step;
      result.stopped_by = stop;
      progress.finish();
      return result;
    }
  }
  progress.finish();
  result.step = state.step;
  if (result.steps_done == 0)
    progress.line(
        fmt::format("'{}' is already at step {} (--steps {}): nothing to do", o.out_dir, state.step, o.steps));
  if (result.steps_done == 0 && !windows.empty()) {  // nothing trained: validate the loaded model
    result.val_loss = evaluate();
    if (bytes_per_token > 0) result.val_bpb = result.val_loss / std::log(2.0) / bytes_per_token;
    if (!o.quiet) {
      std::string msg = fmt::format("final validation (step {}): val loss {:.4f}", state.step, result.val_loss);
      if (result.val_bpb >= 0) msg += fmt::format(" | val bpb {:.4f}", result.val_bpb);
      progress.line(msg);
    }
  }

  // The final model in DIR itself (loadable by `ssm generate --model DIR`), the curve, a summary.
  write_model_folder(o.out_dir, model, tok.json);
  std::fflush(metrics);
  write_loss_plot((fs::path(o.out_dir) / "loss.png").string(), read_curve(metrics_path));
  const Json summary = {{"step", state.step},
                        {"tokens_seen", state.tokens_seen},
                        {"final_loss", result.final_loss},
                        {"val_loss", result.val_loss},
                        {"val_bpb", result.val_bpb},
                        {"tokens_per_second", result.tokens_per_second},
                        {"train_seconds", train_seconds},
                        {"batch_wait_seconds", batches.wait_seconds()},
                        {"threads", num_threads()},
                        {"options", run_options}};
  write_text_file((fs::path(o.out_dir) / "train_summary.json").string(), summary.dump(2) + "\n");
  return result;
}

}  // namespace ssm
