#include "train/init.h"

#include <map>

#include "nn/init_util.h"

namespace ssm {

void init_parameters(LanguageModel& model, uint64_t seed) {
  model.allocate(DType::F32);
  const ModelConfig& c = model.config();
  std::map<std::string, Tensor*> by_name;
  for (const ParamRef& p : model.params()) by_name[p.name] = p.tensor;
  Rng rng(seed);
  init::normal(*by_name.at(c.embedding_name), rng, c.init.initializer_range);
  for (size_t i = 0; i < c.branches.size(); ++i) {
    init::constant(*by_name.at(c.branches[i].norm), 1.0f);
    InitOptions options = c.init;
    options.layer = c.branches[i].layer;
    options.n_layers = c.n_layers;
    for (const MixerSlot& slot : model.branches()[i].mixers) slot.mixer->init_parameters(rng, options);
  }
  init::constant(*by_name.at(c.final_norm_name), 1.0f);
  if (!c.tie_embeddings()) init::normal(*by_name.at(c.head_name), rng, c.init.initializer_range);
}

}  // namespace ssm
