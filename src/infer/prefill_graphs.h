// Short prefill chunks on the GPU recorded as device graphs, one per shape (rows, tokens), and
// replayed (graph_recordings.h), as StepGraphs does decode steps. A 16-token chunk of mamba2-130m is
// ~240 kernels: ~1.1 ms for the host to queue them one by one against ~0.5 ms of GPU work, and a
// prefix-cache hit's whole prefill is such a chunk (its suffix); replayed it is one launch.
//
// The recorded work reads and writes the same addresses at every replay: the ids are copied into a
// buffer of this object's first, and the state into a staging state of this object's and back (one
// copy_many kernel each way, ~0.02 ms for mamba2-130m's 19 MB): the callers' states move between
// calls (a server's hit runs on whichever state was spare) and may be freed at any time, so no
// recording points at one. The logits are where the recording wrote them in the caller's workspace
// (GraphRecordings checks its block and mark). The staging state is made when the first recording
// is, and grows (dropping the recordings) to the most rows recorded.
//
// Op by op instead: on the CPU, for models with a mixer whose forward cannot be recorded
// (Mixer::replayable_forward: only Mamba-1, Mamba-2 and MLP say so; attention and RAT keep their
// caches' lengths on the host and upload positions inside), for chunks longer than
// kMaxTokens or of more than kMaxRows rows, the first time a shape is seen (a prompt length that
// comes once is never recorded) and once a recording has failed.
#pragma once
#include <cstdint>

#include "infer/graph_recordings.h"
#include "model/language_model.h"

namespace ssm {

class PrefillGraphs {
 public:
  // Longer chunks are not recorded: at 64 tokens the GPU work of a mamba2-130m chunk is still shorter
  // than queueing its launches (16 tokens ~0.5 ms; 2048 tokens 3.5 ms), while every length is a
  // shape of its own (a server's suffixes take any length up to its chunk).
  static constexpr int64_t kMaxTokens = 64;
  // Nor chunks of more prompts: the staging state holds this many sequences (mamba2-130m: 150 MB,
  // mamba2-1.3b ~0.8 GB), and a chunk of more rows does enough work per launch to hide the launches.
  static constexpr int64_t kMaxRows = 8;
  // Recordings kept (least recently used dropped first): a server at steady load sees a few shapes
  // again and again (a probe's suffix, its prompts' common lengths); each holds its ~240 nodes and the
  // SSD's scratch for its shape, small beside the staging state.
  static constexpr size_t kKept = 32;

  explicit PrefillGraphs(const LanguageModel& model) : model_(model), recordings_(kKept, 2) {}

  // model.forward(ids, &state, false, ws): the logits of each row's last token [rows, vocab], taken
  // from ws (valid until the caller releases it below where it was at the call); state (batch rows)
  // goes from before the chunk to after it. ids: I32 [rows, tokens], on the host or the device.
  Tensor forward(const Tensor& ids, ModelState& state, Workspace& ws);
  int64_t replayed() const { return recordings_.replayed(); }  // chunks replayed so far
  size_t recorded() const { return recordings_.size(); }        // recordings held now

 private:
  // Whether a chunk of this shape on `state` may be recorded (or replayed).
  bool recordable(const Tensor& ids, const ModelState& state) const;
  // Makes the staging state hold `rows` sequences (growing it drops the recordings).
  void stage(int64_t rows);

  const LanguageModel& model_;
  GraphRecordings recordings_;  // by (rows, tokens)
  Tensor ids_;                  // I32 [kMaxRows * kMaxTokens] on the device: a chunk's ids are its first elements
  ModelState staging_;          // the state the recordings run on, resized to their rows
  int64_t staging_bytes_ = -1;  // its bytes() when they were made (it moves only to grow)
};

}  // namespace ssm
