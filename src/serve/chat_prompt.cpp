#include "serve/chat_prompt.h"

#include <cctype>

namespace ssm::serve {

std::string plain_chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string prompt;
  for (const ChatMessage& m : messages) {
    std::string role = m.role == "developer" ? "system" : m.role;
    role[0] = char(std::toupper(static_cast<unsigned char>(role[0])));
    prompt += role + ": " + m.content + "\n\n";
  }
  return prompt + "Assistant:";
}

}  // namespace ssm::serve
