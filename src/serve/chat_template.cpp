#include "serve/chat_template.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json.h"

namespace ssm::serve {

namespace fs = std::filesystem;

namespace {

// tokenizer_config.json's bos_token / eos_token: a string, or an added token's {"content": ...}.
std::optional<std::string> token_text(const Json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// chat_template: a string, or [{"name": ..., "template": ...}, ...] of which "default" is the chat's.
std::optional<std::string> config_template(const Json& config, const std::string& path) {
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array())
    for (const Json& named : *it)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string())
        return named["template"].get<std::string>();
  throw Error(fmt::format("{}: 'chat_template' is neither a string nor a list holding a \"default\" template", path));
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, const Tokenizer& tokenizer, std::optional<std::string> bos_token,
                           std::optional<std::string> eos_token, jinja::RenderLimits limits)
    : tokenizer_(&tokenizer),
      template_(source),
      limits_(limits),
      bos_(std::move(bos_token)),
      eos_(std::move(eos_token)),
      specials_(256) {
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (!tokenizer.is_special(id)) continue;
    const std::string_view text = tokenizer.token_bytes(id);
    if (!text.empty()) specials_[static_cast<unsigned char>(text[0])].emplace_back(text, id);
  }
  for (auto& candidates : specials_)
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

std::optional<ChatTemplate> ChatTemplate::from_folder(const std::string& folder, const Tokenizer& tokenizer,
                                                      std::optional<std::string> source) {
  const fs::path config_path = fs::path(folder) / "tokenizer_config.json";
  const fs::path jinja_path = fs::path(folder) / "chat_template.jinja";
  const Json config = fs::exists(config_path) ? read_json_file(config_path.string()) : Json::object();
  if (!config.is_object()) throw Error(fmt::format("{}: not a JSON object", config_path.string()));
  if (!source)
    source =
        fs::exists(jinja_path) ? read_text_file(jinja_path.string()) : config_template(config, config_path.string());
  if (!source) return std::nullopt;
  return ChatTemplate(*source, tokenizer, token_text(config, "bos_token"), token_text(config, "eos_token"));
}

jinja::Value ChatTemplate::render(const std::vector<ChatMessage>& messages) const {
  jinja::List list;
  for (const ChatMessage& m : messages)
    list.push_back(jinja::Value::of(
        jinja::Dict{{"role", jinja::Value::of(m.role, true)}, {"content", jinja::Value::of(m.content, true)}}));
  jinja::Dict globals = {{"messages", jinja::Value::of(std::move(list))},
                         {"add_generation_prompt", jinja::Value::of(true)}};
  if (bos_) globals.emplace_back("bos_token", jinja::Value::of(*bos_));
  if (eos_) globals.emplace_back("eos_token", jinja::Value::of(*eos_));
  return template_.render(globals, limits_);
}

std::vector<int32_t> ChatTemplate::encode(const std::vector<ChatMessage>& messages) const {
  return encode(render(messages));
}

std::vector<int32_t> ChatTemplate::encode(const jinja::Value& prompt) const {
  const std::string& text = prompt.text;
  std::vector<int32_t> ids;
  size_t copied = 0, span = 0;  // span: the first user span that does not end before the position
  const auto flush = [&](size_t end) {
    if (end > copied) {
      const auto piece = tokenizer_->encode_ordinary(std::string_view(text).substr(copied, end - copied));
      ids.insert(ids.end(), piece.begin(), piece.end());
    }
  };
  for (size_t pos = 0; pos < text.size();) {
    while (span < prompt.user.size() && prompt.user[span].end <= pos) ++span;
    const size_t user_from = span < prompt.user.size() ? prompt.user[span].begin : text.size();
    if (pos >= user_from) {  // inside user text: no special token starts here
      pos = prompt.user[span].end;
      continue;
    }
    const auto& candidates = specials_[static_cast<unsigned char>(text[pos])];
    const auto match = std::find_if(candidates.begin(), candidates.end(), [&](const auto& special) {
      return pos + special.first.size() <= user_from && text.compare(pos, special.first.size(), special.first) == 0;
    });
    if (match == candidates.end()) {
      ++pos;
      continue;
    }
    flush(pos);
    ids.push_back(match->second);
    pos += match->first.size();
    copied = pos;
  }
  flush(text.size());
  return ids;
}

}  // namespace ssm::serve
