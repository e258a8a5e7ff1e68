// ssm data prepare: text (a file or a folder of .txt files) → PREFIX.train.tok + PREFIX.val.tok,
// the token files `ssm train --data` reads (format: train/data.h).
#include <cstdio>

#include "cli/command.h"
#include "train/data.h"

namespace ssm::cli {
namespace {

struct PrepareOptions {
  std::string input, out, tokenizer = "byte";
  double val_fraction = 0.05;
};

void run_prepare(const PrepareOptions& o) {
  const auto tokenizer = load_tokenizer(o.tokenizer);
  SSM_CHECK(o.val_fraction >= 0.0 && o.val_fraction < 1.0, "--val-fraction {} must be in [0, 1)", o.val_fraction);
  const std::string text = read_corpus(o.input);
  const DataSplits splits = tokenize_corpus(text, *tokenizer, o.val_fraction, o.input);
  write_splits(o.out, splits);
  std::printf("%s: %zu bytes, tokenizer %s (vocabulary %d)\n", o.input.c_str(), text.size(), tokenizer->kind().c_str(),
              tokenizer->vocab_size());
  std::printf("  %s.train.tok: %zu tokens (%lld bytes of text)\n", o.out.c_str(), splits.train.ids.size(),
              (long long)splits.train.text_bytes);
  if (!splits.val.ids.empty())
    std::printf("  %s.val.tok: %zu tokens (%lld bytes of text)\n", o.out.c_str(), splits.val.ids.size(),
                (long long)splits.val.text_bytes);
}

const CommandRegistrar kDataCommand(40, [](CLI::App& root) {
  CLI::App* data = root.add_subcommand("data", "Prepare training data");
  data->require_subcommand(1);
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* prepare = data->add_subcommand("prepare", "Tokenize text into a training and a validation token file");
  prepare->add_option("--input", o->input, "a text file, or a folder of .txt files")->required();
  prepare->add_option("--out", o->out, "output prefix: writes PREFIX.train.tok and PREFIX.val.tok")->required();
  prepare->add_option("--tokenizer", o->tokenizer, "tokenizer.json, a folder holding one, or 'byte' (default)");
  prepare->add_option("--val-fraction", o->val_fraction, "share of the text kept for validation (default 0.05)");
  prepare->callback([o] { run_prepare(*o); });
});

}  // namespace
}  // namespace ssm::cli
