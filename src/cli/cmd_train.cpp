// ssm train: train a mamba / mamba2 model from scratch (or resume), see train/trainer.h.
//
// SIGINT (Ctrl-C) and SIGTERM stop a run cleanly: the step in progress finishes, a checkpoint of it is
// written, one line says where, and the exit code is 128 + the signal (130, 143) so that scripts can
// tell an interrupted run from a finished one; --resume continues it. A second signal exits at once
// (the checkpoint being written, if any, is left unfinished and removed by the next run).
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>

#include "cli/command.h"
#include "train/trainer.h"

namespace ssm::cli {
namespace {

std::atomic<int> stop_signal{0};
std::atomic<bool> note_written{false};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the flags are set from a signal handler");
bool stderr_is_terminal = false;  // the note starts on a new line (below the progress bar and ^C)

extern "C" void request_stop(int signal_number) {
  if (stop_signal.exchange(signal_number) != 0) {
    // The second signal. Two signals that arrive together may run their handlers at once on two threads
    // (the mask below holds only on the thread that runs one): the first's note goes out before the
    // process ends (waiting at most some 0.1 s).
    for (int64_t i = 0; i < 100'000'000 && !note_written.load(); ++i) {
    }
    ::_exit(128 + signal_number);
  }
  static const char note[] = "\nssm train: stopping after this step with a checkpoint (signal again to quit at once)\n";
  const size_t skip = stderr_is_terminal ? 0 : 1;
  [[maybe_unused]] const ssize_t ignored = ::write(2, note + skip, sizeof note - 1 - skip);
  note_written.store(true);
}

void catch_stop_signals() {
  stderr_is_terminal = ::isatty(2);
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);  // one handler at a time: the second signal's ends the process
  sigaddset(&action.sa_mask, SIGINT);
  sigaddset(&action.sa_mask, SIGTERM);
  action.sa_flags = SA_RESTART;  // the file writes of a step or checkpoint carry on
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void run_train(TrainOptions o) {
  catch_stop_signals();
  o.stop_request = &stop_signal;
  const TrainResult r = train(o);
  if (r.stopped_by != 0) {
    const char* name = r.stopped_by == SIGINT ? "SIGINT" : "SIGTERM";
    std::fprintf(stderr, "%s: stopped at step %lld; checkpoint %s (continue with --resume)\n", name,
                 (long long)r.step, r.checkpoint.c_str());
    throw CLI::RuntimeError(128 + r.stopped_by);
  }
  std::printf("trained %lld steps: loss %.4f", (long long)r.steps_done, r.final_loss);
  if (r.val_loss >= 0) std::printf(", validation loss %.4f", r.val_loss);
  if (r.val_bpb >= 0) std::printf(", validation bits per byte %.4f", r.val_bpb);
  std::printf(", %.0f tokens/s\n", r.tokens_per_second);
  std::printf("model: %s\n", o.out_dir.c_str());
}

const CommandRegistrar kTrainCommand(30, [](CLI::App& root) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = root.add_subcommand("train", "Train a Mamba / Mamba-2 model from scratch, or resume");
  cmd->add_option("--model-config", o->model_config, "HF-style config.json (model_type mamba or mamba2)")->required();
  cmd->add_option("--data", o->data, "a token file or PREFIX from `ssm data prepare`, an .npy of ids, or text")
      ->required();
  cmd->add_option("--out", o->out_dir, "output folder: checkpoints, final model, metrics, loss.png")->required();
  cmd->add_option("--steps", o->steps, "train up to this many optimizer steps (default 1000)");
  cmd->add_option("--seed", o->seed, "seed of the initialisation and the batches (default 0)");
  cmd->add_option("--metrics", o->metrics, "metrics JSONL, one object per step (default OUT/metrics.jsonl)");
  cmd->add_flag("--resume", o->resume, "continue from the last checkpoint in OUT");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "tokenizer.json or a folder with one (default: beside the config, else bytes)");
  cmd->add_option("--batch-size", o->batch_size, "sequences per micro-batch (default 8)");
  cmd->add_option("--seq-len", o->seq_len, "tokens per sequence (default 256)");
  cmd->add_option("--grad-accum", o->grad_accum, "micro-batches per optimizer step (default 1)");
  cmd->add_option("--lr", o->lr, "peak learning rate (default 1e-3)");
  cmd->add_option("--min-lr", o->min_lr, "final learning rate of the cosine (default lr/10)");
  cmd->add_option("--warmup", o->warmup, "linear warmup steps (default 50)");
  cmd->add_option("--decay-steps", o->decay_steps,
                  "cosine decay of the lr to --min-lr ending at this step (default 0: constant after warmup; "
                  "independent of --steps so that --resume can extend a run)");
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay on matrices (default 0.1)");
  cmd->add_option("--beta1", o->beta1, "AdamW beta1 (default 0.9)");
  cmd->add_option("--beta2", o->beta2, "AdamW beta2 (default 0.95)");
  cmd->add_option("--grad-clip", o->grad_clip, "clip gradients to this global norm, 0 = off (default 1)");
  cmd->add_option("--val-fraction", o->val_fraction, "validation share when the data has no split (default 0.05)");
  cmd->add_option("--eval-every", o->eval_every,
                  "validate on steps that are multiples of this (default 100) and at the last step");
  cmd->add_option("--eval-tokens", o->eval_tokens, "validation tokens per evaluation (default 32768)");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "steps between checkpoints (default: each validation)");
  cmd->add_option("--keep-checkpoints", o->keep_checkpoints, "checkpoints kept (default 2)");
  cmd->add_option("--progress", o->progress, "progress bar: 1 on, 0 off (default: when stderr is a terminal)");
  cmd->add_flag("--quiet", o->quiet, "no per-evaluation lines");
  add_device_option(*cmd, &o->device);
  cmd->add_option("--dtype", o->dtype,
                  "f32, or bf16: mixed precision (F32 master weights, BF16 matrix products and activations); "
                  "default: bf16 on the GPU, f32 on the CPU");
  cmd->add_flag("--recompute", o->recompute,
                "keep fewer activations for the backward and recompute the cheap ones there (norm, conv and "
                "gated-norm outputs), and in mixed precision make each layer's BF16 matrices from the master "
                "weights when the layer runs instead of keeping them: less memory, a little more time, the same "
                "gradients");
  add_threads_option(*cmd, &o->threads);
  cmd->callback([o] { run_train(*o); });
});

}  // namespace
}  // namespace ssm::cli
