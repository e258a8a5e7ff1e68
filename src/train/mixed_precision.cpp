#include "train/mixed_precision.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "ops/ops.h"

namespace ssm {

namespace {

// The branches' BF16 matrices of a working copy, made into one buffer for the branch about to run.
class LayerMatrices final : public BranchParamMaker {
 public:
  // Points the matrices of `copy`'s branches (not yet allocated) at the buffer, each branch's from its
  // start; `master`'s F32 matrices are what make() rounds.
  LayerMatrices(LanguageModel& master, LanguageModel& copy) {
    constexpr size_t kAlign = 256;  // each matrix on a 256-byte boundary, as an allocation would be
    std::vector<std::vector<std::pair<ParamRef, ParamRef>>> matrices(master.branches().size());
    size_t most = 0;
    for (size_t i = 0; i < matrices.size(); ++i) {
      ParamList from, to;
      for (const MixerSlot& slot : master.branches()[i].mixers) slot.mixer->add_params("", from);
      for (const MixerSlot& slot : copy.branches()[i].mixers) slot.mixer->add_params("", to);
      size_t bytes = 0;
      for (size_t k = 0; k < from.size(); ++k) {
        if (from[k].kind != ParamKind::Matrix) continue;
        matrices[i].emplace_back(from[k], to[k]);
        bytes += (size_t(shape_numel(from[k].shape)) * dtype_size(DType::BF16) + kAlign - 1) / kAlign * kAlign;
      }
      most = std::max(most, bytes);
    }
    buffer_ = Storage::allocate(std::max<size_t>(most, 1), master.device());
    branches_.resize(matrices.size());
    for (size_t i = 0; i < matrices.size(); ++i) {
      size_t offset = 0;
      for (auto& [from, to] : matrices[i]) {
        *to.tensor = Tensor::wrap(buffer_, offset, from.shape, DType::BF16);
        branches_[i].emplace_back(*from.tensor, *to.tensor);
        offset += (to.tensor->nbytes() + kAlign - 1) / kAlign * kAlign;
      }
    }
  }

  void make(size_t branch) override {
    for (auto& [master, copy] : branches_[branch]) ops::convert(master, copy);
  }
  bool makes(const Tensor& param) const override { return param.storage() == buffer_; }

 private:
  std::shared_ptr<Storage> buffer_;
  // Per branch, its master matrices (sharing the master's storage, which AdamW updates in place) and
  // their places in the buffer.
  std::vector<std::vector<std::pair<Tensor, Tensor>>> branches_;
};

}  // namespace

LanguageModel bf16_working_copy(LanguageModel& master, bool per_layer_matrices) {
  LanguageModel copy(master.config());
  if (per_layer_matrices) copy.set_param_maker(std::make_unique<LayerMatrices>(master, copy));
  const ParamList from = master.params(), to = copy.params();
  for (size_t i = 0; i < from.size(); ++i) {
    if (to[i].tensor->defined()) continue;  // a layer matrix, made per layer
    *to[i].tensor = from[i].kind == ParamKind::Vector ? *from[i].tensor : from[i].tensor->to(DType::BF16);
  }
  // Already on the device in their dtypes: this sets the mixers up there and moves nothing.
  copy.to_device(master.device(), DType::BF16);
  return copy;
}

std::vector<OptimizerParam> optimizer_params(LanguageModel& master, const LanguageModel& working, ModelGrads& grads) {
  std::vector<OptimizerParam> out;
  const ParamList masters = master.params();
  const BranchParamMaker* maker = working.param_maker();
  for (size_t i = 0; i < masters.size(); ++i) {
    const ParamRef& p = grads.params()[i];
    const bool copied = p.tensor != masters[i].tensor && p.tensor->dtype() != DType::F32 &&
                        !(maker && maker->makes(*p.tensor));
    out.push_back({p.name, masters[i].tensor, &grads.of(*p.tensor), p.weight_decay, copied ? p.tensor : nullptr});
  }
  return out;
}

}  // namespace ssm
