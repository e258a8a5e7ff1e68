#include "train/data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "core/random.h"

namespace ssm {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'S', 'S', 'M', 'T', 'O', 'K', 'E', 'N'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 64;

template <class T>
T read_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // little-endian hosts only (x86-64, aarch64)
  return v;
}

std::string read_prefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string s(n, '\0');
  in.read(s.data(), std::streamsize(n));
  s.resize(size_t(in.gcount()));
  return s;
}

}  // namespace

bool is_token_file(const std::string& path) {
  if (!fs::is_regular_file(path)) return false;
  const std::string head = read_prefix(path, 8);
  return head == std::string(kMagic, 8) || head.rfind("\x93NUMPY", 0) == 0;
}

TokenFile read_token_file(const std::string& path) {
  SSM_CHECK(fs::exists(path), "token file '{}' does not exist", path);
  SSM_CHECK(fs::is_regular_file(path), "'{}' is not a file", path);
  TokenFile out;
  const std::string head = read_prefix(path, 8);
  if (head.rfind("\x93NUMPY", 0) == 0) {
    const Tensor t = read_npy(path);
    SSM_CHECK(t.dtype() == DType::I32 || t.dtype() == DType::I64, "'{}': token ids must be int32 or int64, got {}",
              path, dtype_name(t.dtype()));
    out.ids.resize(size_t(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) {
      const int64_t v = t.dtype() == DType::I32 ? t.data<int32_t>()[i] : t.data<int64_t>()[i];
      SSM_CHECK(v >= 0 && v <= INT32_MAX, "'{}': token id {} at position {} is not a valid id", path, v, i);
      out.ids[size_t(i)] = int32_t(v);
    }
  } else {
    SSM_CHECK(head == std::string(kMagic, 8),
              "'{}' is not a token file (no SSMTOKEN or NumPy magic): give a file made by `ssm data prepare`, an "
              ".npy of ids, or a text file",
              path);
    const std::string bytes = read_text_file(path);
    SSM_CHECK(bytes.size() >= kHeader, "'{}': truncated token file header ({} bytes)", path, bytes.size());
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const uint32_t version = read_le<uint32_t>(p + 8), width = read_le<uint32_t>(p + 12);
    const uint64_t count = read_le<uint64_t>(p + 16);
    SSM_CHECK(version == kVersion, "'{}': token file version {} is not supported (expected {})", path, version,
              kVersion);
    SSM_CHECK(width == 2 || width == 4, "'{}': token width {} bytes is not supported (2 or 4)", path, width);
    SSM_CHECK(count <= (bytes.size() - kHeader) / width && bytes.size() - kHeader == count * width,
              "'{}': the header promises {} ids ({} bytes) but the file holds {} bytes of ids", path, count,
              count * width, bytes.size() - kHeader);
    const uint64_t vocab_size = read_le<uint64_t>(p + 24), text_bytes = read_le<uint64_t>(p + 32);
    // Ids are int32; a larger field would turn negative in int64 and poison every later size check.
    SSM_CHECK(vocab_size <= uint64_t(INT32_MAX) + 1 && text_bytes <= uint64_t(INT64_MAX),
              "'{}': the header's vocab_size {} or text_bytes {} is out of range", path, vocab_size, text_bytes);
    out.vocab_size = int64_t(vocab_size);
    out.text_bytes = int64_t(text_bytes);
    out.ids.resize(count);
    const unsigned char* d = p + kHeader;
    for (uint64_t i = 0; i < count; ++i) {
      const int64_t v = width == 2 ? int64_t(read_le<uint16_t>(d + 2 * i)) : int64_t(read_le<int32_t>(d + 4 * i));
      SSM_CHECK(v >= 0, "'{}': negative token id {} at position {}", path, v, i);
      SSM_CHECK(out.vocab_size == 0 || v < out.vocab_size,
                "'{}': token id {} at position {} is outside the file's vocabulary ({})", path, v, i, out.vocab_size);
      out.ids[i] = int32_t(v);
    }
  }
  SSM_CHECK(!out.ids.empty(), "token file '{}' holds no tokens", path);
  return out;
}

void write_token_file(const std::string& path, const TokenFile& file) {
  int32_t max_id = 0;
  for (int32_t v : file.ids) {
    SSM_CHECK(v >= 0, "write_token_file '{}': negative id {}", path, v);
    max_id = std::max(max_id, v);
  }
  const uint32_t width = max_id <= 0xFFFF ? 2 : 4;
  std::string bytes(kHeader + file.ids.size() * width, '\0');
  auto put = [&](size_t offset, auto value) { std::memcpy(bytes.data() + offset, &value, sizeof value); };
  std::memcpy(bytes.data(), kMagic, 8);
  put(8, kVersion);
  put(12, width);
  put(16, uint64_t(file.ids.size()));
  put(24, uint64_t(file.vocab_size));
  put(32, uint64_t(file.text_bytes));
  for (size_t i = 0; i < file.ids.size(); ++i) {
    if (width == 2)
      put(kHeader + 2 * i, uint16_t(file.ids[i]));
    else
      put(kHeader + 4 * i, int32_t(file.ids[i]));
  }
  write_text_file(path, bytes);
}

std::string read_corpus(const std::string& path) {
  SSM_CHECK(fs::exists(path), "corpus '{}' does not exist", path);
  std::string text;
  if (fs::is_directory(path)) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::recursive_directory_iterator(path))
      if (entry.is_regular_file() && entry.path().extension() == ".txt") files.push_back(entry.path());
    SSM_CHECK(!files.empty(), "corpus folder '{}' has no .txt files", path);
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::string part = read_text_file(f.string());
      if (part.empty()) continue;
      if (!text.empty()) text += "\n\n";
      text += part;
    }
  } else {
    text = read_text_file(path);
  }
  SSM_CHECK(!text.empty(), "corpus '{}' is empty: there is no text to train on", path);
  return text;
}

DataSplits tokenize_corpus(const std::string& text, const Tokenizer& tokenizer, double val_fraction,
                           const std::string& source) {
  SSM_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "validation fraction {} must be in [0, 1)", val_fraction);
  SSM_CHECK(!text.empty(), "corpus '{}' is empty: there is no text to train on", source);
  size_t cut = text.size();
  if (val_fraction > 0.0) {
    cut = size_t(double(text.size()) * (1.0 - val_fraction));
    // Move the cut to the start of the next line (or the previous one if there is none after).
    const size_t next = text.find('\n', cut);
    if (next != std::string::npos && next + 1 < text.size())
      cut = next + 1;
    else if (const size_t prev = cut > 0 ? text.rfind('\n', cut - 1) : std::string::npos; prev != std::string::npos)
      cut = prev + 1;
    cut = std::clamp<size_t>(cut, 1, text.size() - 1);
  }
  DataSplits out;
  out.source = source;
  const std::string_view all(text);
  out.train.ids = tokenizer.encode_ordinary(all.substr(0, cut));
  out.train.text_bytes = int64_t(cut);
  out.train.vocab_size = tokenizer.vocab_size();
  if (cut < text.size()) {
    out.val.ids = tokenizer.encode_ordinary(all.substr(cut));
    out.val.text_bytes = int64_t(text.size() - cut);
    out.val.vocab_size = tokenizer.vocab_size();
  }
  SSM_CHECK(!out.train.ids.empty(), "corpus '{}' gives no training tokens", source);
  return out;
}

void write_splits(const std::string& prefix, const DataSplits& splits) {
  const fs::path parent = fs::path(prefix).parent_path();
  if (!parent.empty()) {
    std::error_code error;
    fs::create_directories(parent, error);
    SSM_CHECK(!error && fs::is_directory(parent), "cannot create folder '{}': {}", parent.string(), error.message());
  }
  write_token_file(prefix + ".train.tok", splits.train);
  if (!splits.val.ids.empty()) write_token_file(prefix + ".val.tok", splits.val);
}

namespace {

// Splits the last `fraction` of a token file's ids off as validation data.
void split_ids(DataSplits& d, double val_fraction) {
  if (val_fraction <= 0.0 || d.train.ids.size() < 2) return;
  const size_t n = d.train.ids.size();
  const size_t n_val = std::clamp<size_t>(size_t(double(n) * val_fraction), 1, n - 1);
  d.val.ids.assign(d.train.ids.end() - std::ptrdiff_t(n_val), d.train.ids.end());
  d.train.ids.resize(n - n_val);
  d.val.vocab_size = d.train.vocab_size;
  if (d.train.text_bytes > 0) {  // apportioned by ids
    d.val.text_bytes = int64_t(double(d.train.text_bytes) * double(n_val) / double(n));
    d.train.text_bytes -= d.val.text_bytes;
  }
}

}  // namespace

DataSplits load_training_data(const std::string& path, const Tokenizer& tokenizer, double val_fraction) {
  SSM_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "validation fraction {} must be in [0, 1)", val_fraction);
  DataSplits d;
  std::string file = path;
  if (!fs::exists(file) && fs::exists(path + ".train.tok")) file = path + ".train.tok";
  SSM_CHECK(fs::exists(file), "data '{}' does not exist", path);
  if (fs::is_regular_file(file) && is_token_file(file)) {
    d.source = file;
    d.train = read_token_file(file);
    const std::string name = fs::path(file).filename().string();
    const size_t at = name.rfind(".train.");
    std::string val_file;
    if (at != std::string::npos) {
      std::string val_name = name;
      val_name.replace(at, 7, ".val.");
      val_file = (fs::path(file).parent_path() / val_name).string();
    }
    if (!val_file.empty() && fs::exists(val_file))
      d.val = read_token_file(val_file);
    else
      split_ids(d, val_fraction);
    return d;
  }
  // Text: a file that is not a token file, or a folder.
  if (fs::is_regular_file(file)) {
    const std::string head = read_prefix(file, 4096);
    SSM_CHECK(head.find('\0') == std::string::npos,
              "'{}' is neither a token file (SSMTOKEN / .npy) nor text (it holds NUL bytes)", file);
  }
  return tokenize_corpus(read_corpus(file), tokenizer, val_fraction, file);
}

BatchSampler::BatchSampler(const std::vector<int32_t>* ids, int64_t seq_len, uint64_t seed, const std::string& source)
    : ids_(ids), seq_len_(seq_len), seed_(seed) {
  SSM_CHECK(seq_len >= 1, "sequence length must be positive, got {}", seq_len);
  SSM_CHECK(int64_t(ids->size()) >= seq_len + 1,
            "sequence length {} is longer than the training data: '{}' has {} tokens in its training split, and a "
            "window needs {} (lower --seq-len or give more data)",
            seq_len, source, ids->size(), seq_len + 1);
}

void BatchSampler::sample(int64_t step, int64_t micro, Tensor& inputs, Tensor& targets) const {
  const int64_t batch = inputs.size(0);
  SSM_CHECK(inputs.dtype() == DType::I32 && targets.dtype() == DType::I32 && inputs.shape() == targets.shape() &&
                inputs.dim() == 2 && inputs.size(1) == seq_len_ && inputs.is_contiguous() && targets.is_contiguous(),
            "BatchSampler: inputs and targets must be contiguous I32 [batch, {}]", seq_len_);
  // One generator per (seed, step, micro): splitmix-style mixing of the three.
  uint64_t key = seed_ * 0x9E3779B97F4A7C15ull + uint64_t(step) * 0xBF58476D1CE4E5B9ull +
                 uint64_t(micro) * 0x94D049BB133111EBull + 0x2545F4914F6CDD1Dull;
  Rng rng(key);
  const uint64_t range = uint64_t(int64_t(ids_->size()) - seq_len_);  // starts in [0, n - L - 1]
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t start = int64_t(rng.below(range));
    const int32_t* src = ids_->data() + start;
    std::copy(src, src + seq_len_, in + b * seq_len_);
    std::copy(src + 1, src + 1 + seq_len_, tg + b * seq_len_);
  }
}

std::vector<EvalWindow> eval_windows(int64_t n_ids, int64_t window, int64_t max_windows) {
  std::vector<EvalWindow> out;
  for (int64_t start = 0; start + 1 < n_ids && int64_t(out.size()) < max_windows; start += window) {
    out.push_back({start, std::min(window, n_ids - 1 - start)});
  }
  return out;
}

double unigram_entropy_bits(const std::vector<int32_t>& ids) {
  std::map<int32_t, int64_t> counts;
  for (int32_t v : ids) ++counts[v];
  double h = 0.0;
  const double n = double(ids.size());
  for (const auto& [id, c] : counts) {
    const double p = double(c) / n;
    h -= p * std::log2(p);
  }
  return h;
}

}  // namespace ssm
