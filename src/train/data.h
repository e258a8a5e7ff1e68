// Training data: token files, corpora, splits and batch sampling.
//
// Token file (".tok"), little-endian, a 64-byte header then the ids:
//   offset  0  char[8]  magic "SSMTOKEN"
//           8  uint32   version (1)
//          12  uint32   bytes per id: 2 (uint16) or 4 (int32)
//          16  uint64   count: number of ids
//          24  uint64   vocab_size of the tokenizer that made them (0 = unknown)
//          32  uint64   text_bytes: UTF-8 bytes of the text they encode (0 = unknown), for bits per byte
//          40  byte[24] reserved, zero
//          64  ids      count × (bytes per id)
// A NumPy .npy of int32/int64 ids (any shape, flattened) is read too, with vocab and bytes unknown.
//
// `ssm data prepare` writes PREFIX.train.tok and PREFIX.val.tok: the text (a file, or a folder's
// .txt files in name order separated by blank lines) is split at a line boundary so that the last
// val_fraction of its bytes is the validation split, and each part is tokenized on its own.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "tokenizer/tokenizer.h"

namespace ssm {

struct TokenFile {
  std::vector<int32_t> ids;
  int64_t vocab_size = 0;  // 0 = unknown
  int64_t text_bytes = 0;  // 0 = unknown
};

// Reads a .tok or .npy file; throws ssm::Error naming the file for a missing or truncated file, bad
// magic/version/width, a negative id, or no ids at all.
TokenFile read_token_file(const std::string& path);
// Writes atomically (temporary file, then rename). uint16 when every id fits, else int32.
void write_token_file(const std::string& path, const TokenFile& file);
bool is_token_file(const std::string& path);  // by content: .tok magic or .npy magic

// A text file, or a folder whose *.txt files (sorted by name, recursively) are joined with blank
// lines. Errors: missing path, a folder without .txt files, empty text.
std::string read_corpus(const std::string& path);

struct DataSplits {
  TokenFile train, val;  // val may be empty (val_fraction 0)
  std::string source;
};

// Splits `text` (named `source` in errors) into train and validation text and tokenizes both.
DataSplits tokenize_corpus(const std::string& text, const Tokenizer& tokenizer, double val_fraction,
                           const std::string& source);
// PREFIX.train.tok and PREFIX.val.tok (the latter only when the validation split is not empty).
void write_splits(const std::string& prefix, const DataSplits& splits);

// The data behind `--data PATH`:
//   - a token file; when its name has ".train." and the same name with ".val." exists, that is the
//     validation split, else the last val_fraction of the ids is split off;
//   - PREFIX such that PREFIX.train.tok exists;
//   - otherwise a text file or folder, tokenized with `tokenizer` and split.
DataSplits load_training_data(const std::string& path, const Tokenizer& tokenizer, double val_fraction);

// Random training windows: a pure function of (seed, step, micro-batch), so a resumed run draws the
// same batches. Each row is seq_len + 1 consecutive ids starting uniformly in [0, n - seq_len - 1].
class BatchSampler {
 public:
  // Throws when the ids are fewer than seq_len + 1 (naming `source`).
  BatchSampler(const std::vector<int32_t>* ids, int64_t seq_len, uint64_t seed, const std::string& source);
  // inputs, targets: I32 [batch, seq_len] (targets = inputs shifted by one).
  void sample(int64_t step, int64_t micro, Tensor& inputs, Tensor& targets) const;

 private:
  const std::vector<int32_t>* ids_;
  int64_t seq_len_;
  uint64_t seed_;
};

// Validation windows: consecutive, non-overlapping windows of `window` + 1 ids from the start of
// the split, at most `max_windows` of them; the last one may be shorter. Returns start offsets and
// lengths (number of predicted ids).
struct EvalWindow {
  int64_t start, length;
};
std::vector<EvalWindow> eval_windows(int64_t n_ids, int64_t window, int64_t max_windows);

// Entropy (bits per id) of the unigram distribution of `ids`.
double unigram_entropy_bits(const std::vector<int32_t>& ids);

}  // namespace ssm
