// A model's chat template: the Jinja template of its tokenizer_config.json ("chat_template", or the
// "default" one of a list of named templates), or of chat_template.jinja beside it (which transformers
// prefers), rendered by this project's Jinja subset (jinja_parse.h) with what transformers passes:
// messages, add_generation_prompt (true: the prompt ends where the assistant's turn begins),
// bos_token and eos_token, raise_exception() and strftime_now().
//
// The prompt's special tokens are those the template wrote: text that came from a message stays text
// even where it spells a special token, so a user cannot close the turns the template opened.
// (Special tokens are matched as written, without their lstrip/rstrip/single_word options, which chat
// tokens do not use.)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "serve/chat_prompt.h"
#include "serve/jinja_render.h"
#include "tokenizer/tokenizer.h"

namespace ssm::serve {

class ChatTemplate {
 public:
  // Throws jinja::Error naming the line for a template this renderer cannot run. bos/eos: the tokens'
  // text, or nullopt to leave the variables undefined, as transformers does for a token not set.
  ChatTemplate(const std::string& source, const Tokenizer& tokenizer, std::optional<std::string> bos_token,
               std::optional<std::string> eos_token, jinja::RenderLimits limits = {});

  // The template of a model or tokenizer folder (or `source` instead, with the folder's bos/eos tokens);
  // nullopt when it has none. Throws jinja::Error for one this renderer cannot run, ssm::Error for an
  // unreadable tokenizer_config.json.
  static std::optional<ChatTemplate> from_folder(const std::string& folder, const Tokenizer& tokenizer,
                                                 std::optional<std::string> source = std::nullopt);

  // The rendered prompt: its text, and which bytes came from the messages. Throws jinja::Raised when
  // the template refuses the messages (raise_exception), jinja::Error when it fails otherwise.
  jinja::Value render(const std::vector<ChatMessage>& messages) const;
  // render() as token ids.
  std::vector<int32_t> encode(const std::vector<ChatMessage>& messages) const;
  // A prompt render() returned, as token ids.
  std::vector<int32_t> encode(const jinja::Value& prompt) const;

 private:
  const Tokenizer* tokenizer_;
  jinja::Template template_;
  jinja::RenderLimits limits_;
  std::optional<std::string> bos_, eos_;
  // The tokenizer's special tokens by first byte, longest first (leftmost-longest matching).
  std::vector<std::vector<std::pair<std::string, int32_t>>> specials_;
};

}  // namespace ssm::serve
