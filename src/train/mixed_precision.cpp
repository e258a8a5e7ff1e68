#include "train/mixed_precision.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "core/side_stream.h"
#include "ops/ops.h"

namespace ssm {

namespace {

// The branches' BF16 matrices of a working copy, made for the branch about to run from the master's F32
// ones. Branch i's matrices live in buffer i % 2 (two buffers, each sized for the largest branch), so
// that while the current branch runs, the next one the caller names (BranchParamMaker::make's `next`:
// the neighbour above in a forward, below in a backward) is made into the other buffer on a side
// stream; the current stream waits for it only when that branch's make() comes. On the CPU the side
// stream's work runs at once: the same conversions, one branch early.
class LayerMatrices final : public BranchParamMaker {
 public:
  // Points the matrices of `copy`'s branches (not yet allocated) at the buffers, each branch's from its
  // buffer's start; `master`'s F32 matrices are what make() rounds.
  LayerMatrices(LanguageModel& master, LanguageModel& copy)
      : side_(master.device()), made_{DeviceEvent(master.device()), DeviceEvent(master.device())} {
    constexpr size_t kAlign = 256;  // each matrix on a 256-byte boundary, as an allocation would be
    auto aligned = [](size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; };
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
        bytes += aligned(size_t(shape_numel(from[k].shape)) * dtype_size(DType::BF16));
      }
      most = std::max(most, bytes);
    }
    // Both buffers in one allocation, the second from `most` on.
    buffers_ = Storage::allocate(std::max<size_t>(2 * most, 1), master.device());
    branches_.resize(matrices.size());
    for (size_t i = 0; i < matrices.size(); ++i) {
      size_t offset = i % 2 * most;
      for (auto& [from, to] : matrices[i]) {
        *to.tensor = Tensor::wrap(buffers_, offset, from.shape, DType::BF16);
        branches_[i].emplace_back(*from.tensor, *to.tensor);
        offset += aligned(to.tensor->nbytes());
      }
    }
  }

  void make(size_t branch, std::optional<size_t> next) override {
    DeviceEvent& made = made_[branch % 2];
    // Whatever the side stream last wrote into this branch's buffer is written before the current
    // stream reads it, or overwrites it (a conversion queued for a branch that did not come next).
    made.wait();
    if (announced_ != branch) convert(branch);
    announced_.reset();
    if (next == branch) {
      announced_ = next;  // this buffer holds it until then
    } else if (next && *next % 2 != branch % 2) {
      // Into the other buffer once the current stream's work so far (the branch that read it last, the
      // optimizer's update of the master weights) is done.
      side_.queue([&, n = *next] { convert(n); }, made_[*next % 2]);
      announced_ = next;
    }
  }
  bool makes(const Tensor& param) const override { return param.storage() == buffers_; }

 private:
  void convert(size_t branch) {
    for (auto& [master, copy] : branches_[branch]) ops::convert(master, copy);
  }

  std::shared_ptr<Storage> buffers_;
  // Per branch, its master matrices (sharing the master's storage, which AdamW updates in place) and
  // their places in its buffer.
  std::vector<std::vector<std::pair<Tensor, Tensor>>> branches_;
  // Declared after the buffers, so that it is destroyed first: it waits for its conversions into them.
  SideStream side_;
  DeviceEvent made_[2];  // per buffer, after the side stream's last conversion into it
  // The branch the last make() was told comes next, when made already (queued on the side stream, or
  // still in its buffer): its make() only waits for it.
  std::optional<size_t> announced_;
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
