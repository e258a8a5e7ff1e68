// Training checkpoints: Hugging Face model folders that `ssm generate` / `ssm logits` load, plus the
// optimizer and trainer state needed to resume bit-identically.
//
//   DIR/checkpoint-00000500/
//     config.json, generation_config.json, model.safetensors   (LanguageModel::save)
//     tokenizer.json                                            (when the model has one; see below)
//     optimizer.safetensors    AdamW moments: "<param>.exp_avg", "<param>.exp_avg_sq" (F32)
//     trainer_state.json       step, seed, tokens seen, the options that shape the run
// A checkpoint is written to DIR/.tmp-checkpoint-<step>-<pid>, synced to the disk and renamed into
// place; the oldest beyond `keep` are renamed to .old-checkpoint-... before they are deleted. So a
// crash, a kill or a full disk never leaves a checkpoint-* folder that is half-written or half-removed;
// what it leaves under the unfinished names is removed when the next run starts.
// Byte-level models without a tokenizer file get a tokenizer.json that maps byte b to id b
// (a byte-level BPE with no merges, plus <|endoftext|> at 256 when the vocabulary has room).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/json.h"
#include "model/language_model.h"
#include "train/optimizer.h"

namespace ssm {

struct TrainerState {
  int64_t step = 0;  // optimizer steps done
  uint64_t seed = 0;
  int64_t tokens_seen = 0;        // training tokens consumed
  Json options = Json::object();  // what shaped the run (batch size, lr, ...), for checks on resume
};

// The tokenizer.json text of the byte-level tokenizer described above, for a vocabulary of `vocab_size` (≥ 256).
std::string byte_tokenizer_json(int64_t vocab_size);

// Writes config, weights and (when `tokenizer_json` is not empty) tokenizer.json into `folder`.
void write_model_folder(const std::string& folder, const LanguageModel& model, const std::string& tokenizer_json);

// Writes DIR/checkpoint-<step> (atomically, as above) and returns its path; keeps the newest `keep` (≥ 1).
// A failure is one ssm::Error naming the checkpoint, the file and the reason, and the last complete
// checkpoint (which it leaves as it was).
std::string save_checkpoint(const std::string& dir, const LanguageModel& model, const AdamW& optimizer,
                            const TrainerState& state, const std::string& tokenizer_json, int keep = 2);

// The checkpoint-* folder of DIR with the highest step, if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);

// Removes every checkpoint-* folder (and unfinished ones) of DIR; returns how many checkpoints.
int remove_checkpoints(const std::string& dir);
// Removes what a killed run left of the checkpoint it was writing or removing; returns how many folders.
int remove_unfinished_checkpoints(const std::string& dir);

// Reads a checkpoint's trainer state, and loads its optimizer moments into `optimizer` (built over
// the parameters of a model loaded from the same folder).
TrainerState read_trainer_state(const std::string& checkpoint);
void load_optimizer_state(const std::string& checkpoint, AdamW& optimizer, int64_t steps);

}  // namespace ssm
