#include "nn/mixers/registry.h"

#include "nn/mixers/attention/attention.h"
#include "nn/mixers/mamba1/mamba1.h"
#include "nn/mixers/mamba2/mamba2.h"
#include "nn/mixers/mamba3/mamba3.h"
#include "nn/mixers/mlp/mlp.h"
#include "nn/mixers/mlstm/mlstm.h"
#include "nn/mixers/moe/moe.h"
#include "nn/mixers/rat/rat.h"
#include "nn/mixers/slstm/slstm.h"

namespace ssm {

namespace {
template <class Settings>
std::shared_ptr<const MixerSettings> read(const ConfigReader& section, int64_t d_model) {
  return std::make_shared<Settings>(Settings::from_config(section, d_model));
}
std::shared_ptr<const MixerSettings> read_sliding(const ConfigReader& section, int64_t d_model) {
  return std::make_shared<AttentionSettings>(AttentionSettings::sliding_from_config(section, d_model));
}
}  // namespace

const std::vector<MixerKind>& mixer_kinds() {
  static const std::vector<MixerKind> kinds = {
      {"mamba1", true, &Mamba1Settings::config_keys, &read<Mamba1Settings>},
      {"mamba2", true, &Mamba2Settings::config_keys, &read<Mamba2Settings>},
      {"mamba3", true, &Mamba3Settings::config_keys, &read<Mamba3Settings>},
      {"attention", true, &AttentionSettings::config_keys, &read<AttentionSettings>},
      {"swa", true, &AttentionSettings::config_keys, &read_sliding},
      {"rat", true, &RatSettings::config_keys, &read<RatSettings>},
      {"mlstm", true, &MlstmSettings::config_keys, &read<MlstmSettings>},
      {"slstm", true, &SlstmSettings::config_keys, &read<SlstmSettings>},
      {"mlp", false, &MlpSettings::config_keys, &read<MlpSettings>},
      {"moe", false, &MoeSettings::config_keys, &read<MoeSettings>},
  };
  return kinds;
}

const MixerKind& mixer_kind(std::string_view name, const std::string& source) {
  std::string known;
  for (const MixerKind& kind : mixer_kinds()) {
    if (kind.name == name) return kind;
    known += (known.empty() ? "" : ", ") + std::string(kind.name);
  }
  fail("{}: unknown layer kind '{}' (known: {})", source, name, known);
}

}  // namespace ssm
