// The training loop behind `ssm train`: data, model (from a config, initialised, or resumed from the
// last checkpoint), AdamW with warmup + cosine and global-norm clipping, gradient accumulation,
// validation loss and bits per byte at intervals, metrics JSONL, checkpoints, a progress bar and a
// PNG loss curve.
//
// Determinism: batches are a pure function of (seed, step), the learning rate a function of the step
// alone (its schedule does not depend on --steps), the kernels sum in fixed orders for a given thread
// count, and checkpoints hold exact F32 weights and moments: on the CPU with the same thread count,
// `--steps K` then `--steps N --resume` (or a run killed and resumed) draws the very curve of one
// `--steps N` run.
//
// Metrics file: one JSON object per optimizer step, e.g.
//   {"step":12,"loss":2.3012,"lr":0.0006,"grad_norm":0.81,"tokens":49152}
// plus "val_loss" and "val_bpb" (validation bits per byte) on evaluation steps: multiples of
// --eval-every, and the last step of the run. Only deterministic values go there; speed is reported
// on the terminal and in DIR/train_summary.json.
//
// Faults: a run killed at any moment (SIGKILL, a crash, a power cut) resumes with --resume from its
// last complete checkpoint, and what it left half-written is removed when the next run starts (see
// train/checkpoint.h); a failed save (full disk, unwritable folder) is one ssm::Error and leaves the
// last checkpoint intact; `stop_request` stops a run cleanly with a checkpoint (the CLI's SIGINT / SIGTERM).
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

namespace ssm {

struct TrainOptions {
  std::string model_config;  // HF config.json (mamba / mamba2)
  std::string data;          // token file, PREFIX of prepared files, text file or folder
  std::string out_dir;
  std::string metrics;    // JSONL path (default DIR/metrics.jsonl)
  std::string tokenizer;  // tokenizer.json or folder; empty: beside the config, else bytes
  int64_t steps = 1000;
  uint64_t seed = 0;
  bool resume = false;
  int64_t batch_size = 8;
  int64_t seq_len = 256;
  int64_t grad_accum = 1;
  double lr = 1e-3;
  double min_lr = -1;       // < 0: lr / 10
  int64_t warmup = 50;      // linear warmup steps
  int64_t decay_steps = 0;  // cosine decay to min_lr ends at this step; 0: constant lr after warmup
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;
  double val_fraction = 0.05;     // when the data has no validation split
  int64_t eval_every = 100;       // validation on steps that are multiples of this, and at the last step
  int64_t eval_tokens = 32768;    // validation tokens per evaluation (at most)
  int64_t checkpoint_every = -1;  // < 0: at each evaluation
  int keep_checkpoints = 2;
  int threads = 0;
  std::string device = "cpu";  // cpu or cuda: where the model, its gradients and the optimizer live
  // f32, or bf16: mixed precision (F32 master weights, gradients and moments; the matrix products and
  // activations in BF16), the GPU's default; "auto" picks it there and f32 on the CPU.
  std::string dtype = "auto";
  // Keep fewer activations and recompute the cheap ones in the backward (TrainPassOptions::recompute),
  // and in mixed precision make the layers' BF16 matrices per layer (bf16_working_copy's
  // per_layer_matrices): less memory, a little more time, the same gradients.
  bool recompute = false;
  int progress = -1;   // 1 on, 0 off, -1 when stderr is a terminal
  bool quiet = false;  // no per-evaluation lines
  // Set (to a signal number, from a signal handler) to stop the run: the step in progress finishes, a
  // checkpoint of it is written and train() returns with `stopped_by` set, before the final model is
  // written. Not consulted after the last step. nullptr: runs to the end.
  const std::atomic<int>* stop_request = nullptr;
};

struct TrainResult {
  int64_t steps_done = 0;  // optimizer steps in this invocation
  int64_t step = 0;        // the step the model is at on return
  double final_loss = 0;   // training loss of the last step
  double val_loss = -1;    // last validation loss (-1: none)
  double val_bpb = -1;     // last validation bits per byte (-1: unknown)
  double tokens_per_second = 0;
  std::string checkpoint;  // the last checkpoint written
  int stopped_by = 0;      // the stop request's value when it ended the run early, else 0
};

TrainResult train(const TrainOptions& options);

}  // namespace ssm
