#include "nn/mixer.h"

#include "nn/mamba1_mixer.h"
#include "nn/mamba2_mixer.h"

namespace ssm {

std::unique_ptr<Mixer> make_mixer(const ModelConfig& config) {
  if (config.mixer == MixerKind::Mamba2) return std::make_unique<Mamba2Mixer>(config);
  return std::make_unique<Mamba1Mixer>(config);
}

}  // namespace ssm
