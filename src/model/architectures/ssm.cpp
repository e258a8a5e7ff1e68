// The project's own model type: any layer plan, for training models of any pattern.
//
//   {"model_type": "ssm", "vocab_size": 256, "hidden_size": 128, "rms_norm_eps": 1e-5,
//    "tie_word_embeddings": true,
//    "layers": ["mamba2", "attention+mlp", "rat+mlp", "swa+mlp", ...],
//    "mamba2": {"state_size": 32, "head_dim": 32}, "attention": {"num_attention_heads": 4}, ...}
//
// Each entry of `layers` is one decoder layer: a sequence mixer, a channel mixer (mlp, moe), or
// both joined by '+', each a pre-norm residual branch. A kind's sizes come from the section of the
// same name. Tensor names: model.embed_tokens, model.layers.{i}.{norm,mixer,channel_norm,channel_mixer},
// model.norm, lm_head.
#include <map>

#include "model/architectures/architectures.h"
#include "nn/mixers/registry.h"

namespace ssm::arch {

void read_ssm(const ConfigReader& r, ModelConfig& c) {
  std::set<std::string> keys = {"vocab_size", "hidden_size", "rms_norm_eps", "layers"};
  for (const MixerKind& kind : mixer_kinds()) keys.insert(std::string(kind.name));
  r.reject_unknown(generic_keys(), keys);
  c.d_model = r.positive("hidden_size");
  c.vocab_size = r.positive("vocab_size");
  c.norm_eps = r.number("rms_norm_eps", 1e-5);
  c.embedding_name = "model.embed_tokens.weight";
  c.final_norm_name = "model.norm.weight";
  if (!r.boolean("tie_word_embeddings", true)) c.head_name = "lm_head.weight";

  SSM_CHECK(r.has("layers") && r.json()["layers"].is_array() && !r.json()["layers"].empty(),
            "{}: 'layers' must be a non-empty list of layer kinds", r.source());
  std::map<std::string, std::shared_ptr<const MixerSettings>> settings;  // one per kind, shared by its layers
  const auto settings_of = [&](const MixerKind& kind) {
    auto& slot = settings[std::string(kind.name)];
    if (!slot) {
      const ConfigReader section = r.section(std::string(kind.name));
      section.reject_unknown(kind.config_keys());
      slot = kind.from_config(section, c.d_model);
    }
    return slot;
  };
  const Json& layers = r.json()["layers"];
  c.n_layers = int64_t(layers.size());
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string where = fmt::format("{}: layers[{}]", r.source(), i);
    SSM_CHECK(layers[size_t(i)].is_string(), "{} must be a string such as \"mamba2\" or \"attention+mlp\"", where);
    const std::string entry = layers[size_t(i)].get<std::string>();
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      const size_t plus = entry.find('+', start);
      parts.push_back(entry.substr(start, plus == std::string::npos ? std::string::npos : plus - start));
      if (plus == std::string::npos) break;
      start = plus + 1;
    }
    SSM_CHECK(parts.size() <= 2, "{}: '{}' has more than two mixers", where, entry);
    const std::string layer = "model.layers." + std::to_string(i);
    for (size_t p = 0; p < parts.size(); ++p) {
      const MixerKind& kind = mixer_kind(parts[p], where);
      SSM_CHECK(p == 0 || (!kind.sequence && mixer_kind(parts[0], where).sequence),
                "{}: '{}' must be a sequence mixer followed by a channel mixer (mlp, moe)", where, entry);
      if (kind.sequence) add_branch(c, i, layer + ".norm.weight", settings_of(kind), layer + ".mixer");
      else add_branch(c, i, layer + ".channel_norm.weight", settings_of(kind), layer + ".channel_mixer");
    }
  }
}

}  // namespace ssm::arch
