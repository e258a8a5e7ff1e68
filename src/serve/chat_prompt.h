// A chat as one prompt, for a model without a chat template (chat_template.h renders those): every
// message becomes "Role: content" in a paragraph of its own, and the prompt ends with "Assistant:"
// for the model to go on from; the reply ends where the model starts the user's next turn.
#pragma once
#include <string>
#include <vector>

namespace ssm::serve {

struct ChatMessage {
  std::string role;  // system, developer, user, assistant or tool
  std::string content;
};

std::string plain_chat_prompt(const std::vector<ChatMessage>& messages);
inline constexpr const char* kPlainChatStop = "\nUser:";

}  // namespace ssm::serve
