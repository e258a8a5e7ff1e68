// The table of mixer kinds: the names a layer plan (the project's own `ssm` model type) may use,
// and how each kind's settings are read from its config section.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/config_reader.h"
#include "nn/mixer.h"

namespace ssm {

struct MixerKind {
  std::string_view name;
  bool sequence;  // a sequence mixer (else a channel mixer: MLP, MoE)
  const std::set<std::string>& (*config_keys)();
  std::shared_ptr<const MixerSettings> (*from_config)(const ConfigReader& section, int64_t d_model);
};

const std::vector<MixerKind>& mixer_kinds();
// The kind named `name`, or an error listing the known kinds (`source` names the config).
const MixerKind& mixer_kind(std::string_view name, const std::string& source);

}  // namespace ssm
