// ssm tokenize --tokenizer PATH (--text T | --text-file F) [--ids-out OUT.npy]: prints the ids, space-separated
// on one line. ssm detokenize --tokenizer PATH (--ids "1 2 3" | --ids-in IN.npy): prints the text, byte for
// byte (a newline is added only when stdout is a terminal).
// PATH: a tokenizer.json, a folder holding one, or "byte" for the byte tokenizer.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "core/tensor.h"
#include "tokenizer/tokenizer.h"

namespace ssm::cli {
namespace {

void write_stdout(std::string_view bytes) {
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size())
    fail("cannot write to standard output");
  std::fflush(stdout);
}

struct TokenizeOptions {
  std::string tokenizer, text, text_file, ids_out;
  bool no_special = false, quiet = false, stats = false;
  CLI::Option* text_option = nullptr;
  CLI::Option* file_option = nullptr;
};

void run_tokenize(const TokenizeOptions& o) {
  const bool has_text = o.text_option->count() > 0, has_file = o.file_option->count() > 0;
  SSM_CHECK(has_text != has_file, "tokenize: give exactly one of --text and --text-file");
  const std::string text = has_file ? read_text_file(o.text_file) : o.text;
  const auto tokenizer = load_tokenizer(o.tokenizer);

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = o.no_special ? tokenizer->encode_ordinary(text) : tokenizer->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (!o.ids_out.empty()) {
    Tensor tensor = Tensor::empty({int64_t(ids.size())}, DType::I32);
    if (!ids.empty()) std::memcpy(tensor.raw(), ids.data(), ids.size() * sizeof(int32_t));
    write_npy(o.ids_out, tensor);
  }
  if (!o.quiet) {
    std::string line;
    line.reserve(ids.size() * 6 + 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line.push_back(' ');
      line += std::to_string(ids[i]);
    }
    line.push_back('\n');
    write_stdout(line);
  }
  if (o.stats) {
    std::fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s: %.2f MB/s\n", text.size(), ids.size(), seconds,
                 seconds > 0 ? double(text.size()) / 1e6 / seconds : 0.0);
  }
}

struct DetokenizeOptions {
  std::string tokenizer, ids, ids_in;
  CLI::Option* ids_option = nullptr;
  CLI::Option* ids_in_option = nullptr;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t i = 0;
  auto is_separator = [](char c) { return c == ' ' || c == ',' || c == '\t' || c == '\n' || c == '\r' || c == '[' || c == ']'; };
  while (i < text.size()) {
    if (is_separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !is_separator(text[end])) ++end;
    const std::string word = text.substr(i, end - i);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SSM_CHECK(used == word.size() && value >= 0 && value <= INT32_MAX, "--ids: '{}' is not a token id", word);
    ids.push_back(int32_t(value));
    i = end;
  }
  return ids;
}

void run_detokenize(const DetokenizeOptions& o) {
  const bool has_ids = o.ids_option->count() > 0, has_file = o.ids_in_option->count() > 0;
  SSM_CHECK(has_ids != has_file, "detokenize: give exactly one of --ids and --ids-in");
  std::vector<int32_t> ids;
  if (has_ids) {
    ids = parse_ids(o.ids);
  } else {
    const Tensor tensor = read_npy(o.ids_in).contiguous();
    const int64_t n = tensor.numel();
    if (tensor.dtype() == DType::I32) {
      ids.assign(tensor.data<int32_t>(), tensor.data<int32_t>() + n);
    } else if (tensor.dtype() == DType::I64) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t v = tensor.data<int64_t>()[i];
        SSM_CHECK(v >= 0 && v <= INT32_MAX, "'{}': {} is not a token id", o.ids_in, v);
        ids.push_back(int32_t(v));
      }
    } else {
      fail("'{}': token ids must be int32 or int64, not {}", o.ids_in, dtype_name(tensor.dtype()));
    }
  }
  const auto tokenizer = load_tokenizer(o.tokenizer);
  std::string text = tokenizer->decode(ids);
  if (::isatty(STDOUT_FILENO)) text.push_back('\n');
  write_stdout(text);
}

const CommandRegistrar kTokenizeCommands(60, [](CLI::App& root) {
  {
    auto o = std::make_shared<TokenizeOptions>();
    CLI::App* cmd = root.add_subcommand("tokenize", "Encode text into token ids (printed space-separated)");
    cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.json, a folder holding one, or 'byte'")->required();
    o->text_option = cmd->add_option("--text", o->text, "the text to encode");
    o->file_option = cmd->add_option("--text-file", o->text_file, "a file whose bytes to encode");
    o->text_option->excludes(o->file_option);
    cmd->add_option("--ids-out", o->ids_out, "also write the ids as an int32 .npy file");
    cmd->add_flag("--no-special", o->no_special, "special tokens in the text are plain text (encode_ordinary)");
    cmd->add_flag("--quiet", o->quiet, "do not print the ids");
    cmd->add_flag("--stats", o->stats, "print bytes, tokens and encode throughput (MB/s) to stderr");
    cmd->callback([o] { run_tokenize(*o); });
  }
  {
    auto o = std::make_shared<DetokenizeOptions>();
    CLI::App* cmd = root.add_subcommand("detokenize", "Decode token ids into text");
    cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.json, a folder holding one, or 'byte'")->required();
    o->ids_option = cmd->add_option("--ids", o->ids, "token ids, separated by spaces or commas");
    o->ids_in_option = cmd->add_option("--ids-in", o->ids_in, "an int32/int64 .npy file of token ids (any shape)");
    o->ids_option->excludes(o->ids_in_option);
    cmd->callback([o] { run_detokenize(*o); });
  }
});

}  // namespace
}  // namespace ssm::cli
